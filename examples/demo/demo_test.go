package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
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
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/", nil)
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
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("GET / = %d %q, want 200 text/html", res.StatusCode, res.Header.Get("Content-Type"))
		}
		for _, want := range []string{"new EventSource(streamURL)", "'/operations/Sub?wg_sse=true'", "addEventListener('complete'"} {
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

	out := d.stdout.String()
	for _, want := range []string{d.base + "/\n", "curl -N '" + d.base + "/operations/Sub?wg_sse=true'\n"} {
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
