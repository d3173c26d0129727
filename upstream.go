package gqlpush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

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
	// HTTPClient makes the handshake. Nil means http.DefaultClient. Its
	// redirect policy is not used: the dialer never follows a redirect
	// (see Dial).
	HTTPClient *http.Client
	// ReadLimit bounds one upstream message, in bytes. Zero means
	// DefaultReadLimit. A larger message is skipped, not held: gqlpush
	// ends the one subscription it belongs to with a RESULT_TOO_LARGE
	// error (see [ErrMessageTooLarge]). Negative means no limit: only for
	// trusted upstreams.
	ReadLimit int64
}

var _ Dialer = (*WebSocketDialer)(nil)

// Dial opens a WebSocket and checks that the server accepted the
// subprotocol: a server that picks none still completes the handshake.
//
// Any answer but 101 Switching Protocols is a [HandshakeError]: a redirect
// is never followed, so the handshake's headers (forwarded credentials
// among them) and the URL's query never reach another host, and wss is
// never downgraded.
func (d *WebSocketDialer) Dial(ctx context.Context, req *DialRequest) (Conn, error) {
	client := http.DefaultClient
	if d.HTTPClient != nil {
		client = d.HTTPClient
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c, resp, err := websocket.Dial(ctx, req.URL, &websocket.DialOptions{
		HTTPClient:   &noRedirect,
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
	// The limit is applied by wsConn.Read, which skips an oversized
	// message instead of closing the connection as coder/websocket would.
	c.SetReadLimit(-1)
	if c.Subprotocol() != req.Subprotocol {
		c.CloseNow()
		return nil, &HandshakeError{StatusCode: http.StatusSwitchingProtocols, Subprotocol: req.Subprotocol}
	}
	return &wsConn{c: c, limit: limit}, nil
}

// ErrMessageTooLarge is returned by a [Conn]'s Read for a message over its
// read limit, together with the message's first bytes (at least the first
// few hundred); the rest of the message is skipped and the connection goes
// on. gqlpush finds which subscription the message belongs to from those
// first bytes, ends it with a RESULT_TOO_LARGE error frame and stops it
// upstream; one that names no subscription ends the connection's
// subscriptions alike. It never redials for it: the same message would come
// back.
var ErrMessageTooLarge = errors.New("gqlpush: upstream message over the read limit")

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
	c     *websocket.Conn
	limit int64            // the read limit; negative: none
	lr    io.LimitedReader // reused by every Read
	buf   bytes.Buffer     // reused by every Read
	last  int              // length of the last message
}

func (w *wsConn) Subprotocol() string { return w.c.Subprotocol() }

func (w *wsConn) Read(ctx context.Context) ([]byte, error) {
	_, r, err := w.c.Reader(ctx)
	if err == nil {
		if w.buf.Cap() > shrinkAbove && w.last < shrinkAbove/4 {
			w.buf = bytes.Buffer{} // one large message grew it; let it go
		}
		w.buf.Reset()
		if w.limit < 0 {
			_, err = w.buf.ReadFrom(r)
		} else {
			w.lr = io.LimitedReader{R: r, N: w.limit + 1} // reused: no allocation per message
			_, err = w.buf.ReadFrom(&w.lr)
			w.lr.R = nil
			if err == nil && int64(w.buf.Len()) > w.limit {
				// Skip the rest: reading it costs the upstream's
				// bandwidth, not memory.
				if _, err = io.Copy(io.Discard, r); err == nil {
					w.last = w.buf.Len()
					return w.buf.Bytes()[:w.limit], ErrMessageTooLarge
				}
			}
		}
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

// fatalCloseCodes are the close codes after which the graphql-ws reference
// client does not reconnect: the upstream refused what it was sent (4400
// bad request, 4401 unauthorized, 4406 subprotocol not acceptable, 4409
// subscriber already exists, 4429 too many initialisation requests), failed
// (4500), or the client could not go on (4004 bad response, 4005 internal
// client error). Redialling would get the same answer; every other code
// (4403 and 1011 among them) is redialled at the backoff's pace.
var fatalCloseCodes = []int{4400, 4401, 4406, 4409, 4429, 4500, 4004, 4005}

// fatalEnd reports whether a lost or refused connection must not be
// redialled; if so, why, as the problem its subscriptions end with and the
// message they are told.
func fatalEnd(err error) (problem, string, bool) {
	var ce *CloseError
	var he *HandshakeError
	switch {
	case errors.As(err, &ce) && slices.Contains(fatalCloseCodes, ce.Code):
		return probUpstreamGone, "upstream closed the connection with code " + strconv.Itoa(ce.Code), true
	case errors.As(err, &he) && he.Subprotocol != "":
		return probUpstreamGone, "upstream does not speak " + he.Subprotocol, true
	case errors.Is(err, ErrMessageTooLarge):
		return probResultTooLarge, problems[probResultTooLarge].message, true
	}
	return 0, "", false
}
