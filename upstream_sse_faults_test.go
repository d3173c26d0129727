package gqlpush_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
)

// Faults of a graphql-sse upstream, and of the event streams it sends, that
// upstream_sse.go must survive.

// faultNext is a graphql-sse "next" event of CountReq's result n.
func faultNext(n int) string {
	return fmt.Sprintf("event: next\ndata: {\"data\":{\"gql_countdown\":%d}}\n\n", n)
}

// faultFrame is the frame a client gets for CountReq's result n, ids
// normalized.
func faultFrame(i, n int) string {
	return fmt.Sprintf("id: T.%d\ndata: {\"data\":{\"gql_countdown\":%d}}\n\n", i, n)
}

// TestSSEFaultEventStreamRules: event streams read by the HTML
// standard's rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
// which parseEvent says it follows.
func TestSSEFaultEventStreamRules(t *testing.T) {
	tests := []struct {
		name    string
		answers []func(http.ResponseWriter, *http.Request)
		want    string // the stream after its opening comment
	}{
		{
			// "One leading U+FEFF BYTE ORDER MARK character must be
			// ignored if any are present": the first event is a
			// "ping", of no interest, not an event with no type.
			name:    "a leading BOM",
			answers: []func(http.ResponseWriter, *http.Request){events(false, "\ufeffevent: ping\ndata: {\"data\":{\"gql_countdown\":99}}\n\n", faultNext(1), completeFrame)},
			want:    faultFrame(0, 1) + completeFrame,
		},
		{
			// "Once the end of the file is reached, any pending data
			// must be discarded. (If the file ends in the middle of an
			// event, before the final empty line, the incomplete event
			// is not dispatched.)" The response was lost mid-event: the
			// subscription is asked again, and the half-sent result is
			// not delivered.
			name: "an unfinished result at the end of a response",
			answers: []func(http.ResponseWriter, *http.Request){
				events(false, faultNext(1), "event: next\ndata: {\"data\":{\"gql_countdown\":2}}\n"),
				events(false, completeFrame),
			},
			want: faultFrame(0, 1) + completeFrame,
		},
		{
			// The same for a complete event cut before its blank line:
			// the response was lost, not completed; it is asked again.
			name: "an unfinished complete at the end of a response",
			answers: []func(http.ResponseWriter, *http.Request){
				events(false, "event: complete\ndata: \n"),
				events(false, faultNext(5), completeFrame),
			},
			want: faultFrame(0, 5) + completeFrame,
		},
		{
			// Lines end with CRLF, LF or CR, each on its own: an LF
			// then a CR is a line, then an empty line, which
			// dispatches the event.
			name:    "an LF line end followed by a CR one",
			answers: []func(http.ResponseWriter, *http.Request){events(false, "event: next\ndata: {\"data\":{\"gql_countdown\":2}}\n\r"+faultNext(1), completeFrame)},
			want:    faultFrame(0, 2) + faultFrame(1, 1) + completeFrame,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkSSEStream(t, tt.answers, func(c *gqlpush.Config) { c.ReconnectLimit = 500 * time.Millisecond }, tt.want)
		})
	}
}

// TestSSEFaultRefusalOfOneRequestRefusesOthers: an upstream that refuses
// one subscription request for a reason of its own (a WAF that blocks a
// variable's value with a 403 page, say) refuses that request. Other
// subscriptions (another variable value, another operation) of other
// clients are still asked for: the refusal is remembered per forwarded
// values only, and with nothing forwarded every caller shares "".
func TestSSEFaultRefusalOfOneRequestRefusesOthers(t *testing.T) {
	waf := func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Query().Get("variables"), "666") {
			status(http.StatusForbidden, "text/html", "<h1>Request blocked</h1>")(w, r)
			return
		}
		events(true, faultNext(1))(w, r)
	}
	up := newScripted(t, waf)
	g := sseGateway(t, up, nil)
	a := g.open(t, "/operations/CountReq?wg_sse&from=666")
	a.frame(t)
	if got, want := a.rest(t), `data: {"errors":[{"message":"upstream refused the subscription with HTTP 403","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}`+"\n\n"+completeFrame; got != want {
		t.Fatalf("the blocked subscription: %q, want %q", got, want)
	}
	for _, path := range []string{"/operations/CountReq?wg_sse&from=1", "/operations/Count?wg_sse&from=1"} {
		b, resp := g.openWith(t, g.srv.URL+path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("another client's %s: %d %s, want its stream; the upstream was asked %d times", path, resp.StatusCode, b.rest(t), func() int { n, _ := up.count(); return n }())
			continue
		}
		b.frame(t)
		if got, want := normIDs(b.frame(t)), faultFrame(0, 1); got != want {
			t.Errorf("%s: frame %q, want %q", path, got, want)
		}
		b.leave()
	}
}

// TestSSEFaultLongGETTurnsEveryoneToPOST: a 414 is an answer about one
// request's length. One caller's subscription whose variables make its GET
// too long for the upstream must not switch every later subscription of
// every caller to POST for the Handler's life: with an upstream that
// serves subscriptions over GET only, they are all refused for good.
func TestSSEFaultLongGETTurnsEveryoneToPOST(t *testing.T) {
	const result = "event: next\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\"1\",\"content\":\"hi\",\"room\":\"b\"}}}\n\n"
	getOnly := func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet:
			w.Header().Set("Allow", "GET")
			status(http.StatusMethodNotAllowed, "text/plain", "GET only")(w, r)
		case len(r.URL.RawQuery) > 2048:
			status(http.StatusRequestURITooLong, "text/plain", "too long")(w, r)
		default:
			events(true, result)(w, r)
		}
	}
	up := newScripted(t, getOnly)
	g := sseGateway(t, up, func(c *gqlpush.Config) { c.Upstreams[0].ForwardHeaders = []string{"Authorization"} })
	long, _ := g.openWith(t, g.srv.URL+"/operations/Room?wg_sse&room="+strings.Repeat("x", 3000), http.Header{"Authorization": {"Bearer a"}})
	long.frame(t)
	long.rest(t) // refused: the upstream takes neither its GET nor a POST

	b, resp := g.openWith(t, g.srv.URL+"/operations/Room?wg_sse&room=b", http.Header{"Authorization": {"Bearer b"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another caller: %d %s", resp.StatusCode, b.rest(t))
	}
	b.frame(t)
	want := "id: T.0\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\"1\",\"content\":\"hi\",\"room\":\"b\"}}}\n\n"
	if got := normIDs(b.frame(t)); got != want {
		n, _ := up.count()
		t.Errorf("another caller's short subscription: %q, want %q; its request was a %s", got, want, up.request(n-1).Method)
	}
}

// endRecorder records what a source delivers, for OpenUpstream; onEnd,
// when set, runs in the first End, on the source's goroutine.
type endRecorder struct {
	mu    sync.Mutex
	pubs  []string
	ends  []gqlpush.Reason
	onEnd func()
}

func (r *endRecorder) Publish(raw []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubs = append(r.pubs, string(raw))
	return nil
}

func (r *endRecorder) End(reason gqlpush.Reason, _ string) {
	r.mu.Lock()
	r.ends = append(r.ends, reason)
	first, f := len(r.ends) == 1, r.onEnd
	r.mu.Unlock()
	if first && f != nil {
		f()
	}
}

func (r *endRecorder) got() ([]string, []gqlpush.Reason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.pubs...), append([]gqlpush.Reason(nil), r.ends...)
}

// TestSSEFaultEndOnceWhenCompleteMeetsClose: receiver.end is the last
// thing a source tells a receiver ("Nothing follows it"). A subscription
// the upstream completes as the Handler closes is ended once, with
// complete; run checks the source's context after request returned nil
// (the receiver already told) and ends it again with shutdown.
func TestSSEFaultEndOnceWhenCompleteMeetsClose(t *testing.T) {
	up := newScripted(t, events(true, faultNext(1), completeFrame))
	g := sseGateway(t, up, nil)
	closed := make(chan error, 1)
	rec := &endRecorder{}
	rec.onEnd = func() {
		// The Handler closes while the source is still telling the
		// receiver of the complete: wait, bounded, until the source's
		// context has ended (its request is cancelled: the upstream
		// sees it end).
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		go func() {
			defer cancel()
			closed <- g.h.Close(ctx)
		}()
		for {
			if _, open := up.count(); open == 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	stop, err := g.h.OpenUpstream("CountReq", `{"from":1}`, "", rec)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitUntil(t, func() bool { _, ends := rec.got(); return len(ends) > 0 }, func() string { return "the subscription never ended" })
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-waitCtx(t).Done():
		t.Fatal("Close did not return")
	}
	pubs, ends := rec.got()
	if len(pubs) != 1 || len(ends) != 1 || ends[0] != gqlpush.ReasonComplete {
		t.Errorf("the receiver got %q and the ends %v, want one result and one end, complete", pubs, ends)
	}
}

// TestSSEFaultInvalidJSONResult: a receiver takes "one result, valid
// JSON" (source.go); the WebSocket source checks each message with
// json.Valid (scanMessage) and drops one that is not. An event whose data
// is not JSON is dropped likewise, never framed for clients as it came.
func TestSSEFaultInvalidJSONResult(t *testing.T) {
	for _, data := range []string{
		`{"data":nope}`,
		`{"data":{"gql_countdown":7`,
		`{"data":{"gql_countdown":7}} {"data":`,
	} {
		t.Run(data, func(t *testing.T) {
			up := newScripted(t, events(false, "event: next\ndata: "+data+"\n\n", faultNext(1), completeFrame))
			g := sseGateway(t, up, nil)
			c := g.open(t, "/operations/CountReq?wg_sse&from=1")
			c.frame(t)
			if got, want := normIDs(c.rest(t)), faultFrame(0, 1)+completeFrame; got != want {
				t.Errorf("stream:\n%q\nwant:\n%q", got, want)
			}
			resp, body := g.get(t, http.MethodGet, "/operations/CountReq?wg_subscribe_once&from=1")
			if resp.StatusCode != http.StatusOK || body != `{"data":{"gql_countdown":1}}` {
				t.Errorf("once: %d %s", resp.StatusCode, body)
			}
			g.waitIdle(t)
		})
	}
}

// TestSSEFaultTruncatedResultCrashes: an event whose data stops right
// after a top-level key (a response cut mid-event, which the event reader
// dispatches at EOF, or a hostile upstream) must not take the process
// down. The stream runs in a child process of this test binary, for a
// panic there kills the whole binary.
func TestSSEFaultTruncatedResultCrashes(t *testing.T) {
	if os.Getenv("GQLPUSH_SSE_FAULT_CHILD") == "1" {
		for _, answer := range []func(http.ResponseWriter, *http.Request){
			// Eight bytes: the buffer they are read into has no room
			// past them.
			events(false, "event: next\ndata: {\"abcde\"\n\n", faultNext(1), completeFrame),
			events(false, "event: next\ndata: {\"data\"\n\n", faultNext(1), completeFrame),
			// Cut mid-event: no blank line, the response ends.
			events(false, "event: next\ndata: {\"data\":{\"gql_countdown\":1},\"errors\""),
		} {
			up := newScripted(t, answer, events(false, faultNext(1), completeFrame))
			g := sseGateway(t, up, nil)
			c := g.open(t, "/operations/CountReq?wg_sse&from=1")
			c.frame(t)
			if got, want := normIDs(c.rest(t)), faultFrame(0, 1)+completeFrame; got != want {
				t.Errorf("stream:\n%q\nwant:\n%q", got, want)
			}
		}
		return
	}
	cmd := exec.CommandContext(waitCtx(t), os.Args[0], "-test.run=^TestSSEFaultTruncatedResultCrashes$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GQLPUSH_SSE_FAULT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if i := strings.Index(string(out), "goroutine "); i >= 0 {
			out = out[:min(len(out), i+1500)]
		}
		t.Errorf("the gateway's process ended: %v\n%s", err, out)
	}
}
