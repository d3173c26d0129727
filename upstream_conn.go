package gqlpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff between redials of a lost upstream: full jitter over an
// exponentially growing ceiling.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
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
)

// A pool holds the upstream connections of a handler: one per upstream and
// forwarded identity, each multiplexing every subscription that needs it.
type pool struct {
	cfg *settings
	log *slog.Logger
	obs *Observer

	ctx      context.Context // cancelled to stop everything at once
	cancel   context.CancelFunc
	shutdown chan struct{} // closed to close connections politely

	mu     sync.Mutex
	conns  map[connKey]*upConn
	closed bool
	live   int           // upConn.run goroutines not yet ended
	idle   chan struct{} // closed when closed and live is 0
}

type connKey struct {
	up       *upstream
	identity string // what was forwarded: different values never share a connection
}

func newPool(cfg *settings, log *slog.Logger, obs *Observer) *pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &pool{
		cfg:      cfg,
		log:      log,
		obs:      obs,
		ctx:      ctx,
		cancel:   cancel,
		shutdown: make(chan struct{}),
		conns:    make(map[connKey]*upConn),
		idle:     make(chan struct{}),
	}
}

// connSub is a shared subscription's place on one connection.
type connSub struct {
	sh   *shared
	id   string
	sent bool // the subscribe went out on the current transport
	gone bool // no longer on the connection
}

type outKind uint8

const (
	outSubscribe outKind = iota
	outStop
	outPing
	outPong
)

type outMsg struct {
	kind outKind
	cs   *connSub
	id   string
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

	mu     sync.Mutex
	dead   bool // out of the pool; takes no more subscriptions
	subs   map[string]*connSub
	nextID uint64
	outbox []outMsg
	t      Conn // the current transport; nil while down
}

// attach puts sh on the connection for its key, starting one if needed.
func (p *pool) attach(key connKey, header http.Header, init json.RawMessage, sh *shared) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errClosed
	}
	c := p.conns[key]
	if c == nil {
		c = &upConn{p: p, key: key, header: header, init: init, wake: make(chan struct{}, 1), subs: make(map[string]*connSub)}
		p.conns[key] = c
		p.live++
		go c.run()
	}
	c.mu.Lock()
	c.nextID++
	cs := &connSub{sh: sh, id: strconv.FormatUint(c.nextID, 10)}
	c.subs[cs.id] = cs
	if c.t != nil {
		c.outbox = append(c.outbox, outMsg{kind: outSubscribe, cs: cs})
	}
	c.mu.Unlock()
	sh.conn, sh.cs = c, cs
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
			c.outbox = append(c.outbox, outMsg{kind: outStop, id: cs.id})
		}
	}
	c.mu.Unlock()
	c.signal()
}

func (c *upConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *upConn) enqueue(m outMsg) {
	c.mu.Lock()
	c.outbox = append(c.outbox, m)
	c.mu.Unlock()
	c.signal()
}

func (c *upConn) run() {
	defer c.p.ended()
	cfg := c.p.cfg
	up := c.key.up
	var lostAt time.Time
	ceiling := backoffMin
	redials := 0
	for {
		t, w, err := c.connect()
		if err == nil {
			c.p.log.Debug("upstream connected", "upstream", up.label, "protocol", string(w.protocol))
			c.p.obs.upstreamConnected(up.label, redials)
			lostAt, ceiling, redials = time.Time{}, backoffMin, 0
			err = c.serve(t, w)
			c.p.obs.upstreamDisconnected(up.label, err)
			if err == nil {
				return // closed on purpose
			}
			c.p.log.Warn("upstream connection lost", "upstream", up.label, "err", scrubURLs(err.Error()))
		} else if c.p.ctx.Err() == nil {
			c.p.log.Warn("upstream connection failed", "upstream", up.label, "err", scrubURLs(err.Error()))
		}
		redials++
		if lostAt.IsZero() {
			lostAt = time.Now()
		}
		if c.stopping() {
			c.failAll(endShutdown)
			return
		}
		if c.retireIfIdle() {
			return
		}
		left := cfg.reconnectLimit - time.Since(lostAt)
		if cfg.reconnectLimit < 0 || left <= 0 {
			c.p.log.Warn("upstream unavailable, ending its streams", "upstream", up.label)
			c.failAll(endUnavailable)
			return
		}
		wait := rand.N(ceiling) + time.Millisecond
		ceiling = min(2*ceiling, backoffMax)
		select {
		case <-time.After(min(wait, left)):
		case <-c.p.shutdown:
		case <-c.p.ctx.Done():
		}
	}
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
	var err error
	for _, p := range c.key.up.protocolsToTry() {
		var t Conn
		t, err = c.handshake(p)
		if err == nil {
			c.key.up.learned.Store(string(p))
			return t, wireFor(p), nil
		}
		if !closeIsProtocolRefusal(err) {
			return nil, wire{}, err
		}
	}
	return nil, wire{}, err
}

func (c *upConn) handshake(p Protocol) (Conn, error) {
	cfg := c.p.cfg
	deadline := time.Now().Add(cfg.ackTimeout)
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
			err = errors.New("upstream sent " + strconv.Quote(m.Type) + " before connection_ack")
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
		c.outbox = append(c.outbox, outMsg{kind: outSubscribe, cs: cs})
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

	var (
		idle      *time.Timer
		idleC     <-chan time.Time
		ping      *time.Ticker
		pingC     <-chan time.Time
		pongDue   *time.Timer
		pongDueC  <-chan time.Time
		liveness  = time.NewTimer(cfg.keepAliveTimeout)
		readEnded bool
	)
	defer liveness.Stop()
	if w.answersPings && cfg.pingInterval > 0 {
		ping = time.NewTicker(cfg.pingInterval)
		pingC = ping.C
		defer ping.Stop()
	}
	finish := func(err error, polite bool) error {
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
		c.outbox = c.outbox[:0]
		for _, cs := range c.subs {
			cs.sent = false
		}
		c.mu.Unlock()
		return err
	}
	for {
		if err := c.flush(t, w); err != nil {
			return finish(err, false)
		}
		c.mu.Lock()
		empty := len(c.subs) == 0
		c.mu.Unlock()
		switch {
		case empty && idle == nil:
			idle = time.NewTimer(cfg.idleTimeout)
			idleC = idle.C
		case !empty && idle != nil:
			idle.Stop()
			idle, idleC = nil, nil
		}
		select {
		case <-c.wake:
		case err := <-readDone:
			readEnded = true
			return finish(err, false)
		case <-pingC:
			if pongDue == nil {
				pongSeen.Store(false)
				c.enqueue(outMsg{kind: outPing})
				pongDue = time.NewTimer(cfg.pongTimeout)
				pongDueC = pongDue.C
			}
		case <-pongDueC:
			pongDue, pongDueC = nil, nil
			if !pongSeen.Load() {
				return finish(errPongTimeout, false)
			}
		case <-liveness.C:
			if kaSeen.Load() {
				since := time.Since(time.Unix(0, lastSeen.Load()))
				if since >= cfg.keepAliveTimeout {
					return finish(errKeepAliveTimeout, false)
				}
				liveness.Reset(cfg.keepAliveTimeout - since)
			} else {
				liveness.Reset(cfg.keepAliveTimeout)
			}
		case <-idleC:
			idle, idleC = nil, nil
			if c.retireIfIdle() {
				finish(nil, true)
				c.p.log.Debug("upstream connection closed after idle timeout", "upstream", c.key.up.label)
				return nil
			}
		case <-c.p.shutdown:
			finish(nil, true)
			c.failAll(endShutdown)
			return nil
		case <-c.p.ctx.Done():
			finish(nil, false)
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
	ctx, cancel := context.WithTimeout(c.p.ctx, c.p.cfg.writeTimeout)
	defer cancel()
	return t.Write(ctx, b)
}

// flush writes the outbox in order.
func (c *upConn) flush(t Conn, w wire) error {
	for {
		c.mu.Lock()
		if len(c.outbox) == 0 {
			c.outbox = c.outbox[:0]
			c.mu.Unlock()
			return nil
		}
		m := c.outbox[0]
		c.outbox = c.outbox[1:]
		var out message
		switch m.kind {
		case outSubscribe:
			if m.cs.gone || m.cs.sent {
				c.mu.Unlock()
				continue
			}
			m.cs.sent = true
			out = message{ID: m.cs.id, Type: w.subscribe, Payload: m.cs.sh.payload}
		case outStop:
			out = message{ID: m.id, Type: w.stop}
		case outPing:
			out = message{Type: msgPing}
		case outPong:
			out = message{Type: msgPong}
		}
		c.mu.Unlock()
		b, err := encodeMessage(out)
		if err != nil {
			c.p.log.Error("encode upstream message", "err", err)
			continue
		}
		if err := c.write(t, b); err != nil {
			return err
		}
	}
}

// read is the reader goroutine of one transport.
func (c *upConn) read(t Conn, w wire, lastSeen *atomic.Int64, kaSeen, pongSeen *atomic.Bool, done chan<- error) {
	for {
		b, err := t.Read(readContext)
		if err != nil {
			done <- err
			return
		}
		lastSeen.Store(time.Now().UnixNano())
		m, err := scanMessage(b)
		if err != nil {
			c.p.log.Warn("bad upstream message", "upstream", c.key.up.label, "err", err)
			continue
		}
		switch m.typ {
		case w.next:
			if cs := c.lookup(m.id); cs != nil {
				cs.sh.publish(m.payload)
			}
		case msgError:
			if cs := c.remove(m.id); cs != nil {
				cs.sh.finish(endReason{kind: endKindUpstreamError, errors: upstreamErrors(m.payload)})
			}
		case msgComplete:
			if cs := c.remove(m.id); cs != nil {
				cs.sh.finish(endComplete)
			}
		case msgPing:
			c.enqueue(outMsg{kind: outPong})
		case msgPong:
			pongSeen.Store(true)
			c.signal()
		case msgLegacyKeepAlive:
			kaSeen.Store(true)
		case msgConnectionAck:
		default:
			c.p.log.Warn("unexpected upstream message", "upstream", c.key.up.label, "type", m.typ)
		}
	}
}

func (c *upConn) lookup(id []byte) *connSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[string(id)] // no allocation: the compiler indexes with the bytes
}

// remove takes off a subscription the upstream ended.
func (c *upConn) remove(id []byte) *connSub {
	c.mu.Lock()
	cs := c.subs[string(id)]
	if cs != nil {
		cs.gone = true
		delete(c.subs, cs.id)
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
	c.dead = true
	if c.p.conns[c.key] == c {
		delete(c.p.conns, c.key)
	}
}

// failAll takes the connection out of the pool and ends every subscription
// on it.
func (c *upConn) failAll(end endReason) {
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
		cs.sh.finish(end)
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

// ended records the end of one upConn.run.
func (p *pool) ended() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live--
	if p.closed && p.live == 0 {
		close(p.idle)
	}
}

// close closes every connection: politely at first, at once when ctx ends.
// It returns when every connection goroutine has ended.
func (p *pool) close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.shutdown)
		if p.live == 0 {
			close(p.idle)
		}
	}
	p.mu.Unlock()
	select {
	case <-p.idle:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel() // every transport closes at once, ending its reads and writes
		<-p.idle
		return ctx.Err()
	}
}

// count reports the number of open upstream connections.
func (p *pool) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
