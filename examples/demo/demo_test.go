package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

// mainEnv makes the test binary run main() instead of the tests, for
// TestInterrupt.
const mainEnv = "GQLPUSH_DEMO_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Args = []string{os.Args[0], "-listen", "127.0.0.1:0"}
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// wait bounds every wait for something that should happen soon: long enough
// for a slow, loaded machine, so a failure means a hang, not slowness.
const wait = 30 * time.Second

// A demo is run serving on a loopback port.
type demo struct {
	base   string // http://127.0.0.1:port
	cancel context.CancelFunc
	done   chan error
	stdout *bytes.Buffer // read only after done
	client *http.Client
}

func startDemo(t *testing.T) *demo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &demo{
		base:   "http://" + ln.Addr().String(),
		cancel: cancel,
		done:   make(chan error, 1),
		stdout: new(bytes.Buffer),
		client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
	}
	go func() { d.done <- run(ctx, ln, d.stdout, t.Output()) }()
	t.Cleanup(func() {
		d.stop(t)
		d.client.CloseIdleConnections()
	})
	return d
}

// stop cancels run's context and returns what run returned. It may be called
// more than once.
func (d *demo) stop(t *testing.T) error {
	t.Helper()
	d.cancel()
	select {
	case err, ok := <-d.done:
		if ok {
			close(d.done)
		}
		return err
	case <-time.After(wait):
		t.Fatal("run did not return after its context ended")
		return nil
	}
}

func (d *demo) post(t *testing.T, contentType, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, d.base+"/post", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	res, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

type chatMessage struct {
	Content string `json:"content"`
	ID      string `json:"id"`
}

// nextMessage reads frames until a result of Sub.graphql and returns its
// message. Results must have exactly the shape of the operation.
func nextMessage(t *testing.T, frames *gqlpushtest.SSEReader) chatMessage {
	t.Helper()
	for {
		f, err := frames.Next()
		if err != nil {
			t.Fatalf("reading the stream: %v (after %q)", err, f.Raw)
		}
		if f.Raw == ":\n\n" {
			continue
		}
		// An id line may come first, for resumption; then one data line.
		want := "data: " + f.Data + "\n\n"
		if f.ID != "" {
			want = "id: " + f.ID + "\n" + want
		}
		if f.Raw != want {
			t.Fatalf("frame %q, want a data frame", f.Raw)
		}
		var r struct {
			Data struct {
				Msg *chatMessage `json:"gql_messageCreated"`
			} `json:"data"`
		}
		dec := json.NewDecoder(strings.NewReader(f.Data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil || r.Data.Msg == nil || r.Data.Msg.ID == "" {
			t.Fatalf("frame %q, want {\"data\":{\"gql_messageCreated\":{\"content\":…,\"id\":…}}} (%v)", f.Raw, err)
		}
		return *r.Data.Msg
	}
}

func TestDemo(t *testing.T) {
	d := startDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()

	t.Run("page", func(t *testing.T) {
		res, body := d.get(t, ctx, "/")
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("GET / = %d %q, want 200 text/html", res.StatusCode, res.Header.Get("Content-Type"))
		}
		for _, want := range []string{
			"new EventSource(url)", "'/operations/Sub?wg_sse=true'", "'/operations/Orders?wg_sse=true'",
			"addEventListener('complete'", "These come from NATS, with no GraphQL server behind",
		} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("the page lacks %q", want)
			}
		}
		if bytes.Contains(body, []byte("innerHTML")) {
			t.Error("the page uses innerHTML")
		}
		for _, tag := range []string{"script", "style"} {
			if src := inlineHash(body, tag); !strings.Contains(res.Header.Get("Content-Security-Policy"), "-src "+src+";") {
				t.Errorf("Content-Security-Policy %q does not allow the page's inline %s (%s)", res.Header.Get("Content-Security-Policy"), tag, src)
			}
		}
	})

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/operations/Sub?wg_sse=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /operations/Sub?wg_sse=true = %d %q, want 200 text/event-stream", res.StatusCode, res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	frames := gqlpushtest.NewSSEReader(br) // reads through br, which the end of the test reads
	if f, err := frames.Next(); f.Raw != ":\n\n" {
		t.Fatalf("first frame %q (%v), want \":\\n\\n\"", f.Raw, err)
	}

	// The ticker's messages arrive...
	if m := nextMessage(t, frames); !strings.HasPrefix(m.Content, "tick ") {
		t.Fatalf("first message %+v, want a tick", m)
	}
	// ... and so does a posted one, now that the subscription runs.
	const hello = "hello from <the test> & \"friends\""
	if res := d.post(t, "application/json", `{"content":"hello from <the test> & \"friends\""}`); res.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /post = %d, want 204", res.StatusCode)
	}
	for {
		m := nextMessage(t, frames)
		if m.Content == hello {
			break
		}
		if !strings.HasPrefix(m.Content, "tick ") {
			t.Fatalf("message %+v, want a tick or %q", m, hello)
		}
	}

	// Shutting down ends the stream: the shutdown error, then the complete
	// event, then the end of the response.
	d.stopEnds(t, br)

	out := d.stdout.String()
	for _, want := range []string{
		d.base + "/\n",
		"curl -N '" + d.base + "/operations/Sub?wg_sse=true'\n",
		"curl -N '" + d.base + "/operations/Orders?wg_sse=true'\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	// The listener is closed.
	if c, err := net.Dial("tcp", strings.TrimPrefix(d.base, "http://")); err == nil {
		c.Close()
		t.Error("the demo's port still accepts connections after run returned")
	}
}

// get makes a GET of path and reads the whole response.
func (d *demo) get(t *testing.T, ctx context.Context, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return res, body
}

// The live query Count is answered once, and followed live: the count of
// messages, pushed when the ticks change it.
func TestCount(t *testing.T) {
	d := startDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	res, body := d.get(t, ctx, "/operations/Count")
	count := regexp.MustCompile(`^\{"data":\{"gql_messageCount":([0-9]+)\}\}$`)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" || !count.Match(body) {
		t.Fatalf("GET /operations/Count = %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}

	res, br, frames := d.openStream(t, ctx, "/operations/Count?wg_live=true&wg_sse=true", nil)
	defer res.Body.Close()
	prev := -1
	for range 2 {
		f, err := frames.Next()
		m := count.FindSubmatch([]byte(f.Data))
		if err != nil || f.ID == "" || m == nil {
			t.Fatalf("frame %q (%v), want a count with an id", f.Raw, err)
		}
		n, _ := strconv.Atoi(string(m[1]))
		if n <= prev {
			t.Fatalf("count %d after %d: pushed though it did not grow", n, prev)
		}
		prev = n
	}
	d.stopEnds(t, br)
}

// feedOrder is the result of Orders.graphql: its fields are those of the
// operation's selection set, in its order, as results must have them.
type feedOrder struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Customer struct {
		Name    string `json:"name"`
		Country string `json:"country"`
	} `json:"customer"`
	Items []struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	} `json:"items"`
	Total struct {
		Amount   float64 `json:"amount"`
		Currency string  `json:"currency"`
	} `json:"total"`
	UpdatedAt string `json:"updatedAt"`
}

// An orderEvent is a result of Orders.graphql as it came: its frame, id
// and order.
type orderEvent struct {
	raw, id string
	order   feedOrder
}

// nextOrder reads frames until a result of Orders.graphql and returns it.
// Results must have an id, and exactly the shape of the operation, byte for
// byte: the fields it selects, in its order, and nothing the published
// message holds besides.
func nextOrder(t *testing.T, frames *gqlpushtest.SSEReader) orderEvent {
	t.Helper()
	for {
		f, err := frames.Next()
		if err != nil {
			t.Fatalf("reading the stream: %v (after %q)", err, f.Raw)
		}
		if f.Raw == ":\n\n" {
			continue
		}
		if f.ID == "" || f.Raw != "id: "+f.ID+"\n"+"data: "+f.Data+"\n\n" {
			t.Fatalf("frame %q, want a data frame with an id", f.Raw)
		}
		var r struct {
			Data struct {
				Order *feedOrder `json:"feed_orderUpdated"`
			} `json:"data"`
		}
		dec := json.NewDecoder(strings.NewReader(f.Data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil || r.Data.Order == nil {
			t.Fatalf("frame %q, want {\"data\":{\"feed_orderUpdated\":{…}}} (%v)", f.Raw, err)
		}
		// Encoded again, the fields come in the order of feedOrder's,
		// which is the selection set's.
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != f.Data {
			t.Fatalf("data  %s\nwant %s\n(the operation's fields, in its order)", f.Data, again)
		}
		o := *r.Data.Order
		_, err = strconv.Atoi(o.ID)
		_, terr := time.Parse(time.RFC3339, o.UpdatedAt)
		switch {
		case err != nil:
			t.Fatalf("order id %q, want a number", o.ID)
		case !slices.Contains(lifecycle, o.Status) && o.Status != cancelled:
			t.Fatalf("order status %q, want one of %v or %s", o.Status, lifecycle, cancelled)
		case o.Customer.Name == "" || o.Customer.Country == "":
			t.Fatalf("order %+v has no customer", o)
		case len(o.Items) == 0:
			t.Fatalf("order %+v has no items", o)
		case o.Total.Amount <= 0 || o.Total.Currency != "EUR":
			t.Fatalf("order total %+v, want a positive amount in EUR", o.Total)
		case terr != nil:
			t.Fatalf("order updatedAt %q: %v", o.UpdatedAt, terr)
		}
		return orderEvent{raw: f.Raw, id: f.ID, order: o}
	}
}

// openStream GETs path as an SSE stream and reads its opening comment; it
// returns the response, whose body the caller closes, and its frames.
func (d *demo) openStream(t *testing.T, ctx context.Context, path string, header http.Header) (*http.Response, *bufio.Reader, *gqlpushtest.SSEReader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	res, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		res.Body.Close()
		t.Fatalf("GET %s = %d %q, want 200 text/event-stream", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(res.Body)
	frames := gqlpushtest.NewSSEReader(br)
	if f, err := frames.Next(); f.Raw != ":\n\n" {
		res.Body.Close()
		t.Fatalf("GET %s: first frame %q (%v), want \":\\n\\n\"", path, f.Raw, err)
	}
	return res, br, frames
}

// TestOrders follows the orders published to the demo's NATS server: their
// results have the operation's shape, and a client that comes back with the
// id of an event it got resumes right after it, from the JetStream stream.
func TestOrders(t *testing.T) {
	d := startDemo(t)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	const path = "/operations/Orders?wg_sse=true"

	first, cancelFirst := context.WithCancel(ctx)
	res, _, frames := d.openStream(t, first, path, nil)
	e1 := nextOrder(t, frames)
	e2 := nextOrder(t, frames)
	if e1.id == e2.id {
		t.Fatalf("two results with the id %s", e1.id)
	}
	// The client goes away, then comes back with the id of the first.
	cancelFirst()
	res.Body.Close()

	res, br, frames := d.openStream(t, ctx, path, http.Header{"Last-Event-Id": {e1.id}})
	defer res.Body.Close()
	if got := nextOrder(t, frames); got.raw != e2.raw {
		t.Fatalf("resumed after %s with\n%q\nwant what followed it:\n%q", e1.id, got.raw, e2.raw)
	}

	// Shutting down ends the stream as it ends the chat's.
	d.stopEnds(t, br)
}

func TestPost(t *testing.T) {
	long := strings.Repeat("é", maxContentBytes/2) // 500 bytes, 250 characters
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		want        int
	}{
		{"ok", "POST", "application/json", `{"content":"hi"}`, 204},
		{"charset", "POST", "application/json; charset=utf-8", `{"content":"hi"}`, 204},
		{"500 bytes", "POST", "application/json", `{"content":"` + long + `"}`, 204},
		{"501 bytes", "POST", "application/json", `{"content":"` + long + `x"}`, 400},
		{"empty", "POST", "application/json", `{"content":""}`, 400},
		{"blank", "POST", "application/json", `{"content":" \n\t"}`, 400},
		{"no content", "POST", "application/json", `{}`, 400},
		{"null", "POST", "application/json", `null`, 400},
		{"not JSON", "POST", "application/json", `content=hi`, 400},
		{"two values", "POST", "application/json", `{"content":"a"}{"content":"b"}`, 400},
		{"unknown field", "POST", "application/json", `{"content":"hi","room":"x"}`, 400},
		{"wrong type", "POST", "application/json", `{"content":3}`, 400},
		{"too large", "POST", "application/json", `{"content":"` + strings.Repeat(" ", maxPostBytes) + `"}`, 413},
		{"too large after the value", "POST", "application/json", `{"content":"hi"}` + strings.Repeat(" ", maxPostBytes), 413},
		{"garbage after the value", "POST", "application/json", `{"content":"hi"} x`, 400},
		{"form", "POST", "application/x-www-form-urlencoded", `content=hi`, 415},
		{"text", "POST", "text/plain", `{"content":"hi"}`, 415},
		{"GET", "GET", "", "", 405},
		{"PUT", "PUT", "application/json", `{"content":"hi"}`, 405},
	}
	chat := gqlpushtest.NewChat()
	h := postHandler(chat)
	posted := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/post", strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("%s /post %s = %d %q, want %d", tt.method, tt.body, w.Code, w.Body, tt.want)
			}
			if w.Code == http.StatusNoContent {
				posted++
			}
			if w.Code == http.StatusMethodNotAllowed && w.Header().Get("Allow") != "POST" {
				t.Errorf("Allow = %q, want POST", w.Header().Get("Allow"))
			}
		})
	}
	// Only the accepted requests posted: message ids count every post.
	if m := chat.Post("", "last"); m.ID != strconv.Itoa(posted+1) {
		t.Errorf("%d requests were accepted, but the next message has id %s", posted, m.ID)
	}
}

func TestLoopbackHost(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9991}, "127.0.0.1:9991"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 9991}, "127.0.0.1:9991"},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 9991}, "[::1]:9991"},
		{&net.TCPAddr{Port: 9991}, "127.0.0.1:9991"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 80}, "192.0.2.7:80"},
	}
	for _, tt := range tests {
		if got := loopbackHost(tt.addr); got != tt.want {
			t.Errorf("loopbackHost(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// TestInterrupt runs main in a child process and interrupts it as Ctrl-C
// does: it must exit 0.
func TestInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	cmd.Stderr = t.Output()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line that names the page means it is serving.
	var page string
	sc := bufio.NewScanner(stdout)
	for page == "" && sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "open" {
			page = f[1]
		}
	}
	if page == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the demo printed no page URL (%v)", sc.Err())
	}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer client.CloseIdleConnections()
	res, err := client.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET %s = %d, want 200", page, res.StatusCode)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("the demo exited with %d after an interrupt, want 0", exit.ExitCode())
		}
		t.Fatal(err)
	}
}

// stopEnds stops the demo and checks that the stream read through br ends
// as shutdown ends it: the shutdown error, then the complete event, then
// the end of the response.
func (d *demo) stopEnds(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if err := d.stop(t); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading the end of the stream: %v (got %q)", err, rest)
	}
	const end = `data: {"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}` + "\n\n" +
		"event: complete\ndata: \n\n"
	if !bytes.HasSuffix(rest, []byte(end)) {
		t.Fatalf("the stream ended with %q, want it to end with %q", rest, end)
	}
}
