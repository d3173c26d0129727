package gqlpush_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// fakeGateway serves liveOperations with queries posted to answer, an
// upstream of the test's own; answer is called once the request's body is
// read, and done is closed when the test ends, before the fake server
// closes, for an answer that hangs.
func fakeGateway(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, done <-chan struct{}), edit func(*gqlpush.Config)) (*gateway, *httptest.Server) {
	done := make(chan struct{})
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answer(w, r, done)
	}))
	t.Cleanup(fake.Close)
	t.Cleanup(func() { close(done) })
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	return liveGateway(t, up, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].HTTPURL = fake.URL
		if edit != nil {
			edit(cfg)
		}
	}), fake
}

// answerJSON answers with body, as application/json.
func answerJSON(body string) func(http.ResponseWriter, *http.Request, <-chan struct{}) {
	return func(w http.ResponseWriter, _ *http.Request, _ <-chan struct{}) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}
}

// truncated512 is an answer cut short after its first key, exactly 512
// bytes long: io.ReadAll's first buffer, so the slice's capacity is its
// length, and a scan past its end finds no spare room.
var truncated512 = "{" + strings.Repeat(" ", 505) + `"data"`

// An answer that is not valid JSON is no GraphQL response: 502 once, the
// end of a live stream at the reconnect limit; never bytes passed on
// (frames injected into a stream), never a panic.
func TestQueryInvalidAnswers(t *testing.T) {
	for _, answer := range []string{
		`{"data":{"gql_messages":[{"content":"x"}]}`,
		`{"data":{"gql_messages":[{"content":"x"}]}} trailing`,
		`{"data":nope}`,
		"{\"data\":{\"gql_messages\":[{\"content\":\"x\n\nevent: complete\ndata: \n\n\"}]}}",
		truncated512,
	} {
		g, _ := fakeGateway(t, answerJSON(answer), func(cfg *gqlpush.Config) { cfg.ReconnectLimit = 100 * time.Millisecond })
		resp, body := g.get(t, http.MethodGet, "/operations/Messages")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"code":"UPSTREAM_UNAVAILABLE"`) {
			t.Errorf("upstream answered %.40q: %d %s", answer, resp.StatusCode, body)
		}
		c := g.open(t, "/operations/Messages?wg_live&wg_sse")
		c.frame(t)
		wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "upstream unavailable")
		g.waitIdle(t)
	}
}

// Close ends a query answered once that waits on its upstream: 503 at
// once, not an answer at QueryTimeout.
func TestQueryOnceAtClose(t *testing.T) {
	arrived := make(chan struct{}, 1)
	g, _ := fakeGateway(t, func(_ http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}, func(cfg *gqlpush.Config) { cfg.QueryTimeout = 2 * waitTime }) // longer than the test waits for Close
	got := make(chan string, 1)
	go func() { // ends when the request does, by Close at the latest
		resp, err := http.Get(g.srv.URL + "/operations/Messages")
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- fmt.Sprint(resp.StatusCode, " ", string(body))
	}()
	select {
	case <-arrived:
	case <-waitCtx(t).Done():
		t.Fatal("the query never reached the upstream")
	}
	if err := g.h.Close(waitCtx(t)); err != nil {
		t.Fatalf("Close with a query in flight: %v", err)
	}
	if r := <-got; !strings.HasPrefix(r, "503 ") || !strings.Contains(r, "SHUTTING_DOWN") {
		t.Fatalf("the query got %s, want 503 SHUTTING_DOWN", r)
	}
}

// Close closes the connections gqlpush opened to post queries.
func TestQueryConnectionsClosed(t *testing.T) {
	var open atomic.Int64
	fake := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data":{"gql_messages":[]}}`))
	}))
	fake.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	fake.Start()
	t.Cleanup(fake.Close)
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := liveGateway(t, up, func(cfg *gqlpush.Config) { cfg.Upstreams[0].HTTPURL = fake.URL })
	if resp, body := g.get(t, http.MethodGet, "/operations/Messages"); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if err := g.h.Close(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return open.Load() == 0 }, func() string {
		return fmt.Sprintf("%d connections to the query upstream open after Close", open.Load())
	})
}

// liveOperations are the test operations and queries.
func liveOperations(t testing.TB) []*gqlpush.Operation {
	ops := maps.Clone(testOperations)
	ops["Messages"] = `query Messages($room: String) { gql_messages(room: $room) { content } }`
	ops["Slow"] = `query Slow @live(pollingIntervalSeconds: 5) { gql_messages { content } }`
	return mustParse(t, ops)
}

// liveGateway serves liveOperations in front of up, with edit.
func liveGateway(t *testing.T, up *gqlpushtest.Server, edit func(*gqlpush.Config)) *gateway {
	return gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Operations = liveOperations(t)
		cfg.LivePollInterval = 20 * time.Millisecond
		if edit != nil {
			edit(cfg)
		}
	})
}

// A query is answered once: the upstream's result as the body; the
// upstream was posted the query with the namespaced field aliased back.
func TestQueryOnce(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	up.Chat.Post("lobby", "hello")
	up.Chat.Post("other", "elsewhere")
	g := liveGateway(t, up, nil)
	resp, body := g.get(t, http.MethodGet, "/operations/Messages?room=lobby")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if want := `{"data":{"gql_messages":[{"content":"hello"}]}}`; body != want {
		t.Fatalf("body %s, want %s", body, want)
	}
	msgs, err := up.WaitMatches(waitCtx(t), 1, func(m gqlpushtest.Message) bool { return m.Type == "query" })
	if err != nil {
		t.Fatal(err)
	}
	var posted struct {
		Query         string
		Variables     map[string]any
		OperationName string
	}
	if err := json.Unmarshal(msgs[0].Payload, &posted); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(posted.Query, "gql_messages: messages(room: $room)") || posted.Variables["room"] != "lobby" || posted.OperationName != "Messages" {
		t.Fatalf("the upstream was posted %s", msgs[0].Payload)
	}
}

// A live query sends its result at once, then a result only when it
// changed, to every client, from one poller.
func TestQueryLive(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	up.Chat.Post("", "first")
	g := liveGateway(t, up, nil)
	a := g.open(t, "/operations/Messages?wg_live&wg_sse")
	a.frame(t) // the opening comment
	if f := a.frame(t); !strings.HasPrefix(f, "id: ") || !strings.Contains(f, `data: {"data":{"gql_messages":[{"content":"first"}]}}`) {
		t.Fatalf("first frame %q", f)
	}
	// A second client gets the current result at once, from the same
	// poller.
	b := g.open(t, "/operations/Messages?wg_live")
	if f := b.frame(t); f != `{"data":{"gql_messages":[{"content":"first"}]}}`+"\n\n" {
		t.Fatalf("second client's first frame %q", f)
	}
	up.Chat.Post("", "second")
	want := `{"data":{"gql_messages":[{"content":"first"},{"content":"second"}]}}`
	if f := a.frame(t); !strings.Contains(f, want) {
		t.Fatalf("after a change: %q", f)
	}
	if f := b.frame(t); f != want+"\n\n" {
		t.Fatalf("after a change, the second client: %q", f)
	}
	if n := g.h.Stats().Subscriptions; n != 1 {
		t.Fatalf("%d pollers for one key", n)
	}
}

// A live query's client that comes back with the id of the current result
// gets nothing until it changes; with an older id, the current result.
func TestQueryLiveResume(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	up.Chat.Post("", "one")
	g := liveGateway(t, up, nil)
	keep := g.open(t, "/operations/Messages?wg_live&wg_sse")
	keep.frame(t)
	first := keep.frame(t)
	up.Chat.Post("", "two")
	second := keep.frame(t)
	idOf := func(f string) string { id, _, _ := strings.Cut(strings.TrimPrefix(f, "id: "), "\n"); return id }

	c, _ := g.openWith(t, g.srv.URL+"/operations/Messages?wg_live&wg_sse", http.Header{"Last-Event-Id": {idOf(second)}})
	c.frame(t)
	up.Chat.Post("", "three")
	if f := c.frame(t); !strings.Contains(f, `"three"`) {
		t.Fatalf("resumed at the current result, then %q", f)
	}
	// An older id: the current result, not the states in between.
	old, _ := g.openWith(t, g.srv.URL+"/operations/Messages?wg_live&wg_sse", http.Header{"Last-Event-Id": {idOf(first)}})
	old.frame(t)
	if f := old.frame(t); !strings.Contains(f, `"three"`) {
		t.Fatalf("resumed after an older result: %q, want the current one", f)
	}
}

// The error table of queries.
func TestQueryErrors(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := liveGateway(t, up, nil)
	for _, tt := range []struct {
		path   string
		status int
		code   string
		msg    string
	}{
		{"/operations/Messages?wg_subscribe_once", 400, "BAD_USER_INPUT", "wg_subscribe_once is for subscriptions"},
		{"/operations/Sub?wg_live", 400, "BAD_USER_INPUT", "wg_live is for queries"},
		{"/operations/Messages?wg_sse", 400, "BAD_USER_INPUT", "add wg_live to follow the query"},
		{"/operations/Messages?wg_live=maybe", 400, "BAD_USER_INPUT", "wg_live must be true, false"},
		{"/operations/Messages?room=1&room=2", 400, "BAD_USER_INPUT", ""},
		{"/operations/Messages?nope=1", 400, "BAD_USER_INPUT", ""},
	} {
		resp, body := g.get(t, http.MethodGet, tt.path)
		if resp.StatusCode != tt.status || !strings.Contains(body, `"code":"`+tt.code+`"`) || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: %d %s", tt.path, resp.StatusCode, body)
		}
	}
}

// What an upstream answers that is no GraphQL response, or too large, or
// too late, gets an error a client can tell apart; a live stream ends
// with it after the reconnect limit.
func TestQueryUpstreamFaults(t *testing.T) {
	var mode atomic.Value
	g, fake := fakeGateway(t, func(w http.ResponseWriter, r *http.Request, done <-chan struct{}) {
		switch mode.Load() {
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "html":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>hi</html>"))
		case "not graphql":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"hello":"world"}`))
		case "large":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"data":{"gql_messages":[{"content":"` + strings.Repeat("x", 4096) + `"}]}}`))
		case "slow":
			select {
			case <-r.Context().Done():
			case <-done:
			}
		case "graphql error":
			w.Header().Set("Content-Type", "application/graphql-response+json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"errors":[{"message":"bad query"}]}`))
		}
	}, func(cfg *gqlpush.Config) {
		cfg.MaxResponseBytes = 1024
		cfg.QueryTimeout = 200 * time.Millisecond
		cfg.ReconnectLimit = 100 * time.Millisecond
	})
	for _, tt := range []struct {
		mode   string
		status int
		want   string
	}{
		{"500", 502, `"code":"UPSTREAM_UNAVAILABLE"`},
		{"html", 502, `"code":"UPSTREAM_UNAVAILABLE"`},
		{"not graphql", 502, `"code":"UPSTREAM_UNAVAILABLE"`},
		{"large", 502, `"code":"RESULT_TOO_LARGE"`},
		{"slow", 504, `"code":"UPSTREAM_TIMEOUT"`},
		{"graphql error", 200, `{"errors":[{"message":"bad query"}]}`},
	} {
		mode.Store(tt.mode)
		resp, body := g.get(t, http.MethodGet, "/operations/Messages")
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) || strings.Contains(body, fake.URL) {
			t.Errorf("%s: %d %s", tt.mode, resp.StatusCode, body)
		}
	}
	mode.Store("500")
	c := g.open(t, "/operations/Messages?wg_live&wg_sse")
	c.frame(t)
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "upstream unavailable")
	mode.Store("large")
	c = g.open(t, "/operations/Messages?wg_live&wg_sse")
	c.frame(t)
	wantEnd(t, c, "RESULT_TOO_LARGE", "")
	// A query the upstream refuses ends a live stream with its errors:
	// asking again would be refused again.
	mode.Store("graphql error")
	c = g.open(t, "/operations/Messages?wg_live&wg_sse")
	c.frame(t)
	if rest := c.rest(t); rest != `data: {"errors":[{"message":"bad query"}]}`+"\n\nevent: complete\ndata: \n\n" {
		t.Fatalf("a refused live query: %q", rest)
	}
	g.waitIdle(t)
}

// An upstream whose schema has no subscription type serves queries, and
// a subscription against it is refused when the handler is built.
func TestQueriesOfAQueryOnlyUpstream(t *testing.T) {
	schema := "type Query { messages(room: String): [Message!]! }\ntype Message { content: String! }"
	ops := mustParse(t, map[string]string{"Messages": `query { gql_messages { content } }`})
	if _, err := gqlpush.NewHandler(gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/", Schema: schema}}}); err != nil {
		t.Fatalf("a query-only upstream: %v", err)
	}
	ops = mustParse(t, testOperations)
	_, err := gqlpush.NewHandler(gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/", Schema: schema}}})
	var oe *gqlpush.OperationError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "invalid against the upstream schema") {
		t.Fatalf("a subscription against a query-only upstream: %v", err)
	}
}

// Queries' settings and rules are checked when the handler is built.
func TestQueryConfigErrors(t *testing.T) {
	two := []gqlpush.Upstream{{Name: "a", URL: "ws://127.0.0.1:1/"}, {Name: "b", URL: "ws://127.0.0.1:2/"}}
	for _, tt := range []struct {
		name string
		cfg  gqlpush.Config
		want string
	}{
		{"fields of two upstreams", gqlpush.Config{Operations: mustParse(t, map[string]string{"Q": "query {\n  a_x\n  b_y\n}"}), Upstreams: two},
			"Q.graphql:3:3: field b_y is not of the upstream of a_x"},
		{"a NATS upstream", gqlpush.Config{Operations: mustParse(t, map[string]string{"Q": "query { a_x }"}), Upstreams: []gqlpush.Upstream{{Name: "a", URL: "nats://127.0.0.1:1", Schema: "type Query { x: Int }\ntype Subscription { y: Int @natsSubscribe(subjects: [\"y\"]) }"}}},
			"it serves subscriptions only"},
		{"HTTPURL not http", gqlpush.Config{Operations: mustParse(t, map[string]string{"Q": "query { a_x }"}), Upstreams: []gqlpush.Upstream{{Name: "a", URL: "ws://127.0.0.1:1/", HTTPURL: "ftp://x/"}}},
			`upstream "a": HTTPURL is not an http:// or https:// URL with a host`},
	} {
		_, err := gqlpush.NewHandler(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// The login check and role rules guard queries as they guard
// subscriptions, once and live; forwarded headers go with the POST, and
// callers whose forwarded values differ never share a poller.
func TestQueryAuth(t *testing.T) {
	is := jwttest.NewIssuer(t)
	g := newAuthGateway(t, is, func(cfg *gqlpush.Config) {
		ops := maps.Clone(authOperations)
		ops["Admins"] = `query @rbac(requireMatchAny: [admin]) { gql_messageCount }`
		ops["MyCount"] = `query ($user: String @fromClaim(name: "sub")) { gql_messageCount(room: $user) }`
		cfg.Operations = mustParse(t, ops)
		cfg.Upstreams[0].ForwardHeaders = []string{"X-Tenant"}
		cfg.LivePollInterval = 20 * time.Millisecond
	})
	admin := bearer(is.RS256(t, jwttest.Claims("alice", "admin")))
	reader := bearer(is.RS256(t, jwttest.Claims("bob", "reader")))
	for _, tt := range []struct {
		name   string
		path   string
		header http.Header
		status int
	}{
		{"anonymous", "/operations/Admins", nil, http.StatusUnauthorized},
		{"anonymous live", "/operations/Admins?wg_live", nil, http.StatusUnauthorized},
		{"wrong role", "/operations/Admins", reader, http.StatusForbidden},
		{"wrong role live", "/operations/Admins?wg_live", reader, http.StatusForbidden},
		{"admin", "/operations/Admins", admin, http.StatusOK},
	} {
		resp, body := g.do(t, tt.path, tt.header)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, body, tt.status)
		}
	}
	g.up.Chat.Post("alice", "for alice")
	h := admin.Clone()
	h.Set("X-Tenant", "t1")
	resp, body := g.do(t, "/operations/MyCount", h)
	if resp.StatusCode != http.StatusOK || body != `{"data":{"gql_messageCount":1}}` {
		t.Fatalf("alice's count: %d %s", resp.StatusCode, body)
	}
	msgs, err := g.up.WaitMatches(waitCtx(t), 2, func(m gqlpushtest.Message) bool { return m.Type == "query" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[1].Payload), `"variables":{"user":"alice"}`) {
		t.Fatalf("the upstream was posted %s", msgs[1].Payload)
	}
	// Two tenants: two pollers.
	a, _ := g.openWith(t, g.srv.URL+"/operations/MyCount?wg_live", h)
	a.frame(t)
	h2 := h.Clone()
	h2.Set("X-Tenant", "t2")
	b, _ := g.openWith(t, g.srv.URL+"/operations/MyCount?wg_live", h2)
	b.frame(t)
	if n := g.h.Stats().Subscriptions; n != 2 {
		t.Fatalf("%d pollers for two tenants", n)
	}
}
