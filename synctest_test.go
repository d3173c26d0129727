package gqlpush_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// A recorder is a ResponseWriter that a test reads while the handler writes:
// it keeps what was flushed, as a client would see it.
type recorder struct {
	mu      sync.Mutex
	header  http.Header
	status  int
	pending bytes.Buffer
	flushed bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.pending.Write(b)
}

func (r *recorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending.WriteTo(&r.flushed)
}

// seen returns what was flushed so far and forgets it.
func (r *recorder) seen() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.flushed.String()
	r.flushed.Reset()
	return s
}

// bubble is a handler and an in-memory upstream inside a synctest bubble.
type bubble struct {
	up *gqlpushtest.Server
	h  *gqlpush.Handler
}

func newBubble(t *testing.T, edit func(*gqlpush.Config)) *bubble {
	return newBubbleWith(t, gqlpushtest.NewUnstartedServer(nil), edit)
}

// newBubbleWith serves the test operations in front of up, reached through
// its in-memory dialer.
func newBubbleWith(t *testing.T, up *gqlpushtest.Server, edit func(*gqlpush.Config)) *bubble {
	cfg := gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: "ws://upstream.invalid/graphql", Schema: gqlpushtest.ChatSchema, Dialer: up.Dialer()}},
	}
	if edit != nil {
		edit(&cfg)
	}
	h, err := gqlpush.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bubble{up: up, h: h}
}

// serve runs one request until cancel is called; done is closed when the
// handler returns.
func (b *bubble) serve(target string) (w *recorder, cancel context.CancelFunc, done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	w = newRecorder()
	done = make(chan struct{})
	go func() {
		defer close(done)
		b.h.ServeHTTP(w, r)
	}()
	return w, cancel, done
}

func (b *bubble) close(t *testing.T) {
	if err := b.h.Close(context.Background()); err != nil {
		t.Error(err)
	}
	b.up.Close()
}

func TestHeartbeat(t *testing.T) {
	for _, tt := range []struct {
		name, target, first, beat string
	}{
		{"sse", "/Sub?wg_sse", ":\n\n", ":\n\n"},
		{"plain", "/Sub", "", "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBubble(t, nil)
				w, cancel, done := b.serve(tt.target)
				synctest.Wait()
				if got := w.seen(); got != tt.first {
					t.Fatalf("at once: %q, want %q", got, tt.first)
				}
				time.Sleep(gqlpush.DefaultHeartbeat - time.Nanosecond)
				synctest.Wait()
				if got := w.seen(); got != "" {
					t.Fatalf("before the heartbeat interval: %q", got)
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				if got := w.seen(); got != tt.beat {
					t.Fatalf("after the heartbeat interval: %q, want %q", got, tt.beat)
				}
				// A result resets the interval: the stream is not idle.
				time.Sleep(10 * time.Second)
				b.up.Chat.Post("", "hi")
				synctest.Wait()
				if got := w.seen(); !bytes.Contains([]byte(got), []byte(`"content":"hi"`)) {
					t.Fatalf("result: %q", got)
				}
				time.Sleep(gqlpush.DefaultHeartbeat - time.Nanosecond)
				synctest.Wait()
				if got := w.seen(); got != "" {
					t.Fatalf("heartbeat too soon after a result: %q", got)
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				if got := w.seen(); got != tt.beat {
					t.Fatalf("second heartbeat: %q, want %q", got, tt.beat)
				}
				cancel()
				<-done
				b.close(t)
			})
		})
	}
}

func TestHeartbeatConfigurable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.Heartbeat = time.Second })
		w, cancel, done := b.serve("/Sub?wg_sse")
		synctest.Wait()
		w.seen()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := w.seen(); got != ":\n\n:\n\n:\n\n" {
			t.Fatalf("after 3 s: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.Heartbeat = -1 })
		w, cancel, done := b.serve("/Sub?wg_sse")
		synctest.Wait()
		w.seen()
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := w.seen(); got != "" {
			t.Fatalf("heartbeats disabled, yet: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
}

// The upstream hears complete as soon as the client leaves: no timer is
// involved, so no time passes in the bubble before it does.
func TestLeaveCompletesWithoutDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		_, cancel, done := b.serve("/Sub?wg_sse")
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions", n)
		}
		start := time.Now()
		cancel()
		<-done
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 0 {
			t.Fatalf("%d upstream subscriptions after the client left", n)
		}
		if _, err := b.up.WaitFor(context.Background(), isType("complete")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the upstream complete took %v of bubble time", d)
		}
		// The idle connection closes after the idle timeout.
		if s := b.h.Stats(); s.UpstreamConns != 1 || s.Subscriptions != 0 || s.Streams != 0 {
			t.Errorf("right after: %+v", s)
		}
		time.Sleep(gqlpush.DefaultIdleTimeout)
		synctest.Wait()
		if s := b.h.Stats(); s != (gqlpush.Stats{}) {
			t.Errorf("after the idle timeout: %+v", s)
		}
		b.close(t)
	})
}
