package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// TestFlagsToConfig checks what each scale and resilience flag sets in the
// handler's configuration, and the shutdown bound that follows from them.
func TestFlagsToConfig(t *testing.T) {
	ops := writeFiles(t, t.TempDir(), map[string]string{
		"Messages.graphql": "subscription { gql_messageCreated { id } }\n",
	})
	base := []string{"-operations", ops, "-upstream", "ws://127.0.0.1:1/graphql", "-upstream", "gql=ws://127.0.0.1:2/graphql"}
	type want struct {
		queue, queueBytes, resumeFrames, maxConns                 int
		heartbeat, write, reconnect, grace, once, drain, shutdown time.Duration
		unnamed, gql                                              gqlpush.Protocol
	}
	defaults := want{
		queue: gqlpush.DefaultQueueSize, queueBytes: gqlpush.DefaultQueueBytes, resumeFrames: gqlpush.DefaultResumeFrames, maxConns: 10000,
		heartbeat: gqlpush.DefaultHeartbeat, write: gqlpush.DefaultWriteTimeout, reconnect: gqlpush.DefaultReconnectLimit,
		once:     gqlpush.DefaultOnceTimeout,
		drain:    gqlpush.DefaultDrainWindow,
		shutdown: 2*gqlpush.DefaultDrainWindow + gqlpush.DefaultWriteTimeout + shutdownMargin,
		unnamed:  gqlpush.ProtocolAuto, gql: gqlpush.ProtocolAuto,
	}
	with := func(f func(*want)) want {
		w := defaults
		f(&w)
		return w
	}
	tests := []struct {
		name string
		args []string
		want want
	}{
		{name: "defaults", want: defaults},
		{name: "every flag", args: []string{"-queue", "8", "-queue-bytes", "4096", "-max-conns", "50", "-write-timeout", "3s", "-reconnect-limit", "1m", "-resume-frames", "5", "-resume-grace", "4s", "-once-timeout", "7s", "-drain", "20s", "-heartbeat", "2s"},
			want: with(func(w *want) {
				w.queue, w.queueBytes, w.maxConns = 8, 4096, 50
				w.write, w.reconnect, w.resumeFrames, w.grace, w.once, w.drain, w.heartbeat = 3*time.Second, time.Minute, 5, 4*time.Second, 7*time.Second, 20*time.Second, 2*time.Second
				w.shutdown = 40*time.Second + 3*time.Second + shutdownMargin
			})},
		{name: "negative switches off", args: []string{"-reconnect-limit", "-1s", "-resume-frames", "-1", "-drain", "-1ns", "-heartbeat", "-1s"},
			want: with(func(w *want) {
				w.reconnect, w.resumeFrames, w.drain, w.heartbeat = -time.Second, -1, -1, -time.Second
				w.shutdown = gqlpush.DefaultWriteTimeout + shutdownMargin
			})},
		// Zero means the library's default, as in gqlpush.Config; for
		// -max-conns, no cap.
		{name: "zero", args: []string{"-queue", "0", "-queue-bytes", "0", "-max-conns", "0", "-write-timeout", "0", "-reconnect-limit", "0", "-resume-frames", "0", "-once-timeout", "0", "-drain", "0"},
			want: with(func(w *want) {
				w.queue, w.queueBytes, w.maxConns, w.write, w.reconnect, w.resumeFrames, w.once, w.drain = 0, 0, 0, 0, 0, 0, 0, 0
			})},
		{name: "protocol for every upstream", args: []string{"-protocol", "graphql-ws"},
			want: with(func(w *want) { w.unnamed, w.gql = gqlpush.ProtocolLegacyWS, gqlpush.ProtocolLegacyWS })},
		{name: "protocol for one upstream", args: []string{"-protocol", "gql=graphql-transport-ws"},
			want: with(func(w *want) { w.gql = gqlpush.ProtocolTransportWS })},
		{name: "protocol for the unnamed upstream", args: []string{"-protocol", "=graphql-ws"},
			want: with(func(w *want) { w.unnamed = gqlpush.ProtocolLegacyWS })},
		{name: "named protocol overrides the bare one, in any order", args: []string{"-protocol", "gql=auto", "-protocol", "graphql-transport-ws"},
			want: with(func(w *want) { w.unnamed = gqlpush.ProtocolTransportWS })},
		{name: "every protocol named", args: []string{"-protocol", "=graphql-ws", "-protocol", "gql=graphql-transport-ws"},
			want: with(func(w *want) { w.unnamed, w.gql = gqlpush.ProtocolLegacyWS, gqlpush.ProtocolTransportWS })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(append(append([]string{}, base...), tc.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			hc := cfg.handlerConfig()
			got := want{
				queue: hc.QueueSize, queueBytes: hc.QueueBytes, resumeFrames: hc.ResumeFrames, maxConns: cfg.maxConns,
				heartbeat: hc.Heartbeat, write: hc.WriteTimeout, reconnect: hc.ReconnectLimit, grace: hc.ResumeGrace, once: hc.OnceTimeout, drain: hc.DrainWindow,
				shutdown: cfg.shutdownTimeout(),
			}
			if len(hc.Upstreams) != 2 || hc.Upstreams[0].Name != "" || hc.Upstreams[1].Name != "gql" {
				t.Fatalf("upstreams %+v", hc.Upstreams)
			}
			got.unnamed, got.gql = hc.Upstreams[0].Protocol, hc.Upstreams[1].Protocol
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if hc.Prefix != prefix || len(hc.Operations) != 1 {
				t.Errorf("prefix %q, %d operations", hc.Prefix, len(hc.Operations))
			}
		})
	}
}

// TestMetricsListenError: an address that is taken is no usage error, and
// the gateway reports nothing ready.
func TestMetricsListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ops := writeFiles(t, t.TempDir(), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id } }\n"})
	var stdout, stderr, report bytes.Buffer
	err = run(context.Background(), []string{"-listen", "127.0.0.1:0", "-metrics", busy.Addr().String(), "-operations", ops, "-upstream", "gql=ws://127.0.0.1:1/graphql"}, &stdout, &stderr)
	if code := exitCode(err, &report); code != 1 {
		t.Fatalf("exit status %d, want 1; error: %v", code, err)
	}
	if msg := report.String(); !strings.Contains(msg, "-metrics") || !strings.Contains(msg, busy.Addr().String()) {
		t.Errorf("message %q does not name -metrics and its address", msg)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout %q, want nothing: the gateway never got ready", stdout.String())
	}
}

// chatOps are operations on the in-process upstream, named gql.
var chatOps = map[string]string{
	"Countdown.graphql": "subscription ($from: Int!) { gql_countdown(from: $from) }\n",
	"Messages.graphql":  "subscription { gql_messageCreated { id content } }\n",
}

// TestProtocolFlag checks the subprotocol each upstream speaks: a bare
// -protocol for one, a named one for the other.
func TestProtocolFlag(t *testing.T) {
	up := gqlpushtest.NewServer(nil) // speaks both
	t.Cleanup(up.Close)
	g := startGateway(t,
		"-operations", writeFiles(t, t.TempDir(), map[string]string{
			"Countdown.graphql":     "subscription ($from: Int!) { countdown(from: $from) }\n",
			"gql/Countdown.graphql": "subscription ($from: Int!) { gql_countdown(from: $from) }\n",
		}),
		"-upstream", up.URL, "-upstream", "gql="+up.URL,
		"-protocol", "graphql-ws", "-protocol", "gql=graphql-transport-ws")

	for i, tc := range []struct{ path, want, protocol string }{
		{"/operations/Countdown?wg_subscribe_once=true&from=1", `{"data":{"countdown":1}}`, gqlpushtest.ProtocolLegacyWS},
		{"/operations/gql/Countdown?wg_subscribe_once=true&from=2", `{"data":{"gql_countdown":2}}`, gqlpushtest.ProtocolTransportWS},
	} {
		resp, body := g.get(t, tc.path)
		if resp.StatusCode != http.StatusOK || body != tc.want {
			t.Fatalf("%s: %d %q, want 200 %q", tc.path, resp.StatusCode, body, tc.want)
		}
		// Each upstream has its own connection, dialled for this request.
		conns := up.Conns()
		if len(conns) != i+1 {
			t.Fatalf("after %s: %d upstream connections, want %d: %+v", tc.path, len(conns), i+1, conns)
		}
		if got := conns[i].Subprotocol; got != tc.protocol {
			t.Errorf("%s: the upstream connection speaks %q, want %q", tc.path, got, tc.protocol)
		}
	}
}

// TestResumption checks -resume-frames and -resume-grace on the wire.
func TestResumption(t *testing.T) {
	ops := writeFiles(t, t.TempDir(), chatOps)
	message := func(id, content string) string {
		return fmt.Sprintf(`data: {"data":{"gql_messageCreated":{"id":"%s","content":"%s"}}}`+"\n\n", id, content)
	}

	t.Run("no ids", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-resume-frames", "-1")
		resp, body := g.get(t, "/operations/Countdown?wg_sse=true&from=2")
		want := comment + `data: {"data":{"gql_countdown":2}}` + "\n\n" + `data: {"data":{"gql_countdown":1}}` + "\n\n" + completeEvt
		if resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	})

	// A client that reconnects resumes when the Last-Event-ID names a
	// result still kept, and is told to start afresh when not. A second
	// client keeps the subscription running meanwhile.
	for _, tc := range []struct {
		name  string
		flags []string
		last  int    // the seq of Last-Event-ID
		want  string // what the client gets, TOKEN1 being the subscription's
	}{
		{name: "default frames kept", last: 0,
			want: "id: TOKEN1.1\n" + message("2", "m2") + "id: TOKEN1.2\n" + message("3", "m3") + "id: TOKEN1.3\n" + message("4", "m4")},
		// Two kept: 2 and 3. The client that has 0 missed more.
		{name: "two frames kept, resumed", flags: []string{"-resume-frames", "2"}, last: 2,
			want: "id: TOKEN1.3\n" + message("4", "m4")},
		{name: "two frames kept, too far behind", flags: []string{"-resume-frames", "2"}, last: 0,
			want: "event: reset\ndata: \n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := gqlpushtest.NewServer(nil)
			t.Cleanup(up.Close)
			g := startGateway(t, append([]string{"-operations", ops, "-upstream", "gql=" + up.URL, "-heartbeat", "1h"}, tc.flags...)...)
			keeper := g.open(t, "/operations/Messages?wg_sse=true")
			if f := keeper.frame(t); f != comment {
				t.Fatalf("first frame %q", f)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			defer cancel()
			if err := up.WaitSubscriptions(ctx, 1); err != nil {
				t.Fatal(err)
			}
			ids := idNames{}
			var raw []string
			for i := 1; i <= 4; i++ {
				up.Chat.Post("", fmt.Sprintf("m%d", i))
				f := keeper.frame(t)
				if want := fmt.Sprintf("id: TOKEN1.%d\n", i-1) + message(fmt.Sprint(i), fmt.Sprintf("m%d", i)); ids.norm(f) != want {
					t.Fatalf("keeper got %q, want %q", f, want)
				}
				raw = append(raw, eventIDOf(t, f))
			}
			back := g.openWith(t, "/operations/Messages?wg_sse=true", http.Header{"Last-Event-Id": {raw[tc.last]}})
			want := comment + tc.want
			var got strings.Builder
			for got.Len() < len(want) {
				got.WriteString(back.frame(t))
			}
			if ids.norm(got.String()) != want {
				t.Errorf("got %q, want %q", got.String(), want)
			}
			if tc.want == "event: reset\ndata: \n\n" {
				// Then it goes on live, with the same ids as everyone.
				up.Chat.Post("", "m5")
				want := "id: TOKEN1.4\n" + message("5", "m5")
				if f := back.frame(t); ids.norm(f) != want {
					t.Errorf("after the reset: %q, want %q", f, want)
				}
			}
		})
	}

	// With -resume-grace, the subscription outlives its last client, and
	// a client back within the grace gets what was published meanwhile.
	t.Run("grace", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-resume-grace", "1h")
		first := g.dial(t, "/operations/Messages?wg_sse=true", nil)
		if f := first.frame(t); f != comment {
			t.Fatalf("first frame %q", f)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := up.WaitSubscriptions(ctx, 1); err != nil {
			t.Fatal(err)
		}
		up.Chat.Post("", "m1")
		ids := idNames{}
		f := first.frame(t)
		if want := "id: TOKEN1.0\n" + message("1", "m1"); ids.norm(f) != want {
			t.Fatalf("got %q, want %q", f, want)
		}
		last := eventIDOf(t, f)
		// Once the response has ended, the gateway has let the client go:
		// no client is left.
		if rest := first.leave(t); rest != "" {
			t.Fatalf("after leaving: %q", rest)
		}
		up.Chat.Post("", "m2")
		back := g.openWith(t, "/operations/Messages?wg_sse=true", http.Header{"Last-Event-Id": {last}})
		want := comment + "id: TOKEN1.1\n" + message("2", "m2")
		if got := back.frame(t) + back.frame(t); ids.norm(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
		var subscribes int
		for _, m := range up.Received() {
			if m.Type == "subscribe" || m.Type == "complete" {
				subscribes++
			}
		}
		if subscribes != 1 {
			t.Errorf("the upstream got %d subscribe and complete messages, want 1 subscribe: %+v", subscribes, up.Received())
		}
	})
}

// TestReconnectLimitOff: with a negative -reconnect-limit, a lost upstream
// ends its streams at once (the default redials for 30 s, beyond what this
// test waits).
func TestReconnectLimitOff(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-reconnect-limit", "-1s")
	s := g.open(t, "/operations/Messages?wg_sse=true")
	if f := s.frame(t); f != comment {
		t.Fatalf("first frame %q", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	up.SetDown(true)
	want := `data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}` + "\n\n" + completeEvt
	if rest := s.rest(t); rest != want {
		t.Errorf("got %q, want %q", rest, want)
	}
}

// TestOnceTimeout: with -once-timeout 1s, a wg_subscribe_once request on a
// subscription that never sends gets 504 UPSTREAM_TIMEOUT after a second
// (the default waits 30 s), and its upstream subscription stops.
func TestOnceTimeout(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL, "-once-timeout", "1s")

	// Nothing is ever posted: messageCreated stays silent.
	start := time.Now()
	resp, body := g.get(t, "/operations/Messages?wg_subscribe_once=true")
	elapsed := time.Since(start)
	want := `{"errors":[{"message":"no result from the upstream in time","extensions":{"code":"UPSTREAM_TIMEOUT"}}]}`
	if resp.StatusCode != http.StatusGatewayTimeout || body != want {
		t.Errorf("got %d %q, want 504 %q", resp.StatusCode, body, want)
	}
	if elapsed < time.Second || elapsed >= gqlpush.DefaultOnceTimeout {
		t.Errorf("answered after %v, want -once-timeout's 1s or a little more", elapsed)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 0); err != nil {
		t.Fatalf("the upstream still runs %d subscriptions", up.Subscriptions())
	}
	var subscribed, completed []string
	for _, m := range up.Received() {
		switch m.Type {
		case "subscribe":
			subscribed = append(subscribed, m.ID)
		case "complete":
			completed = append(completed, m.ID)
		}
	}
	if len(subscribed) != 1 || len(completed) != 1 || completed[0] != subscribed[0] {
		t.Errorf("the upstream got subscribe %q and complete %q, want one of each, for the same subscription", subscribed, completed)
	}
}

// TestProtocolWarning: a bare -protocol that no upstream takes, as every
// one has a -protocol of its own, is never checked; the operator is told.
func TestProtocolWarning(t *testing.T) {
	ops := writeFiles(t, t.TempDir(), chatOps)
	cfg, err := parseConfig([]string{"-operations", ops, "-upstream", "gql=ws://127.0.0.1:1/graphql", "-protocol", "graphql-sse", "-protocol", "gql=graphql-ws"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "-protocol graphql-sse: every GraphQL upstream has a -protocol of its own, so this one applies to none") {
		t.Errorf("warnings %q, want one about -protocol graphql-sse", cfg.warnings)
	}
	if p := cfg.upstreams[0].Protocol; p != gqlpush.ProtocolLegacyWS {
		t.Errorf("upstream gql speaks %q, want %q", p, gqlpush.ProtocolLegacyWS)
	}
	cfg, err = parseConfig([]string{"-operations", ops, "-upstream", "gql=ws://127.0.0.1:1/graphql", "-upstream", "ws://127.0.0.1:2/graphql", "-protocol", "graphql-ws", "-protocol", "gql=auto"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.warnings) > 0 {
		t.Errorf("warnings %q, want none: the bare -protocol applies to the unnamed upstream", cfg.warnings)
	}
}

// TestMetrics scrapes -metrics while a stream runs, then lets the stream
// fall behind a -queue of 1 until the gateway drops it.
func TestMetrics(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL,
		"-heartbeat", "1h", "-metrics", "127.0.0.1:0", "-queue", "1", "-write-timeout", "2s")
	if g.metrics == "" {
		t.Fatal("no metrics line before the listening line")
	}
	s := g.open(t, "/operations/Messages?wg_sse=true")
	if f := s.frame(t); f != comment {
		t.Fatalf("first frame %q", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The gateway counts a frame once it has written it, so after the
	// second frame has come the first is counted.
	for i := 1; i <= 2; i++ {
		up.Chat.Post("", "hello")
		if f := s.frame(t); !strings.Contains(f, `"content":"hello"`) {
			t.Fatalf("frame %d: %q", i, f)
		}
	}
	m := g.scrape(t)
	for _, want := range []string{
		`gqlpush_streams_active{operation="Messages"} 1`,
		`gqlpush_subscriptions_active{operation="Messages"} 1`,
		`gqlpush_upstream_connections_active{upstream="gql"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !hasLine(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	if !hasLine(m, `gqlpush_frames_delivered_total{operation="Messages"} 1`) && !hasLine(m, `gqlpush_frames_delivered_total{operation="Messages"} 2`) {
		t.Errorf("metrics lack gqlpush_frames_delivered_total{operation=\"Messages\"} 1 or 2:\n%s", m)
	}

	// The client stops reading. Once the connection's buffers are full the
	// gateway's write waits, results pile up past the queue of 1, and at the
	// write timeout the client is dropped as a slow consumer.
	content := strings.Repeat("x", 256<<10)
	const closed = `gqlpush_streams_closed_total{operation="Messages",reason="slow_consumer"} 1`
	for {
		up.Chat.Post("", content)
		m = g.scrape(t)
		if hasLine(m, closed) {
			break
		}
		if strings.Contains(m, `gqlpush_streams_closed_total{operation="Messages"`) {
			t.Fatalf("the stream ended, but not as a slow consumer:\n%s", m)
		}
		if ctx.Err() != nil {
			t.Fatalf("the stream was never dropped:\n%s", m)
		}
	}
	for _, want := range []string{
		`gqlpush_subscribers_dropped_total{operation="Messages",reason="slow_consumer"} 1`,
		`gqlpush_streams_active{operation="Messages"} 0`,
	} {
		if !hasLine(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	s.close()

	// The metrics listener closes with the gateway.
	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(g.metrics, "http://"), "/metrics")
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("the metrics listener %s still accepts after the gateway stopped", addr)
	}
}

// scrape reads the metrics.
func (g *gateway) scrape(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.metrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v\n%s", resp.StatusCode, err, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("scrape: Content-Type %q", ct)
	}
	return string(b)
}

// hasLine reports whether the metrics text has a line that starts with
// prefix.
func hasLine(metrics, prefix string) bool {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// A rawStream is a stream over a connection of its own, which the client
// can half-close.
type rawStream struct {
	*stream
	conn *net.TCPConn
}

// dial opens a stream over a connection of its own. Leaving it by closing
// only the sending half lets the test wait for the gateway to have let the
// client go: the gateway takes the half-close for the client leaving, and
// the response ends with its last chunk once the handler has returned.
func (g *gateway) dial(t *testing.T, path string, header http.Header) *rawStream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c, err := net.Dial("tcp", req.URL.Host)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*net.TCPConn)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitTime))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &rawStream{stream: &stream{resp: resp, br: bufio.NewReader(resp.Body), cancel: func() {}}, conn: conn}
}

// leave half-closes the connection and returns what came until the
// response ended.
func (s *rawStream) leave(t *testing.T) string {
	t.Helper()
	if err := s.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return s.rest(t)
}
