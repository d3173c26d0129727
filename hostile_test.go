package gqlpush_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// What a hostile upstream can do to the gateway, played by gqlpushtest's
// Hostile modes: every attack costs bounded memory, no redial storm, no log
// flood, and the clients get a clear frame.

// hostileGateway is a gateway in front of an upstream that misbehaves as
// hostile says, over real WebSockets on loopback.
func hostileGateway(t *testing.T, hostile gqlpushtest.Hostile, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	up := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: hostile})
	t.Cleanup(up.Close)
	return gatewayFor(t, up, edit)
}

// readCounter counts the messages read from the upstream, and the pongs
// written to it.
type readCounter struct {
	gqlpush.Dialer
	reads, pongs atomic.Int64
}

func (d *readCounter) Dial(ctx context.Context, req *gqlpush.DialRequest) (gqlpush.Conn, error) {
	c, err := d.Dialer.Dial(ctx, req)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, d: d}, nil
}

type countedConn struct {
	gqlpush.Conn
	d *readCounter
}

func (c *countedConn) Read(ctx context.Context) ([]byte, error) {
	b, err := c.Conn.Read(ctx)
	c.d.reads.Add(1)
	return b, err
}

func (c *countedConn) Write(ctx context.Context, b []byte) error {
	if string(b) == `{"type":"pong"}` {
		c.d.pongs.Add(1)
	}
	return c.Conn.Write(ctx, b)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// An upstream that floods pings while it reads slowly gets one pong at a
// time: nothing piles up for it, its connection still closes after the last
// client leaves, and Close does not wait on it.
func TestPingFlood(t *testing.T) {
	d := &readCounter{Dialer: &gqlpush.WebSocketDialer{}}
	g := hostileGateway(t, gqlpushtest.Hostile{PingFlood: true, ReadDelay: time.Millisecond}, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].Dialer = d
		cfg.IdleTimeout = 100 * time.Millisecond
		cfg.DrainWindow = -1
	})
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	g.waitSubscriptions(t, 1)
	// The first pings may find the heap still settling.
	waitReads(t, d, 10_000)
	before := heapInUse()
	waitReads(t, d, 60_000)
	after := heapInUse()
	// A pong waiting per ping would be 50,000 of them: more than a
	// megabyte.
	if grew := int64(after) - int64(before); grew > 512<<10 {
		t.Errorf("the heap grew by %d bytes over 50,000 pings", grew)
	}
	// Pings are answered, a pong for many.
	if n := d.pongs.Load(); n == 0 || n > d.reads.Load()/10 {
		t.Errorf("%d pongs for %d pings", n, d.reads.Load())
	}
	// Results still flow, and a new subscription gets through.
	g.up.Chat.Post("", "through the flood")
	if f := c.frame(t); !strings.Contains(f, "through the flood") {
		t.Fatalf("got %q", f)
	}
	c2 := g.open(t, "/operations/Count?from=1&wg_sse")
	if got := normIDs(c2.rest(t)); got != ":\n\nid: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n" {
		t.Fatalf("a subscription started during the flood: %q", got)
	}
	c.leave()
	waitStats(t, g.h, "the flooded connection closed after its idle timeout", func(s gqlpush.Stats) bool { return s.UpstreamConns == 0 })
	// A new stream, a new flooded connection; Close ends it politely, in
	// time.
	c = g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	waitReads(t, d, d.reads.Load()+1000)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := g.h.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if rest := c.rest(t); !strings.Contains(rest, "SHUTTING_DOWN") {
		t.Fatalf("the stream ended with %q", rest)
	}
}

func waitReads(t *testing.T, d *readCounter, n int64) {
	t.Helper()
	ctx := waitCtx(t)
	for d.reads.Load() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("read %d upstream messages, want %d", d.reads.Load(), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// An upstream that acknowledges and then drops every connection is redialled
// at the backoff's pace, not at every acknowledgement's, and its clients get
// UPSTREAM_UNAVAILABLE at the reconnect limit.
func TestAckThenCloseRedialsAtTheBackoffsPace(t *testing.T) {
	for _, tt := range []struct {
		name        string
		code        int
		afterResult bool
	}{
		{"1011 after the ack", 1011, false},
		{"4403 after the ack", 4403, false},
		{"1000 after the first result", 1000, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := gqlpushtest.NewUnstartedServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{CloseCode: tt.code, CloseAfterResult: tt.afterResult}})
				b := newBubbleWith(t, up, nil)
				start := time.Now()
				w, leave, done := b.openSSE(t, "/Count?from=1000&wg_sse", nil)
				defer leave()
				select {
				case <-done:
				case <-time.After(2 * gqlpush.DefaultReconnectLimit):
					t.Fatalf("the stream still waits after %v; %d dials", 2*gqlpush.DefaultReconnectLimit, up.Handshakes())
				}
				got := w.seen()
				if elapsed := time.Since(start); elapsed < gqlpush.DefaultReconnectLimit {
					t.Errorf("the stream ended after %v, before the reconnect limit", elapsed)
				}
				if !strings.HasSuffix(got, `data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}`+"\n\nevent: complete\ndata: \n\n") {
					t.Fatalf("the stream ended with %.300q", got[max(len(got)-300, 0):])
				}
				// Full jitter under a ceiling from 100 ms doubling to 5 s:
				// some twenty dials in 30 s; one dial per acknowledgement
				// reset to 100 ms would be some six hundred.
				if n := up.Handshakes(); n < 3 || n > 60 {
					t.Errorf("%d dials in %v", n, gqlpush.DefaultReconnectLimit)
				}
				if tt.afterResult {
					// Each dial delivers the countdown's first result again,
					// no more often than the upstream was dialled.
					if n := strings.Count(got, `"gql_countdown":1000}`); n < 1 || n > up.Handshakes() {
						t.Errorf("the first result came %d times in %d dials", n, up.Handshakes())
					}
				}
				b.close(t)
			})
		})
	}
}

// A connection that stays up past the time that proves it healthy resets the
// backoff and the reconnect limit's clock: an upstream that restarts now and
// then never makes its clients give up.
func TestHealthyConnectionResetsTheReconnectLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.ReconnectLimit = 5 * time.Second })
		w, leave, done := b.openSSE(t, "/Sub?wg_sse", nil)
		for range 6 {
			time.Sleep(15 * time.Second) // up, and healthy
			b.up.CloseConnections()
			synctest.Wait()
		}
		time.Sleep(15 * time.Second)
		b.up.Chat.Post("", "still here")
		synctest.Wait()
		if got := w.seen(); !strings.Contains(got, "still here") || strings.Contains(got, "UPSTREAM_UNAVAILABLE") {
			t.Fatalf("after six restarts 15 s apart: %q", got)
		}
		// Dropped every second instead, it is given up on at the limit.
		for i := 0; i < 20 && b.h.Stats().Streams > 0; i++ {
			time.Sleep(time.Second)
			b.up.CloseConnections()
			synctest.Wait()
		}
		select {
		case <-done:
		default:
			t.Fatal("a connection dropped every second for 20 s kept its clients waiting past the 5 s limit")
		}
		if got := w.seen(); !strings.Contains(got, "UPSTREAM_UNAVAILABLE") {
			t.Fatalf("ended with %q", got)
		}
		leave()
		b.close(t)
	})
}

// The close codes the graphql-ws reference client never retries end the
// streams at once, with no redial.
func TestFatalCloseCodes(t *testing.T) {
	for _, code := range []int{4400, 4401, 4406, 4409, 4429, 4500, 4004, 4005} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := gqlpushtest.NewUnstartedServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{CloseCode: code, CloseReason: strings.Repeat("r", 100)}})
				b := newBubbleWith(t, up, nil)
				start := time.Now()
				w, leave, done := b.openSSE(t, "/Sub?wg_sse", nil)
				defer leave()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatalf("the stream still waits after a minute; %d dials", up.Handshakes())
				}
				body := w.seen()
				want := fmt.Sprintf(":\n\n"+`data: {"errors":[{"message":"upstream closed the connection with code %d","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}`+"\n\nevent: complete\ndata: \n\n", code)
				if body != want {
					t.Fatalf("got %q, want %q", body, want)
				}
				if elapsed := time.Since(start); elapsed != 0 {
					t.Errorf("the stream ended after %v, not at once", elapsed)
				}
				if n := up.Handshakes(); n != 1 {
					t.Errorf("%d dials, want 1", n)
				}
				// A client that comes back at once is refused at once,
				// without a dial: the refusal is remembered a while.
				w2, body2 := b.get(t, "/Sub?wg_sse")
				if _, code := errorOf(t, body2); w2.status != http.StatusBadGateway || code != "UPSTREAM_UNAVAILABLE" || up.Handshakes() != 1 {
					t.Errorf("again at once: %d %s, %d dials; want 502 UPSTREAM_UNAVAILABLE and no dial", w2.status, code, up.Handshakes())
				}
				time.Sleep(5 * time.Second)
				b.get(t, "/Sub?wg_sse")
				if n := up.Handshakes(); n != 2 {
					t.Errorf("%d dials once the refusal is forgotten, want 2", n)
				}
				b.close(t)
			})
		})
	}
}

// A result over the read limit ends its own subscription with
// RESULT_TOO_LARGE, and only it: the connection, and the other
// subscriptions on it, go on.
func TestResultOverTheReadLimit(t *testing.T) {
	g := hostileGateway(t, gqlpushtest.Hostile{}, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].Dialer = &gqlpush.WebSocketDialer{ReadLimit: 4096}
	})
	big := g.open(t, "/operations/Room?room=big&wg_sse")
	small := g.open(t, "/operations/Room?room=small&wg_sse")
	big.frame(t)
	small.frame(t)
	g.waitSubscriptions(t, 2)
	g.up.Chat.Post("big", strings.Repeat("x", 10_000))
	want := `data: {"errors":[{"message":"upstream result over the read limit","extensions":{"code":"RESULT_TOO_LARGE"}}]}` + "\n\nevent: complete\ndata: \n\n"
	if got := big.rest(t); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// The upstream is told to stop it.
	g.waitFor(t, "complete", isType("complete"))
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("small", "fits")
	if f := small.frame(t); !strings.Contains(f, `"fits"`) {
		t.Fatalf("the other subscription got %q", f)
	}
	if n := len(g.up.Conns()); n != 1 {
		t.Errorf("%d upstream connections, want 1 (no redial)", n)
	}
}

// An oversized message ends its streams with RESULT_TOO_LARGE, and is not
// redialled for: it would come back.
func TestOversizedMessages(t *testing.T) {
	for _, tt := range []struct {
		name    string
		hostile gqlpushtest.Hostile
		limit   int64 // the dialer's read limit; 0 for the default
		path    string
	}{
		// The first result over the default read limit: its stream ends.
		{"a result", gqlpushtest.Hostile{OversizedResult: DefaultReadLimitPlus}, 0, "/operations/Count?from=3&wg_sse"},
		// A message that names no subscription: the connection's streams end.
		{"naming no subscription", gqlpushtest.Hostile{Junk: 1, JunkBytes: 10_000}, 4096, "/operations/Sub?wg_sse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := hostileGateway(t, tt.hostile, func(cfg *gqlpush.Config) {
				cfg.Upstreams[0].Dialer = &gqlpush.WebSocketDialer{ReadLimit: tt.limit}
			})
			c := g.open(t, tt.path)
			c.frame(t)
			if got := c.rest(t); !strings.Contains(got, "RESULT_TOO_LARGE") {
				t.Fatalf("got %q", got)
			}
			if n := g.up.Handshakes(); n != 1 {
				t.Errorf("%d dials, want 1", n)
			}
		})
	}
}

// DefaultReadLimitPlus is just over the default read limit.
const DefaultReadLimitPlus = gqlpush.DefaultReadLimit + 1000

// The dialer never follows a redirect: another host never sees the
// handshake's headers or the URL's query.
func TestRedirectNotFollowed(t *testing.T) {
	var visits atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		visits.Add(1)
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer elsewhere.Close()
	up := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{Redirect: elsewhere.URL + "/graphql"}})
	defer up.Close()
	g := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].URL = up.URL + "?token=secret"
		cfg.Upstreams[0].Header = http.Header{"X-Api-Key": {"secret"}}
		cfg.ReconnectLimit = -1
	})
	_, body := g.get(t, http.MethodGet, "/operations/Sub?wg_sse")
	if !strings.Contains(body, "UPSTREAM_UNAVAILABLE") {
		t.Fatalf("got %q", body)
	}
	if up.Handshakes() != 1 || visits.Load() != 0 {
		t.Fatalf("%d handshakes with the upstream, %d requests elsewhere; want 1 and 0", up.Handshakes(), visits.Load())
	}
}

// An upstream that sends junk, of an unknown type or not JSON at all, costs
// a log line now and then, not one per message.
func TestJunkLogsSampled(t *testing.T) {
	for _, invalid := range []bool{false, true} {
		t.Run(fmt.Sprintf("invalid=%v", invalid), func(t *testing.T) {
			var logs syncBuffer
			g := hostileGateway(t, gqlpushtest.Hostile{Junk: 2000, JunkBytes: 2000, JunkInvalid: invalid}, func(cfg *gqlpush.Config) {
				cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			c := g.open(t, "/operations/Sub?wg_sse")
			c.frame(t)
			g.waitSubscriptions(t, 1) // the junk came first: it has all been read
			g.up.Chat.Post("", "after the junk")
			if f := c.frame(t); !strings.Contains(f, "after the junk") {
				t.Fatalf("got %q", f)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) > 3 {
				t.Errorf("%d log lines for 2,000 bad messages: %.500q", len(lines), logs.String())
			}
			for _, l := range lines {
				if len(l) > 1000 {
					t.Errorf("a log line of %d bytes", len(l))
				}
			}
		})
	}
}
