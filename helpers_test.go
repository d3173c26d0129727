package gqlpush_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// waitTime bounds every wait in these tests. It is generous on purpose: the
// tests wait for events, never for durations, and must pass on a loaded
// machine.
const waitTime = 30 * time.Second

// testOperations are the operations the end-to-end tests serve.
var testOperations = map[string]string{
	"Sub": `subscription MyQuery {
  gql_messageCreated {
    content
    id
  }
}
`,
	"Room": `subscription ($room: String) {
  gql_messageCreated(room: $room) { id content room }
}`,
	"Count":    `subscription ($from: Int! = 3) { gql_countdown(from: $from) }`,
	"CountReq": `subscription ($from: Int!) { gql_countdown(from: $from) }`,
	"chat/Rooms": `subscription ($rooms: [String!]) {
  gql_messageCreated(filter: {rooms: $rooms}) { id content room }
}`,
	"Filter": `subscription ($filter: MessageFilter!) { gql_messageCreated(filter: $filter) { id } }`,
}

func mustParse(t testing.TB, ops map[string]string) []*gqlpush.Operation {
	t.Helper()
	var out []*gqlpush.Operation
	for name, src := range ops {
		op, err := gqlpush.ParseOperation(name, src)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		out = append(out, op)
	}
	return out
}

// A gateway is a Handler in front of a gqlpushtest upstream, served over real
// HTTP on loopback.
type gateway struct {
	up  *gqlpushtest.Server
	h   *gqlpush.Handler
	srv *httptest.Server
}

// newGateway starts an upstream and a gateway mounted at /operations/. edit
// may change the configuration before the handler is built.
func newGateway(t *testing.T, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	return gatewayFor(t, up, edit)
}

// gatewayFor serves the test operations, mounted at /operations/ on
// loopback, in front of up.
func gatewayFor(t *testing.T, up *gqlpushtest.Server, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	g := gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL, Schema: gqlpushtest.ChatSchema}},
		Prefix:     "/operations/",
	}, edit)
	g.up = up
	return g
}

// gatewayWith serves cfg, mounted at /operations/ on loopback; edit may
// change it before the handler is built.
func gatewayWith(t *testing.T, cfg gqlpush.Config, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	return gatewayStarted(t, cfg, edit, (*httptest.Server).Start)
}

// gatewayStarted is gatewayWith, its server started by start (StartTLS,
// say).
func gatewayStarted(t *testing.T, cfg gqlpush.Config, edit func(*gqlpush.Config), start func(*httptest.Server)) *gateway {
	t.Helper()
	if edit != nil {
		edit(&cfg)
	}
	h, err := gqlpush.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/operations/", h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true // over TLS only
	start(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
	})
	return &gateway{h: h, srv: srv}
}

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// get makes a request and reads the whole response.
func (g *gateway) get(t *testing.T, method, path string) (*http.Response, string) {
	t.Helper()
	return g.request(t, method, path, nil)
}

// do makes a GET with headers and reads the whole response.
func (g *gateway) do(t *testing.T, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	return g.request(t, http.MethodGet, path, header)
}

func (g *gateway) request(t *testing.T, method, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(waitCtx(t), method, g.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// A client is one open streaming response. Its frames are read through sse;
// br is the same stream, for tests that read it otherwise (a plain stream,
// the rest of a stream).
type client struct {
	resp   *http.Response
	br     *bufio.Reader
	sse    *gqlpushtest.SSEReader // reads through br
	cancel context.CancelFunc
}

// open starts a streaming request; the client leaves when the test ends or
// when leave is called.
func (g *gateway) open(t *testing.T, path string) *client {
	t.Helper()
	return g.openURL(t, g.srv.URL+path)
}

func (g *gateway) openURL(t *testing.T, url string) *client {
	t.Helper()
	c, _ := g.openWith(t, url, nil)
	return c
}

// openWith starts a streaming request with headers, whatever its status.
func (g *gateway) openWith(t *testing.T, url string, header http.Header) (*client, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	c := &client{resp: resp, br: br, sse: gqlpushtest.NewSSEReader(br), cancel: cancel}
	t.Cleanup(c.leave)
	return c, resp
}

func (c *client) leave() {
	c.cancel()
	c.resp.Body.Close()
}

// frame reads one SSE frame, up to and including its blank line, and
// returns its raw text.
func (c *client) frame(t *testing.T) string {
	t.Helper()
	f, err := c.sse.Next()
	if err != nil {
		t.Fatalf("read frame: %v (so far %q)", err, f.Raw)
	}
	return f.Raw
}

// readFrame reads one SSE frame of a client's br without a testing.T, for
// client goroutines, and returns its raw text.
func readFrame(br *bufio.Reader) (string, error) {
	f, err := gqlpushtest.NewSSEReader(br).Next()
	return f.Raw, err
}

// rest reads the stream to its end.
func (c *client) rest(t *testing.T) string {
	t.Helper()
	b, err := io.ReadAll(c.br)
	if err != nil {
		t.Fatalf("read to end: %v (so far %q)", err, b)
	}
	return string(b)
}

func newLocalListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// waitFor waits until the upstream has received a matching message.
func (g *gateway) waitFor(t *testing.T, what string, match func(gqlpushtest.Message) bool) gqlpushtest.Message {
	t.Helper()
	m, err := g.up.WaitFor(waitCtx(t), match)
	if err != nil {
		t.Fatalf("upstream never received %s: %v; it received %v", what, err, g.up.Received())
	}
	return m
}

func isType(typ string) func(gqlpushtest.Message) bool {
	return func(m gqlpushtest.Message) bool { return m.Type == typ }
}

func isTypeID(typ, id string) func(gqlpushtest.Message) bool {
	return func(m gqlpushtest.Message) bool { return m.Type == typ && m.ID == id }
}

// waitSubscriptions waits until the upstream runs exactly n subscriptions.
func (g *gateway) waitSubscriptions(t *testing.T, n int) {
	t.Helper()
	if err := g.up.WaitSubscriptions(waitCtx(t), n); err != nil {
		t.Fatalf("upstream runs %d subscriptions, want %d", g.up.Subscriptions(), n)
	}
}

// waitIdle waits until the handler holds no stream and no subscription.
func (g *gateway) waitIdle(t *testing.T) {
	t.Helper()
	waitStats(t, g.h, "no stream and no subscription", func(s gqlpush.Stats) bool { return s.Streams == 0 && s.Subscriptions == 0 })
}

// waitStreams waits until the handler serves exactly n streams.
func (g *gateway) waitStreams(t *testing.T, n int) {
	t.Helper()
	waitStats(t, g.h, fmt.Sprintf("%d streams", n), func(s gqlpush.Stats) bool { return s.Streams == n })
}

// waitStats waits, within waitTime, until the handler's Stats satisfy cond.
// A Handler tells no one when its counts change, so they are read again
// every few milliseconds.
func waitStats(t testing.TB, h *gqlpush.Handler, what string, cond func(gqlpush.Stats) bool) {
	t.Helper()
	waitUntil(t, func() bool { return cond(h.Stats()) }, func() string {
		return fmt.Sprintf("waited for %s; the handler holds %+v", what, h.Stats())
	})
}

// waitUntil looks at cond every few milliseconds until it holds, or fails
// t after waitTime with what failure says.
func waitUntil(t testing.TB, cond func() bool, failure func() string) {
	t.Helper()
	ctx := waitCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal(failure())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

var eventID = regexp.MustCompile(`(?m)^id: [a-z2-7]{16}\.`)

// normIDs replaces the random part of event ids with T, so that streams can
// be compared byte for byte: "id: T.0".
func normIDs(s string) string {
	return eventID.ReplaceAllString(s, "id: T.")
}

// errorOf decodes a JSON error body.
func errorOf(t *testing.T, body string) (msg, code string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not a JSON error body: %q", body)
	}
	return e.Errors[0].Message, e.Errors[0].Extensions.Code
}
