package gqlpushtest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// sseClient is one GraphQL-over-SSE request, read frame by frame.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	frames *gqlpushtest.SSEReader
	ctx    context.Context
	cancel context.CancelFunc // the client leaves
}

// sseGet and ssePost open a stream; the test fails unless it is accepted.
func sseGet(t *testing.T, srv *gqlpushtest.Server, query, variables string) *sseClient {
	t.Helper()
	c := sseDo(t, srv, http.MethodGet, query, variables, "text/event-stream")
	c.status(http.StatusOK)
	return c
}

func ssePost(t *testing.T, srv *gqlpushtest.Server, query, variables string) *sseClient {
	t.Helper()
	c := sseDo(t, srv, http.MethodPost, query, variables, "text/event-stream")
	c.status(http.StatusOK)
	return c
}

// sseDo sends a request of query and variables (JSON, or "") with method
// and Accept, and an X-Test header.
func sseDo(t *testing.T, srv *gqlpushtest.Server, method, query, variables, accept string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	var req *http.Request
	var err error
	if method == http.MethodGet {
		q := url.Values{"query": {query}}
		if variables != "" {
			q.Set("variables", variables)
		}
		req, err = http.NewRequestWithContext(ctx, method, srv.HTTPURL+"?"+q.Encode(), nil)
	} else {
		body := `{"query":` + quote(query)
		if variables != "" {
			body += `,"variables":` + variables
		}
		req, err = http.NewRequestWithContext(ctx, method, srv.HTTPURL, strings.NewReader(body+"}"))
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("X-Test", "yes")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseClient{t: t, resp: resp, frames: gqlpushtest.NewSSEReader(resp.Body), ctx: ctx, cancel: cancel}
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func (c *sseClient) status(want int) {
	c.t.Helper()
	if c.resp.StatusCode != want {
		b, _ := io.ReadAll(c.resp.Body)
		c.t.Fatalf("status %d (%s), want %d", c.resp.StatusCode, b, want)
	}
}

// expect reads the next frame, which must be want, byte for byte.
func (c *sseClient) expect(want string) {
	c.t.Helper()
	f, err := c.frames.Next()
	if err != nil || f.Raw != want {
		c.t.Fatalf("frame %q (%v), want %q", f.Raw, err, want)
	}
}

// end reads the end of the stream, which must be err.
func (c *sseClient) end(want error) {
	c.t.Helper()
	f, err := c.frames.Next()
	if !errors.Is(err, want) {
		c.t.Fatalf("frame %q (%v), want %v", f.Raw, err, want)
	}
}

// body reads the rest of the response.
func (c *sseClient) body() string {
	c.t.Helper()
	b, err := io.ReadAll(c.resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

func waitSubscriptions(t *testing.T, srv *gqlpushtest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.WaitSubscriptions(ctx, n); err != nil {
		t.Fatalf("waiting for %d subscriptions (%d running): %v", n, srv.Subscriptions(), err)
	}
}

const (
	roomQuery = `subscription ($r: String) { messageCreated(room: $r) { content room } }`
	completed = "event: complete\ndata:\n\n"
)

func TestSSE(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T, srv *gqlpushtest.Server, query, variables string) *sseClient
	}{
		{"GET", sseGet},
		{"POST", ssePost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := gqlpushtest.NewServer(nil)
			defer srv.Close()
			c := tc.open(t, srv, roomQuery, `{"r":"x"}`)
			if got := c.resp.Header.Get("Content-Type"); got != "text/event-stream; charset=utf-8" {
				t.Errorf("Content-Type %q", got)
			}
			if got := c.resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q", got)
			}
			waitSubscriptions(t, srv, 1)
			srv.Chat.Post("y", "elsewhere")
			srv.Chat.Post("x", "here")
			srv.Chat.Post("x", "again")
			c.expect("event: next\ndata: {\"data\":{\"messageCreated\":{\"content\":\"here\",\"room\":\"x\"}}}\n\n")
			c.expect("event: next\ndata: {\"data\":{\"messageCreated\":{\"content\":\"again\",\"room\":\"x\"}}}\n\n")
			srv.CompleteAll()
			c.expect(completed)
			c.end(io.EOF)
			waitSubscriptions(t, srv, 0)

			conns := srv.Conns()
			if len(conns) != 1 || conns[0].ID != 1 || conns[0].Subprotocol != gqlpushtest.ProtocolSSE ||
				conns[0].Header.Get("X-Test") != "yes" || conns[0].InitPayload != nil {
				t.Errorf("conns %+v", conns)
			}
			got := srv.Received()
			if len(got) != 1 || got[0].Conn != 1 || got[0].Type != "subscribe" || got[0].ID != "" ||
				got[0].Query() != roomQuery || string(got[0].Variables()) != `{"r":"x"}` {
				t.Errorf("received %+v", got)
			}
			if n := srv.Handshakes(); n != 1 {
				t.Errorf("%d handshakes", n)
			}
		})
	}
}

func TestSSEEnds(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	c := ssePost(t, srv, `subscription { countdown(from: 2) }`, "")
	c.expect("event: next\ndata: {\"data\":{\"countdown\":2}}\n\n")
	c.expect("event: next\ndata: {\"data\":{\"countdown\":1}}\n\n")
	c.expect(completed)
	c.end(io.EOF)
	waitSubscriptions(t, srv, 0)

	// A query is streamed too: one result, then complete.
	c = sseGet(t, srv, `{ messageCount }`, "")
	if got, want := c.body(), "event: next\ndata: {\"data\":{\"messageCount\":0}}\n\n"+completed; got != want {
		t.Errorf("query: %q, want %q", got, want)
	}
}

func TestSSEClientLeaves(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	c := sseGet(t, srv, roomQuery, "")
	other := ssePost(t, srv, roomQuery, "")
	waitSubscriptions(t, srv, 2)
	c.cancel()
	m, err := srv.WaitFor(other.ctx, func(m gqlpushtest.Message) bool { return m.Type == "complete" })
	if err != nil || m.Conn != 1 || m.ID != "" {
		t.Fatalf("recorded complete: %+v %v", m, err)
	}
	waitSubscriptions(t, srv, 1)

	// The other stream goes on.
	srv.Chat.Post("", "still here")
	other.expect("event: next\ndata: {\"data\":{\"messageCreated\":{\"content\":\"still here\",\"room\":\"general\"}}}\n\n")
}

func TestSSECloseConnections(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	c := sseGet(t, srv, roomQuery, "")
	waitSubscriptions(t, srv, 1)
	srv.CloseConnections()
	// The body ends in the middle of its chunked encoding: no complete.
	c.end(io.ErrUnexpectedEOF)
	waitSubscriptions(t, srv, 0)

	// Dropped by the server, not left by the client: no complete recorded.
	for _, m := range srv.Received() {
		if m.Type == "complete" {
			t.Errorf("recorded %+v", m)
		}
	}

	// The server keeps serving.
	c = ssePost(t, srv, `subscription { countdown(from: 1) }`, "")
	c.expect("event: next\ndata: {\"data\":{\"countdown\":1}}\n\n")
	c.expect(completed)
}

func TestSSERestartAndClose(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	url := srv.HTTPURL
	c := sseGet(t, srv, roomQuery, "")
	waitSubscriptions(t, srv, 1)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.frames.Next(); err == nil {
		t.Fatal("the stream survived the restart")
	}
	if srv.HTTPURL != url {
		t.Fatalf("HTTPURL changed: %s → %s", url, srv.HTTPURL)
	}
	waitSubscriptions(t, srv, 0)
	if got := srv.Received(); len(got) != 1 {
		t.Errorf("received %+v", got)
	}

	c = ssePost(t, srv, roomQuery, "")
	waitSubscriptions(t, srv, 1)
	srv.Close()
	if _, err := c.frames.Next(); err == nil {
		t.Fatal("the stream survived Close")
	}
}

func TestSSEValidationErrors(t *testing.T) {
	const (
		nope       = `subscription { nope }`
		nopeErrors = `{"errors":[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":1,"column":16}]}]}`
	)
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	for _, tc := range []struct {
		name, method, query, variables, accept string
		status                                 int
		body                                   string // "": only the status and Content-Type are checked
	}{
		// As the graphql-sse handler: the errors of a document that
		// parses are its one result for a client that accepts only an
		// event stream, a 400 for any other.
		{"streamed GET", http.MethodGet, nope, "", "text/event-stream", http.StatusOK, "event: next\ndata: " + nopeErrors + "\n\n" + completed},
		{"streamed POST", http.MethodPost, nope, "", "text/event-stream", http.StatusOK, "event: next\ndata: " + nopeErrors + "\n\n" + completed},
		{"400", http.MethodPost, nope, "", "text/event-stream, application/json", http.StatusBadRequest, nopeErrors},
		{"syntax", http.MethodGet, `subscription {`, "", "text/event-stream", http.StatusBadRequest, ""},
		{"variables not JSON", http.MethodGet, roomQuery, `{`, "text/event-stream", http.StatusBadRequest, `{"errors":[{"message":"variables or extensions are not JSON"}]}`},
		{"variables not an object", http.MethodPost, roomQuery, `[1]`, "text/event-stream", http.StatusBadRequest, `{"errors":[{"message":"variables must be an object"}]}`},
		{"no query", http.MethodGet, "", "", "text/event-stream", http.StatusBadRequest, `{"errors":[{"message":"missing query"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sseDo(t, srv, tc.method, tc.query, tc.variables, tc.accept)
			c.status(tc.status)
			want := "application/json; charset=utf-8"
			if tc.status == http.StatusOK {
				want = "text/event-stream; charset=utf-8"
			}
			if got := c.resp.Header.Get("Content-Type"); got != want {
				t.Errorf("Content-Type %q, want %q", got, want)
			}
			if got := c.body(); tc.body != "" && got != tc.body {
				t.Errorf("body %q, want %q", got, tc.body)
			}
		})
	}
	if n := srv.Subscriptions(); n != 0 {
		t.Errorf("%d subscriptions", n)
	}
}

func TestSSERefusals(t *testing.T) {
	refusing := gqlpushtest.NewServer(&gqlpushtest.Options{Protocols: []string{gqlpushtest.ProtocolTransportWS}})
	defer refusing.Close()
	postOnly := gqlpushtest.NewServer(&gqlpushtest.Options{SSEPostOnly: true})
	defer postOnly.Close()
	redirecting := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{Redirect: "/elsewhere"}})
	defer redirecting.Close()
	down := gqlpushtest.NewServer(nil)
	defer down.Close()
	down.SetDown(true)

	for _, tc := range []struct {
		name   string
		srv    *gqlpushtest.Server
		method string
		status int
		header string // name: value, of the answer
	}{
		{"SSE not among Protocols", refusing, http.MethodPost, http.StatusNotAcceptable, ""},
		{"GET when POST only", postOnly, http.MethodGet, http.StatusMethodNotAllowed, "Allow: POST"},
		{"redirect", redirecting, http.MethodGet, http.StatusFound, "Location: /elsewhere"},
		{"down", down, http.MethodPost, http.StatusServiceUnavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sseDo(t, tc.srv, tc.method, roomQuery, "", "text/event-stream")
			c.status(tc.status)
			if name, value, ok := strings.Cut(tc.header, ": "); ok && c.resp.Header.Get(name) != value {
				t.Errorf("%s: %q", name, c.resp.Header.Get(name))
			}
			if n := len(tc.srv.Conns()); n != 0 {
				t.Errorf("%d connections", n)
			}
			if n := tc.srv.Handshakes(); n != 1 {
				t.Errorf("%d handshakes", n)
			}
		})
	}

	// A POST only server serves POST.
	c := ssePost(t, postOnly, `subscription { countdown(from: 1) }`, "")
	c.expect("event: next\ndata: {\"data\":{\"countdown\":1}}\n\n")
	c.expect(completed)

	// graphql-sse is no WebSocket subprotocol.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := postOnly.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: gqlpushtest.ProtocolSSE}); err == nil {
		t.Error("the in-memory dialer took graphql-sse")
	}
	dial(t, postOnly, gqlpushtest.ProtocolSSE).closedWith(4406)
}

func TestSSEOversizedResult(t *testing.T) {
	srv := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{OversizedResult: 100}})
	defer srv.Close()
	c := ssePost(t, srv, `subscription { countdown(from: 2) }`, "")
	c.expect("event: next\ndata: {\"data\":{\"padding\":\"" + strings.Repeat("x", 100-len(`{"data":{"padding":""}}`)) + "\"}}\n\n")
	c.expect("event: next\ndata: {\"data\":{\"countdown\":1}}\n\n")
	c.expect(completed)
}

// A query posted without Accept: text/event-stream is still a query.
func TestSSEQueryUnchanged(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	c := sseDo(t, srv, http.MethodPost, `{ messageCount }`, "", "application/json")
	c.status(http.StatusOK)
	if got := c.body(); got != `{"data":{"messageCount":0}}` {
		t.Errorf("query: %q", got)
	}
	if srv.Queries() != 1 || len(srv.Conns()) != 0 {
		t.Errorf("%d queries, conns %+v", srv.Queries(), srv.Conns())
	}
}

// Over the in-memory client, in a bubble, a stream is read as it is
// written, closing its body is leaving, and a dropped stream ends short.
func TestSSEInMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := gqlpushtest.NewUnstartedServer(nil)
		defer srv.Close()
		open := func() (*http.Response, *gqlpushtest.SSEReader) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, "http://upstream/graphql?query="+url.QueryEscape(roomQuery), nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := srv.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
				t.Fatalf("%s %v", resp.Status, resp.Header)
			}
			return resp, gqlpushtest.NewSSEReader(resp.Body)
		}

		resp, frames := open()
		synctest.Wait()
		srv.Chat.Post("", "hi")
		want := "event: next\ndata: {\"data\":{\"messageCreated\":{\"content\":\"hi\",\"room\":\"general\"}}}\n\n"
		if f, err := frames.Next(); err != nil || f.Raw != want {
			t.Fatalf("frame %q (%v), want %q", f.Raw, err, want)
		}
		resp.Body.Close()
		synctest.Wait()
		if got := srv.Received(); len(got) != 2 || got[1].Type != "complete" || got[1].Conn != 1 || srv.Subscriptions() != 0 {
			t.Fatalf("after leaving: %+v, %d subscriptions", got, srv.Subscriptions())
		}

		resp, frames = open()
		defer resp.Body.Close()
		synctest.Wait()
		srv.CloseConnections()
		if f, err := frames.Next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("dropped: %q %v", f.Raw, err)
		}
	})
}

// A silent server sends nothing, not even complete, and holds the response
// open: it ends only when the connection is dropped.
func TestSSESilent(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	srv.SetSilent(true)
	c := ssePost(t, srv, roomQuery, "")
	waitSubscriptions(t, srv, 1)
	srv.Chat.Post("", "unheard")
	srv.CompleteAll()
	waitSubscriptions(t, srv, 0)
	srv.CloseConnections()
	c.end(io.ErrUnexpectedEOF)
}
