package gqlpush_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// openSSE starts an SSE request in the bubble and returns its recorder,
// having read past the opening comment.
func (b *bubble) openSSE(t *testing.T, target string, header http.Header) (*recorder, context.CancelFunc, chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := newRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.h.ServeHTTP(w, r)
	}()
	synctest.Wait()
	return w, cancel, done
}

func TestReconnectKeepsClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		w, cancel, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		b.up.Chat.Post("", "before")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"before"`) {
			t.Fatalf("before the loss: %q", got)
		}
		b.up.CloseConnections() // the network drops
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := len(b.up.Conns()); n != 2 {
			t.Fatalf("%d upstream connections, want a second one", n)
		}
		if n := b.up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions after the redial", n)
		}
		b.up.Chat.Post("", "after")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"after"`) || strings.Contains(got, "errors") {
			t.Fatalf("after the redial: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
}

func TestUpstreamDownThenBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.Heartbeat = -1 })
		w, cancel, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		b.up.SetDown(true)
		time.Sleep(gqlpush.DefaultReconnectLimit - 5*time.Second)
		synctest.Wait()
		if got := w.seen(); got != "" {
			t.Fatalf("while the upstream is down: %q", got)
		}
		b.up.SetDown(false)
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions once it is back", n)
		}
		b.up.Chat.Post("", "back")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"back"`) {
			t.Fatalf("once back: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
}

func TestUpstreamGoneForGood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 20 * time.Second
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Heartbeat = -1
			cfg.ReconnectLimit = limit
		})
		w, _, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		b.up.SetDown(true)
		synctest.Wait()
		time.Sleep(limit - time.Nanosecond)
		synctest.Wait()
		if got := w.seen(); got != "" {
			t.Fatalf("before the reconnect limit: %q", got)
		}
		time.Sleep(time.Nanosecond)
		<-done
		want := `data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + "event: complete\ndata: \n\n"
		if got := w.seen(); got != want {
			t.Fatalf("at the limit: %q, want %q", got, want)
		}
		if s := b.h.Stats(); s != (gqlpush.Stats{}) {
			t.Errorf("after: %+v", s)
		}
		b.close(t)
	})
}

func TestPingTimeoutRedials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.Heartbeat = -1 })
		w, cancel, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		b.up.SetSilent(true) // hung: reads, answers nothing
		time.Sleep(gqlpush.DefaultPingInterval + gqlpush.DefaultPongTimeout - time.Nanosecond)
		synctest.Wait()
		if n := len(b.up.Conns()); n != 1 {
			t.Fatalf("%d connections before the pong was due", n)
		}
		if _, err := b.up.WaitFor(context.Background(), isType("ping")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := len(b.up.Conns()); n != 2 {
			t.Fatalf("%d connections after the pong was late, want a redial", n)
		}
		b.up.SetSilent(false)
		time.Sleep(gqlpush.DefaultAckTimeout + 5*time.Second)
		synctest.Wait()
		b.up.Chat.Post("", "alive")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"alive"`) || strings.Contains(got, "errors") {
			t.Fatalf("after recovery: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
}

func TestLegacyKeepAliveTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(&gqlpushtest.Options{Protocols: []string{gqlpushtest.ProtocolLegacyWS}})
		b := newBubbleWith(t, up, func(cfg *gqlpush.Config) { cfg.Heartbeat = -1 })
		w, cancel, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		if c := up.Conns(); len(c) != 1 || c[0].Subprotocol != "graphql-ws" {
			t.Fatalf("conns %+v", c)
		}
		time.Sleep(time.Minute) // ka keeps it alive
		synctest.Wait()
		if n := len(up.Conns()); n != 1 {
			t.Fatalf("%d connections while ka flows", n)
		}
		up.SetSilent(true)
		time.Sleep(gqlpush.DefaultKeepAliveTimeout + time.Second)
		synctest.Wait()
		if n := len(up.Conns()); n != 2 {
			t.Fatalf("%d connections after ka stopped, want a redial", n)
		}
		up.SetSilent(false)
		time.Sleep(gqlpush.DefaultAckTimeout + 5*time.Second)
		synctest.Wait()
		up.Chat.Post("", "alive")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"alive"`) {
			t.Fatalf("after recovery: %q", got)
		}
		cancel()
		<-done
		b.close(t)
	})
}

// countingDialer counts dials per subprotocol.
type countingDialer struct {
	gqlpush.Dialer
	transportWS, legacyWS atomic.Int32
}

func (d *countingDialer) Dial(ctx context.Context, req *gqlpush.DialRequest) (gqlpush.Conn, error) {
	if req.Subprotocol == "graphql-ws" {
		d.legacyWS.Add(1)
	} else {
		d.transportWS.Add(1)
	}
	return d.Dialer.Dial(ctx, req)
}

func TestAutoProtocol(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(&gqlpushtest.Options{Protocols: []string{gqlpushtest.ProtocolLegacyWS}, KeepAlive: -1})
		d := &countingDialer{Dialer: up.Dialer()}
		b := newBubbleWith(t, up, func(cfg *gqlpush.Config) { cfg.Upstreams[0].Dialer = d })
		_, body := b.get(t, "/Count?from=1")
		if body != `{"data":{"gql_countdown":1}}`+"\n\n" {
			t.Fatalf("over graphql-ws: %q", body)
		}
		if d.transportWS.Load() != 1 || d.legacyWS.Load() != 1 {
			t.Fatalf("dials: %d graphql-transport-ws, %d graphql-ws; want one each", d.transportWS.Load(), d.legacyWS.Load())
		}
		// Once the idle connection is gone, the next dial goes straight
		// to what worked.
		time.Sleep(gqlpush.DefaultIdleTimeout)
		synctest.Wait()
		b.get(t, "/Count?from=1")
		if d.transportWS.Load() != 1 || d.legacyWS.Load() != 2 {
			t.Fatalf("dials: %d graphql-transport-ws, %d graphql-ws; want 1 and 2", d.transportWS.Load(), d.legacyWS.Load())
		}
		b.close(t)
	})
}

func TestAutoProtocolNeither(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(&gqlpushtest.Options{Protocols: []string{"graphql-sse"}})
		b := newBubbleWith(t, up, nil)
		_, body := b.get(t, "/Count?from=1&wg_sse")
		// Refused for good: the streams end at once, without a redial.
		if want := ":\n\n" + `data: {"errors":[{"message":"upstream does not speak graphql-transport-ws or graphql-ws","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\nevent: complete\ndata: \n\n"; body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
		b.close(t)
	})
}

func TestUpstreamErrorEndsOnlyItsSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		b := newBubbleWith(t, up, func(cfg *gqlpush.Config) {
			cfg.Upstreams[0].Schema = ""
			cfg.Operations = append(cfg.Operations, mustParse(t, map[string]string{"Bad": `subscription { gql_nope }`})...)
		})
		w, cancel, done := b.openSSE(t, "/Sub?wg_sse", nil)
		w.seen()
		if _, body := b.get(t, "/Bad?wg_sse"); !strings.Contains(body, `Cannot query field \"nope\"`) {
			t.Fatalf("bad: %q", body)
		}
		up.Chat.Post("", "still here")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, `"still here"`) {
			t.Fatalf("the other stream: %q", got)
		}
		if n := len(up.Conns()); n != 1 {
			t.Errorf("%d connections: the error must not cost the connection", n)
		}
		cancel()
		<-done
		b.close(t)
	})
}

// get serves one request to its end in the bubble.
func (b *bubble) get(t *testing.T, target string) (*recorder, string) {
	t.Helper()
	w, cancel, done := b.serve(target)
	defer cancel()
	<-done
	w.Flush()
	return w, w.seen()
}

func TestCloseDrainsOverTheWindow(t *testing.T) {
	for _, tt := range []struct {
		name     string
		window   time.Duration // Config.DrainWindow
		deadline time.Duration // of Close's context; 0 for none
		within   time.Duration // every stream ends before this
	}{
		{"default window", 0, 0, gqlpush.DefaultDrainWindow},
		{"configured window", 3 * time.Second, 0, 3 * time.Second},
		{"bounded by the deadline", 0, 200 * time.Millisecond, 100 * time.Millisecond},
		{"no drain", -1, 0, time.Nanosecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBubble(t, func(cfg *gqlpush.Config) { cfg.DrainWindow = tt.window })
				const n = 20
				start := time.Now()
				ends := make(chan time.Duration, n)
				for range n {
					w, _, done := b.openSSE(t, "/Sub?wg_sse", nil)
					w.seen()
					go func() {
						<-done
						d := time.Since(start)
						if got := w.seen(); !strings.HasSuffix(got, "event: complete\ndata: \n\n") || !strings.Contains(got, "SHUTTING_DOWN") {
							t.Errorf("stream ended with %q", got)
						}
						ends <- d
					}()
				}
				ctx := context.Background()
				if tt.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
					defer cancel()
				}
				if err := b.h.Close(ctx); err != nil {
					t.Fatal(err)
				}
				distinct := map[time.Duration]bool{}
				for range n {
					d := <-ends
					if d >= tt.within {
						t.Errorf("a stream ended after %v, want before %v", d, tt.within)
					}
					distinct[d] = true
				}
				if tt.window >= 0 && len(distinct) < n/2 {
					t.Errorf("the ends came at only %d instants: not spread", len(distinct))
				}
				b.up.Close()
			})
		})
	}
}
