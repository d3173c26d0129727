package gqlpush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"
)

// DefaultReadLimit is the largest upstream message [WebSocketDialer] reads
// when its ReadLimit is zero.
const DefaultReadLimit = 1 << 20

// A Dialer opens message connections to an upstream GraphQL server. gqlpush
// speaks the GraphQL-over-WebSocket protocol over what it returns: the
// handshake, ping and pong, multiplexing and reconnecting are its own. The
// ordinary Dialer is [WebSocketDialer]; tests may plug in an in-memory one.
type Dialer interface {
	Dial(ctx context.Context, req *DialRequest) (Conn, error)
}

// A DialRequest says where to connect.
type DialRequest struct {
	URL         string      // ws:// or wss://
	Header      http.Header // handshake headers; never nil
	Subprotocol string      // the one subprotocol to ask for
}

// A Conn is one message-oriented connection to an upstream, such as a
// WebSocket. Read and Write are called from different goroutines; Read is
// only called from one goroutine at a time, and so is Write.
type Conn interface {
	// Subprotocol is the subprotocol the server selected, "" for none.
	Subprotocol() string
	// Read returns the next message, which may live in a buffer that the
	// next Read reuses. gqlpush passes a context that is never cancelled,
	// and ends a read by closing the connection.
	Read(ctx context.Context) ([]byte, error)
	// Write sends one text message.
	Write(ctx context.Context, msg []byte) error
	// Close closes the connection with a normal closure, waiting a
	// bounded time for the peer's answer.
	Close() error
	// CloseNow closes the connection at once.
	CloseNow() error
}

// A CloseError is a connection closed by the upstream with a WebSocket close
// code (RFC 6455, section 7.4). Dialers return it from Read so gqlpush can
// tell, say, a refused subprotocol (4406, 1002) from a lost network.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("upstream closed the connection: %d %s", e.Code, e.Reason)
}

// WebSocketDialer dials upstreams with github.com/coder/websocket.
type WebSocketDialer struct {
	// HTTPClient makes the handshake. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// ReadLimit bounds one upstream message, in bytes. Zero means
	// DefaultReadLimit; a message over the limit closes the connection
	// (it is then redialled). Negative means no limit: only for trusted
	// upstreams.
	ReadLimit int64
}

var _ Dialer = (*WebSocketDialer)(nil)

// Dial opens a WebSocket and checks that the server accepted the
// subprotocol: a server that picks none still completes the handshake.
func (d *WebSocketDialer) Dial(ctx context.Context, req *DialRequest) (Conn, error) {
	c, resp, err := websocket.Dial(ctx, req.URL, &websocket.DialOptions{
		HTTPClient:   d.HTTPClient,
		HTTPHeader:   req.Header,
		Subprotocols: []string{req.Subprotocol},
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &HandshakeError{StatusCode: resp.StatusCode}
		}
		return nil, err
	}
	limit := d.ReadLimit
	if limit == 0 {
		limit = DefaultReadLimit
	}
	c.SetReadLimit(limit)
	if c.Subprotocol() != req.Subprotocol {
		c.CloseNow()
		return nil, &HandshakeError{StatusCode: http.StatusSwitchingProtocols, Subprotocol: req.Subprotocol}
	}
	return &wsConn{c: c}, nil
}

// A HandshakeError is an upstream that refused the WebSocket handshake.
type HandshakeError struct {
	StatusCode  int    // the HTTP status the upstream answered
	Subprotocol string // set when the upstream accepted the handshake but not this subprotocol
}

func (e *HandshakeError) Error() string {
	if e.Subprotocol != "" {
		return fmt.Sprintf("upstream does not speak %s", e.Subprotocol)
	}
	return fmt.Sprintf("upstream refused the WebSocket handshake with HTTP %d", e.StatusCode)
}

// shrinkAbove is the capacity past which a connection's read buffer,
// grown by one large message, is given back rather than kept.
const shrinkAbove = 64 << 10

type wsConn struct {
	c    *websocket.Conn
	buf  bytes.Buffer // reused by every Read
	last int          // length of the last message
}

func (w *wsConn) Subprotocol() string { return w.c.Subprotocol() }

func (w *wsConn) Read(ctx context.Context) ([]byte, error) {
	_, r, err := w.c.Reader(ctx)
	if err == nil {
		if w.buf.Cap() > shrinkAbove && w.last < shrinkAbove/4 {
			w.buf = bytes.Buffer{} // one large message grew it; let it go
		}
		w.buf.Reset()
		_, err = w.buf.ReadFrom(r)
		w.last = w.buf.Len()
	}
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &CloseError{Code: int(ce.Code), Reason: ce.Reason}
		}
		return nil, err
	}
	return w.buf.Bytes(), nil
}

func (w *wsConn) Write(ctx context.Context, msg []byte) error {
	return w.c.Write(ctx, websocket.MessageText, msg)
}

func (w *wsConn) Close() error    { return w.c.Close(websocket.StatusNormalClosure, "") }
func (w *wsConn) CloseNow() error { return w.c.CloseNow() }

// closeIsProtocolRefusal reports a close that means "wrong subprotocol":
// graphql-ws closes with 4406, subscriptions-transport-ws with 1002.
func closeIsProtocolRefusal(err error) bool {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code == 4406 || ce.Code == 1002
	}
	var he *HandshakeError
	return errors.As(err, &he) && (he.Subprotocol != "" || he.StatusCode == http.StatusBadRequest)
}
