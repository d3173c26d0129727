package gqlpushtest

import (
	"context"
	"net/http"
	"slices"
	"sync"

	"github.com/gqlpush/gqlpush"
)

// Dialer returns a [gqlpush.Dialer] that connects to the server in memory:
// no listener, no network, so it also works inside a testing/synctest
// bubble. The URL of the dial request is ignored, and so is
// Hostile.Redirect: there is no handshake to answer.
func (s *Server) Dialer() gqlpush.Dialer { return memDialer{s} }

type memDialer struct{ s *Server }

func (d memDialer) Dial(ctx context.Context, req *gqlpush.DialRequest) (gqlpush.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, down := d.s.handshake()
	if down {
		return nil, errDown
	}
	if !slices.Contains(d.s.wsProto, req.Subprotocol) {
		return nil, &gqlpush.HandshakeError{StatusCode: http.StatusSwitchingProtocols, Subprotocol: req.Subprotocol}
	}
	if !d.s.add() {
		return nil, errClosed
	}
	p := &pipe{done: make(chan struct{}), toServer: make(chan []byte, 64), toClient: make(chan []byte, 64)}
	go d.s.servePipe(&pipeServer{p}, req.Subprotocol, req.Header.Clone(), h)
	return &pipeClient{p: p, proto: req.Subprotocol}, nil
}

func (s *Server) servePipe(t transport, proto string, header http.Header, h Hostile) {
	defer s.wg.Done()
	s.serve(t, proto, header, h)
}

// A pipe is an in-memory message connection. Closing it, from either end,
// ends both; messages sent before the close are still read.
type pipe struct {
	toServer, toClient chan []byte

	once   sync.Once
	done   chan struct{}
	code   int
	reason string
}

func (p *pipe) close(code int, reason string) {
	p.once.Do(func() {
		p.code, p.reason = code, reason
		close(p.done)
	})
}

func (p *pipe) read(ctx context.Context, in chan []byte) ([]byte, error) {
	select {
	case b := <-in:
		return b, nil
	default:
	}
	select {
	case b := <-in:
		return b, nil
	case <-p.done:
		return nil, &gqlpush.CloseError{Code: p.code, Reason: p.reason}
	case <-ctx.Done():
		p.close(1006, "")
		return nil, ctx.Err()
	}
}

func (p *pipe) write(ctx context.Context, out chan []byte, b []byte) error {
	select {
	case <-p.done:
		return &gqlpush.CloseError{Code: p.code, Reason: p.reason}
	default:
	}
	select {
	case out <- slices.Clone(b):
		return nil
	case <-p.done:
		return &gqlpush.CloseError{Code: p.code, Reason: p.reason}
	case <-ctx.Done():
		p.close(1006, "")
		return ctx.Err()
	}
}

type pipeClient struct {
	p     *pipe
	proto string
}

func (c *pipeClient) Subprotocol() string                      { return c.proto }
func (c *pipeClient) Read(ctx context.Context) ([]byte, error) { return c.p.read(ctx, c.p.toClient) }
func (c *pipeClient) Write(ctx context.Context, b []byte) error {
	return c.p.write(ctx, c.p.toServer, b)
}
func (c *pipeClient) Close() error    { c.p.close(1000, ""); return nil }
func (c *pipeClient) CloseNow() error { c.p.close(1006, ""); return nil }

type pipeServer struct{ p *pipe }

func (t *pipeServer) read(ctx context.Context) ([]byte, error) { return t.p.read(ctx, t.p.toServer) }
func (t *pipeServer) write(ctx context.Context, b []byte) error {
	return t.p.write(ctx, t.p.toClient, b)
}
func (t *pipeServer) close(code int, reason string) { t.p.close(code, reason) }
func (t *pipeServer) closeNow()                     { t.p.close(1006, "") }
