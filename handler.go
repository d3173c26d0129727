package gqlpush

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the [Config] fields left zero.
const (
	DefaultHeartbeat        = 15 * time.Second
	DefaultAckTimeout       = 10 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultKeepAliveTimeout = 30 * time.Second
	DefaultIdleTimeout      = 3 * time.Second
	DefaultReconnectLimit   = 30 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultQueueSize        = 256
	DefaultQueueBytes       = 1 << 20
	DefaultMaxQueryBytes    = 16 << 10
	DefaultResumeFrames     = 64
	DefaultDrainWindow      = time.Second
)

// Config configures a [Handler]. Only Operations and Upstreams are required;
// every other field has a working default when left zero.
type Config struct {
	// Operations are the subscriptions served, by name. Required.
	Operations []*Operation

	// Upstreams are the GraphQL servers the operations subscribe to.
	// At least one is required, and at most one may have no name.
	Upstreams []Upstream

	// Prefix is the part of the request path before the operation name,
	// such as "/operations/". Empty means the handler sees the name alone:
	// mount it with http.StripPrefix, or at the root.
	Prefix string

	// Heartbeat is how long a stream may stay silent before a comment
	// frame is sent, so proxies keep it open and the client can tell it
	// is alive. Zero means DefaultHeartbeat; negative disables heartbeats.
	Heartbeat time.Duration

	// AckTimeout bounds the upstream handshake: the WebSocket dial and
	// connection_ack. Zero means DefaultAckTimeout.
	AckTimeout time.Duration

	// PingInterval is how often gqlpush pings a graphql-transport-ws
	// upstream; a pong later than PongTimeout drops the connection (it is
	// then redialled). Zero means DefaultPingInterval; negative disables
	// pings.
	PingInterval time.Duration

	// PongTimeout: see PingInterval. Zero means DefaultPongTimeout.
	PongTimeout time.Duration

	// KeepAliveTimeout drops a graphql-ws (legacy) upstream connection
	// that has sent "ka" and then stays silent this long. Zero means
	// DefaultKeepAliveTimeout.
	KeepAliveTimeout time.Duration

	// IdleTimeout is how long an upstream connection stays open after its
	// last subscription ends. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration

	// ReconnectLimit is how long a lost or unreachable upstream is
	// redialled, with jittered exponential backoff, before its streams end
	// with UPSTREAM_UNAVAILABLE. Clients stay connected meanwhile. The
	// clock and the backoff start again only once a connection has stayed
	// up for 10 s: an upstream that accepts and then drops every connection
	// is given up on like one that refuses them. An upstream that closes
	// with a code the graphql-ws reference client never retries (4400,
	// 4401, 4406, 4409, 4429, 4500, 4004, 4005), or that speaks none of the
	// protocols tried, is not redialled: its streams end at once. Zero
	// means DefaultReconnectLimit; negative means no redial at all.
	ReconnectLimit time.Duration

	// WriteTimeout bounds one write to a client or to an upstream. A
	// client that takes longer is dropped (to spare a timer update per
	// write, a client write gets between half of it and all of it). Zero
	// means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// QueueSize is how many results a client may have unread before it is
	// dropped with SLOW_CONSUMER. Zero means DefaultQueueSize.
	QueueSize int

	// QueueBytes bounds the same backlog in bytes: a client with more
	// than this unread, besides the newest result, is dropped with
	// SLOW_CONSUMER too. So a burst of results up to QueueBytes, and then
	// one more of any size, reaches a client whose writer has not yet run.
	// It also bounds the resume window (see ResumeFrames). Zero means
	// DefaultQueueBytes. With the upstream's read limit
	// (DefaultReadLimit), it bounds what a client that stops reading can
	// hold: about QueueBytes plus one result.
	QueueBytes int

	// MaxQueryBytes bounds the query string of a request; a longer one is
	// refused with 414. Zero means DefaultMaxQueryBytes.
	MaxQueryBytes int

	// ResumeFrames is how many recent results each shared subscription
	// keeps, so that an SSE client that reconnects with the Last-Event-ID
	// of a result still kept gets what it missed, then the live results.
	// The window holds at most QueueBytes of results too (and always the
	// last one). Zero means DefaultResumeFrames; negative sends no ids and
	// keeps nothing.
	ResumeFrames int

	// ResumeGrace keeps a shared subscription whose last client left
	// running this long, so that a client that reconnects after a network
	// blip can resume. Zero means none: the upstream subscription ends the
	// moment the last client leaves. A few seconds suits mobile clients.
	//
	// A subscription kept this way still counts: against
	// MaxSubscriptions, and against MaxStreamsPerPrincipal of the caller
	// whose stream left it last. A caller at that cap who opens another
	// stream ends its oldest kept subscription to make room (or takes the
	// place of the one it resumes); one kept subscription ends, oldest
	// first, when MaxSubscriptions is reached.
	ResumeGrace time.Duration

	// DrainWindow spreads the ends of open streams over this long when
	// Close is called, so that clients do not all reconnect at once; it
	// never runs past Close's context deadline. Zero means
	// DefaultDrainWindow; negative ends every stream at once.
	DrainWindow time.Duration

	// Observer is told of streams, subscriptions, upstream connections and
	// deliveries, for metrics. Nil means none.
	Observer *Observer

	// UseResponseWriter keeps every stream on the ResponseWriter.
	//
	// False, the default: over HTTP/1.x a stream takes its connection over
	// from net/http (http.Hijacker), and ServeHTTP returns as soon as the
	// stream has started; the stream goes on in a goroutine the Handler
	// owns, until it ends or Close ends it. That saves a stream net/http's
	// goroutine, buffers and chunk writer: about 12 KiB and a few
	// microseconds per result. But to the http.Server and to middleware
	// the request is over: http.Server.Shutdown neither waits for such
	// streams nor closes them (call Close for that), and middleware that
	// times requests, logs their size or bounds how many run sees a short
	// request.
	//
	// True: ServeHTTP blocks for the life of the stream and writes through
	// the ResponseWriter, as HTTP/2 always does.
	UseResponseWriter bool

	// Authenticator verifies credentials (see JWTAuthenticator). Nil
	// means every caller is anonymous; operations with @auth, @rbac or
	// @fromClaim then make NewHandler fail rather than serve them
	// unguarded.
	Authenticator Authenticator

	// MaxStreams caps the streams open at once; one more is refused with
	// 429 TOO_MANY_STREAMS. Zero means no cap.
	MaxStreams int

	// MaxStreamsPerPrincipal caps the streams one caller may hold open: an
	// authenticated caller by subject, an anonymous one by address (an
	// IPv6 address by its /64, which one host often holds whole). Zero
	// means no cap.
	MaxStreamsPerPrincipal int

	// MaxAnonymousStreams caps the streams of callers without credentials,
	// in all, so that part of MaxStreams stays for authenticated callers:
	// anonymous ones cannot lock them out. It must not exceed MaxStreams
	// when that is set. Zero means no cap of its own.
	MaxAnonymousStreams int

	// MaxSubscriptions caps the shared upstream subscriptions, in all,
	// those kept by ResumeGrace included; a request that would start one
	// more is refused with 429 TOO_MANY_SUBSCRIPTIONS, once no kept
	// subscription is left to end instead. Zero means no cap.
	MaxSubscriptions int

	// MaxUpstreamConns caps the connections to each upstream. Callers
	// whose forwarded headers or init payloads differ get connections of
	// their own, and those values are the caller's to choose: without a
	// cap, each new value opens one more. A request that needs one more
	// is refused with 429 TOO_MANY_UPSTREAM_CONNECTIONS. Zero means no
	// cap.
	MaxUpstreamConns int

	// ClientAddress names an anonymous caller for MaxStreamsPerPrincipal.
	// Nil means the host of the request's RemoteAddr. Behind a proxy or a
	// load balancer, derive it from the header the proxy sets, and only
	// from a header a client cannot forge past that proxy:
	// [ForwardedAddress] does so.
	ClientAddress func(r *http.Request) string

	// CORSOrigins lists the origins (https://app.example.com) whose pages
	// may read streams from another origin, cookies included. Empty means
	// none: browsers allow same-origin pages only.
	CORSOrigins []string

	// Logger receives operational events (upstream connects, losses). Nil
	// means silent. Nothing secret is logged.
	Logger *slog.Logger
}

// An Upstream is one GraphQL server that operations subscribe to.
type Upstream struct {
	// Name namespaces the upstream's root fields in operations: with Name
	// "gql", an operation writes gql_messageCreated to reach the field
	// messageCreated. Empty means no prefix; at most one upstream may
	// have an empty name. Letters, digits and underscores, starting with a
	// letter.
	Name string

	// URL is the upstream's ws:// or wss:// address. Required.
	URL string

	// Schema is the upstream's schema in SDL. Optional: when given,
	// operations are validated against it when the handler is built, and
	// enum and input-object variables are checked per request.
	Schema string

	// Protocol is the GraphQL-over-WebSocket subprotocol. Zero means
	// ProtocolAuto.
	Protocol Protocol

	// Header is sent with the WebSocket handshake. Nil means none.
	Header http.Header

	// InitPayload is the payload of connection_init, a JSON object. Nil
	// means none is sent.
	InitPayload json.RawMessage

	// ForwardHeaders names client request headers copied onto the
	// upstream's WebSocket handshake, such as "Authorization". Nil means
	// none. Callers whose forwarded values differ never share an upstream
	// connection or a subscription. Cookie is forwarded only when named;
	// headers of one connection (Connection, Upgrade, Sec-WebSocket-*, …)
	// never are.
	ForwardHeaders []string

	// InitPayloadFunc builds the connection_init payload for a caller, from
	// the request and its principal (nil when anonymous); it replaces
	// InitPayload. Nil means InitPayload for everyone. As with
	// ForwardHeaders, callers with different payloads are kept apart.
	InitPayloadFunc func(r *http.Request, p *Principal) (json.RawMessage, error)

	// Dialer opens connections. Nil means a zero WebSocketDialer.
	Dialer Dialer
}

// settings is a Config with its defaults filled in.
type settings struct {
	heartbeat         time.Duration
	ackTimeout        time.Duration
	pingInterval      time.Duration
	pongTimeout       time.Duration
	keepAliveTimeout  time.Duration
	idleTimeout       time.Duration
	reconnectLimit    time.Duration
	writeTimeout      time.Duration
	queueSize         int
	queueBytes        int
	maxQueryBytes     int
	maxSubscriptions  int
	maxUpstreamConns  int
	resumeFrames      int
	resumeGrace       time.Duration
	drainWindow       time.Duration
	useResponseWriter bool
}

func orDefault[T time.Duration | int](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// A Handler serves persisted subscription operations over HTTP. Create it
// with [NewHandler]; stop it with [Handler.Close].
type Handler struct {
	cfg       settings
	prefix    string
	endpoints map[string]*endpoint
	auth      Authenticator
	log       *slog.Logger
	obs       *Observer
	pool      *pool
	hub       *hub
	limits    *limits
	origins   []string
	// corsHeaders are the request headers a cross-origin page may send:
	// credentials, resumption, and every header forwarded upstream.
	corsHeaders string

	clientAddress func(*http.Request) string

	shuttingDown atomic.Bool   // set by Close: streams end
	drain        time.Duration // set by Close before shuttingDown
	nonce        atomic.Uint64 // makes keys of unshared subscriptions unique

	mu      sync.Mutex
	closing bool
	streams int           // requests being served
	idle    chan struct{} // closed when closing and streams is 0
}

var _ http.Handler = (*Handler)(nil)

// upstream is an Upstream checked and resolved.
type upstream struct {
	name     string
	label    string // for logs: never the URL, which may hold credentials
	url      string
	header   http.Header
	init     json.RawMessage
	protocol Protocol
	dialer   Dialer
	schema   *upstreamSchema
	forward  []string // canonical header names, sorted
	initFunc func(*http.Request, *Principal) (json.RawMessage, error)
	learned  atomic.Value // string: the protocol that worked, for ProtocolAuto
}

func (u *upstream) protocolsToTry() []Protocol {
	switch u.protocol {
	case ProtocolTransportWS, ProtocolLegacyWS:
		return []Protocol{u.protocol}
	}
	if l, _ := u.learned.Load().(string); l == string(ProtocolLegacyWS) {
		return []Protocol{ProtocolLegacyWS, ProtocolTransportWS}
	}
	return []Protocol{ProtocolTransportWS, ProtocolLegacyWS}
}

// An endpoint is an operation bound to its upstream.
type endpoint struct {
	op        *Operation
	up        *upstream
	query     string         // sent upstream
	defaults  map[string]any // coerced default values
	coerce    coercer
	vars      []*variableDef
	byName    map[string]*variableDef
	needsAuth bool // @auth, @rbac or a @fromClaim variable
}

// declares reports whether the operation declares a variable of that name.
func (e *endpoint) declares(name string) bool {
	_, ok := e.byName[name]
	return ok
}

func (e *endpoint) variablesJSON(vars string) json.RawMessage {
	if vars == "" || vars == "{}" {
		return nil
	}
	return json.RawMessage(vars)
}

var upstreamName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

// NewHandler checks the configuration and every operation against it: each
// operation's root field must name a configured upstream, and must validate
// against that upstream's schema when one is given. It connects to nothing:
// upstream connections open with the first subscription that needs them.
func NewHandler(cfg Config) (*Handler, error) {
	s := settings{
		heartbeat:        orDefault(cfg.Heartbeat, DefaultHeartbeat),
		ackTimeout:       orDefault(cfg.AckTimeout, DefaultAckTimeout),
		pingInterval:     orDefault(cfg.PingInterval, DefaultPingInterval),
		pongTimeout:      orDefault(cfg.PongTimeout, DefaultPongTimeout),
		keepAliveTimeout: orDefault(cfg.KeepAliveTimeout, DefaultKeepAliveTimeout),
		idleTimeout:      orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		reconnectLimit:   orDefault(cfg.ReconnectLimit, DefaultReconnectLimit),
		writeTimeout:     orDefault(cfg.WriteTimeout, DefaultWriteTimeout),
		queueSize:        orDefault(cfg.QueueSize, DefaultQueueSize),
		queueBytes:       orDefault(cfg.QueueBytes, DefaultQueueBytes),
		maxSubscriptions: cfg.MaxSubscriptions,
		maxUpstreamConns: cfg.MaxUpstreamConns,
		maxQueryBytes:    orDefault(cfg.MaxQueryBytes, DefaultMaxQueryBytes),
		resumeFrames:     orDefault(cfg.ResumeFrames, DefaultResumeFrames),
		resumeGrace:      cfg.ResumeGrace,
		drainWindow:      orDefault(cfg.DrainWindow, DefaultDrainWindow),

		useResponseWriter: cfg.UseResponseWriter,
	}
	for name, d := range map[string]time.Duration{
		"AckTimeout": s.ackTimeout, "PongTimeout": s.pongTimeout, "KeepAliveTimeout": s.keepAliveTimeout,
		"IdleTimeout": s.idleTimeout, "WriteTimeout": s.writeTimeout, "ResumeGrace": s.resumeGrace,
	} {
		if d < 0 {
			return nil, fmt.Errorf("gqlpush: Config.%s is negative", name)
		}
	}
	for name, n := range map[string]int{
		"QueueSize": s.queueSize, "QueueBytes": s.queueBytes, "MaxQueryBytes": s.maxQueryBytes,
		"MaxStreams": cfg.MaxStreams, "MaxStreamsPerPrincipal": cfg.MaxStreamsPerPrincipal, "MaxAnonymousStreams": cfg.MaxAnonymousStreams,
		"MaxSubscriptions": cfg.MaxSubscriptions, "MaxUpstreamConns": cfg.MaxUpstreamConns,
	} {
		if n < 0 {
			return nil, fmt.Errorf("gqlpush: Config.%s is negative", name)
		}
	}
	if cfg.MaxStreams > 0 && cfg.MaxAnonymousStreams > cfg.MaxStreams {
		return nil, errors.New("gqlpush: Config.MaxAnonymousStreams is more than MaxStreams")
	}
	origins, err := checkOrigins(cfg.CORSOrigins)
	if err != nil {
		return nil, fmt.Errorf("gqlpush: Config.%w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ups, err := resolveUpstreams(cfg.Upstreams)
	if err != nil {
		return nil, err
	}
	if len(cfg.Operations) == 0 {
		return nil, errors.New("gqlpush: Config.Operations is empty")
	}
	h := &Handler{
		cfg:       s,
		prefix:    cfg.Prefix,
		endpoints: make(map[string]*endpoint, len(cfg.Operations)),
		auth:      cfg.Authenticator,
		log:       log,
		obs:       cfg.Observer,
		limits:    &limits{max: cfg.MaxStreams, perMax: cfg.MaxStreamsPerPrincipal, anonMax: cfg.MaxAnonymousStreams, per: map[string]int{}},
		origins:   origins,

		clientAddress: cfg.ClientAddress,
		idle:          make(chan struct{}),
	}
	var errs []error
	for _, op := range cfg.Operations {
		if op == nil {
			return nil, errors.New("gqlpush: Config.Operations holds a nil operation")
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
	h.pool = newPool(&h.cfg, log, h.obs)
	h.hub = newHub(&h.cfg, h.pool, h.limits, log, h.obs)
	return h, nil
}

func resolveUpstreams(in []Upstream) ([]*upstream, error) {
	if len(in) == 0 {
		return nil, errors.New("gqlpush: Config.Upstreams is empty")
	}
	var out []*upstream
	seen := map[string]bool{}
	for i, u := range in {
		what := fmt.Sprintf("upstream %q", u.Name)
		if u.Name == "" {
			what = fmt.Sprintf("upstream #%d (unnamed)", i+1)
		}
		if seen[u.Name] {
			if u.Name == "" {
				return nil, errors.New("gqlpush: more than one upstream has no name")
			}
			return nil, fmt.Errorf("gqlpush: two upstreams are named %q", u.Name)
		}
		seen[u.Name] = true
		if u.Name != "" && (!upstreamName.MatchString(u.Name) || strings.HasSuffix(u.Name, "_")) {
			return nil, fmt.Errorf("gqlpush: %s: a name is letters, digits and underscores, starting with a letter and not ending with _", what)
		}
		if !u.Protocol.valid() {
			return nil, fmt.Errorf("gqlpush: %s: unknown protocol %q (use %s, %s or %s)", what, u.Protocol, ProtocolAuto, ProtocolTransportWS, ProtocolLegacyWS)
		}
		pu, err := url.Parse(u.URL)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("gqlpush: %s: URL is not an absolute URL", what)
		}
		if u.Dialer == nil && pu.Scheme != "ws" && pu.Scheme != "wss" {
			return nil, fmt.Errorf("gqlpush: %s: URL scheme %q is not ws or wss", what, pu.Scheme)
		}
		if u.InitPayload != nil {
			var obj map[string]any
			if err := json.Unmarshal(u.InitPayload, &obj); err != nil || obj == nil {
				return nil, fmt.Errorf("gqlpush: %s: InitPayload is not a JSON object", what)
			}
		}
		forward, err := checkForwardHeaders(u.ForwardHeaders)
		if err != nil {
			return nil, fmt.Errorf("gqlpush: %s: %w", what, err)
		}
		r := &upstream{
			name:     u.Name,
			label:    u.Name,
			url:      u.URL,
			header:   u.Header.Clone(),
			init:     u.InitPayload,
			protocol: u.Protocol,
			dialer:   u.Dialer,
			forward:  forward,
			initFunc: u.InitPayloadFunc,
		}
		if r.label == "" {
			r.label = pu.Host // host only: the URL may hold credentials
		}
		if r.header == nil {
			r.header = http.Header{}
		}
		if r.dialer == nil {
			r.dialer = &WebSocketDialer{}
		}
		if u.Schema != "" {
			if r.schema, err = parseUpstreamSchema(u.Name, u.Schema); err != nil {
				return nil, fmt.Errorf("gqlpush: %s: %w", what, err)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// bind resolves an operation's upstream from its root field, validates it
// against that upstream's schema, and prepares the query sent upstream.
func bind(op *Operation, ups []*upstream, haveAuth bool) (*endpoint, error) {
	fail := func(format string, args ...any) error {
		return &OperationError{File: op.file, Line: op.rootField.Position.Line, Column: op.rootField.Position.Column, Message: fmt.Sprintf(format, args...)}
	}
	up, field := routeField(op.rootField.Name, ups)
	if up == nil {
		var names []string
		for _, u := range ups {
			names = append(names, u.name+"_")
		}
		return nil, fail("field %s names no configured upstream (fields start with one of: %s)", op.rootField.Name, strings.Join(names, ", "))
	}
	needs := op.rules.requireAuth
	for _, v := range op.vars {
		needs = needs || v.claim != ""
	}
	if needs && !haveAuth {
		return nil, &OperationError{File: op.file, Message: "the operation requires authentication (@auth, @rbac or @fromClaim) but Config.Authenticator is nil"}
	}
	ep := &endpoint{op: op, up: up, vars: op.vars, byName: map[string]*variableDef{}, defaults: map[string]any{}, needsAuth: needs}
	for _, v := range op.vars {
		ep.byName[v.name] = v
	}
	if up.schema != nil {
		if err := up.schema.validate(op); err != nil {
			return nil, err
		}
		ep.coerce = coercer{schema: up.schema.types}
	}
	for _, v := range op.vars {
		if v.defaultLit == nil {
			continue
		}
		d, err := ep.coerce.fromJSON(v.typ, literalJSON(v.defaultLit), v.name)
		if err != nil {
			return nil, &OperationError{File: op.file, Line: v.pos.Line, Column: v.pos.Column, Message: "default value: " + err.Error()}
		}
		ep.defaults[v.name] = d
	}
	q, err := op.upstreamQuery(field)
	if err != nil {
		return nil, err
	}
	ep.query = q
	return ep, nil
}

// routeField finds the upstream a root field belongs to: the named upstream
// whose name and an underscore start it (the longest such name), else the
// unnamed upstream.
func routeField(field string, ups []*upstream) (*upstream, string) {
	var best, unnamed *upstream
	for _, u := range ups {
		if u.name == "" {
			unnamed = u
			continue
		}
		if strings.HasPrefix(field, u.name+"_") && len(field) > len(u.name)+1 && (best == nil || len(u.name) > len(best.name)) {
			best = u
		}
	}
	if best != nil {
		return best, field[len(best.name)+1:]
	}
	if unnamed != nil {
		return unnamed, field
	}
	return nil, ""
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
	if !h.closing {
		h.closing = true
		h.drain = max(h.cfg.drainWindow, 0)
		if deadline, ok := ctx.Deadline(); ok {
			// Leave half the time that is left for the ends themselves.
			h.drain = min(h.drain, time.Until(deadline)/2)
		}
		h.shuttingDown.Store(true)
		if h.streams == 0 {
			close(h.idle)
		}
	}
	h.mu.Unlock()
	h.hub.close()
	var err error
	select {
	case <-h.idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if perr := h.pool.close(ctx); err == nil {
		err = perr
	}
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

// track counts a stream in, unless the handler is closing.
func (h *Handler) track() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.streams++
	return true
}

func (h *Handler) untrack() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.streams--
	if h.closing && h.streams == 0 {
		close(h.idle)
	}
}

// Stats is a snapshot of what a [Handler] holds open.
type Stats struct {
	Streams       int // requests being served
	Subscriptions int // shared upstream subscriptions
	UpstreamConns int // upstream connections, connected or being dialled
	Frames        int // results held for clients behind and for resumption
}

// Stats reports what the handler holds open now.
func (h *Handler) Stats() Stats {
	h.mu.Lock()
	n := h.streams
	h.mu.Unlock()
	subs, frames := h.hub.stats()
	return Stats{Streams: n, Subscriptions: subs, UpstreamConns: h.pool.count(), Frames: frames}
}
