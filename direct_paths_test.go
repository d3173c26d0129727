package gqlpush_test

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// TestHugeWriteTimeout: a WriteTimeout of the largest Duration (a
// common way to say "never") must not make every write to a client fail:
// now plus the timeout must not overflow into a deadline in the past.
func TestHugeWriteTimeout(t *testing.T) {
	g := newGateway(t, func(c *gqlpush.Config) {
		c.WriteTimeout = time.Duration(math.MaxInt64)
	})
	c := g.open(t, "/operations/Sub?wg_sse")
	if c.resp.StatusCode != 200 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	f, err := c.sse.Next()
	if err != nil || f.Raw != ":\n\n" {
		t.Fatalf("first frame %q, %v", f.Raw, err)
	}
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("", "hello")
	f, err = c.sse.NextEvent()
	if err != nil || !strings.Contains(f.Data, "hello") {
		t.Fatalf("result %q, %v", f.Raw, err)
	}
}

// TestMixedClientsChurn: many clients of one subscription (SSE and
// plain, HTTP/1.1 and HTTP/1.0), heartbeats every millisecond, results
// posted from several goroutines, a third of the clients leaving half way,
// and Close while results still come. Every client that stays must see
// strictly rising ids, no duplicate, in well-formed frames; the race
// detector and goleak watch the rest.
func TestMixedClientsChurn(t *testing.T) {
	const (
		clients = 100
		events  = 200
	)
	g := newGateway(t, func(c *gqlpush.Config) {
		c.Heartbeat = time.Millisecond
	})
	addr := g.srv.Listener.Addr().String()
	type result struct {
		n   int
		err error
	}
	results := make(chan result, clients)
	conns := make([]net.Conn, clients)
	var posted atomic.Int64
	for i := range clients {
		conn, sse, body := openMixedClient(t, addr, i)
		conns[i] = conn
		leaver := i%3 == 0
		go func() {
			r := result{}
			defer func() { results <- r }()
			last := 0
			frames := gqlpushtest.NewSSEReader(body)
			for {
				if leaver && posted.Load() >= events/2 {
					conn.Close()
					return
				}
				var data string
				if sse {
					f, err := frames.Next()
					if err != nil {
						if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
							r.err = fmt.Errorf("after %d: %v", last, err)
						}
						return
					}
					if f.Raw == ":\n\n" || strings.HasPrefix(f.Raw, "event: complete") {
						continue
					}
					if strings.HasPrefix(f.Raw, "data: {\"errors\"") {
						continue // the end's error frame (shutdown)
					}
					if f.Raw != "id: "+f.ID+"\ndata: "+f.Data+"\n\n" {
						r.err = fmt.Errorf("after %d: frame %q", last, f.Raw)
						return
					}
					data = f.Data
				} else {
					line, err := body.ReadString('\n')
					if err != nil {
						if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
							r.err = fmt.Errorf("after %d: %v", last, err)
						}
						return
					}
					if line == "\n" {
						continue // a blank line or a heartbeat
					}
					data = strings.TrimSuffix(line, "\n")
				}
				if !strings.HasPrefix(data, `{"data":{"gql_messageCreated":`) {
					if strings.Contains(data, "errors") {
						return // the end's error frame (shutdown)
					}
					r.err = fmt.Errorf("after %d: %q", last, data)
					return
				}
				var id int
				if _, err := fmt.Sscanf(data[strings.Index(data, `"id":"`):], `"id":"%d"`, &id); err != nil || id <= last {
					r.err = fmt.Errorf("after id %d: %q", last, data)
					return
				}
				last = id
				r.n++
			}
		}()
	}
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, clients)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range events / 4 {
				g.up.Chat.Post("", fmt.Sprint("m", w, "-", i))
				posted.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := g.h.Close(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	for range clients {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
	}
}

// TestHalfClosedClient: a client that half-closes its side after its
// request: the watch's read ends with EOF, the stream takes the client for
// gone and ends with a well-formed last chunk.
func TestHalfClosedClient(t *testing.T) {
	g := newGateway(t, nil)
	conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, _ := openRawSSE(t, conn, "/operations/Sub?wg_sse")
	g.waitStreams(t, 1)
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(resp.Body)
	t.Logf("after the half-close: %q, %v", rest, err)
	if err != nil {
		t.Fatalf("the stream did not end with its last chunk: %v", err)
	}
	g.waitStreams(t, 0)
}

// TestClientBytes: a client that sends bytes after its request (a
// pipelined request) is not taken for gone until it has sent more than
// maxClientBytes (4 KiB); past that it is.
func TestClientBytes(t *testing.T) {
	g := newGateway(t, nil)
	conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, frames := openRawSSE(t, conn, "/operations/Sub?wg_sse")
	g.waitStreams(t, 1)
	g.waitSubscriptions(t, 1)
	// 4096 bytes in odd pieces: still served.
	junk := strings.Repeat("GET /x HTTP/1.1\r\nHost: y\r\n\r\n", 200)[:4096]
	for i := 0; i < len(junk); i += 7 {
		conn.Write([]byte(junk[i:min(i+7, len(junk))]))
	}
	g.up.Chat.Post("", "still")
	f, err := frames.NextEvent()
	if err != nil || !strings.Contains(f.Data, "still") {
		t.Fatalf("after 4096 bytes: %q, %v", f.Raw, err)
	}
	if n := g.h.Stats().Streams; n != 1 {
		t.Fatalf("%d streams after 4096 bytes", n)
	}
	// One more: gone.
	conn.Write([]byte("x"))
	g.waitStreams(t, 0)
}

// TestFramesCounted: Observer.FramesDelivered is called after frames were
// written to a client, and counts every result a client read once: for a
// lone client whose results are written by the publisher and cut short
// (larger than its socket takes at once), finished by its stream's
// goroutine; for two clients whose results are cut short the same way; and
// for 80 clients whose results are shared among writers.
func TestFramesCounted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		clients int
		size    int
	}{{"lone-cut-short", 1, 64 << 10}, {"two-cut-short", 2, 64 << 10}, {"many-writers", 80, 100}} {
		t.Run(tc.name, func(t *testing.T) {
			const events = 20
			rec := newDropRecorder()
			up, h, srv := bigGateway(t, rec.observer())
			g := &gateway{up: up, h: h, srv: srv}
			got := make([]atomic.Int64, tc.clients)
			last := make([]atomic.Int64, tc.clients)
			done := make(chan error, tc.clients)
			for i := range tc.clients {
				conn := dialSmallWindow(t, srv.Listener.Addr().String())
				_, frames := openRawSSE(t, conn, "/Big?wg_sse")
				conn.SetReadDeadline(time.Now().Add(waitTime))
				go func() {
					for {
						f, err := frames.NextEvent()
						if err != nil {
							done <- err
							return
						}
						var id int64
						if _, err := fmt.Sscanf(f.Data, `{"data":{"gql_messageCreated":{"id":"%d"`, &id); err == nil {
							got[i].Add(1)
							last[i].Store(id)
						}
					}
				}()
			}
			g.waitSubscriptions(t, 1)
			g.waitStreams(t, tc.clients)
			content := strings.Repeat("x", tc.size)
			for range events {
				up.Chat.Post("", content)
			}
			waitUntil(t, func() bool {
				for i := range last {
					if last[i].Load() != events {
						return false
					}
				}
				return true
			}, func() string { return "clients behind" })
			if err := h.Close(waitCtx(t)); err != nil {
				t.Fatal(err)
			}
			for range tc.clients {
				<-done
			}
			var read int64
			for i := range got {
				read += got[i].Load()
			}
			if n := rec.frames.Load(); n != read {
				t.Errorf("clients read %d results; FramesDelivered counted %d", read, n)
			}
		})
	}
}

// TestLoneStalledClientDropped: a lone client that stops reading is
// dropped as a slow consumer by the write timeout, its results written
// inline by the publisher until its socket is full.
func TestLoneStalledClientDropped(t *testing.T) {
	rec := newDropRecorder()
	up, h, srv := bigGateway(t, rec.observer(), func(c *gqlpush.Config) {
		c.QueueSize = 1000
		c.WriteTimeout = 200 * time.Millisecond
	})
	g := &gateway{up: up, h: h, srv: srv}
	conn := dialSmallWindow(t, srv.Listener.Addr().String())
	fmt.Fprintf(conn, "GET /Big?wg_sse HTTP/1.1\r\nHost: gqlpush\r\n\r\n")
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, 1)
	content := strings.Repeat("x", 64<<10)
	for range 20 {
		up.Chat.Post("", content)
	}
	waitUntil(t, func() bool { return rec.drops(gqlpush.ReasonSlowConsumer) == 1 }, func() string {
		return fmt.Sprintf("no slow-consumer drop: %v; %+v", rec.dropped, h.Stats())
	})
	g.waitStreams(t, 0)
}

// TestResumeWhileResultsFlow: a lone client, written to inline,
// leaves half way through a flow of results and comes back with its
// Last-Event-ID while they still come: it must get every result after its
// last, once each, in order (the gateway's seqs in the ids are contiguous).
func TestResumeWhileResultsFlow(t *testing.T) {
	const events = 300
	g := newGateway(t, func(c *gqlpush.Config) {
		c.ResumeGrace = time.Minute
		c.ResumeFrames = 2 * events
	})
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	g.waitSubscriptions(t, 1)
	postDone := make(chan struct{})
	go func() {
		defer close(postDone)
		for i := range events {
			g.up.Chat.Post("", fmt.Sprint("m", i))
		}
	}()
	seqOf := func(id string) int {
		var n int
		fmt.Sscanf(id[strings.IndexByte(id, '.')+1:], "%d", &n)
		return n
	}
	lastID, lastSeq := "", -1
	for range events / 3 {
		f, err := c.sse.NextEvent()
		if err != nil {
			t.Fatal(err)
		}
		if s := seqOf(f.ID); lastSeq >= 0 && s != lastSeq+1 {
			t.Fatalf("seq %d after %d", s, lastSeq)
		}
		lastID, lastSeq = f.ID, seqOf(f.ID)
	}
	c.leave()
	c2, resp := g.openWith(t, g.srv.URL+"/operations/Sub?wg_sse", http.Header{"Last-Event-Id": {lastID}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	<-postDone
	// The last result posted: read until it comes.
	for {
		f, err := c2.sse.Next()
		if err != nil {
			t.Fatalf("after seq %d: %v", lastSeq, err)
		}
		if strings.HasPrefix(f.Raw, "event: reset") {
			t.Skip("the resume window did not hold the client's place")
		}
		if f.ID == "" {
			continue
		}
		if s := seqOf(f.ID); s != lastSeq+1 {
			t.Fatalf("seq %d after %d", s, lastSeq)
		}
		lastSeq = seqOf(f.ID)
		if strings.Contains(f.Data, fmt.Sprintf(`"m%d"`, events-1)) {
			return
		}
	}
}
