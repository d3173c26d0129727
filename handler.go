package gqlpush

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A Handler serves persisted subscription operations over HTTP. Create it
// with [NewHandler]; stop it with [Handler.Close].
type Handler struct {
	cfg       Config // with its defaults
	endpoints map[string]*endpoint
	log       *slog.Logger // cfg.Logger
	pool      *pool        // the WebSocket upstreams' source
	live      *pollSource  // the live queries' source
	sources   []closer     // what it closes: the cluster, the pool, one source per NATS or SSE upstream
	hub       *hub
	limits    *limits
	origins   []string
	// corsHeaders are the request headers a cross-origin page may send:
	// credentials, resumption, and every header forwarded upstream.
	corsHeaders string

	streams      *tally      // requests being served
	shuttingDown atomic.Bool // set by Close: streams end
	// closing ends when Close begins: queries answered once stop waiting
	// for their upstream.
	closing    context.Context
	closeNow   context.CancelFunc
	ownClients []*http.Client // that post queries, made by gqlpush: Close closes their connections

	mu    sync.Mutex
	drain time.Duration // set by Close before shuttingDown
}

var _ http.Handler = (*Handler)(nil)

// NewHandler checks the configuration and every operation against it: each
// operation's root field must name a configured upstream, and must validate
// against that upstream's schema when one is given. It connects to nothing:
// upstream connections open with the first subscription that needs them.
//
// A setting it refuses is reported as a [*ConfigError], an operation as an
// [*OperationError]; both wrap a kind (ErrInvalid, ErrNegative, …) that
// errors.Is tells apart.
func NewHandler(config Config) (*Handler, error) {
	cfg, err := config.withDefaults()
	if err != nil {
		return nil, err
	}
	origins, err := checkOrigins(cfg.CORSOrigins)
	if err != nil {
		return nil, err
	}
	ups, err := resolveUpstreams(cfg.Upstreams)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		cfg:       cfg,
		endpoints: make(map[string]*endpoint, len(cfg.Operations)),
		log:       cfg.Logger,
		limits:    &limits{max: cfg.MaxStreams, perMax: cfg.MaxStreamsPerPrincipal, anonMax: cfg.MaxAnonymousStreams, per: map[string]int{}},
		origins:   origins,
		streams:   newTally(),
	}
	var errs []error
	for _, op := range cfg.Operations {
		if op == nil {
			return nil, &ConfigError{Field: "Operations", Err: ErrInvalid, Detail: "holds a nil operation"}
		}
		if _, dup := h.endpoints[op.name]; dup {
			errs = append(errs, &OperationError{File: op.file, Message: "a second operation with this name"})
			continue
		}
		ep, err := bind(op, ups, cfg.Authenticator != nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		h.endpoints[op.name] = ep
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	corsHeaders := []string{"Authorization", "Last-Event-ID", "Cache-Control"}
	for _, u := range ups {
		for _, name := range u.forward {
			if !slices.Contains(corsHeaders, name) {
				corsHeaders = append(corsHeaders, name)
			}
		}
	}
	h.corsHeaders = strings.Join(corsHeaders, ", ")
	h.pool = newPool(&h.cfg)
	var cl *cluster
	if h.cfg.Cluster != nil {
		// First: it closes before the pool, giving its keys up to other
		// instances rather than ending them.
		cl = newCluster(&h.cfg)
		h.sources = append(h.sources, cl)
	}
	h.sources = append(h.sources, h.pool)
	for _, u := range ups {
		var inner source = h.pool
		switch {
		case u.nats != nil:
			src := newNATSSource(&h.cfg, u)
			u.src = src
			h.sources = append(h.sources, src)
			continue
		case u.protocol == ProtocolSSE:
			src := newSSESource(&h.cfg, u)
			h.sources = append(h.sources, src)
			inner = src
		}
		if cl != nil {
			u.src, u.clustered = &clusterSource{c: cl, inner: inner}, true
		} else {
			u.src = inner
		}
	}
	h.live = newPollSource(&h.cfg)
	h.closing, h.closeNow = context.WithCancel(context.Background())
	for _, u := range ups {
		if u.ownClient {
			h.ownClients = append(h.ownClients, u.client)
		}
	}
	h.sources = append(h.sources, h.live)
	for _, ep := range h.endpoints {
		if ep.op.query {
			// Each instance polls on its own, in a cluster too.
			ep.src = h.live
		} else {
			ep.src, ep.clustered = ep.up.src, ep.up.clustered
		}
	}
	h.hub = newHub(&h.cfg, h.limits)
	return h, nil
}

// Close ends every open stream with its end frame, refuses new requests
// with 503, and closes the upstream connections. It returns when all of that
// is done, or when ctx ends: then the upstream connections are closed at
// once and ctx's error is returned. It may be called more than once.
//
// Call it, and wait for it, before or while http.Server.Shutdown runs:
// streams over HTTP/1.x run on connections taken over from the server (see
// Config.UseResponseWriter), which Shutdown neither waits for nor closes.
//
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	h.Close(ctx)      // every stream ends with its end frame
//	srv.Shutdown(ctx) // then the server's own requests
func (h *Handler) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.drain == 0 && !h.shuttingDown.Load() {
		h.drain = max(h.cfg.DrainWindow, 0)
		if deadline, ok := ctx.Deadline(); ok {
			// Leave half the time that is left for the ends themselves.
			h.drain = min(h.drain, time.Until(deadline)/2)
		}
	}
	h.mu.Unlock()
	h.shuttingDown.Store(true)
	h.closeNow()
	h.streams.close()
	h.hub.close()
	var err error
	select {
	case <-h.streams.idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, src := range h.sources {
		if serr := src.close(ctx); err == nil {
			err = serr
		}
	}
	for _, c := range h.ownClients {
		c.CloseIdleConnections() // what posted queries: nothing posts any more
	}
	h.hub.writers.Wait() // none starts now: nothing publishes; none waits on a client
	return err
}

// drainDelay picks when, within the drain window, a stream ends.
func (h *Handler) drainDelay() time.Duration {
	h.mu.Lock()
	d := h.drain
	h.mu.Unlock()
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// Stats is a snapshot of what a [Handler] holds open.
type Stats struct {
	Streams       int // requests being served
	Subscriptions int // shared upstream subscriptions
	UpstreamConns int // WebSocket connections up or being dialled, NATS connections up, and graphql-sse requests answered with a stream
	Frames        int // results held for clients behind and for resumption
}

// Stats reports what the handler holds open now.
func (h *Handler) Stats() Stats {
	subs, frames := h.hub.stats()
	conns := 0
	for _, src := range h.sources {
		conns += src.conns()
	}
	return Stats{Streams: h.streams.count(), Subscriptions: subs, UpstreamConns: conns, Frames: frames}
}

// A tally counts what an owner must see end before it is closed: the
// Handler's streams, the pool's connection goroutines. Once closing has
// begun it counts nothing more, and idle is closed when the count reaches
// zero.
type tally struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{}
}

func newTally() *tally { return &tally{idle: make(chan struct{})} }

// add counts one more, unless closing has begun.
func (t *tally) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.n++
	return true
}

// done counts one less.
func (t *tally) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.closing && t.n == 0 {
		close(t.idle)
	}
}

// close begins closing; it reports whether this call began it.
func (t *tally) close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	t.closing = true
	if t.n == 0 {
		close(t.idle)
	}
	return true
}

func (t *tally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}
