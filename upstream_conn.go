package gqlpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff between redials of a lost upstream: full jitter over an
// exponentially growing ceiling.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// stableAfter is how long a connection must stay up, acknowledged,
	// before its loss counts as a new outage: only then are the backoff and
	// the reconnect limit's clock reset. An upstream that acknowledges and
	// then drops every connection is redialled at the backoff's pace, and
	// given up on after the reconnect limit, like one that refuses them.
	stableAfter = 10 * time.Second
	// maxOutboxBytes bounds what waits to be written to one upstream
	// connection. Subscribes and stops pile up only while the upstream does
	// not read; past this, it is taken for hung and the connection dropped
	// (and redialled, with every live subscription).
	maxOutboxBytes = 1 << 20
	// pongGap is the least time between two pongs (see serve).
	pongGap = 100 * time.Millisecond
)

// readContext is the context of every Read: it is never cancelled. A read
// ends when its transport is closed, which every path that gives up on a
// connection does; a context that can end would cost each read a
// registration with it (coder/websocket arms a context.AfterFunc per read).
var readContext = context.Background()

var (
	errPongTimeout      = errors.New("upstream did not answer ping in time")
	errKeepAliveTimeout = errors.New("upstream keep-alive (ka) stopped")
	errAckTimeout       = errors.New("upstream did not acknowledge connection_init in time")
	errOutboxFull       = errors.New("upstream is not reading: more than 1 MiB waits to be written to it")
)

// A pool holds the upstream connections of a handler: one per upstream and
// forwarded values, each multiplexing every subscription that needs it.
type pool struct {
	cfg *Config

	ctx      context.Context // cancelled to stop everything at once
	cancel   context.CancelFunc
	shutdown chan struct{} // closed to close connections politely

	runs *tally // upConn.run goroutines

	mu      sync.Mutex
	byKey   map[connKey]*upConn
	perUp   map[*upstream]int // len(byKey) by upstream, for MaxUpstreamConns
	refused refusals[connKey]
}

// refusals are an upstream's answers for good, each to one connection (or
// request) key, remembered for a while: requests that would dial it again
// meanwhile are refused at once, so that clients that come back in a loop
// (an EventSource does) do not make the gateway dial the upstream in that
// loop.
type refusals[K comparable] struct {
	mu sync.Mutex
	m  map[K]refusal
}

type refusal struct {
	err   *httpError
	until time.Time
}

// refusalMemory is how long a refusal is remembered.
const refusalMemory = backoffMax

// remember keeps the upstream's refusal of key for refusalMemory, and lets
// the refusals whose time is up go.
func (rs *refusals[K]) remember(key K, err *httpError) {
	now := time.Now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for k, r := range rs.m {
		if !now.Before(r.until) {
			delete(rs.m, k)
		}
	}
	if rs.m == nil {
		rs.m = make(map[K]refusal)
	}
	rs.m[key] = refusal{err: err, until: now.Add(refusalMemory)}
}

// check returns the refusal of key remembered, if any.
func (rs *refusals[K]) check(key K) *httpError {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.m[key]; ok && time.Now().Before(r.until) {
		return r.err
	}
	return nil
}

type connKey struct {
	up            *upstream
	forwardDigest string // of what was forwarded: different values never share a connection
}

func newPool(cfg *Config) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{
		cfg:      cfg,
		ctx:      ctx,
		cancel:   cancel,
		shutdown: make(chan struct{}),
		byKey:    make(map[connKey]*upConn),
		perUp:    make(map[*upstream]int),
		runs:     newTally(),
	}
}

// connSub is a subscription's place on one connection: the handle the pool
// returns from open.
type connSub struct {
	c       *upConn
	r       receiver
	op      string          // the operation's name, for logs
	payload json.RawMessage // of subscribe: query, variables, operationName
	id      string
	sent    bool // the subscribe went out on the current transport; guarded by c.mu
	gone    bool // no longer on the connection; guarded by c.mu
}

var (
	_ source = (*pool)(nil)
	_ handle = (*connSub)(nil)
)

// open starts a subscription on the connection for its upstream and
// forwarded values, dialling one if there is none.
func (p *pool) open(req *openRequest, r receiver) (handle, error) {
	payload, err := json.Marshal(subscribePayload{
		Query:         req.ep.query,
		Variables:     req.vars,
		OperationName: req.ep.op.opName,
	})
	if err != nil {
		return nil, err
	}
	cs := &connSub{r: r, op: req.ep.op.name, payload: payload}
	return cs, p.attach(connKey{up: req.ep.up, forwardDigest: req.forwardDigest}, req.header, req.init, cs)
}

// close stops the subscription: see detach.
func (cs *connSub) close() { cs.c.detach(cs) }

// conns reports the number of open upstream connections.
func (p *pool) conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byKey)
}

// An outMsg waits in a connection's outbox: a subscribe (cs set) or a stop
// (id set). Pings and pongs wait as flags instead: however many pings an
// upstream sends, one pong at most is pending.
type outMsg struct {
	cs *connSub
	id string
}

// size is what an outMsg counts against maxOutboxBytes: its message, about.
func (m outMsg) size() int {
	if m.cs != nil {
		return len(m.cs.payload) + 64
	}
	return len(m.id) + 48
}

// An upConn is one logical upstream connection. Its run goroutine dials,
// redials when the transport is lost, and writes; a reader goroutine per
// transport reads. It ends when it has had no subscription for the idle
// timeout, when the upstream stays unreachable past the reconnect limit, or
// when the pool closes.
type upConn struct {
	p      *pool
	key    connKey
	header http.Header
	init   json.RawMessage

	wake chan struct{} // cap 1: the outbox or the subscriptions changed
	logs *logSampler

	mu       sync.Mutex
	subs     map[string]*connSub
	nextID   uint64
	outbox   []outMsg
	outBytes int  // the sizes of what outbox holds
	overflow bool // outBytes passed maxOutboxBytes: drop the transport
	ping     bool // a ping is due
	pong     bool // a pong is due
	t        Conn // the current transport; nil while down
}

// attach puts cs on the connection for key, starting one if needed.
func (p *pool) attach(key connKey, header http.Header, init json.RawMessage, cs *connSub) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.byKey[key]
	if c == nil {
		if err := p.refused.check(key); err != nil {
			return err
		}
		if max := p.cfg.MaxUpstreamConns; max > 0 && p.perUp[key.up] >= max {
			return errTooManyUpstreamConns
		}
		if !p.runs.add() {
			return errClosed
		}
		c = &upConn{p: p, key: key, header: header, init: init, wake: make(chan struct{}, 1), subs: make(map[string]*connSub), logs: newLogSampler(p.cfg.Logger)}
		p.byKey[key] = c
		p.perUp[key.up]++
		go c.run()
	}
	c.mu.Lock()
	c.nextID++
	cs.c, cs.id = c, strconv.FormatUint(c.nextID, 10)
	c.subs[cs.id] = cs
	if c.t != nil {
		c.queueLocked(outMsg{cs: cs})
	}
	c.mu.Unlock()
	c.signal()
	return nil
}

// detach takes a subscription off the connection and, if the upstream knows
// it, tells the upstream to stop it.
func (c *upConn) detach(cs *connSub) {
	c.mu.Lock()
	if !cs.gone {
		cs.gone = true
		delete(c.subs, cs.id)
		if cs.sent && c.t != nil {
			c.queueLocked(outMsg{id: cs.id})
		}
	}
	c.mu.Unlock()
	c.signal()
}

// queueLocked adds m to the outbox, unless the outbox is over its bound:
// then the transport is dropped, and what it would have carried goes out on
// the next one (subscribes are made again from c.subs; stops are moot).
func (c *upConn) queueLocked(m outMsg) {
	if c.overflow {
		return
	}
	c.outBytes += m.size()
	if c.outBytes > maxOutboxBytes {
		c.overflow = true
		return
	}
	c.outbox = append(c.outbox, m)
}

func (c *upConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *upConn) run() {
	defer c.p.runs.done()
	defer c.logs.close()
	cfg := c.p.cfg
	up := c.key.up
	rt := retrier{limit: cfg.ReconnectLimit}
	for {
		t, w, err := c.connect()
		if err == nil {
			upAt := time.Now()
			if rt.redials > 0 {
				c.p.cfg.Logger.Info("upstream connected again", "upstream", up.label, "protocol", string(w.protocol), "redials", rt.redials)
			} else {
				c.p.cfg.Logger.Debug("upstream connected", "upstream", up.label, "protocol", string(w.protocol))
			}
			c.p.cfg.Observer.upstreamConnected(up.label, rt.redials)
			err = c.serve(t, w)
			c.p.cfg.Observer.upstreamDisconnected(up.label, err)
			if err == nil {
				return // closed on purpose
			}
			rt.stayedUp(upAt)
			c.logs.warn(logLost, "upstream connection lost", "upstream", up.label, "err", logText(err))
		} else if c.p.ctx.Err() == nil {
			c.logs.warn(logFailed, "upstream connection failed", "upstream", up.label, "err", logText(err))
		}
		if c.stopping() {
			c.failAll(endShutdown)
			return
		}
		if why, msg, fatal := fatalEnd(err); fatal {
			c.p.cfg.Logger.Warn("upstream refused for good, ending its streams without redialling", "upstream", up.label, "err", logText(err))
			c.p.refused.remember(c.key, refuse(why, msg))
			c.failAll(endWith(why, msg))
			return
		}
		wait, again := rt.next()
		if c.retireIfIdle() {
			return
		}
		if !again {
			c.p.cfg.Logger.Warn("upstream unavailable, ending its streams", "upstream", up.label)
			c.failAll(endUpstreamGone)
			return
		}
		select {
		case <-time.After(wait):
		case <-c.p.shutdown:
		case <-c.p.ctx.Done():
		}
	}
}

// A retrier paces the tries to reach one lost upstream: full jitter over
// an exponentially growing ceiling, until the reconnect limit has passed
// since the outage began.
type retrier struct {
	limit   time.Duration // Config.ReconnectLimit; negative: no retry
	lostAt  time.Time     // when the outage began; zero: none yet
	ceiling time.Duration // of the next wait; zero: backoffMin
	redials int           // tries since the outage began
}

// stayedUp notes a connection that was up from upAt until now: if it was up
// for stableAfter, its loss begins a new outage.
func (r *retrier) stayedUp(upAt time.Time) {
	if time.Since(upAt) >= stableAfter {
		*r = retrier{limit: r.limit}
	}
}

// next counts one more try and returns how long to wait before it, or
// false when the reconnect limit has passed: the upstream is given up.
func (r *retrier) next() (time.Duration, bool) {
	r.redials++
	if r.lostAt.IsZero() {
		r.lostAt = time.Now()
	}
	left := r.limit - time.Since(r.lostAt)
	if r.limit < 0 || left <= 0 {
		return 0, false
	}
	if r.ceiling == 0 {
		r.ceiling = backoffMin
	}
	wait := rand.N(r.ceiling) + time.Millisecond
	r.ceiling = min(2*r.ceiling, backoffMax)
	return min(wait, left), true
}

func (c *upConn) stopping() bool {
	select {
	case <-c.p.shutdown:
		return true
	default:
		return c.p.ctx.Err() != nil
	}
}

// connect dials and completes the protocol handshake: connection_init, then
// connection_ack within the ack timeout. With ProtocolAuto it tries
// graphql-transport-ws, then graphql-ws, and keeps what worked.
func (c *upConn) connect() (Conn, wire, error) {
	tried := c.key.up.protocolsToTry()
	for _, p := range tried {
		t, err := c.handshake(p)
		if err == nil {
			c.key.up.learned.Store(string(p))
			return t, wireFor(p), nil
		}
		if !closeIsProtocolRefusal(err) {
			return nil, wire{}, err
		}
	}
	// Every protocol was refused: the upstream speaks none of them.
	names := make([]string, len(tried))
	for i, p := range tried {
		names[i] = string(p)
	}
	return nil, wire{}, &HandshakeError{StatusCode: http.StatusSwitchingProtocols, Subprotocol: strings.Join(names, " or ")}
}

func (c *upConn) handshake(p Protocol) (Conn, error) {
	cfg := c.p.cfg
	deadline := time.Now().Add(cfg.AckTimeout)
	dctx, cancel := context.WithDeadline(c.p.ctx, deadline)
	defer cancel()
	t, err := c.key.up.dialer.Dial(dctx, &DialRequest{URL: c.key.up.url, Header: c.header.Clone(), Subprotocol: string(p)})
	if err != nil {
		return nil, err
	}
	if t.Subprotocol() != string(p) {
		t.CloseNow()
		return nil, &HandshakeError{StatusCode: http.StatusSwitchingProtocols, Subprotocol: string(p)}
	}
	// The ack timeout closes the transport instead of cancelling a read:
	// one context lives as long as the connection.
	var timedOut atomic.Bool
	timer := time.AfterFunc(time.Until(deadline), func() {
		timedOut.Store(true)
		t.CloseNow()
	})
	defer timer.Stop()
	stop := context.AfterFunc(c.p.ctx, func() { t.CloseNow() }) // Close, hurried
	defer stop()
	init, err := encodeMessage(message{Type: msgConnectionInit, Payload: c.init})
	if err == nil {
		err = t.Write(c.p.ctx, init)
	}
	for err == nil {
		var b []byte
		b, err = t.Read(readContext)
		if err != nil {
			break
		}
		var m message
		m, err = decodeMessage(b)
		if err != nil {
			break
		}
		switch m.Type {
		case msgConnectionAck:
			if !timer.Stop() {
				t.CloseNow()
				return nil, errAckTimeout
			}
			return t, nil
		case msgPing:
			var pong []byte
			if pong, err = encodeMessage(message{Type: msgPong}); err == nil {
				err = t.Write(c.p.ctx, pong)
			}
		case msgLegacyKeepAlive:
		case msgLegacyConnectionError:
			err = errors.New("upstream refused connection_init")
		default:
			err = errors.New("upstream sent " + strconv.Quote(clip(m.Type)) + " before connection_ack")
		}
	}
	t.CloseNow()
	if timedOut.Load() {
		return nil, errAckTimeout
	}
	return nil, err
}

// serve runs one transport until it fails (the error is returned) or the
// connection is closed on purpose (nil).
//
// One goroutine, this one, writes to the transport, one message per turn of
// its loop: between two writes it serves its timers, the idle close and
// shutdown, so that an upstream that keeps it writing (a flood of pings, say)
// cannot hold them off.
func (c *upConn) serve(t Conn, w wire) error {
	cfg := c.p.cfg
	c.mu.Lock()
	c.t = t
	ids := make([]*connSub, 0, len(c.subs))
	for _, cs := range c.subs {
		ids = append(ids, cs)
	}
	slices.SortFunc(ids, func(a, b *connSub) int { return cmpID(a.id, b.id) })
	for _, cs := range ids {
		c.queueLocked(outMsg{cs: cs})
	}
	c.mu.Unlock()

	// Reads never see a context end (see readContext): when the pool must
	// stop at once, closing the transport is what ends them, and what cuts
	// short a polite close that waits on a peer.
	stop := context.AfterFunc(c.p.ctx, func() { t.CloseNow() })
	defer stop()

	var lastSeen atomic.Int64 // unix nanoseconds of the last message
	var kaSeen, pongSeen atomic.Bool
	lastSeen.Store(time.Now().UnixNano())
	readDone := make(chan error, 1)
	go c.read(t, w, &lastSeen, &kaSeen, &pongSeen, readDone)

	// ready is always ready: the loop's select takes it when something
	// waits to be written, so writing competes fairly with everything else.
	ready := make(chan struct{})
	close(ready)
	var (
		idle      *time.Timer
		idleC     <-chan time.Time
		ping      *time.Ticker
		pingC     <-chan time.Time
		pongDue   *time.Timer
		pongDueC  <-chan time.Time
		liveness  = time.NewTimer(cfg.KeepAliveTimeout)
		readEnded bool
	)
	defer liveness.Stop()
	if w.answersPings && cfg.PingInterval > 0 {
		ping = time.NewTicker(cfg.PingInterval)
		pingC = ping.C
		defer ping.Stop()
	}
	drop := func(err error, polite bool) error {
		if polite {
			if w.sendTerminate {
				if b, e := encodeMessage(message{Type: msgLegacyTerminate}); e == nil {
					c.write(t, b)
				}
			}
			t.Close()
		} else {
			t.CloseNow()
		}
		if !readEnded {
			<-readDone
		}
		c.mu.Lock()
		c.t = nil
		clear(c.outbox)
		c.outbox = c.outbox[:0]
		c.outBytes, c.overflow, c.ping, c.pong = 0, false, false, false
		for _, cs := range c.subs {
			cs.sent = false
		}
		c.mu.Unlock()
		return err
	}
	// Pongs are written pongGap apart at most, however many pings come:
	// one pong answers every ping before it, and an upstream that floods
	// pings cannot fill the connection with pongs.
	var (
		nextPong time.Time
		pongWait *time.Timer
	)
	defer func() {
		if pongWait != nil {
			pongWait.Stop()
		}
	}()
	for {
		c.mu.Lock()
		empty := len(c.subs) == 0
		pending := len(c.outbox) > 0 || c.ping
		pong := c.pong
		overflow := c.overflow
		c.mu.Unlock()
		if overflow {
			return drop(errOutboxFull, false)
		}
		pongNow := false
		var pongWaitC <-chan time.Time
		if pong {
			if wait := time.Until(nextPong); wait <= 0 {
				pongNow, pending = true, true
			} else {
				if pongWait == nil {
					pongWait = time.NewTimer(wait)
				} else {
					pongWait.Reset(wait)
				}
				pongWaitC = pongWait.C
			}
		}
		switch {
		case empty && idle == nil:
			idle = time.NewTimer(cfg.IdleTimeout)
			idleC = idle.C
		case !empty && idle != nil:
			idle.Stop()
			idle, idleC = nil, nil
		}
		var writable <-chan struct{}
		if pending {
			writable = ready
		}
		select {
		case <-pongWaitC:
		case <-writable:
			if pongNow {
				nextPong = time.Now().Add(pongGap)
			}
			if err := c.writeNext(t, w, pongNow); err != nil {
				// A write fails when the upstream has closed the
				// connection; the close code, which says whether to
				// redial, is what the reader got.
				t.CloseNow()
				var ce *CloseError
				if rerr := <-readDone; errors.As(rerr, &ce) {
					err = rerr
				}
				readEnded = true
				return drop(err, false)
			}
		case <-c.wake:
		case err := <-readDone:
			readEnded = true
			return drop(err, false)
		case <-pingC:
			if pongDue == nil {
				pongSeen.Store(false)
				c.mu.Lock()
				c.ping = true
				c.mu.Unlock()
				pongDue = time.NewTimer(cfg.PongTimeout)
				pongDueC = pongDue.C
			}
		case <-pongDueC:
			pongDue, pongDueC = nil, nil
			if !pongSeen.Load() {
				return drop(errPongTimeout, false)
			}
		case <-liveness.C:
			if kaSeen.Load() {
				since := time.Since(time.Unix(0, lastSeen.Load()))
				if since >= cfg.KeepAliveTimeout {
					return drop(errKeepAliveTimeout, false)
				}
				liveness.Reset(cfg.KeepAliveTimeout - since)
			} else {
				liveness.Reset(cfg.KeepAliveTimeout)
			}
		case <-idleC:
			idle, idleC = nil, nil
			if c.retireIfIdle() {
				drop(nil, true)
				c.p.cfg.Logger.Debug("upstream connection closed after idle timeout", "upstream", c.key.up.label)
				return nil
			}
		case <-c.p.shutdown:
			drop(nil, true)
			c.failAll(endShutdown)
			return nil
		case <-c.p.ctx.Done():
			drop(nil, false)
			c.failAll(endShutdown)
			return nil
		}
		if pongDue != nil && pongSeen.Load() {
			pongDue.Stop()
			pongDue, pongDueC = nil, nil
		}
	}
}

func cmpID(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// write sends one message, bounded by the write timeout. A write that
// cannot finish in time closes the transport: the upstream is not reading.
func (c *upConn) write(t Conn, b []byte) error {
	ctx, cancel := context.WithTimeout(c.p.ctx, c.p.cfg.WriteTimeout)
	defer cancel()
	return t.Write(ctx, b)
}

// writeNext writes the next message that waits: a pong first, when one is
// due (an upstream may drop a connection whose pong is late), then a ping,
// then the outbox in order.
func (c *upConn) writeNext(t Conn, w wire, pongNow bool) error {
	var out message
	c.mu.Lock()
	switch {
	case c.pong && pongNow:
		c.pong = false
		out = message{Type: msgPong}
	case c.ping:
		c.ping = false
		out = message{Type: msgPing}
	default:
		for out.Type == "" && len(c.outbox) > 0 {
			m := c.outbox[0]
			c.outbox[0] = outMsg{}
			c.outbox = c.outbox[1:]
			c.outBytes -= m.size()
			switch {
			case m.cs == nil:
				out = message{ID: m.id, Type: w.stop}
			case !m.cs.gone && !m.cs.sent:
				m.cs.sent = true
				out = message{ID: m.cs.id, Type: w.subscribe, Payload: m.cs.payload}
			}
		}
		if len(c.outbox) == 0 {
			c.outbox = nil // let its backing array go: the next may be small
		}
	}
	c.mu.Unlock()
	if out.Type == "" {
		return nil // only subscribes of subscriptions already gone
	}
	b, err := encodeMessage(out)
	if err != nil {
		c.p.cfg.Logger.Error("encode upstream message", "err", err)
		return nil
	}
	return c.write(t, b)
}

// read is the reader goroutine of one transport.
func (c *upConn) read(t Conn, w wire, lastSeen *atomic.Int64, kaSeen, pongSeen *atomic.Bool, done chan<- error) {
	for {
		b, err := t.Read(readContext)
		if errors.Is(err, ErrMessageTooLarge) {
			lastSeen.Store(time.Now().UnixNano())
			if err = c.tooLarge(b); err == nil {
				continue
			}
		}
		if err != nil {
			done <- err
			return
		}
		lastSeen.Store(time.Now().UnixNano())
		m, err := scanMessage(b)
		if err != nil {
			c.logs.warn(logBadMessage, "bad upstream message", "upstream", c.key.up.label, "err", logText(err))
			continue
		}
		switch m.typ {
		case w.next:
			if cs := c.lookup(m.id); cs != nil {
				if err := cs.r.publish(m.payload, 0); err != nil {
					c.logs.warn(logBadResult, "bad upstream result", "upstream", c.key.up.label, "operation", cs.op, "err", logText(err))
				}
			}
		case msgError:
			if cs := c.remove(m.id, false); cs != nil {
				cs.r.end(ending{why: probUpstreamError, errors: upstreamErrors(m.payload)})
			}
		case msgComplete:
			if cs := c.remove(m.id, false); cs != nil {
				cs.r.end(endComplete)
			}
		case msgPing:
			c.mu.Lock()
			c.pong = true
			c.mu.Unlock()
			c.signal()
		case msgPong:
			pongSeen.Store(true)
			c.signal()
		case msgLegacyKeepAlive:
			kaSeen.Store(true)
		case msgConnectionAck:
		default:
			c.logs.warn(logUnexpected, "unexpected upstream message", "upstream", c.key.up.label, "type", clip(m.typ))
		}
	}
}

// tooLarge handles a message over the read limit, of which head is the
// start: the subscription it names ends with RESULT_TOO_LARGE and is
// stopped upstream; the connection goes on. A message that names no
// subscription is returned as an error that ends the connection (see
// fatalEnd): whatever it was, it would come back.
func (c *upConn) tooLarge(head []byte) error {
	id, ok := headID(head)
	if !ok {
		return fmt.Errorf("%w, naming no subscription", ErrMessageTooLarge)
	}
	c.logs.warn(logTooLarge, "upstream message over the read limit, ending its subscription", "upstream", c.key.up.label)
	if cs := c.remove(id, true); cs != nil {
		cs.r.end(endTooLarge)
	}
	return nil
}

func (c *upConn) lookup(id []byte) *connSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[string(id)] // no allocation: the compiler indexes with the bytes
}

// remove takes a subscription off the connection, for an end the upstream
// caused; stop says the upstream still runs it and must be told to stop.
func (c *upConn) remove(id []byte, stop bool) *connSub {
	c.mu.Lock()
	cs := c.subs[string(id)]
	if cs != nil {
		cs.gone = true
		delete(c.subs, cs.id)
		if stop && cs.sent && c.t != nil {
			c.queueLocked(outMsg{id: cs.id})
		}
	}
	c.mu.Unlock()
	c.signal() // the idle timer may have to start
	return cs
}

// retireIfIdle takes the connection out of the pool if it has no
// subscription, and reports whether it did.
func (c *upConn) retireIfIdle() bool {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.subs) > 0 {
		return false
	}
	c.retireLocked()
	return true
}

func (c *upConn) retireLocked() {
	if c.p.byKey[c.key] == c {
		delete(c.p.byKey, c.key)
		if c.p.perUp[c.key.up]--; c.p.perUp[c.key.up] == 0 {
			delete(c.p.perUp, c.key.up)
		}
	}
}

// failAll takes the connection out of the pool and ends every subscription
// on it.
func (c *upConn) failAll(end ending) {
	c.p.mu.Lock()
	c.mu.Lock()
	c.retireLocked()
	subs := make([]*connSub, 0, len(c.subs))
	for id, cs := range c.subs {
		cs.gone = true
		subs = append(subs, cs)
		delete(c.subs, id)
	}
	c.mu.Unlock()
	c.p.mu.Unlock()
	for _, cs := range subs {
		cs.r.end(end)
	}
}

// upstreamErrors turns the payload of an upstream error message into a
// GraphQL errors list: graphql-transport-ws sends a list, graphql-ws one
// error object (or, from some servers, an object holding "errors").
func upstreamErrors(payload []byte) json.RawMessage {
	var probe any
	if json.Unmarshal(payload, &probe) == nil {
		switch v := probe.(type) {
		case []any:
			if len(v) > 0 {
				var b bytes.Buffer
				json.Compact(&b, payload)
				return b.Bytes() // a copy: payload is the reader's buffer
			}
		case map[string]any:
			if errs, ok := v["errors"].([]any); ok && len(errs) > 0 {
				if b, err := json.Marshal(errs); err == nil {
					return b
				}
			}
			if _, ok := v["message"].(string); ok {
				if b, err := json.Marshal([]any{v}); err == nil {
					return b
				}
			}
		}
	}
	return json.RawMessage(`[{"message":"upstream error"}]`)
}

// close closes every connection: politely at first, at once when ctx ends.
// It returns when every connection goroutine has ended.
func (p *pool) close(ctx context.Context) error {
	if p.runs.close() {
		close(p.shutdown)
	}
	select {
	case <-p.runs.idle:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel() // every transport closes at once, ending its reads and writes
		<-p.runs.idle
		return ctx.Err()
	}
}
