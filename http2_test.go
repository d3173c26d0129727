package gqlpush_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// http2Gateway serves the test operations over HTTPS with HTTP/2, and
// returns the server and a client that speaks HTTP/2 to it.
func http2Gateway(t *testing.T, edit func(*gqlpush.Config)) (*httptest.Server, *http.Client, *gqlpush.Handler, *gqlpushtest.Server) {
	t.Helper()
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := gatewayStarted(t, gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL, Schema: gqlpushtest.ChatSchema}},
		Prefix:     "/operations/",
	}, edit, (*httptest.Server).StartTLS)
	return g.srv, g.srv.Client(), g.h, up
}

// openH2 opens a stream over c, checks it runs over HTTP/2, and reads its
// opening comment.
func openH2(t *testing.T, srv *httptest.Server, c *http.Client, path string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s over %s, want HTTP/2", path, resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	if f, err := readFrame(br); f != ":\n\n" {
		t.Fatalf("first frame %q (%v)", f, err)
	}
	return resp, br
}

// Over HTTP/2 a client that stops reading is dropped alone: its stream
// fills its flow-control window, a write outlasts WriteTimeout, and the
// stream ends (net/http resets it: the end frames cannot reach a client
// that reads nothing); another stream on the same connection gets every
// result, in order.
func TestHTTP2SlowClientAlone(t *testing.T) {
	dropped := make(chan gqlpush.Reason, 2)
	srv, c, h, up := http2Gateway(t, func(cfg *gqlpush.Config) {
		// A blocked write is bounded by both. The reading client's
		// idle stream has its deadline moved by each heartbeat, a
		// WriteTimeout ahead: a heartbeat late by less than that on a
		// loaded machine must not let net/http reset it.
		cfg.WriteTimeout = 2 * time.Second
		cfg.Heartbeat = time.Second
		// Room for a reader behind a burst: a client is dropped here
		// only for a write that does not end.
		cfg.QueueSize, cfg.QueueBytes = 1024, 64<<20
		cfg.Observer = &gqlpush.Observer{StreamClosed: func(_ string, r gqlpush.Reason) { dropped <- r }}
	})
	_, fast := openH2(t, srv, c, "/operations/Sub?wg_sse")
	_, stalled := openH2(t, srv, c, "/operations/Sub?wg_sse")
	if err := up.WaitSubscriptions(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	// More than the client's window of a stream (4 MiB in Go's
	// transport) and a queue's bytes (1 MiB) besides.
	pad := strings.Repeat("x", 32<<10)
	const posts = 240
	got := make(chan error, 1)
	go func() {
		for i := range posts {
			f, err := readFrame(fast)
			if err == nil && !strings.Contains(f, fmt.Sprintf(`"content":"%d %s"`, i, pad)) {
				err = fmt.Errorf("result %d: %.80q", i, f)
			}
			if err != nil {
				got <- err
				return
			}
		}
		got <- nil
	}()
	for i := range posts {
		up.Chat.Post("", fmt.Sprint(i, " ", pad))
	}
	if err := <-got; err != nil {
		t.Fatalf("the reading client: %v", err)
	}
	// The stalled client is dropped, and its stream ends: reset, or, if
	// the window freed in time, with its end frames.
	select {
	case r := <-dropped:
		if r != gqlpush.ReasonSlowConsumer {
			t.Fatalf("a stream ended for %s, want %s", r, gqlpush.ReasonSlowConsumer)
		}
	case <-waitCtx(t).Done():
		t.Fatal("the stalled client was not dropped")
	}
	rest, err := io.ReadAll(stalled)
	if err == nil && !strings.HasSuffix(string(rest), `"extensions":{"code":"SLOW_CONSUMER"}}]}`+"\n\nevent: complete\ndata: \n\n") {
		t.Fatalf("the stalled client's stream ended with %q", rest[max(0, len(rest)-200):])
	}
	// The reading client's stream goes on.
	up.Chat.Post("", "after")
	for {
		f, err := readFrame(fast)
		if err != nil {
			t.Fatalf("the reading client, after the other was dropped: %v", err)
		}
		if strings.Contains(f, `"content":"after"`) {
			break
		}
	}
	if n := h.Stats().Streams; n != 1 {
		t.Fatalf("%d streams open, want the reading one", n)
	}
}

// Over HTTP/2 a stream idle for longer than WriteTimeout lives on
// (net/http resets a stream whose write deadline passed, whether it was
// writing or not): with heartbeats, its next frame is the heartbeat; without,
// the next result.
func TestHTTP2IdleStreamOutlivesWriteTimeout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		heartbeat time.Duration
	}{
		{"heartbeats", 4 * time.Second},
		{"no heartbeats", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, c, _, up := http2Gateway(t, func(cfg *gqlpush.Config) {
				cfg.WriteTimeout = 2 * time.Second
				cfg.Heartbeat = tt.heartbeat
			})
			_, br := openH2(t, srv, c, "/operations/Sub?wg_sse")
			if err := up.WaitSubscriptions(waitCtx(t), 1); err != nil {
				t.Fatal(err)
			}
			up.Chat.Post("", "one")
			if f, err := readFrame(br); !strings.Contains(f, `"content":"one"`) {
				t.Fatalf("first result %q (%v)", f, err)
			}
			if tt.heartbeat > 0 {
				// Idle for twice the write timeout.
				if f, err := readFrame(br); f != ":\n\n" {
					t.Fatalf("after a quiet while: %q (%v), want the heartbeat", f, err)
				}
			} else {
				// The quiet while is the scenario, not a wait for
				// something.
				time.Sleep(3 * time.Second)
			}
			up.Chat.Post("", "two")
			if f, err := readFrame(br); !strings.Contains(f, `"content":"two"`) {
				t.Fatalf("the next result %q (%v)", f, err)
			}
		})
	}
}
