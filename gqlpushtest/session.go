package gqlpushtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	graphql "github.com/graph-gophers/graphql-go"
	qerrors "github.com/graph-gophers/graphql-go/errors"
)

// A transport carries the messages of one connection: a WebSocket, or one
// end of an in-memory pipe.
type transport interface {
	read(ctx context.Context) ([]byte, error)
	write(ctx context.Context, b []byte) error
	close(code int, reason string)
	closeNow()
}

type wsTransport struct{ c *websocket.Conn }

func (t *wsTransport) read(ctx context.Context) ([]byte, error) {
	_, b, err := t.c.Read(ctx)
	return b, err
}

func (t *wsTransport) write(ctx context.Context, b []byte) error {
	return t.c.Write(ctx, websocket.MessageText, b)
}

func (t *wsTransport) close(code int, reason string) {
	t.c.Close(websocket.StatusCode(code), reason)
}

func (t *wsTransport) closeNow() { t.c.CloseNow() }

type wireMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// A session is one connection being served.
type session struct {
	s      *Server
	id     int
	t      transport
	proto  string
	legacy bool
	h      Hostile // as it was when the connection was accepted

	started bool // a subscription has run; only serve touches it

	ctx    context.Context // ends with the connection
	cancel context.CancelFunc

	mu   sync.Mutex
	subs map[string]*operation
}

// An operation is one running subscription of a session.
type operation struct {
	cancel        context.CancelFunc
	clientStopped bool // ended by the client (or the connection): send nothing

	// closeAfter: close the connection once this operation has sent a
	// result (Hostile.CloseAfterResult). Set before the operation's
	// goroutine starts; then only that goroutine touches it.
	closeAfter bool
}

// serve runs a connection: connection_init within the init timeout, then
// messages until the connection ends. h is how it misbehaves.
func (s *Server) serve(t transport, proto string, header http.Header, h Hostile) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	ss := &session{s: s, t: t, proto: proto, legacy: proto == ProtocolLegacyWS, h: h, ctx: ctx, cancel: cancel, subs: map[string]*operation{}}
	s.mu.Lock()
	s.nextConn++
	ss.id = s.nextConn
	s.conns[ss.id] = ss
	down := s.down
	s.mu.Unlock()
	if down {
		t.closeNow()
	}
	defer func() {
		ss.stopAll()
		s.mu.Lock()
		delete(s.conns, ss.id)
		s.changedLocked()
		s.mu.Unlock()
		t.closeNow()
	}()

	initDone := make(chan struct{})
	timer := time.AfterFunc(s.opts.InitTimeout, func() {
		select {
		case <-initDone:
		default:
			t.close(4408, "Connection initialisation timeout")
		}
	})
	defer timer.Stop()

	b, err := t.read(ctx)
	if err != nil {
		return
	}
	m, err := decode(b)
	switch {
	case err == nil && m.Type == "connection_init":
	case err == nil && m.Type == "subscribe":
		// As graphql-ws does.
		t.close(4401, "Unauthorized")
		return
	default:
		t.close(4400, "expected connection_init")
		return
	}
	close(initDone)
	s.record(ss.id, m)
	s.mu.Lock()
	s.infos = append(s.infos, ConnInfo{ID: ss.id, Subprotocol: proto, Header: header, InitPayload: m.Payload})
	s.changedLocked()
	s.mu.Unlock()
	if s.opts.AcceptInit != nil && !s.opts.AcceptInit(m.Payload, header) {
		if ss.legacy {
			ss.send(wireMessage{Type: "connection_error", Payload: json.RawMessage(`{"message":"Forbidden"}`)})
		}
		t.close(4403, "Forbidden")
		return
	}
	if !ss.send(wireMessage{Type: "connection_ack"}) {
		return
	}
	if !ss.sendJunk() {
		return
	}
	if h.CloseCode != 0 && !h.CloseAfterResult {
		t.close(h.CloseCode, h.CloseReason)
		return
	}
	if ss.legacy && s.opts.KeepAlive > 0 {
		ss.send(wireMessage{Type: "ka"})
		if s.add() {
			go ss.keepAlive()
		}
	}
	if ss.pingFlooding() && s.add() {
		go ss.pingFlood()
	}
	for {
		if h.ReadDelay > 0 && !sleep(ctx, h.ReadDelay) {
			return
		}
		b, err := t.read(ctx)
		if err != nil {
			return
		}
		m, err := decode(b)
		if err != nil {
			t.close(4400, "invalid message")
			return
		}
		// A gateway answers every ping of a flood: recording each pong
		// would grow the record, and wake every waiter, without bound.
		if !(m.Type == "pong" && ss.pingFlooding()) {
			s.record(ss.id, m)
		}
		switch m.Type {
		case "ping":
			if !ss.legacy {
				ss.send(wireMessage{Type: "pong"})
			}
		case "pong":
		case "subscribe", "start":
			if (m.Type == "start") != ss.legacy {
				t.close(4400, "unexpected "+m.Type)
				return
			}
			if !ss.start(m) {
				return
			}
		case "complete", "stop":
			ss.stop(m.ID)
		case "connection_terminate":
			t.close(1000, "")
			return
		default:
			t.close(4400, "unexpected "+m.Type)
			return
		}
	}
}

func decode(b []byte) (wireMessage, error) {
	var m wireMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.Type == "" {
		return m, errors.New("no type")
	}
	return m, nil
}

func (s *Server) record(conn int, m wireMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, Message{Conn: conn, Type: m.Type, ID: m.ID, Payload: m.Payload})
	s.changedLocked()
}

func (ss *session) send(m wireMessage) bool {
	b, err := json.Marshal(m)
	if err != nil {
		return false
	}
	return ss.write(b)
}

// write sends an encoded message, unless the server is silent. Every write of
// a connection goes through here, from several goroutines: both transports
// take whole messages concurrently (coder/websocket locks its message writer;
// the pipe sends each message on a channel), so messages never interleave.
// It reports false once the connection is broken.
func (ss *session) write(b []byte) bool {
	if ss.s.isSilent() {
		return true
	}
	// ss.ctx, not a subscription's: coder/websocket closes the connection
	// when the context of a write ends, and so does the pipe.
	return ss.t.write(ss.ctx, b) == nil
}

func (ss *session) keepAlive() {
	defer ss.s.wg.Done()
	t := time.NewTicker(ss.s.opts.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ss.ctx.Done():
			return
		case <-t.C:
			if !ss.send(wireMessage{Type: "ka"}) {
				return
			}
		}
	}
}

type subscribeRequest struct {
	Query         string         `json:"query"`
	Variables     map[string]any `json:"variables"`
	OperationName string         `json:"operationName"`
}

// start begins a subscription. A request that does not validate gets an
// error message; anything else runs until it ends, is stopped, or the
// connection closes. It reports false when the connection must close.
func (ss *session) start(m wireMessage) bool {
	var req subscribeRequest
	if m.ID == "" || json.Unmarshal(m.Payload, &req) != nil {
		ss.t.close(4400, "invalid subscribe")
		return false
	}
	ss.mu.Lock()
	_, dup := ss.subs[m.ID]
	ss.mu.Unlock()
	if dup {
		ss.t.close(4409, "Subscriber for "+m.ID+" already exists")
		return false
	}
	if errs := ss.s.schema.ValidateWithVariables(req.Query, req.Variables); len(errs) > 0 {
		ss.sendErrors(m.ID, errs)
		return true
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	// Under a result flood the resolver does not run: the flood stands in
	// for its results.
	var results <-chan any
	if ss.h.ResultFlood <= 0 {
		var err error
		results, err = ss.s.schema.Subscribe(ctx, req.Query, req.OperationName, req.Variables)
		if err != nil {
			cancel()
			ss.sendErrors(m.ID, []*qerrors.QueryError{{Message: err.Error()}})
			return true
		}
	}
	op := &operation{cancel: cancel, closeAfter: !ss.started && ss.h.CloseCode != 0 && ss.h.CloseAfterResult}
	ss.started = true
	ss.mu.Lock()
	ss.subs[m.ID] = op
	ss.mu.Unlock()
	ss.s.mu.Lock()
	ss.s.live++
	ss.s.changedLocked()
	ss.s.mu.Unlock()
	if !ss.s.add() {
		cancel()
		ss.s.mu.Lock()
		ss.s.live--
		ss.s.mu.Unlock()
		return false
	}
	if results == nil {
		go ss.floodResults(m.ID, op, ctx)
	} else {
		go ss.forward(m.ID, op, ctx, results)
	}
	return true
}

func (ss *session) sendErrors(id string, errs []*qerrors.QueryError) {
	payload, _ := json.Marshal(errs)
	if ss.legacy {
		// subscriptions-transport-ws sends one error object.
		payload, _ = json.Marshal(errs[0])
	}
	ss.send(wireMessage{ID: id, Type: "error", Payload: payload})
}

// forward sends the results of one subscription, then complete unless the
// client stopped it.
func (ss *session) forward(id string, op *operation, ctx context.Context, results <-chan any) {
	defer ss.s.wg.Done()
	first := true
	for r := range results {
		resp, ok := r.(*graphql.Response)
		if !ok || ctx.Err() != nil {
			continue
		}
		payload, err := json.Marshal(resp)
		if err != nil {
			continue
		}
		if first && ss.h.OversizedResult > 0 {
			// It stands in for this result, which is lost, so that
			// what follows is the resolver's as usual.
			payload = paddedResult("padding", ss.h.OversizedResult)
		}
		first = false
		ss.send(wireMessage{ID: id, Type: ss.nextType(), Payload: payload})
		ss.resultSent(op)
	}
	ss.finish(id, op)
}

// nextType is the type of a result message in the connection's protocol.
func (ss *session) nextType() string {
	if ss.legacy {
		return "data"
	}
	return "next"
}

// finish ends one subscription once its results are over: complete, unless
// the client stopped it or the connection is closing.
func (ss *session) finish(id string, op *operation) {
	ss.mu.Lock()
	stopped := op.clientStopped
	if ss.subs[id] == op {
		delete(ss.subs, id)
	}
	ss.mu.Unlock()
	op.cancel()
	ss.s.mu.Lock()
	ss.s.live--
	ss.s.changedLocked()
	ss.s.mu.Unlock()
	if !stopped && ss.ctx.Err() == nil {
		ss.send(wireMessage{ID: id, Type: "complete"})
	}
}

// stop ends a subscription the client stopped.
func (ss *session) stop(id string) {
	ss.mu.Lock()
	op := ss.subs[id]
	if op != nil {
		op.clientStopped = true
		delete(ss.subs, id)
	}
	ss.mu.Unlock()
	if op != nil {
		op.cancel()
	}
}

// completeAll ends every subscription from the server side: each gets
// complete.
func (ss *session) completeAll() { ss.endAll(false) }

// stopAll ends every subscription as the connection closes: none gets
// anything more.
func (ss *session) stopAll() { ss.endAll(true) }

func (ss *session) endAll(silently bool) {
	ss.mu.Lock()
	ops := make([]*operation, 0, len(ss.subs))
	for id, op := range ss.subs {
		ops = append(ops, op)
		if silently {
			op.clientStopped = true
			delete(ss.subs, id)
		}
	}
	ss.mu.Unlock()
	for _, op := range ops {
		op.cancel()
	}
}
