package gqlpush

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A natsUpstream is what a NATS upstream is made of: a connection, given or
// to dial, and the subjects of its subscription fields.
type natsUpstream struct {
	conn   *nats.Conn // given; nil when gqlpush dials url
	url    string     // as given: may hold credentials
	opts   []nats.Option
	fields map[string]*natsField // by the field's name upstream
}

// isNATSUpstream reports an upstream whose results come from NATS: one with
// a connection, or a nats:// or tls:// URL (or a list of them).
func isNATSUpstream(u Upstream) bool {
	if u.NATS != nil {
		return true
	}
	scheme, _, _ := strings.Cut(u.URL, "://")
	scheme = strings.ToLower(scheme)
	return scheme == "nats" || scheme == "tls"
}

// resolveNATSUpstream checks an Upstream that is a NATS upstream.
func resolveNATSUpstream(u Upstream, bad func(field string, kind error, detail string) error) (*upstream, error) {
	for field, set := range map[string]bool{
		"Protocol": u.Protocol != "", "Header": u.Header != nil, "InitPayload": u.InitPayload != nil,
		"InitPayloadFunc": u.InitPayloadFunc != nil, "ForwardHeaders": len(u.ForwardHeaders) > 0, "Dialer": u.Dialer != nil,
	} {
		if set {
			return nil, bad(field, ErrConflict, "is for GraphQL upstreams; this one is a NATS upstream")
		}
	}
	r := &upstream{name: u.Name, label: u.Name, nats: &natsUpstream{conn: u.NATS, url: u.URL, opts: u.NATSOptions}}
	if u.NATS == nil {
		// nats.go takes a comma-separated list of servers; each must be
		// a nats:// or tls:// URL with a host.
		for _, raw := range strings.Split(u.URL, ",") {
			pu, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || pu.Host == "" || (pu.Scheme != "nats" && pu.Scheme != "tls") {
				return nil, bad("URL", ErrInvalid, "is not a list of nats:// or tls:// URLs with a host")
			}
			if r.label == "" {
				r.label = pu.Host // host only: the URL may hold credentials
			}
		}
	} else if r.label == "" {
		r.label = "nats"
	}
	if u.Schema == "" {
		return nil, bad("Schema", ErrRequired, "is required for a NATS upstream: its subscription fields name their subjects")
	}
	schema, err := parseUpstreamSchema(u.Name, u.Schema+natsSubscribeSDL)
	if err != nil {
		return nil, bad("Schema", ErrInvalid, err.Error())
	}
	r.schema = schema
	if r.nats.fields, err = parseNATSFields(schema.types); err != nil {
		return nil, bad("Schema", ErrInvalid, err.Error())
	}
	return r, nil
}

// natsPendingMsgs and natsPendingBytes bound what nats.go buffers for one
// core subscription before it drops messages and reports a slow consumer.
const (
	natsPendingMsgs  = 64 << 10
	natsPendingBytes = 16 << 20
)

// A natsSource is the source of a NATS upstream: its subscriptions are core
// NATS subscriptions, or JetStream ordered consumers for fields with a
// stream, whose messages are completed into GraphQL results. nats.go
// reconnects on its own; the source watches the connection, and ends its
// subscriptions when it has been down past the reconnect limit.
type natsSource struct {
	cfg  *Config
	up   *upstream
	logs *logSampler

	once  sync.Once
	ready chan struct{} // closed once nc and js are set, or the connect failed
	nc    *nats.Conn
	js    jetstream.JetStream
	owned bool // gqlpush dialled nc, and closes it
	quiet bool // a cluster's connection: the Observer is not told of it
	// pending bounds a core subscription: natsPendingMsgs and
	// natsPendingBytes, but for tests.
	pendingMsgs, pendingBytes int
	dead                      error         // set before ready closes when no connection can be had
	wake                      chan struct{} // cap 1: the monitor looks again at what it watches

	ctx    context.Context // ends with close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the monitor and the subscriptions' openers

	deleting  sync.WaitGroup  // consumers being deleted
	delCtx    context.Context // their context: close gives up on them when its own ends
	delCancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	reaped  bool // close waits for deleting: no consumer is deleted after
	down    bool // the connection is not up
	subs    map[*natsSub]struct{}
	jsCheck bool                            // checkJetStream runs
	bySub   map[*nats.Subscription]*natsSub // core subscriptions, for nats.go's errors
	limitAt time.Time                       // when the subscriptions end if still down
}

var _ source = (*natsSource)(nil)

func newNATSSource(cfg *Config, up *upstream) *natsSource {
	ctx, cancel := context.WithCancel(context.Background())
	delCtx, delCancel := context.WithCancel(context.Background())
	return &natsSource{
		cfg: cfg, up: up, logs: newLogSampler(cfg.Logger),
		pendingMsgs: natsPendingMsgs, pendingBytes: natsPendingBytes,
		ready: make(chan struct{}), wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, delCtx: delCtx, delCancel: delCancel,
		subs: make(map[*natsSub]struct{}), bySub: make(map[*nats.Subscription]*natsSub),
	}
}

// A natsSub is one subscription of a natsSource: the handle the source
// returns from open.
type natsSub struct {
	src      *natsSource
	r        receiver
	b        *natsBinding
	op       string
	vars     map[string]any
	subjects []string
	after    uint64 // JetStream: start after this stream sequence, once known
	known    bool   // JetStream: after is known; else the stream is asked for its last
	checking bool   // JetStream: whether its stream is there is being asked; under src.mu

	mu    sync.Mutex // one delivery at a time, whatever subject it came on
	done  bool       // closed or ended: nothing more is delivered
	buf   []byte     // the completed result, reused
	core  []*nats.Subscription
	cons  jetstream.Consumer // JetStream: its ordered consumer, deleted at the end
	lastN uint64             // a cluster's reader: the number of the last result read
	cc    jetstream.ConsumeContext
	// released is a cluster's reader's: called when the key's owner
	// gives it up.
	released func()
}

var _ handle = (*natsSub)(nil)

// open subscribes to the subjects of req's field, rendered with its
// variables. The subscription is made as soon as the connection is there,
// in a goroutine of the source: open does not wait for the network.
func (s *natsSource) open(req *openRequest, r receiver) (handle, error) {
	vars, subjects, err := render(req)
	if err != nil {
		return nil, err
	}
	return s.start(&natsSub{src: s, r: r, b: req.ep.nats, op: req.ep.op.name, vars: vars, subjects: subjects})
}

// start makes ns, a new subscription of the source, in a goroutine of its
// own.
func (s *natsSource) start(ns *natsSub) (handle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	s.once.Do(s.startMonitor) // under the lock: close waits for what it starts
	s.subs[ns] = struct{}{}
	s.wg.Add(1)
	s.signal()
	go ns.subscribe()
	return ns, nil
}

// render decodes req's variables and renders its field's subjects with
// them.
// run starts the source's connection, if it is not closed.
func (s *natsSource) run() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	s.once.Do(s.startMonitor) // under the lock: close waits for what it starts
	return nil
}

func render(req *openRequest) (vars map[string]any, subjects []string, err error) {
	if len(req.vars) > 0 {
		v, err := decodeJSON(string(req.vars))
		if err != nil {
			return nil, nil, err
		}
		vars, _ = v.(map[string]any)
	}
	if subjects, err = req.ep.nats.subjects(vars); err != nil {
		return nil, nil, badInput(err.Error())
	}
	return vars, subjects, nil
}

// replay reads req's field's stream after position after, a page at a
// time as its reader asks, through a consumer of its own.
func (s *natsSource) replay(ctx context.Context, req *openRequest, after uint64) (replayReader, bool, error) {
	vars, subjects, err := render(req)
	if err != nil {
		return nil, false, err
	}
	return s.replayOf(ctx, req.ep.nats, req.ep.op.name, vars, subjects, after)
}

// replayOf reads the subjects of b's stream after position after.
func (s *natsSource) replayOf(ctx context.Context, b *natsBinding, op string, vars map[string]any, subjects []string, after uint64) (replayReader, bool, error) {
	if err := s.run(); err != nil {
		return nil, false, err
	}
	// Asked within the ack timeout, while the request and the source last.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AckTimeout)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	stream := b.field.stream
	reset, afterN, err := s.replayFrom(ctx, stream, after)
	if err != nil || reset {
		return nil, reset, err
	}
	rr := &natsReplay{src: s, b: b, vars: vars, stream: stream, subjects: subjects, last: after, lastN: afterN}
	if err := rr.create(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, false, err // the request is gone, or the source closed
		}
		s.logs.warn(logFailed, "creating a JetStream consumer to replay failed", "upstream", s.up.label, "operation", op, "err", logText(err))
		return nil, false, refuse(probUpstreamGone, "JetStream could not replay the NATS stream "+stream+": "+jsRefusal(err))
	}
	return rr, false, nil
}

// replayFrom asks the stream whether it still holds what followed after:
// reset is true when its first message is past after+1 (something that
// followed may be gone), when after is past its last message, or when the
// stream cannot be asked in time.
//
// afterN is, in a cluster's stream, the number of the client's last result
// within its key, when the stream was asked for it; else 0.
func (s *natsSource) replayFrom(ctx context.Context, stream string, after uint64) (reset bool, afterN uint64, err error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return true, 0, nil
	}
	if s.dead != nil {
		return true, 0, nil
	}
	st, err := s.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, 0, refuse(probUpstreamGone, "the NATS stream "+stream+" does not exist")
	}
	if err != nil {
		return true, 0, nil
	}
	// An id past the stream's last message is of another stream, one
	// since deleted or purged: what follows it there is not what followed
	// it here.
	state := st.CachedInfo().State
	switch {
	case after+1 < state.FirstSeq || after > state.LastSeq:
		return true, 0, nil
	case after+1 == state.FirstSeq:
		return false, 0, nil
	}
	// The stream's first message says nothing of one subject's: a limit
	// per subject drops a subject's oldest messages while others' older
	// ones stay. What followed the client's last message on its subjects
	// is all there only if that message still is.
	m, err := st.GetMsg(ctx, after)
	if err != nil {
		return true, 0, nil
	}
	return false, clusterResultNumber(m.Header), nil
}

func (s *natsSource) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// subscribe makes the subscription once the connection is there; for a
// stream, it creates its ordered consumer, again until it can or the
// subscription ends.
func (ns *natsSub) subscribe() {
	s := ns.src
	defer s.wg.Done()
	select {
	case <-s.ready:
	case <-s.ctx.Done():
		return
	}
	if s.dead != nil {
		ns.fail(endWith(probUpstreamGone, "NATS unavailable"), "NATS connection refused", s.dead)
		return
	}
	if stream := ns.b.field.stream; stream != "" {
		ns.consume(stream)
		return
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, subj := range ns.subjects {
		if ns.done {
			return
		}
		sub, err := s.nc.Subscribe(subj, ns.onMsg)
		if err == nil {
			err = sub.SetPendingLimits(s.pendingMsgs, s.pendingBytes)
		}
		if err != nil {
			ns.mu.Unlock()
			ns.fail(endWith(probUpstreamGone, "the NATS subscription failed"), "NATS subscription failed", err)
			ns.mu.Lock()
			return
		}
		ns.core = append(ns.core, sub)
		s.mu.Lock()
		s.bySub[sub] = ns
		s.mu.Unlock()
	}
}

// consume creates the subscription's ordered consumer on stream and
// consumes it. A new subscription starts after the stream's last message
// as it is asked now, not at "new messages": nats.go starts a consumer
// that has delivered nothing again from its configuration at every
// reconnect, and what the stream took meanwhile would be lost. A consumer
// JetStream refuses ends the subscription; other failures are retried
// for the reconnect limit.
func (ns *natsSub) consume(stream string) {
	s := ns.src
	var first time.Time // of the failures in a row
	wait := backoffMin
	for {
		err := ns.startConsumer(stream)
		if err == nil || s.ctx.Err() != nil || ns.isDone() {
			return
		}
		var api *jetstream.APIError
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound) && ns.b.raw:
			// A cluster's stream is made by its first instance a moment
			// after the first request: tried again.
		case errors.Is(err, jetstream.ErrStreamNotFound):
			ns.fail(endWith(probUpstreamGone, "the NATS stream "+stream+" does not exist"), "NATS stream not found", err)
			return
		case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
			errors.As(err, &api) && api.Code >= 400 && api.Code < 500:
			ns.fail(endWith(probUpstreamGone, "JetStream refused the consumer: "+jsRefusal(err)), "JetStream consumer refused", err)
			return
		}
		if first.IsZero() {
			first = time.Now()
		}
		if time.Since(first) >= s.cfg.ReconnectLimit {
			ns.fail(endUpstreamGone, "creating a JetStream consumer failed past the reconnect limit", err)
			return
		}
		if !ns.b.raw || !errors.Is(err, jetstream.ErrStreamNotFound) {
			s.logs.warn(logFailed, "creating a JetStream consumer failed; retrying", "upstream", s.up.label, "operation", ns.op, "err", logText(err))
		}
		select {
		case <-time.After(rand.N(wait) + time.Millisecond):
		case <-s.ctx.Done():
			return
		}
		wait = min(2*wait, backoffMax)
	}
}

// startConsumer asks the stream where new messages start, unless the
// subscription already knows where it starts, and consumes from there.
func (ns *natsSub) startConsumer(stream string) error {
	s := ns.src
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.AckTimeout)
	defer cancel()
	if !ns.known {
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		ns.after, ns.known = st.CachedInfo().State.LastSeq, true
		ns.r.begin()
	}
	cons, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: ns.subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: ns.after + 1,
	})
	if err != nil {
		return err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.done {
		return nil
	}
	ns.cons = cons
	ns.cc, err = cons.Consume(ns.onJSMsg, jetstream.ConsumeErrHandler(ns.onJSError))
	return err
}

// jsRefusal is what JetStream said, without nats.go's prefixes.
func jsRefusal(err error) string {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Description != "" {
		return api.Description
	}
	return strings.TrimPrefix(err.Error(), "nats: ")
}

func (ns *natsSub) onMsg(m *nats.Msg) { ns.deliver(m.Data, 0) }

func (ns *natsSub) onJSMsg(m jetstream.Msg) {
	var pos uint64
	meta, err := m.Metadata()
	if err == nil {
		pos = meta.Sequence.Stream
	}
	if ns.b.raw {
		if err == nil {
			ns.b.observer.clusterLag(ns.op, time.Since(meta.Timestamp))
		}
		ns.deliverRaw(m, pos)
		return
	}
	ns.deliver(m.Data(), pos)
}

// deliverRaw passes on a message of a cluster's stream: a result as it is,
// the end of the subscription, or nothing (an owner's marker).
func (ns *natsSub) deliverRaw(m jetstream.Msg, pos uint64) {
	kind, e := clusterMsgKind(m.Headers(), m.Data())
	switch kind {
	case clusterResult:
		ns.mu.Lock()
		n := clusterResultNumber(m.Headers())
		gap := ns.lastN != 0 && n != ns.lastN+1
		ns.lastN = n
		if !ns.done && !gap {
			if err := ns.r.publish(m.Data(), pos); err != nil {
				ns.src.logs.warn(logBadResult, "a cluster message is no result", "operation", ns.op, "err", logText(err))
			}
		}
		ns.mu.Unlock()
		if gap {
			// Results went from the stream before this reader had them
			// (a burst past what the stream keeps of a key): its clients
			// end, and resume from their last id, or start afresh.
			ns.fail(endWith(probUpstreamGone, "results were lost in the cluster's stream"), "cluster: results lost before they were read", errClusterGap)
		}
	case clusterMark:
		// A new owner that found its key's subject empty numbers from
		// 1 again: what came before is not there to compare with.
		if clusterResultNumber(m.Headers()) == 0 {
			ns.mu.Lock()
			ns.lastN = 0
			ns.mu.Unlock()
		}
	case clusterReleased:
		if ns.released != nil {
			ns.released()
		}
	case clusterEnd:
		if ns.stop() {
			ns.r.end(e)
		}
	}
}

// onJSError hears of the ordered consumer's troubles. It recreates itself
// when its consumer is deleted or its heartbeats stop, and goes on trying
// while the stream is missing; so on those, the source asks whether the
// stream is still there, and ends the subscription when it is not. nats.go
// calls it under the consumer's lock: the question is asked apart.
func (ns *natsSub) onJSError(_ jetstream.ConsumeContext, err error) {
	if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	s := ns.src
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || ns.checking {
		return
	}
	ns.checking = true
	s.wg.Add(1)
	go ns.checkStream()
}

// checkStream ends the subscription if its stream is gone.
func (ns *natsSub) checkStream() {
	s := ns.src
	defer s.wg.Done()
	stream := ns.b.field.stream
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.AckTimeout)
	_, err := s.js.Stream(ctx, stream)
	cancel()
	s.mu.Lock()
	ns.checking = false
	s.mu.Unlock()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		ns.fail(endWith(probUpstreamGone, "the NATS stream "+stream+" is gone"), "NATS stream gone", err)
	}
}

// deliver completes a message's payload into a result and publishes it.
func (ns *natsSub) deliver(payload []byte, pos uint64) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.done {
		return
	}
	ns.buf = ns.b.complete.appendComplete(ns.buf[:0], payload, ns.vars)
	if err := ns.r.publish(ns.buf, pos); err != nil {
		ns.src.logs.warn(logBadResult, "a NATS message completed to no result", "upstream", ns.src.up.label, "operation", ns.op, "err", logText(err))
	}
	if cap(ns.buf) > shrinkAbove {
		ns.buf = nil // one large message does not keep its buffer
	}
}

func (ns *natsSub) isDone() bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.done
}

// stop takes the subscription off NATS, once; it reports whether this call
// did.
func (ns *natsSub) stop() bool {
	ns.mu.Lock()
	if ns.done {
		ns.mu.Unlock()
		return false
	}
	ns.done = true
	core, cons, cc := ns.core, ns.cons, ns.cc
	ns.core, ns.cons, ns.cc = nil, nil, nil
	ns.mu.Unlock()
	s := ns.src
	s.mu.Lock()
	delete(s.subs, ns)
	for _, sub := range core {
		delete(s.bySub, sub)
	}
	s.mu.Unlock()
	for _, sub := range core {
		sub.Unsubscribe()
	}
	if cc != nil {
		cc.Stop()
		if info := cons.CachedInfo(); info != nil {
			s.deleteConsumer(ns.b.field.stream, info.Name)
		}
	}
	return true
}

// deleteConsumer deletes a consumer the source is done with, in the
// background: nats.go's Stop leaves it on the server for its inactive
// threshold, five minutes. close waits for the deletions it started.
func (s *natsSource) deleteConsumer(stream, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reaped || s.nc.Status() != nats.CONNECTED {
		return // the server expires it
	}
	s.deleting.Add(1)
	go func() {
		defer s.deleting.Done()
		ctx, cancel := s.whileUp(s.delCtx, s.cfg.AckTimeout)
		defer cancel()
		if err := s.js.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.logs.warn(logFailed, "deleting a JetStream consumer failed; the server expires it", "upstream", s.up.label, "err", logText(err))
		}
	}()
}

// whileUp is parent with a timeout of d, ended as well once the
// connection is not up: nats.go keeps a request made while it is down, or
// written to a connection the server has just closed, for a reconnect,
// and it would be waited for until d. For what is asked on the way out
// (consumers deleted, a lease given up), which the server expires anyway.
func (s *natsSource) whileUp(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, d)
	if s.conns() == 0 {
		cancel()
		return ctx, cancel
	}
	// Listened to before the status is read: no change is missed.
	down := s.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	if s.nc.Status() != nats.CONNECTED {
		cancel()
	}
	go func() {
		defer s.nc.RemoveStatusListener(down)
		select {
		case <-down:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// close is the handle's: its opener is done with it.
func (ns *natsSub) close() { ns.stop() }

// A natsReplay reads a stream from a position on for one client that
// catches up: a consumer of its own that delivers only when asked (a pull
// consumer, acknowledging nothing), so the client's pace is the replay's.
type natsReplay struct {
	src      *natsSource
	b        *natsBinding
	vars     map[string]any
	stream   string
	subjects []string
	last     uint64 // the stream sequence of the last message read
	cons     jetstream.Consumer
	seq      uint64 // the consumer sequence of the last message read
	lastN    uint64 // a cluster's: the number of the last result read
	buf      []byte
}

// replayPage bounds the messages one read asks for.
const replayPage = 64

// create makes the reader's consumer, starting after last.
func (rr *natsReplay) create(ctx context.Context) error {
	s := rr.src
	cons, err := s.js.CreateConsumer(ctx, rr.stream, jetstream.ConsumerConfig{
		FilterSubjects: rr.subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: rr.last + 1,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1,
		// Should this process die, the server lets go of it.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return err
	}
	rr.cons, rr.seq = cons, 0
	return nil
}

func (rr *natsReplay) next(max int, fn func(raw []byte, pos uint64)) (bool, error) {
	if rr.cons == nil {
		ctx, cancel := context.WithTimeout(rr.src.ctx, rr.src.cfg.AckTimeout)
		err := rr.create(ctx)
		cancel()
		if err != nil {
			return false, err
		}
	}
	batch, err := rr.cons.FetchNoWait(min(max, replayPage))
	if err != nil {
		rr.drop()
		return false, err
	}
	n, pending := 0, uint64(1)
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil || meta.Sequence.Consumer != rr.seq+1 {
			// A message lost on the way (the consumer acknowledges
			// nothing, so it would not come again): read again from
			// the last one that came.
			rr.drop()
			return false, fmt.Errorf("JetStream replay: a message did not come")
		}
		rr.seq, rr.last, pending = meta.Sequence.Consumer, meta.Sequence.Stream, meta.NumPending
		n++
		if rr.b.raw {
			switch kind, _ := clusterMsgKind(m.Headers(), m.Data()); kind {
			case clusterResult:
				num := clusterResultNumber(m.Headers())
				if rr.lastN != 0 && num != rr.lastN+1 {
					return false, errReplayGap
				}
				rr.lastN = num
				fn(m.Data(), rr.last)
			case clusterMark:
				if clusterResultNumber(m.Headers()) == 0 {
					rr.lastN = 0 // a new owner of an empty subject: see deliverRaw
				}
			}
			continue
		}
		rr.buf = rr.b.complete.appendComplete(rr.buf[:0], m.Data(), rr.vars)
		fn(rr.buf, rr.last)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		rr.drop()
		return false, err
	}
	if cap(rr.buf) > shrinkAbove {
		rr.buf = nil
	}
	if n > 0 {
		return pending == 0, nil
	}
	// Nothing came: the stream may hold no more, or the answer may not
	// have come in time (nats.go ends a read it hears nothing of after a
	// second, with no error). The consumer says which.
	ctx, cancel := context.WithTimeout(rr.src.ctx, rr.src.cfg.AckTimeout)
	defer cancel()
	info, err := rr.cons.Info(ctx)
	if err != nil {
		rr.drop()
		return false, err
	}
	if info.Delivered.Consumer != rr.seq {
		// It sent what never came (a read that timed out here was
		// answered later): read again from the last that came.
		rr.drop()
		return false, nil
	}
	return info.NumPending == 0, nil
}

// drop lets go of the consumer, after a failed read or at the end; a read
// after a failed one makes another, from the last message that came.
func (rr *natsReplay) drop() {
	if rr.cons != nil {
		rr.src.deleteConsumer(rr.stream, rr.cons.CachedInfo().Name)
		rr.cons = nil
	}
}

func (rr *natsReplay) close() { rr.drop() }

// fail ends the subscription for a reason its receiver is told, and logs
// it.
func (ns *natsSub) fail(e ending, what string, err error) {
	if !ns.stop() {
		return
	}
	ns.src.logs.warn(logLost, what, "upstream", ns.src.up.label, "operation", ns.op, "err", logText(err))
	ns.r.end(e)
}

// startMonitor starts the goroutine that connects, when gqlpush dials, and
// watches the connection.
func (s *natsSource) startMonitor() {
	s.wg.Add(1)
	go s.monitor()
}

// monitor owns the connection's watch: it connects (nats.go retries the
// first connect and every reconnect on its own), then follows its status,
// and ends every subscription when the connection has been down for the
// reconnect limit.
func (s *natsSource) monitor() {
	defer s.wg.Done()
	defer s.logs.close()
	nc, err := s.connect()
	if err != nil {
		s.dead = err
		s.cfg.Logger.Warn("NATS connection refused for good", "upstream", s.up.label, "err", logText(err))
		close(s.ready)
		return
	}
	s.nc = nc
	s.js, _ = jetstream.New(nc) // no error without options
	close(s.ready)
	status := nc.StatusChanged()
	defer nc.RemoveStatusListener(status)
	s.mu.Lock()
	s.down = true // so that the first look tells the Observer it is up
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		up := !s.down && !s.quiet
		s.mu.Unlock()
		if up {
			s.cfg.Observer.upstreamDisconnected(s.up.label, nil)
		}
	}()
	var limit <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	watch := func() {
		down := nc.Status() != nats.CONNECTED
		s.mu.Lock()
		was := s.down
		s.down = down
		n := len(s.subs)
		s.mu.Unlock()
		if down != was {
			switch {
			case s.quiet: // the cluster's connection: no upstream of the Observer's
			case down:
				s.cfg.Observer.upstreamDisconnected(s.up.label, errNATSDown)
			default:
				s.cfg.Observer.upstreamConnected(s.up.label, 0)
			}
			if down {
				s.logs.warn(logLost, "NATS connection lost", "upstream", s.up.label)
			} else {
				s.cfg.Logger.Info("NATS connected", "upstream", s.up.label)
			}
		}
		if was && !down && n > 0 {
			s.startJetStreamCheck()
		}
		switch {
		case down && n > 0 && limit == nil:
			wait := max(s.cfg.ReconnectLimit, 0)
			timer = time.NewTimer(wait)
			limit = timer.C
		case !down && limit != nil:
			timer.Stop()
			limit = nil
		}
	}
	watch()
	for {
		select {
		case <-status:
			watch()
		case <-s.wake:
			watch()
		case <-limit:
			limit = nil
			s.expire()
			watch()
		case <-s.ctx.Done():
			return
		}
	}
}

var errNATSDown = errors.New("NATS connection lost")

// expire ends every subscription: the connection has been down for the
// reconnect limit.
// startJetStreamCheck starts checkJetStream, unless it runs or no
// subscription reads a stream.
func (s *natsSource) startJetStreamCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jsCheck || s.closed {
		return
	}
	for ns := range s.subs {
		if ns.b.field.stream != "" {
			s.jsCheck = true
			s.wg.Add(1)
			go s.checkJetStream()
			return
		}
	}
}

// checkJetStream asks, once the connection is back, whether the server
// still has JetStream: an ordered consumer on a server without it waits
// in silence. While it has not, it asks again; at the reconnect limit, the
// subscriptions that read a stream end, as they would if NATS stayed
// down.
func (s *natsSource) checkJetStream() {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.jsCheck = false
		s.mu.Unlock()
	}()
	var first time.Time
	for {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.AckTimeout)
		_, err := s.js.AccountInfo(ctx)
		cancel()
		if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return // it has, or the connection is down again: asked at the next reconnect
		}
		if first.IsZero() {
			first = time.Now()
			s.logs.warn(logLost, "the NATS server has no JetStream", "upstream", s.up.label)
		}
		if time.Since(first) >= s.cfg.ReconnectLimit {
			s.mu.Lock()
			var subs []*natsSub
			for ns := range s.subs {
				if ns.b.field.stream != "" {
					subs = append(subs, ns)
				}
			}
			s.mu.Unlock()
			for _, ns := range subs {
				ns.fail(endWith(probUpstreamGone, "JetStream is not enabled on the NATS server"), "JetStream gone from the NATS server", err)
			}
			return
		}
		t := time.NewTimer(min(time.Second, max(s.cfg.ReconnectLimit/4, 10*time.Millisecond)))
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (s *natsSource) expire() {
	s.mu.Lock()
	subs := make([]*natsSub, 0, len(s.subs))
	for ns := range s.subs {
		subs = append(subs, ns)
	}
	s.mu.Unlock()
	if len(subs) > 0 {
		s.cfg.Logger.Warn("NATS unavailable, ending its streams", "upstream", s.up.label)
	}
	for _, ns := range subs {
		if ns.stop() {
			ns.r.end(endUpstreamGone)
		}
	}
}

// connect dials the upstream's URL, or takes the connection it was given
// and hears of its errors.
func (s *natsSource) connect() (*nats.Conn, error) {
	n := s.up.nats
	if n.conn != nil {
		prev := n.conn.ErrorHandler()
		n.conn.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
			if s.ctx.Err() == nil { // the source is not closed
				s.asyncError(sub, err)
			}
			if prev != nil {
				prev(c, sub, err)
			}
		})
		return n.conn, nil
	}
	opts := append([]nats.Option{
		nats.Name("gqlpush"),
		nats.Timeout(s.cfg.AckTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// gqlpush only subscribes: little is ever buffered to publish.
		nats.ReconnectBufSize(64 << 10),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) { s.asyncError(sub, err) }),
		// Why a connect failed (refused, bad credentials) is told here
		// only.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			s.logs.warn(logFailed, "connecting to NATS failed", "upstream", s.up.label, "err", logText(err))
		}),
	}, n.opts...)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	s.owned = true
	return nc, nil
}

// asyncError hears of a subscription's trouble from nats.go: a slow
// consumer (messages dropped) or a permission refused end it with an error
// its clients see.
func (s *natsSource) asyncError(sub *nats.Subscription, err error) {
	switch {
	case errors.Is(err, nats.ErrSlowConsumer) && sub != nil:
		s.mu.Lock()
		ns := s.bySub[sub]
		s.mu.Unlock()
		if ns != nil {
			ns.fail(endWith(probUpstreamGone, "NATS dropped messages of this subscription: it fell behind"), "NATS slow consumer", err)
		}
	case errors.Is(err, nats.ErrPermissionViolation):
		// nats.go tells no subscription with it, only the server's text,
		// which names the subject refused.
		m := deniedSubject.FindStringSubmatch(err.Error())
		if m == nil {
			return
		}
		for _, ns := range s.subsDeniedOn(m[1]) {
			ns.fail(endWith(probUpstreamGone, "NATS refused the subscription: permissions violation on "+m[1]), "NATS permissions violation", err)
		}
	default:
		// The connection's own trouble, such as an authorization
		// refused: nats.go goes on, and the operator needs to know.
		s.logs.warn(logFailed, "NATS error", "upstream", s.up.label, "err", logText(err))
	}
}

// deniedSubject finds the subject in the server's text of a permissions
// violation: `Permissions Violation for Subscription to "orders.7"`, or
// for Publish to a JetStream API subject when a consumer is created.
var deniedSubject = regexp.MustCompile(`(?i)(?:subscription|publish) to "(\S+)"`)

// subsDeniedOn is the subscriptions a refusal on subject ends: those that
// subscribe to it, and, for a JetStream API subject, those that read the
// stream it names.
func (s *natsSource) subsDeniedOn(subject string) []*natsSub {
	var api []string
	if rest, ok := strings.CutPrefix(subject, "$JS.API."); ok {
		api = strings.Split(rest, ".")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*natsSub
	for ns := range s.subs {
		if stream := ns.b.field.stream; stream != "" {
			if slices.Contains(api, stream) {
				out = append(out, ns)
			}
		} else if slices.Contains(ns.subjects, subject) {
			out = append(out, ns)
		}
	}
	return out
}

// close ends every subscription with the shutdown end, closes the
// connection gqlpush dialled, and waits for the source's goroutines.
func (s *natsSource) close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	subs := make([]*natsSub, 0, len(s.subs))
	for ns := range s.subs {
		subs = append(subs, ns)
	}
	s.mu.Unlock()
	for _, ns := range subs {
		if ns.stop() {
			ns.r.end(endShutdown)
		}
	}
	// The consumers of the subscriptions just ended are deleted, within
	// the ack timeout; every other goroutine of the source ends with its
	// context, at once: none waits on the network past it.
	s.mu.Lock()
	s.reaped = true
	s.mu.Unlock()
	deleted := make(chan struct{})
	go func() {
		s.deleting.Wait()
		close(deleted)
	}()
	select {
	case <-deleted:
	case <-ctx.Done():
		s.delCancel()
		<-deleted
	}
	s.delCancel()
	s.cancel()
	s.wg.Wait()
	if s.owned {
		s.nc.Close()
	}
	return nil
}

// conns reports one connection once the source has one.
func (s *natsSource) conns() int {
	select {
	case <-s.ready:
		if s.dead == nil && s.nc.Status() == nats.CONNECTED {
			return 1
		}
	default:
	}
	return 0
}
