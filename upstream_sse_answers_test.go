package gqlpush_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
)

// A scripted upstream answers GraphQL-over-SSE requests on loopback as a
// test tells it to, for the answers a stock server does not give: each
// request gets the next answer of the script, and the last one again once
// the script is over.
type scripted struct {
	srv *httptest.Server

	mu       sync.Mutex
	answers  []func(w http.ResponseWriter, r *http.Request)
	requests []*http.Request // as received, bodies not kept
	open     int             // requests being answered
}

func newScripted(t *testing.T, answers ...func(w http.ResponseWriter, r *http.Request)) *scripted {
	t.Helper()
	s := &scripted{answers: answers}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scripted) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, r.Clone(context.Background()))
	answer := s.answers[min(n, len(s.answers)-1)]
	s.open++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.open--
		s.mu.Unlock()
	}()
	answer(w, r)
}

// count reports how many requests came, and how many are being answered.
func (s *scripted) count() (n, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests), s.open
}

func (s *scripted) request(i int) *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[i]
}

// events answers with a stream of the raw bytes given, each flushed, then
// ends the response; hold keeps it open until the request ends instead.
func events(hold bool, chunks ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for _, c := range chunks {
			w.Write([]byte(c))
			w.(http.Flusher).Flush()
		}
		if hold {
			<-r.Context().Done()
		}
	}
}

// status answers with a status, a content type and a body.
func status(code int, media, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", media)
		w.WriteHeader(code)
		w.Write([]byte(body))
	}
}

// sseGateway serves the test operations in front of a scripted upstream.
func sseGateway(t *testing.T, up *scripted, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	return gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.srv.URL + "/graphql", Protocol: gqlpush.ProtocolSSE}},
		Prefix:     "/operations/",
	}, edit)
}

const (
	unavailableFrame = `data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n"
	completeFrame    = "event: complete\ndata: \n\n"
)

// TestSSEUpstreamAnswers: what a client of a graphql-sse upstream sees for
// each kind of answer the upstream may give, byte for byte.
func TestSSEUpstreamAnswers(t *testing.T) {
	next := func(n int) string { return fmt.Sprintf("event: next\ndata: {\"data\":{\"gql_countdown\":%d}}\n\n", n) }
	tests := []struct {
		name    string
		answers []func(http.ResponseWriter, *http.Request)
		want    string // the stream after its opening comment, ids as T.n
		edit    func(*gqlpush.Config)
	}{
		{
			name:    "results then complete",
			answers: []func(http.ResponseWriter, *http.Request){events(false, next(2), next(1), completeFrame)},
			want:    "id: T.0\ndata: {\"data\":{\"gql_countdown\":2}}\n\nid: T.1\ndata: {\"data\":{\"gql_countdown\":1}}\n\n" + completeFrame,
		},
		{
			// Comments (keep-alives), CRLF and CR line ends, a data
			// field split over lines, an event of no interest, an
			// event with no type, ids and retry fields: read as the
			// HTML standard reads an event stream.
			name: "the event stream's rules",
			answers: []func(http.ResponseWriter, *http.Request){events(false,
				":\n\n", ": keep-alive\n\n",
				"event: next\r\ndata: {\"data\":\r\ndata: {\"gql_countdown\":3}}\r\n\r\n",
				"event: ping\ndata: {\"data\":{\"gql_countdown\":99}}\n\n",
				"id: 7\nretry: 10\ndata:{\"data\":{\"gql_countdown\":2}}\n\n",
				"event: next\rdata: {\"data\":{\"gql_countdown\":1}}\r\r",
				"event: complete\n\n")},
			want: "id: T.0\ndata: {\"data\":{\"gql_countdown\":3}}\n\nid: T.1\ndata: {\"data\":{\"gql_countdown\":2}}\n\nid: T.2\ndata: {\"data\":{\"gql_countdown\":1}}\n\n" + completeFrame,
		},
		{
			name:    "the upstream's errors in a result",
			answers: []func(http.ResponseWriter, *http.Request){events(false, `event: next`+"\n"+`data: {"errors":[{"message":"no countdown today"}]}`+"\n\n", completeFrame)},
			want:    "id: T.0\ndata: {\"errors\":[{\"message\":\"no countdown today\"}]}\n\n" + completeFrame,
		},
		{
			name:    "a query the upstream refuses",
			answers: []func(http.ResponseWriter, *http.Request){status(http.StatusBadRequest, "application/json; charset=utf-8", `{"errors":[{"message":"Cannot query field \"countdown\"."}]}`)},
			want:    "data: {\"errors\":[{\"message\":\"Cannot query field \\\"countdown\\\".\"}]}\n\n" + completeFrame,
		},
		{
			name:    "an HTML page",
			answers: []func(http.ResponseWriter, *http.Request){status(http.StatusOK, "text/html; charset=utf-8", "<html><body>Welcome</body></html>")},
			want:    `data: {"errors":[{"message":"upstream answered with \"text/html\", not text/event-stream","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + completeFrame,
		},
		{
			name:    "forbidden",
			answers: []func(http.ResponseWriter, *http.Request){status(http.StatusForbidden, "text/plain", "no")},
			want:    `data: {"errors":[{"message":"upstream refused the subscription with HTTP 403","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + completeFrame,
		},
		{
			name: "a redirect, not followed",
			answers: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
			}},
			want: `data: {"errors":[{"message":"upstream refused the subscription with HTTP 302","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + completeFrame,
		},
		{
			name:    "a 500 until the reconnect limit",
			answers: []func(http.ResponseWriter, *http.Request){status(http.StatusInternalServerError, "text/plain", "oops")},
			edit:    func(c *gqlpush.Config) { c.ReconnectLimit = 200 * time.Millisecond },
			want:    unavailableFrame + completeFrame,
		},
		{
			name: "a 500 and a 503, then the stream",
			answers: []func(http.ResponseWriter, *http.Request){
				status(http.StatusInternalServerError, "application/json", `{"errors":[{"message":"Unexpected error."}]}`),
				status(http.StatusServiceUnavailable, "text/html", "<h1>503</h1>"),
				events(false, next(1), completeFrame),
			},
			want: "id: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\n" + completeFrame,
		},
		{
			// A response that ends without complete was lost: the
			// subscription is asked for again.
			name: "a response that ends early",
			answers: []func(http.ResponseWriter, *http.Request){
				events(false, next(3)),
				events(false, next(2), completeFrame),
			},
			want: "id: T.0\ndata: {\"data\":{\"gql_countdown\":3}}\n\nid: T.1\ndata: {\"data\":{\"gql_countdown\":2}}\n\n" + completeFrame,
		},
		{
			name:    "an event over MaxResponseBytes",
			answers: []func(http.ResponseWriter, *http.Request){events(true, next(1), "event: next\ndata: {\"data\":{\"gql_countdown\":\""+strings.Repeat("x", 64<<10)+"\"}}\n\n")},
			edit:    func(c *gqlpush.Config) { c.MaxResponseBytes = 32 << 10 },
			want:    "id: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\n" + `data: {"errors":[{"message":"upstream result over the read limit","extensions":{"code":"RESULT_TOO_LARGE"}}]}` + "\n\n" + completeFrame,
		},
		{
			name:    "an event over MaxResponseBytes, in lines",
			answers: []func(http.ResponseWriter, *http.Request){events(true, "event: next\n"+strings.Repeat("data: "+strings.Repeat(" ", 1000)+"\n", 40)+"data: {}\n\n")},
			edit:    func(c *gqlpush.Config) { c.MaxResponseBytes = 32 << 10 },
			want:    `data: {"errors":[{"message":"upstream result over the read limit","extensions":{"code":"RESULT_TOO_LARGE"}}]}` + "\n\n" + completeFrame,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSSEStream(t, tt.answers, tt.edit, tt.want) })
	}
}

// checkSSEStream has one client follow CountReq in front of an upstream
// that gives answers, and checks what it gets after the opening comment,
// ids as T.n; then that nothing is left running.
func checkSSEStream(t *testing.T, answers []func(http.ResponseWriter, *http.Request), edit func(*gqlpush.Config), want string) {
	t.Helper()
	up := newScripted(t, answers...)
	g := sseGateway(t, up, edit)
	c := g.open(t, "/operations/CountReq?wg_sse&from=3")
	if got := c.frame(t); got != ":\n\n" {
		t.Fatalf("first frame %q", got)
	}
	if got := normIDs(c.rest(t)); got != want {
		t.Errorf("stream:\n%q\nwant:\n%q", got, want)
	}
	g.waitIdle(t)
	waitUntil(t, func() bool { _, open := up.count(); return open == 0 }, func() string { return "the upstream still answers a request" })
}

// TestSSEUpstreamRequest: what a graphql-sse upstream is asked, and that
// one request serves every client of a key, ends when the last one leaves,
// and goes over POST once the upstream has refused GET.
func TestSSEUpstreamRequest(t *testing.T) {
	const result = "event: next\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\"1\",\"content\":\"hi\",\"room\":\"a\"}}}\n\n"
	var bodies []string
	var mu sync.Mutex
	feed := make(chan string) // the first request's events, as the test sends them
	fed := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-feed:
				w.Write([]byte(ev))
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}
	postOnly := func(answer func(http.ResponseWriter, *http.Request)) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", "POST")
				status(http.StatusMethodNotAllowed, "text/plain", "POST only")(w, r)
				return
			}
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			mu.Unlock()
			answer(w, r)
		}
	}
	for _, tt := range []struct {
		name    string
		answers []func(http.ResponseWriter, *http.Request)
		post    bool
	}{
		{"GET", []func(http.ResponseWriter, *http.Request){fed, events(true, result)}, false},
		{"POST after a 405", []func(http.ResponseWriter, *http.Request){postOnly(nil), postOnly(fed), postOnly(events(true, result))}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newScripted(t, tt.answers...)
			g := sseGateway(t, up, func(c *gqlpush.Config) {
				c.Upstreams[0].ForwardHeaders = []string{"Authorization"}
				c.Upstreams[0].Header = http.Header{"X-Gateway": {"gqlpush"}}
			})
			hd := http.Header{"Authorization": {"Bearer t1"}}
			a, _ := g.openWith(t, g.srv.URL+"/operations/Room?wg_sse&room=a", hd)
			b, _ := g.openWith(t, g.srv.URL+"/operations/Room?wg_sse&room=a", hd)
			a.frame(t)
			b.frame(t)
			g.waitStreams(t, 2)
			feed <- result
			want := "id: T.0\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\"1\",\"content\":\"hi\",\"room\":\"a\"}}}\n\n"
			for _, c := range []*client{a, b} {
				if got := normIDs(c.frame(t)); got != want {
					t.Errorf("frame %q, want %q", got, want)
				}
			}
			n, open := up.count()
			if wantN := map[bool]int{false: 1, true: 2}[tt.post]; n != wantN || open != 1 {
				t.Fatalf("the upstream got %d requests, %d open; want %d, 1 open", n, open, wantN)
			}
			r := up.request(n - 1)
			if r.Header.Get("Accept") != "text/event-stream" || r.Header.Get("Authorization") != "Bearer t1" || r.Header.Get("X-Gateway") != "gqlpush" {
				t.Errorf("request headers %v", r.Header)
			}
			wantQuery := "subscription ($room: String) {\n  gql_messageCreated: messageCreated(room: $room) {\n    id\n    content\n    room\n  }\n}"
			if tt.post {
				mu.Lock()
				body := bodies[0]
				mu.Unlock()
				var p struct {
					Query     string
					Variables map[string]any
				}
				if err := json.Unmarshal([]byte(body), &p); err != nil || p.Query != wantQuery || p.Variables["room"] != "a" || r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("POST body %s (%v), Content-Type %q", body, err, r.Header.Get("Content-Type"))
				}
			} else if q := r.URL.Query(); r.Method != http.MethodGet || q.Get("query") != wantQuery || q.Get("variables") != `{"room":"a"}` {
				t.Errorf("%s %s", r.Method, r.URL)
			}
			if s := g.h.Stats(); s.UpstreamConns != 1 || s.Subscriptions != 1 {
				t.Errorf("Stats %+v, want 1 upstream connection and 1 subscription", s)
			}

			// Another key, from another caller: a request of its own,
			// straight over POST once GET was refused.
			c, _ := g.openWith(t, g.srv.URL+"/operations/Room?wg_sse&room=b", http.Header{"Authorization": {"Bearer t2"}})
			c.frame(t)
			c.frame(t)
			if n2, _ := up.count(); n2 != n+1 {
				t.Errorf("the upstream got %d requests for the second key, want 1", n2-n)
			}
			if got := up.request(n).Header.Get("Authorization"); got != "Bearer t2" {
				t.Errorf("second key's Authorization %q", got)
			}

			// The last client of each key leaves: each request ends.
			a.leave()
			if _, open := up.count(); open != 2 {
				t.Errorf("%d requests open with one client left on each key, want 2", open)
			}
			b.leave()
			c.leave()
			waitUntil(t, func() bool { _, open := up.count(); return open == 0 }, func() string { return "the upstream still answers a request" })
			g.waitIdle(t)
		})
	}
}

// TestSSEUpstreamRefusalKept: an upstream that refused a subscription for
// good (a status, a content type) is not asked for it again for a while by
// clients that come back at once, as an EventSource does: they are refused
// before their stream starts. Other subscriptions are asked for.
func TestSSEUpstreamRefusalKept(t *testing.T) {
	up := newScripted(t, status(http.StatusUnauthorized, "text/plain", "who are you"))
	g := sseGateway(t, up, nil)
	c := g.open(t, "/operations/CountReq?wg_sse&from=3")
	c.frame(t)
	want := `data: {"errors":[{"message":"upstream refused the subscription with HTTP 401","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + completeFrame
	if got := c.rest(t); got != want {
		t.Fatalf("stream %q, want %q", got, want)
	}
	resp, body := g.get(t, http.MethodGet, "/operations/CountReq?wg_sse&from=3")
	if msg, code := errorOf(t, body); resp.StatusCode != http.StatusBadGateway || code != "UPSTREAM_UNAVAILABLE" || msg != "upstream refused the subscription with HTTP 401" {
		t.Errorf("came back: %d %s", resp.StatusCode, body)
	}
	if n, _ := up.count(); n != 1 {
		t.Errorf("the upstream was asked %d times, want once", n)
	}
	// Another key is asked for: it is not the one refused.
	c = g.open(t, "/operations/CountReq?wg_sse&from=2")
	c.frame(t)
	if got := c.rest(t); got != want {
		t.Fatalf("another key: %q, want %q", got, want)
	}
	if n, _ := up.count(); n != 2 {
		t.Errorf("the upstream was asked %d times, want twice", n)
	}
	g.waitIdle(t)
}

// TestSSEUpstreamCaps: MaxUpstreamConns counts a graphql-sse upstream's
// requests, and Close ends its streams as it ends every other.
func TestSSEUpstreamCaps(t *testing.T) {
	up := newScripted(t, events(true, "event: next\ndata: {\"data\":{\"gql_countdown\":1}}\n\n"))
	g := sseGateway(t, up, func(c *gqlpush.Config) { c.MaxUpstreamConns = 1 })
	a := g.open(t, "/operations/CountReq?wg_sse&from=1")
	a.frame(t)
	a.frame(t)
	resp, body := g.get(t, http.MethodGet, "/operations/CountReq?wg_sse&from=2")
	if _, code := errorOf(t, body); resp.StatusCode != http.StatusTooManyRequests || code != "TOO_MANY_UPSTREAM_CONNECTIONS" {
		t.Errorf("a second key: %d %s", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := g.h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want := `data: {"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}` + "\n\n" + completeFrame
	if got := a.rest(t); got != want {
		t.Errorf("at Close: %q, want %q", got, want)
	}
	waitUntil(t, func() bool { _, open := up.count(); return open == 0 }, func() string { return "the upstream still answers a request" })
}

// TestSSEUpstreamHTTP2: over HTTP/2, subscriptions to an upstream share its
// connection, each a stream of its own, reset when its last client leaves.
func TestSSEUpstreamHTTP2(t *testing.T) {
	var mu sync.Mutex
	var protos, addrs []string
	open := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos, addrs = append(protos, r.Proto), append(addrs, r.RemoteAddr)
		open++
		mu.Unlock()
		defer func() {
			mu.Lock()
			open--
			mu.Unlock()
		}()
		events(true, "event: next\ndata: {\"data\":{\"gql_countdown\":1}}\n\n")(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	g := gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: srv.URL + "/graphql", Protocol: gqlpush.ProtocolSSE, HTTPClient: srv.Client()}},
		Prefix:     "/operations/",
	}, nil)
	a := g.open(t, "/operations/CountReq?wg_sse&from=1")
	b := g.open(t, "/operations/CountReq?wg_sse&from=2")
	for _, c := range []*client{a, b} {
		c.frame(t)
		if got, want := normIDs(c.frame(t)), "id: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\n"; got != want {
			t.Errorf("frame %q, want %q", got, want)
		}
	}
	mu.Lock()
	if len(protos) != 2 || protos[0] != "HTTP/2.0" || protos[1] != "HTTP/2.0" || addrs[0] != addrs[1] {
		t.Errorf("requests over %v from %v, want two over HTTP/2.0 on one connection", protos, addrs)
	}
	mu.Unlock()
	a.leave()
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return open == 1 }, func() string { return "the first subscription's stream was not reset" })
	b.leave()
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return open == 0 }, func() string { return "the second subscription's stream was not reset" })
}

// TestSSEUpstreamHugeHeader: an upstream whose answer's header never ends
// costs gqlpush at most DefaultReadLimit, and the subscription is asked
// again, as a lost response is.
func TestSSEUpstreamHugeHeader(t *testing.T) {
	huge := func(w http.ResponseWriter, r *http.Request) {
		for i := range 200 {
			w.Header().Set(fmt.Sprintf("X-Junk-%d", i), strings.Repeat("j", 8<<10))
		}
		events(true)(w, r)
	}
	up := newScripted(t, huge, events(true, "event: next\ndata: {\"data\":{\"gql_countdown\":1}}\n\n"))
	g := sseGateway(t, up, nil)
	c := g.open(t, "/operations/CountReq?wg_sse&from=1")
	c.frame(t)
	if got, want := normIDs(c.frame(t)), "id: T.0\ndata: {\"data\":{\"gql_countdown\":1}}\n\n"; got != want {
		t.Errorf("frame %q, want %q", got, want)
	}
	if n, _ := up.count(); n != 2 {
		t.Errorf("the upstream was asked %d times, want twice", n)
	}
}
