package gqlpush_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// A panicking Observer must not cost a stream its release: on a connection
// taken over, the panic is logged; on the ResponseWriter, net/http recovers
// it. Either way the stream, its subscription and its slot are let go.
func TestPanickingObserverReleasesStream(t *testing.T) {
	for _, useRW := range []bool{false, true} {
		t.Run(map[bool]string{false: "hijacked", true: "response writer"}[useRW], func(t *testing.T) {
			g := newGateway(t, func(cfg *gqlpush.Config) {
				cfg.UseResponseWriter = useRW
				cfg.MaxStreams = 1
				cfg.Observer = &gqlpush.Observer{StreamClosed: func(string, gqlpush.Reason) { panic("observer bug") }}
			})
			g.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic is expected
			for range 2 {                                      // the second one needs the first one's slot
				c, resp := g.openWith(t, g.srv.URL+"/operations/Count?wg_sse&from=1", nil)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: the slot was not released", resp.StatusCode)
				}
				// net/http aborts a response whose handler panicked; the
				// end of the body is not what this test is about.
				io.Copy(io.Discard, c.br)
				g.waitIdle(t)
			}
		})
	}
}

// A Hijack that fails, as some middleware's does, leaves the stream on the
// ResponseWriter.
type noHijack struct{ http.ResponseWriter }

func (w noHijack) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func (w noHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("this middleware does not hijack")
}

func TestHijackRefused(t *testing.T) {
	g := newGateway(t, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.h.ServeHTTP(noHijack{w}, r)
	}))
	defer srv.Close()
	c, resp := g.openWith(t, srv.URL+"/operations/Count?wg_sse&from=1", nil)
	if got := normIDs(c.rest(t)); resp.StatusCode != 200 || got != ":\n\nid: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n" {
		t.Fatalf("%d %q", resp.StatusCode, got)
	}
}

// stubbornConn's polite Close waits until CloseNow is called, as
// coder/websocket's waits up to 10 s for a peer that has stopped reading.
type stubbornConn struct {
	gqlpush.Conn
	now  chan struct{}
	once sync.Once
}

func (c *stubbornConn) Close() error {
	<-c.now
	return nil
}

func (c *stubbornConn) CloseNow() error {
	c.once.Do(func() { close(c.now) })
	return c.Conn.CloseNow()
}

type stubbornDialer struct{ gqlpush.Dialer }

func (d stubbornDialer) Dial(ctx context.Context, req *gqlpush.DialRequest) (gqlpush.Conn, error) {
	c, err := d.Dialer.Dial(ctx, req)
	if err != nil {
		return nil, err
	}
	return &stubbornConn{Conn: c, now: make(chan struct{})}, nil
}

// An upstream connection whose polite close hangs cannot hold Close past its
// context: when the context ends, connections are closed at once.
func TestCloseBoundedByItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		b := newBubbleWith(t, up, func(cfg *gqlpush.Config) {
			cfg.Upstreams[0].Dialer = stubbornDialer{up.Dialer()}
		})
		_, leave, done := b.openSSE(t, "/Sub?wg_sse", nil)
		leave()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.h.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close: %v", err)
		}
		up.Close()
	})
}
