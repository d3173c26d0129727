package gqlpush_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

func TestManyIdenticalClientsShareOneSubscription(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 500 connections")
	}
	g := newGateway(t, nil)
	const clients, events = 500, 20
	cs := make([]*client, clients)
	for i := range cs {
		cs[i] = g.open(t, "/operations/Sub?wg_sse")
		cs[i].frame(t)
	}
	g.waitSubscriptions(t, 1)
	if n := len(g.up.Received()); n != 2 { // connection_init, one subscribe
		t.Fatalf("the upstream received %d messages: %v", n, g.up.Received())
	}
	for i := range events {
		g.up.Chat.Post("", fmt.Sprintf("m%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got []string
			for range events {
				f, err := readFrame(c.br)
				if err != nil {
					errs <- fmt.Sprintf("client %d: %v after %v", i, err, got)
					return
				}
				got = append(got, contents(f)...)
			}
			want := make([]string, events)
			for j := range want {
				want[j] = fmt.Sprintf("m%d", j)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				errs <- fmt.Sprintf("client %d got %v", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for _, c := range cs[:clients-1] {
		c.leave()
	}
	g.waitStreams(t, 1)
	if n := g.up.Subscriptions(); n != 1 {
		t.Fatalf("%d upstream subscriptions with one client left", n)
	}
	cs[clients-1].leave()
	g.waitFor(t, "complete", isType("complete"))
	g.waitSubscriptions(t, 0)
	g.waitIdle(t)
}

// smallBuffers makes accepted connections keep little unsent data, so that a
// client that does not read blocks the server's writes soon.
// dialSmallWindow connects to addr with a receive buffer of 4 KiB, so that
// the server's writes fill it soon when the test does not read; the
// connection closes with the test.
func dialSmallWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// dropRecorder is an Observer that counts what it is told.
type dropRecorder struct {
	mu      sync.Mutex
	dropped map[gqlpush.Reason]int
	closed  map[gqlpush.Reason]int
	frames  atomic.Int64
}

func newDropRecorder() *dropRecorder {
	return &dropRecorder{dropped: map[gqlpush.Reason]int{}, closed: map[gqlpush.Reason]int{}}
}

func (d *dropRecorder) observer() *gqlpush.Observer {
	return &gqlpush.Observer{
		SubscriberDropped: func(op string, reason gqlpush.Reason) {
			d.mu.Lock()
			d.dropped[reason]++
			d.mu.Unlock()
		},
		StreamClosed: func(op string, reason gqlpush.Reason) {
			d.mu.Lock()
			d.closed[reason]++
			d.mu.Unlock()
		},
		FramesDelivered: func(op string, n int, _ time.Duration) { d.frames.Add(int64(n)) },
	}
}

func (d *dropRecorder) drops(reason gqlpush.Reason) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped[reason]
}

func TestStalledClientIsolated(t *testing.T) {
	// The normal clients keep up: the upstream never runs more than
	// window results ahead of the slowest of them, so they are never more
	// than the queue size behind. The stalled client falls behind by
	// all of it.
	const normal, events, window = 50, 400, 64
	rec := newDropRecorder()
	up := gqlpushtest.NewServer(nil)
	defer up.Close()
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations:   mustParse(t, map[string]string{"Big": `subscription { gql_messageCreated { id content } }`}),
		Upstreams:    []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
		WriteTimeout: time.Second,
		Observer:     rec.observer(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	defer h.Close(context.Background())

	// The stalled client asks, with a tiny receive window, and never reads.
	stalled := dialSmallWindow(t, srv.Listener.Addr().String())
	fmt.Fprintf(stalled, "GET /Big?wg_sse HTTP/1.1\r\nHost: gqlpush\r\n\r\n")

	g := &gateway{up: up, h: h, srv: srv}
	cs := make([]*client, normal)
	for i := range cs {
		cs[i] = g.open(t, "/Big?wg_sse")
		cs[i].frame(t)
	}
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, normal+1)

	var (
		mu       sync.Mutex
		progress = make([]int, normal) // frames each client has read
		failed   bool
		cond     = sync.NewCond(&mu)
		wg       sync.WaitGroup
		errs     = make(chan string, normal)
	)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range events {
				f, err := readFrame(c.br)
				if err == nil && !strings.Contains(f, fmt.Sprintf(`"id":"%d"`, j+1)) {
					err = fmt.Errorf("frame %d is %.100q", j, f)
				}
				mu.Lock()
				progress[i] = j + 1
				failed = failed || err != nil
				cond.Broadcast()
				mu.Unlock()
				if err != nil {
					errs <- fmt.Sprintf("client %d: %v", i, err)
					return
				}
			}
		}()
	}
	content := strings.Repeat("x", 1024)
	for j := range events {
		mu.Lock()
		for !failed && slicesMin(progress) < j-window {
			cond.Wait()
		}
		stop := failed
		mu.Unlock()
		if stop {
			break
		}
		up.Chat.Post("", content)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// The stalled client, and only it, is dropped, and what was held for it
	// is let go.
	g.waitStreams(t, normal)
	if n := rec.drops(gqlpush.ReasonSlowConsumer); n != 1 {
		t.Errorf("%d slow-consumer drops, want 1 (%v)", n, rec.dropped)
	}
	if s := h.Stats(); s.Frames > gqlpush.DefaultResumeFrames {
		t.Errorf("%d frames held after the drop", s.Frames)
	}
	for _, c := range cs {
		c.leave()
	}
	g.waitSubscriptions(t, 0)
}

func slicesMin(s []int) int {
	m := s[0]
	for _, v := range s[1:] {
		m = min(m, v)
	}
	return m
}

// blockingWriter is a ResponseWriter whose writes wait until let go, as a
// client that reads slowly but does read.
type blockingWriter struct {
	*recorder
	hold    atomic.Bool
	release chan struct{}
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	if b.hold.Load() {
		<-b.release
	}
	return b.recorder.Write(p)
}

// serveBlocking serves target in the bubble to a blockingWriter; done is
// closed when the handler returns.
func (b *bubble) serveBlocking(t *testing.T, target string) (*blockingWriter, chan struct{}) {
	w := &blockingWriter{recorder: newRecorder(), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.h.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil))
	}()
	return w, done
}

func TestSlowConsumerFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const queue = 4
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.QueueSize = queue })
		w, done := b.serveBlocking(t, "/Sub?wg_sse")
		synctest.Wait()
		w.hold.Store(true)      // from now on, writes wait
		b.up.Chat.Post("", "0") // the writer takes it and blocks writing it
		synctest.Wait()
		for i := 1; i <= queue+1; i++ {
			b.up.Chat.Post("", fmt.Sprint(i))
		}
		synctest.Wait()
		close(w.release) // the client catches up, too late
		<-done
		got := w.seen()
		want := `data: {"errors":[{"message":"client fell too far behind the stream","extensions":{"code":"SLOW_CONSUMER"}}]}` + "\n\nevent: complete\ndata: \n\n"
		if !strings.HasSuffix(got, want) || strings.Count(got, `"content"`) != 1 {
			t.Fatalf("got %q, want one result then %q", got, want)
		}
		b.close(t)
	})
}

// A client that holds more than QueueBytes unread, besides the newest
// result, is a slow consumer, however few results that is.
func TestSlowConsumerByBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.QueueBytes = 4096 })
		w, done := b.serveBlocking(t, "/Sub?wg_sse")
		// A client that reads keeps up, whatever the sizes.
		keeper, leaveKeeper, keeperDone := b.openSSE(t, "/Sub?wg_sse", nil)
		w.hold.Store(true)
		b.up.Chat.Post("", "0") // the writer takes it and blocks writing it
		synctest.Wait()
		big := strings.Repeat("x", 3000)
		for range 3 { // over 4 KiB unread besides the newest
			b.up.Chat.Post("", big)
			synctest.Wait()
		}
		close(w.release)
		<-done
		got := w.seen()
		want := `data: {"errors":[{"message":"client fell too far behind the stream","extensions":{"code":"SLOW_CONSUMER"}}]}` + "\n\nevent: complete\ndata: \n\n"
		if !strings.HasSuffix(got, want) || strings.Count(got, `"content"`) != 1 {
			t.Fatalf("got %.200q…, want one result then %q", got, want)
		}
		if n := len(contents(keeper.seen())); n != 4 {
			t.Fatalf("the client that reads got %d results, want 4", n)
		}
		// One result larger than QueueBytes is still delivered.
		huge := strings.Repeat("y", 10000)
		b.up.Chat.Post("", huge)
		synctest.Wait()
		if c := contents(keeper.seen()); len(c) != 1 || c[0] != huge {
			t.Fatalf("a result over QueueBytes did not reach the client that reads")
		}
		// A burst that comes before the writer runs: up to QueueBytes and
		// one more result.
		b.up.Chat.Post("", big)
		b.up.Chat.Post("", huge)
		synctest.Wait()
		if n := len(contents(keeper.seen())); n != 2 {
			t.Fatalf("after a burst of two, the client that reads got %d results", n)
		}
		leaveKeeper()
		<-keeperDone
		b.close(t)
	})
}
