package gqlpushtest

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// A Hostile says how a [Server] misbehaves, for tests of what a gateway
// survives. Each field is one behaviour; the zero value behaves. Fields
// combine: after connection_ack the server sends the Junk, then closes (for
// CloseCode without CloseAfterResult), then starts the PingFlood and serves.
//
// While the server is silent ([Server.SetSilent]) Junk is dropped, like any
// other message, and floods pause, to resume when it speaks again.
type Hostile struct {
	// PingFlood: from connection_ack on, the server sends
	// graphql-transport-ws {"type":"ping"} messages back to back, as fast
	// as the connection takes them, until the connection closes; it keeps
	// reading and serving subscriptions meanwhile. graphql-ws (legacy)
	// connections have no ping and ignore it. Pongs received on a flooded
	// connection are not recorded in [Server.Received]: there is one per
	// ping.
	PingFlood bool

	// CloseCode: the server closes each connection with this WebSocket
	// close code (and CloseReason) right after it sends connection_ack —
	// or, with CloseAfterResult, right after it has sent the first result
	// of the connection's first subscription (the first that ran, past
	// validation). Zero: never. Over a WebSocket the code must be one a
	// close frame may carry (RFC 6455, section 7.4): for any other
	// (1005, 1006, 1015…) coder/websocket sends no close frame and just
	// drops the connection, which its client sees as 1006.
	CloseCode        int
	CloseReason      string
	CloseAfterResult bool

	// OversizedResult, when positive: the first result of every
	// subscription is a "next" message ("data" in graphql-ws, a next event
	// over SSE) whose payload is a valid GraphQL result padded to at least
	// this many bytes, {"data":{"padding":"xxxx…"}}, for gateways' read
	// limits. It stands in for the resolver's first result, which is lost;
	// the later results are the resolver's.
	OversizedResult int

	// ResultFlood, when positive: every subscription gets, instead of its
	// resolver's results (the resolver does not run), results of at least
	// this many bytes, {"data":{"flood":"xxxx…"}}, back to back as fast as
	// the connection takes them — or ResultInterval apart when that is
	// positive — until it is stopped or the connection closes. A result
	// being written when the subscription is stopped is still written,
	// once the client reads enough to make room for it. With
	// OversizedResult, the first is the oversized one.
	ResultFlood    int
	ResultInterval time.Duration

	// Junk, when positive: right after connection_ack, the server sends
	// this many messages that are not part of either protocol: with
	// JunkInvalid, text frames that are not JSON; otherwise JSON objects of
	// an unknown type, {"type":"junk-1","payload":"xxxx…"}. Each is of
	// about JunkBytes bytes; zero means 64. Then it serves as usual.
	Junk        int
	JunkBytes   int
	JunkInvalid bool

	// Redirect: the WebSocket handshake, and any HTTP request (an SSE
	// stream, a query), is answered with 302 Found and this Location
	// instead of being accepted; the server counts it in
	// [Server.Handshakes] and serves nothing. The in-memory dialer ignores
	// it.
	Redirect string

	// ReadDelay: the server waits this long before reading each message
	// after connection_init: a slow reader, whose connection's buffers fill
	// up so that the gateway's writes block. What it has to send, it still
	// sends meanwhile.
	ReadDelay time.Duration
}

// defaultJunkBytes is the size of a junk message when Hostile.JunkBytes is
// zero: enough to look like a message, too small to test a read limit.
const defaultJunkBytes = 64

// SetHostile changes how the server misbehaves, for connections accepted
// from now on: connections already open keep what they had, as a test that
// turns an upstream hostile mid-way expects of the next dial.
func (s *Server) SetHostile(h Hostile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostile = h
}

// Handshakes reports how many connections were attempted: requests to the
// HTTP handler — WebSocket handshakes and SSE requests, accepted, redirected
// or refused while down, and queries too — plus in-memory dials. Tests use
// it to check that a gateway redials at its backoff's pace, not in a storm.
func (s *Server) Handshakes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handshakes
}

// handshake counts a connection attempt and says how to treat it: how the
// connection is to misbehave if accepted, and whether the server is down.
func (s *Server) handshake() (h Hostile, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handshakes++
	return s.hostile, s.down
}

// sendJunk sends Hostile.Junk messages; it reports false once the
// connection is broken.
func (ss *session) sendJunk() bool {
	size := ss.h.JunkBytes
	if size <= 0 {
		size = defaultJunkBytes
	}
	for i := 1; i <= ss.h.Junk; i++ {
		var b []byte
		if ss.h.JunkInvalid {
			b = padded("junk "+strconv.Itoa(i)+" is not JSON: ", "", size)
		} else {
			b = padded(`{"type":"junk-`+strconv.Itoa(i)+`","payload":"`, `"}`, size)
		}
		if !ss.write(b) {
			return false
		}
	}
	return true
}

// pingFlooding reports whether the connection floods pings: only
// graphql-transport-ws has them.
func (ss *session) pingFlooding() bool { return ss.h.PingFlood && !ss.legacy }

// pingFlood sends pings until the connection breaks. Each write blocks until
// the connection takes it, so a slow reader slows the flood down instead of
// making it pile up in memory.
func (ss *session) pingFlood() {
	defer ss.s.wg.Done()
	ping := []byte(`{"type":"ping"}`)
	for ss.speaking(ss.ctx) && ss.write(ping) {
	}
}

// floodResults stands in for forward under Hostile.ResultFlood: it sends
// the same result, encoded once, until the subscription is stopped or the
// connection breaks, then ends the subscription as forward does.
func (ss *session) floodResults(id string, op *operation, ctx context.Context) {
	defer ss.s.wg.Done()
	flood, _ := json.Marshal(wireMessage{ID: id, Type: ss.nextType(), Payload: paddedResult("flood", ss.h.ResultFlood)})
	b := flood
	if ss.h.OversizedResult > 0 {
		b, _ = json.Marshal(wireMessage{ID: id, Type: ss.nextType(), Payload: paddedResult("padding", ss.h.OversizedResult)})
	}
	for ss.speaking(ctx) && ss.write(b) {
		ss.resultSent(op)
		b = flood
		if !sleep(ctx, ss.h.ResultInterval) {
			break
		}
	}
	ss.finish(id, op)
}

// speaking waits while the server is silent, so that a flood pauses instead
// of spinning; it reports whether ctx is still live.
func (ss *session) speaking(ctx context.Context) bool {
	return ss.s.wait(ctx, func() bool { return !ss.s.silent }) == nil && ctx.Err() == nil
}

// resultSent closes the connection after the first result of its first
// subscription, when Hostile.CloseAfterResult says so.
func (ss *session) resultSent(op *operation) {
	if op.closeAfter {
		op.closeAfter = false
		ss.t.close(ss.h.CloseCode, ss.h.CloseReason)
	}
}

// sleep waits d, or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// paddedResult is a GraphQL result of at least n bytes: one string field
// of x's.
func paddedResult(field string, n int) json.RawMessage {
	return padded(`{"data":{"`+field+`":"`, `"}}`, n)
}

// padded returns prefix and suffix with x's between, n bytes in all if they
// leave room.
func padded(prefix, suffix string, n int) []byte {
	pad := max(n-len(prefix)-len(suffix), 0)
	return []byte(prefix + strings.Repeat("x", pad) + suffix)
}
