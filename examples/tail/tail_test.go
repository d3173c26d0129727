package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait for something that should happen soon: long enough
// for a slow, loaded machine, so a failure means a hang, not slowness.
const wait = 30 * time.Second

// The operations the bridge serves.
var operations = map[string]string{
	"Countdown": `subscription ($from: Int! = 3) { gql_countdown(from: $from) }`,
	"Messages":  `subscription { gql_messageCreated { id content } }`,
}

// startBridge serves the operations with a gqlpush Handler over httptest,
// subscribing to upstreamURL, and returns its base URL. A non-nil wrap wraps
// the handler.
func startBridge(t *testing.T, upstreamURL string, cfg gqlpush.Config, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	for name, src := range operations {
		op, err := gqlpush.ParseOperation(name, src)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Operations = append(cfg.Operations, op)
	}
	cfg.Upstreams = []gqlpush.Upstream{{Name: "gql", URL: upstreamURL, Schema: gqlpushtest.ChatSchema}}
	cfg.Prefix = "/operations/"
	h, err := gqlpush.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var hh http.Handler = h
	if wrap != nil {
		hh = wrap(h)
	}
	srv := httptest.NewServer(hh)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close handler: %v", err)
		}
	})
	return srv.URL
}

// startUpstream starts the chat upstream on a loopback port.
func startUpstream(t *testing.T) *gqlpushtest.Server {
	t.Helper()
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	return up
}

// refusedURL returns a ws:// URL on which nothing listens.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr + "/graphql"
}

// countRequests wraps a handler, counting its requests.
func countRequests(n *atomic.Int32) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			h.ServeHTTP(w, r)
		})
	}
}

// runTail runs tail to its end.
func runTail(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("run did not return before its context ended (stderr %q)", errOut.String())
	}
	return out.String(), errOut.String(), err
}

func TestComplete(t *testing.T) {
	up := startUpstream(t)
	base := startBridge(t, up.URL, gqlpush.Config{}, nil)
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{"default", "wg_sse=true", `{"data":{"gql_countdown":3}}` + "\n" + `{"data":{"gql_countdown":2}}` + "\n" + `{"data":{"gql_countdown":1}}` + "\n"},
		{"variable", "wg_sse&from=2", `{"data":{"gql_countdown":2}}` + "\n" + `{"data":{"gql_countdown":1}}` + "\n"},
		{"nothing", "wg_sse=1&from=0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runTail(t, base+"/operations/Countdown?"+tt.query)
			if err != nil || stdout != tt.want || stderr != "" {
				t.Fatalf("run = %v\nstdout %q\nstderr %q\nwant nil, stdout %q, no stderr", err, stdout, stderr, tt.want)
			}
		})
	}
}

func TestUpstreamUnavailable(t *testing.T) {
	var requests atomic.Int32
	base := startBridge(t, refusedURL(t), gqlpush.Config{ReconnectLimit: -1}, countRequests(&requests))
	stdout, stderr, err := runTail(t, "-retries", "3", base+"/operations/Countdown?wg_sse=true")
	if !errors.Is(err, errFailed) {
		t.Errorf("run = %v, want %v", err, errFailed)
	}
	if want := "upstream unavailable (UPSTREAM_UNAVAILABLE)\n"; stderr != want || stdout != "" {
		t.Errorf("stdout %q, stderr %q; want no stdout, stderr %q", stdout, stderr, want)
	}
	// The stream ended on purpose: no reconnect.
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestRefused(t *testing.T) {
	up := startUpstream(t)
	var requests atomic.Int32
	base := startBridge(t, up.URL, gqlpush.Config{}, countRequests(&requests))
	tests := []struct {
		name string
		path string
		want string
	}{
		{"unknown operation", "/operations/Nope?wg_sse=true", `HTTP 404: no operation "Nope" (NOT_FOUND)`},
		{"bad variable", "/operations/Countdown?wg_sse=true&from=x", "HTTP 400: "},
		{"not SSE", "/operations/Countdown", `the response is "application/json", not an event stream`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requests.Store(0)
			stdout, _, err := runTail(t, "-retries", "3", base+tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || stdout != "" {
				t.Fatalf("run = %v, stdout %q; want an error with %q, no stdout", err, stdout, tt.want)
			}
			// The answer will not change: no retry.
			if n := requests.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// TestRetry checks that tail retries what may work on a later try, as often
// as -retries allows: a refused connection, a 503, a cut stream.
func TestRetry(t *testing.T) {
	up := startUpstream(t)
	countdown := "/operations/Countdown?wg_sse=true&from=1"
	const one = `{"data":{"gql_countdown":1}}` + "\n"
	// failFirst answers the first n requests with fail, the others with h,
	// and records the Last-Event-ID of each.
	var (
		mu      sync.Mutex
		lastIDs []string
	)
	failFirst := func(n int32, requests *atomic.Int32, fail http.HandlerFunc) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
				mu.Unlock()
				if requests.Add(1) <= n {
					fail(w, r)
					return
				}
				h.ServeHTTP(w, r)
			})
		}
	}
	unavailable := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "try later", http.StatusServiceUnavailable)
	}
	// cut sends a result, then ends the response without the complete
	// event, as a dropped connection does. Its event id is not one gqlpush
	// would resume from.
	cut := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(":\n\nid: cut-9\ndata: " + `{"data":{"gql_countdown":9}}` + "\n\n"))
	}
	const nine = `{"data":{"gql_countdown":9}}` + "\n"

	tests := []struct {
		name       string
		fail       http.HandlerFunc
		failures   int32
		retries    string
		wantErr    string // "" for success
		wantOut    string
		wantTries  int32
		wantStderr string
		wantIDs    []string // Last-Event-ID of each request
	}{
		{"503 then ok", unavailable, 1, "1", "", one, 2, "HTTP 503: Service Unavailable; reconnecting in ", []string{"", ""}},
		{"503, no retries", unavailable, 1, "0", "HTTP 503: Service Unavailable", "", 1, "", []string{""}},
		{"503 beyond retries", unavailable, 3, "2", "HTTP 503: Service Unavailable", "", 3, "HTTP 503", []string{"", "", ""}},
		{"cut then ok", cut, 1, "1", "", nine + one, 2, "unexpected EOF; reconnecting in ", []string{"", "cut-9"}},
		{"cut beyond retries", cut, 2, "1", "unexpected EOF", nine + nine, 2, "unexpected EOF; reconnecting in ", []string{"", "cut-9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			lastIDs = nil
			mu.Unlock()
			var requests atomic.Int32
			base := startBridge(t, up.URL, gqlpush.Config{}, failFirst(tt.failures, &requests, tt.fail))
			stdout, stderr, err := runTail(t, "-retries", tt.retries, base+countdown)
			switch {
			case tt.wantErr == "" && err != nil,
				tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("run = %v, want error %q", err, tt.wantErr)
			}
			if stdout != tt.wantOut {
				t.Errorf("stdout %q, want %q", stdout, tt.wantOut)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want it to hold %q", stderr, tt.wantStderr)
			}
			if n := requests.Load(); n != tt.wantTries {
				t.Errorf("%d requests, want %d", n, tt.wantTries)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(lastIDs, tt.wantIDs) {
				t.Errorf("Last-Event-ID of each request %q, want %q", lastIDs, tt.wantIDs)
			}
		})
	}

	t.Run("refused connection", func(t *testing.T) {
		url := "http://" + strings.TrimPrefix(refusedURL(t), "ws://")
		_, stderr, err := runTail(t, "-retries", "1", url)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("run = %v, want connection refused", err)
		}
		if n := strings.Count(stderr, "reconnecting in"); n != 1 {
			t.Errorf("%d reconnects, want 1; stderr %q", n, stderr)
		}
	})
}

// A lineWriter hands each line written to it to a channel.
type lineWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
}

// startTail runs tail in a goroutine against a stream that goes on; it
// returns its stdout lines and run's result.
func startTail(t *testing.T, ctx context.Context, url string) (<-chan string, <-chan error, *bytes.Buffer) {
	t.Helper()
	lines := make(chan string, 16)
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{url}, &lineWriter{lines: lines}, &stderr) }()
	return lines, done, &stderr
}

// TestLargeEvent sends a result far above r3labs/sse's default limit of
// 64 KiB, amid heartbeat comments that tail must skip.
func TestLargeEvent(t *testing.T) {
	up := startUpstream(t)
	base := startBridge(t, up.URL, gqlpush.Config{Heartbeat: 5 * time.Millisecond}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	lines, done, stderr := startTail(t, ctx, base+"/operations/Messages?wg_sse=true")
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	content := strings.Repeat("x", 300<<10)
	m := up.Chat.Post("", content)
	want := `{"data":{"gql_messageCreated":{"id":"` + m.ID + `","content":"` + content + `"}}}`
	select {
	case line := <-lines:
		if line != want {
			t.Fatalf("line of %d bytes, want the %d bytes of the message", len(line), len(want))
		}
	case err := <-done:
		t.Fatalf("run = %v before the message arrived; stderr %q", err, stderr)
	case <-ctx.Done():
		t.Fatal("the message did not arrive")
	}
	// The upstream completes: tail stops, with success.
	up.CompleteAll()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil; stderr %q", err, stderr)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after the stream completed")
	}
	if len(lines) != 0 {
		t.Errorf("tail printed %q after the message, want nothing", <-lines)
	}
}

// TestInterrupt ends run's context, as Ctrl-C does: run returns nil and the
// stream is closed, so gqlpush ends the upstream subscription.
func TestInterrupt(t *testing.T) {
	up := startUpstream(t)
	base := startBridge(t, up.URL, gqlpush.Config{}, nil)
	wctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	ctx, interrupt := context.WithCancel(wctx)
	_, done, stderr := startTail(t, ctx, base+"/operations/Messages?wg_sse=true")
	if err := up.WaitSubscriptions(wctx, 1); err != nil {
		t.Fatal(err)
	}
	interrupt()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v, want nil; stderr %q", err, stderr)
		}
	case <-wctx.Done():
		t.Fatal("run did not return after its context ended")
	}
	if err := up.WaitSubscriptions(wctx, 0); err != nil {
		t.Fatal("the upstream subscription did not end after tail left")
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q, want nothing", stderr)
	}
}

// TestForeignEvents checks frames gqlpush sends rarely or never: reset, an
// unknown event, a result with errors beside its data, indented JSON.
func TestForeignEvents(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(":\n\n" +
			"event: reset\ndata: \n\n" +
			"event: other\ndata: {\"data\":1}\n\n" +
			"data: {\"data\": {\"a\": null},\ndata:  \"errors\": [{\"message\": \"partial \\u001b[31m\"}]}\n\n" +
			":\n\n" +
			"event: complete\ndata: \n\n"))
	}))
	defer srv.Close()
	stdout, stderr, err := runTail(t, srv.URL)
	if err != nil {
		t.Errorf("run = %v, want nil", err)
	}
	if want := `{"data":{"a":null},"errors":[{"message":"partial \u001b[31m"}]}` + "\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if want := "tail: the stream could not be resumed: results may have been missed\npartial \ufffd[31m\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"no URL", nil, errUsage},
		{"two URLs", []string{"http://a/x", "http://b/y"}, errUsage},
		{"not http", []string{"ws://127.0.0.1/x"}, errUsage},
		{"relative", []string{"/operations/Sub"}, errUsage},
		{"negative retries", []string{"-retries", "-1", "http://a/x"}, errUsage},
		{"unknown flag", []string{"-follow", "http://a/x"}, errUsage},
		{"help", []string{"-h"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			if err != tt.want || stdout.Len() != 0 || !strings.Contains(stderr.String(), "usage: tail") && !strings.Contains(stderr.String(), "not an http") {
				t.Fatalf("run(%q) = %v, stdout %q, stderr %q; want %v and the usage on stderr", tt.args, err, stdout.String(), stderr.String(), tt.want)
			}
		})
	}
}
