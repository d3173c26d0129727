package gqlpush_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/gqlpush/gqlpush"
)

func TestSSEStreamBytes(t *testing.T) {
	g := newGateway(t, nil)
	c := g.open(t, "/operations/Sub?wg_sse=true")
	if c.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := c.resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := c.frame(t); got != ":\n\n" {
		t.Fatalf("first frame %q, want the comment", got)
	}
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("", "hello")
	g.up.Chat.Post("", "line\nbreak \"quoted\" <b>")
	want := []string{
		"id: T.0\n" + `data: {"data":{"gql_messageCreated":{"content":"hello","id":"1"}}}` + "\n\n",
		// The upstream's bytes pass through: graph-gophers escapes < and >.
		"id: T.1\n" + `data: {"data":{"gql_messageCreated":{"content":"line\nbreak \"quoted\" \u003cb\u003e","id":"2"}}}` + "\n\n",
	}
	for i, w := range want {
		if got := normIDs(c.frame(t)); got != w {
			t.Errorf("frame %d:\n got %q\nwant %q", i, got, w)
		}
	}
	// The upstream got the operation rewritten for it.
	sub := g.waitFor(t, "subscribe", isType("subscribe"))
	wantQuery := "subscription MyQuery {\n  gql_messageCreated: messageCreated {\n    content\n    id\n  }\n}"
	if sub.Query() != wantQuery {
		t.Errorf("upstream query:\n%s\nwant:\n%s", sub.Query(), wantQuery)
	}
}

func TestSSEAliasFlag(t *testing.T) {
	g := newGateway(t, nil)
	for _, q := range []string{"wg_see", "wg_sse", "wg_sse=1", "wg_see=true"} {
		_, body := g.get(t, http.MethodGet, "/operations/Count?from=1&"+q)
		want := ":\n\nid: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n"
		if body = normIDs(body); body != want {
			t.Errorf("%s: got %q, want %q", q, body, want)
		}
	}
}

func TestUpstreamCompleteEndsStream(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Count?wg_sse")
	want := ":\n\n" +
		"id: T.0\ndata: {\"data\":{\"gql_countdown\":3}}\n\n" +
		"id: T.1\ndata: {\"data\":{\"gql_countdown\":2}}\n\n" +
		"id: T.2\ndata: {\"data\":{\"gql_countdown\":1}}\n\n" +
		"event: complete\ndata: \n\n"
	if body = normIDs(body); resp.StatusCode != 200 || body != want {
		t.Fatalf("got %d %q\nwant %q", resp.StatusCode, body, want)
	}
	g.waitIdle(t)
}

func TestPlainStreamBytes(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Count?from=2")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	want := "{\"data\":{\"gql_countdown\":2}}\n\n{\"data\":{\"gql_countdown\":1}}\n\n"
	if body != want {
		t.Fatalf("got %q, want %q", body, want)
	}
}

func TestPlainStreamLive(t *testing.T) {
	g := newGateway(t, nil)
	c := g.open(t, "/operations/Room?room=a")
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("b", "not for a")
	g.up.Chat.Post("a", "for a")
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	blank, _ := c.br.ReadString('\n')
	if want := `{"data":{"gql_messageCreated":{"id":"2","content":"for a","room":"a"}}}` + "\n"; line+blank != want+"\n" {
		t.Fatalf("got %q", line+blank)
	}
}

func TestOnce(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true&from=5")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	if want := `{"data":{"gql_countdown":5}}`; body != want {
		t.Fatalf("got %q, want %q", body, want)
	}
	g.waitIdle(t)
	g.waitSubscriptions(t, 0)
}

func TestOnceLive(t *testing.T) {
	g := newGateway(t, nil)
	done := make(chan string, 1)
	go func() {
		_, body := g.get(t, http.MethodGet, "/operations/Sub?wg_subscribe_once")
		done <- body
	}()
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("", "first")
	if body, want := <-done, `{"data":{"gql_messageCreated":{"content":"first","id":"1"}}}`; body != want {
		t.Fatalf("got %q, want %q", body, want)
	}
	g.waitFor(t, "complete", isType("complete"))
	g.waitSubscriptions(t, 0)
}

func TestOnceSSE(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Count?wg_subscribe_once&wg_sse&from=4")
	want := ":\n\ndata: {\"data\":{\"gql_countdown\":4}}\n\nevent: complete\ndata: \n\n"
	if resp.StatusCode != 200 || body != want {
		t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
	}
	g.waitIdle(t)
	g.waitSubscriptions(t, 0)
}

func TestOnceCompletesEmpty(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Count?wg_subscribe_once&from=0")
	if resp.StatusCode != http.StatusNoContent || body != "" {
		t.Fatalf("got %d %q, want 204 and no body", resp.StatusCode, body)
	}
}

// upstreamErrorGateway serves an operation the upstream refuses: with no
// schema configured, gqlpush cannot know it is invalid.
func upstreamErrorGateway(t *testing.T) *gateway {
	return newGateway(t, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].Schema = ""
		cfg.Operations = append(cfg.Operations, mustParse(t, map[string]string{"Bad": `subscription { gql_nope }`})...)
	})
}

func TestUpstreamErrorSSE(t *testing.T) {
	g := upstreamErrorGateway(t)
	_, body := g.get(t, http.MethodGet, "/operations/Bad?wg_sse")
	want := ":\n\n" +
		`data: {"errors":[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":2,"column":3}]}]}` + "\n\n" +
		"event: complete\ndata: \n\n"
	if body != want {
		t.Fatalf("got  %q\nwant %q", body, want)
	}
	g.waitIdle(t)
}

func TestUpstreamErrorPlainAndOnce(t *testing.T) {
	g := upstreamErrorGateway(t)
	errs := `{"errors":[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":2,"column":3}]}]}`
	if _, body := g.get(t, http.MethodGet, "/operations/Bad"); body != errs+"\n\n" {
		t.Errorf("plain: got %q", body)
	}
	resp, body := g.get(t, http.MethodGet, "/operations/Bad?wg_subscribe_once")
	if resp.StatusCode != 200 || body != errs {
		t.Errorf("once: got %d %q", resp.StatusCode, body)
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	g := newGateway(t, func(cfg *gqlpush.Config) {
		cfg.ReconnectLimit = -1
	})
	g.up.Close() // nothing listens at its URL any more
	_, body := g.get(t, http.MethodGet, "/operations/Sub?wg_sse")
	want := ":\n\n" +
		`data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" +
		"event: complete\ndata: \n\n"
	if body != want {
		t.Fatalf("got %q, want %q", body, want)
	}
	resp, body := g.get(t, http.MethodGet, "/operations/Sub?wg_subscribe_once")
	if msg, code := errorOf(t, body); resp.StatusCode != http.StatusBadGateway || code != "UPSTREAM_UNAVAILABLE" || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("once: %d %q", resp.StatusCode, body)
	}
	g.waitIdle(t)
}

func TestClientLeavingCompletesUpstream(t *testing.T) {
	g := newGateway(t, nil)
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	sub := g.waitFor(t, "subscribe", isType("subscribe"))
	g.waitSubscriptions(t, 1)
	c.leave()
	g.waitFor(t, "complete for "+sub.ID, isTypeID("complete", sub.ID))
	g.waitSubscriptions(t, 0)
	g.waitIdle(t)
}

func TestManySubscriptionsOneConnection(t *testing.T) {
	g := newGateway(t, nil)
	const n = 50
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = g.open(t, fmt.Sprintf("/operations/Room?wg_sse&room=r%d", i))
		clients[i].frame(t)
	}
	g.waitSubscriptions(t, n)
	if conns := g.up.Conns(); len(conns) != 1 {
		t.Fatalf("%d upstream connections, want 1", len(conns))
	}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.up.Chat.Post(fmt.Sprintf("r%d", i), fmt.Sprintf("to %d", i))
		}()
	}
	wg.Wait()
	for i, c := range clients {
		f := c.frame(t)
		if !strings.Contains(f, fmt.Sprintf(`"content":"to %d","room":"r%d"`, i, i)) {
			t.Errorf("client %d got %q", i, f)
		}
	}
	for _, c := range clients {
		c.leave()
	}
	g.waitSubscriptions(t, 0)
	g.waitIdle(t)
}

func TestCloseEndsStreams(t *testing.T) {
	g := newGateway(t, nil)
	sse := g.open(t, "/operations/Sub?wg_sse")
	sse.frame(t)
	plain := g.open(t, "/operations/Room?room=x")
	g.waitSubscriptions(t, 2)

	ctx := waitCtx(t)
	if err := g.h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want := `data: {"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}` + "\n\n" + "event: complete\ndata: \n\n"
	if got := sse.rest(t); got != want {
		t.Errorf("sse got %q, want %q", got, want)
	}
	if got, want := plain.rest(t), `{"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}`+"\n\n"; got != want {
		t.Errorf("plain got %q, want %q", got, want)
	}
	if s := g.h.Stats(); s != (gqlpush.Stats{}) {
		t.Errorf("after Close: %+v", s)
	}
	resp, body := g.get(t, http.MethodGet, "/operations/Sub?wg_sse")
	if _, code := errorOf(t, body); resp.StatusCode != http.StatusServiceUnavailable || code != "SHUTTING_DOWN" {
		t.Errorf("after Close: %d %q", resp.StatusCode, body)
	}
	g.waitSubscriptions(t, 0)
}

func TestServerShutdownWithOpenStreams(t *testing.T) {
	for _, tt := range []struct {
		name              string
		useResponseWriter bool
	}{
		// Streams on connections taken over: Close, then Shutdown.
		{"hijacked", false},
		// Streams on the ResponseWriter: Shutdown waits for them, so
		// Close may run from RegisterOnShutdown.
		{"response writer", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newGateway(t, nil).up
			h, err := gqlpush.NewHandler(gqlpush.Config{
				Operations:        mustParse(t, testOperations),
				Upstreams:         []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
				UseResponseWriter: tt.useResponseWriter,
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.StripPrefix("/operations", h)}
			if tt.useResponseWriter {
				srv.RegisterOnShutdown(func() { h.Close(context.Background()) })
			}
			ln := newLocalListener(t)
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()

			g := &gateway{up: up, h: h, srv: nil}
			base := "http://" + ln.Addr().String()
			var clients []*client
			for i := range 3 {
				c := g.openURL(t, fmt.Sprintf("%s/operations/Room?wg_sse&room=s%d", base, i))
				c.frame(t)
				clients = append(clients, c)
			}
			if !tt.useResponseWriter {
				if err := h.Close(waitCtx(t)); err != nil {
					t.Fatal(err)
				}
			}
			if err := srv.Shutdown(waitCtx(t)); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := <-served; err != http.ErrServerClosed {
				t.Fatalf("Serve: %v", err)
			}
			// Shutdown returned: every stream is over, with its end.
			if s := h.Stats(); s != (gqlpush.Stats{}) && tt.useResponseWriter {
				t.Errorf("after Shutdown: %+v", s)
			}
			for _, c := range clients {
				if got := c.rest(t); !strings.HasSuffix(got, "event: complete\ndata: \n\n") {
					t.Errorf("stream ended with %q", got)
				}
			}
			if err := h.Close(waitCtx(t)); err != nil {
				t.Fatal(err)
			}
			if s := h.Stats(); s != (gqlpush.Stats{}) {
				t.Errorf("after Close: %+v", s)
			}
		})
	}
}

func TestUpstreamRestartOverTheNetwork(t *testing.T) {
	g := newGateway(t, nil)
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("", "before")
	if f := c.frame(t); !strings.Contains(f, `"before"`) {
		t.Fatalf("before the restart: %q", f)
	}
	if err := g.up.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.up.WaitMatches(waitCtx(t), 2, isType("subscribe")); err != nil {
		t.Fatalf("no resubscribe after the restart: %v", err)
	}
	g.waitSubscriptions(t, 1)
	g.up.Chat.Post("", "after")
	if f := c.frame(t); !strings.Contains(f, `"after"`) {
		t.Fatalf("after the restart: %q (the client must stay connected, with no error)", f)
	}
	if n := len(g.up.Conns()); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// raw sends request as it is on a connection of its own, and returns the
// response's head, line by line, and its body, read to the connection's end.
func (g *gateway) raw(t *testing.T, request string) (head []string, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTime))
	io.WriteString(conn, request)
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	h, body, ok := strings.Cut(string(got), "\r\n\r\n")
	if !ok {
		t.Fatalf("no head: %q", got)
	}
	return strings.Split(h, "\r\n"), body
}

// TestWireHTTP1 reads an SSE response off the socket: over HTTP/1.1 the
// stream is chunked, one chunk per write of whole frames, ends with the last
// chunk, and the connection closes after it.
func TestWireHTTP1(t *testing.T) {
	g := newGateway(t, nil)
	lines, body := g.raw(t, "GET /operations/Count?wg_sse&from=1 HTTP/1.1\r\nHost: gqlpush\r\nOrigin: https://elsewhere.example\r\n\r\n")
	if lines[0] != "HTTP/1.1 200 OK" {
		t.Errorf("status line %q", lines[0])
	}
	want := map[string]string{
		"Cache-Control": "no-cache", "Connection": "close", "Content-Type": "text/event-stream",
		"Transfer-Encoding": "chunked", "X-Accel-Buffering": "no",
	}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		if k == "Date" {
			if _, err := http.ParseTime(v); err != nil {
				t.Errorf("Date %q", v)
			}
			continue
		}
		if want[k] != v {
			t.Errorf("header %q", l)
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("missing headers %v", want)
	}
	// Chunk by chunk: the opening comment, the result, the end.
	wantChunks := []string{":\n\n", "id: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\n", "event: complete\ndata: \n\n"}
	rest := body
	for i, w := range wantChunks {
		size, after, ok := strings.Cut(rest, "\r\n")
		n, err := strconv.ParseUint(size, 16, 32)
		if !ok || err != nil || int(n) > len(after)-2 || after[n:n+2] != "\r\n" {
			t.Fatalf("chunk %d malformed in %q", i, body)
		}
		if c := normIDs(after[:n]); c != w {
			t.Errorf("chunk %d is %q, want %q", i, c, w)
		}
		rest = after[n+2:]
	}
	if rest != "0\r\n\r\n" {
		t.Errorf("after the frames: %q, want the last chunk", rest)
	}
}

// TestWireHTTP2 streams over HTTP/2, where the connection cannot be taken
// over: the same frames go through the ResponseWriter.
func TestWireHTTP2(t *testing.T) {
	up := newGateway(t, nil).up
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	defer h.Close(context.Background())
	req, _ := http.NewRequestWithContext(waitCtx(t), http.MethodGet, srv.URL+"/Count?wg_sse&from=2", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s", resp.Proto)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := ":\n\nid: T.0\ndata: {\"data\":{\"gql_countdown\":2}}\n\nid: T.1\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n"
	if got := normIDs(string(body)); got != want || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("got %q %v", got, resp.Header)
	}
	// The client leaving ends the subscription over HTTP/2 too.
	req, _ = http.NewRequestWithContext(waitCtx(t), http.MethodGet, srv.URL+"/Sub?wg_sse", nil)
	ctx, cancel := context.WithCancel(waitCtx(t))
	resp, err = srv.Client().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if err := up.WaitSubscriptions(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	if err := up.WaitSubscriptions(waitCtx(t), 0); err != nil {
		t.Fatal("the upstream subscription outlived the client")
	}
}

// TestWireHTTP10 streams to an HTTP/1.0 client, which knows no chunked
// coding: the body goes as it is and the closed connection ends it, as
// net/http answers such a client.
func TestWireHTTP10(t *testing.T) {
	g := newGateway(t, nil)
	lines, body := g.raw(t, "GET /operations/Count?wg_sse&from=1 HTTP/1.0\r\nHost: gqlpush\r\n\r\n")
	if lines[0] != "HTTP/1.0 200 OK" {
		t.Errorf("status line %q", lines[0])
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "Transfer-Encoding:") || strings.HasPrefix(l, "Content-Length:") {
			t.Errorf("header %q in a response to HTTP/1.0", l)
		}
	}
	if !slices.Contains(lines, "Connection: close") {
		t.Errorf("no Connection: close in %q", lines)
	}
	want := ":\n\nid: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n"
	if normIDs(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

// TestLongPathsAreNotEchoed: an error quotes at most a short prefix of what
// the client sent.
func TestLongPathsAreNotEchoed(t *testing.T) {
	g := newGateway(t, nil)
	long := strings.Repeat("é", 4000) // two bytes each: the cut keeps runes whole
	for _, path := range []string{
		"/operations/" + long,
		"/operations/Sub?" + strings.Repeat("y", 4000) + "=1",
		"/operations/Sub?wg_sse=" + long,
		"/operations/Sub?wg_" + long + "=1",
	} {
		resp, body := g.get(t, http.MethodGet, path)
		if resp.StatusCode/100 != 4 {
			t.Fatalf("%.40s…: %d", path, resp.StatusCode)
		}
		msg, _ := errorOf(t, body)
		if len(msg) > 300 || !utf8.ValidString(msg) {
			t.Errorf("%.40s…: a message of %d bytes: %.100q", path, len(msg), msg)
		}
	}
}

// A once request that gets no result within OnceTimeout is answered 504
// UPSTREAM_TIMEOUT, and its upstream subscription stops.
func TestOnceTimeout(t *testing.T) {
	for _, tt := range []struct {
		name, target, want string
		status             int
	}{
		{"plain", "/Sub?wg_subscribe_once", `{"errors":[{"message":"no result from the upstream in time","extensions":{"code":"UPSTREAM_TIMEOUT"}}]}`, http.StatusGatewayTimeout},
		{"sse", "/Sub?wg_subscribe_once&wg_sse", ":\n\n" + `data: {"errors":[{"message":"no result from the upstream in time","extensions":{"code":"UPSTREAM_TIMEOUT"}}]}` + "\n\nevent: complete\ndata: \n\n", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBubble(t, func(cfg *gqlpush.Config) { cfg.OnceTimeout = 5 * time.Second })
				start := time.Now()
				w, body := b.get(t, tt.target)
				if w.status != tt.status || body != tt.want {
					t.Fatalf("got %d %q, want %d %q", w.status, body, tt.status, tt.want)
				}
				if waited := time.Since(start); waited != 5*time.Second {
					t.Errorf("answered after %v, want the once timeout", waited)
				}
				synctest.Wait()
				if n := b.up.Subscriptions(); n != 0 {
					t.Errorf("%d upstream subscriptions left", n)
				}
				b.close(t)
			})
		})
	}
}
