package gqlpush_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gqlpush/gqlpush"
)

// ends records what a handler logs and the ends its Observer is told of.
type ends struct {
	logs syncBuffer
	mu   sync.Mutex
	subs []string // "operation reason" per SubscriptionStopped
}

func (e *ends) edit(cfg *gqlpush.Config) {
	cfg.Logger = slog.New(slog.NewTextHandler(&e.logs, nil))
	cfg.Observer = &gqlpush.Observer{SubscriptionStopped: func(op string, r gqlpush.Reason) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.subs = append(e.subs, op+" "+string(r))
	}}
}

// check fails t unless, within waitTime, the log holds line and the
// Observer is told that op's subscription ended for reason. A client may
// read the end of its stream before the hub has told the Observer, so
// check waits.
func (e *ends) check(t *testing.T, line, op string, reason gqlpush.Reason) {
	t.Helper()
	want := op + " " + string(reason)
	ctx := waitCtx(t)
	for !e.holds(line, want) {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			defer e.mu.Unlock()
			t.Fatalf("want log line %q and Observer %q; the log is %q, the Observer was told %q", line, want, e.logs.String(), e.subs)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (e *ends) holds(line, sub string) bool {
	if !strings.Contains(e.logs.String(), line) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.subs, sub)
}

// wantEnd reads the rest of c's stream: past results, an error frame, with
// a message holding msg and code, then the end.
func wantEnd(t *testing.T, c *client, code, msg string) {
	t.Helper()
	rest := c.rest(t)
	// Results firstResult's publishing left behind may come first.
	for strings.HasPrefix(rest, "id: ") {
		_, rest, _ = strings.Cut(rest, "\n\n")
	}
	if !strings.HasPrefix(rest, `data: {"errors":[{"message":"`) || !strings.Contains(rest, msg) || !strings.Contains(rest, `"extensions":{"code":"`+code+`"}}]}`) || !strings.HasSuffix(rest, "\n\nevent: complete\ndata: \n\n") {
		t.Fatalf("want an error %s with %q, then the end; got %q", code, msg, rest)
	}
}

// A stream deleted under open streams ends them with an error that names
// it.
func TestJetStreamDeleted(t *testing.T) {
	ns := natsServer(t, 0)
	js, ctx := ordersStream(t, ns, 0)
	var e ends
	g := natsGateway(t, ns.ClientURL(), e.edit)
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	firstResult(t, c, func() { jsPublish(t, js, "7", "NEW") })
	if err := js.DeleteStream(ctx, "ORDERS"); err != nil {
		t.Fatal(err)
	}
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "the NATS stream ORDERS is gone")
	e.check(t, "NATS stream gone", "Events", gqlpush.ReasonUpstreamUnavailable)
	g.waitIdle(t)
}

// A stream that does not exist: an error frame for a new stream; a 502 for
// one that resumes, which cannot be served.
func TestJetStreamMissing(t *testing.T) {
	ns := natsServer(t, 0)
	var e ends
	g := natsGateway(t, ns.ClientURL(), e.edit)
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "the NATS stream ORDERS does not exist")
	e.check(t, "NATS stream not found", "Events", gqlpush.ReasonUpstreamUnavailable)

	js, ctx := ordersStream(t, ns, 0)
	c = g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	last := lastIDOf(t, firstResult(t, c, func() { jsPublish(t, js, "7", "NEW") }))
	c.leave()
	g.waitIdle(t)
	if err := js.DeleteStream(ctx, "ORDERS"); err != nil {
		t.Fatal(err)
	}
	resp, body := g.do(t, "/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	if msg, code := errorOf(t, body); resp.StatusCode != http.StatusBadGateway || code != "UPSTREAM_UNAVAILABLE" || msg != "the NATS stream ORDERS does not exist" {
		t.Fatalf("resuming: %d %s %q", resp.StatusCode, code, msg)
	}
	g.waitIdle(t)
}

// A subscription NATS refuses ends with an error that says so; another on
// the same connection goes on.
func TestNATSPermissionViolation(t *testing.T) {
	ns := guardedNATSServer(t)
	pub, err := nats.Connect(ns.ClientURL(), nats.UserInfo("pub", "pub"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	addr := strings.TrimPrefix(ns.ClientURL(), "nats://")
	var e ends
	g := natsGateway(t, "nats://gw:s3cret@"+addr, e.edit)
	ok := g.open(t, "/operations/Order?id=7&wg_sse")
	ok.frame(t)
	denied := g.open(t, "/operations/Order?id=vault&wg_sse")
	denied.frame(t)
	wantEnd(t, denied, "UPSTREAM_UNAVAILABLE", "NATS refused the subscription: permissions violation on orders.vault.updated")
	e.check(t, "NATS permissions violation", "Order", gqlpush.ReasonUpstreamUnavailable)
	if f := firstResult(t, ok, func() { pub.Publish("orders.7.updated", []byte(`{"id":"7","status":"NEW","items":[]}`)) }); !strings.Contains(f, `"id":"7"`) {
		t.Fatalf("the other stream: %q", f)
	}
	if strings.Contains(e.logs.String(), "s3cret") {
		t.Errorf("the log shows the URL's password: %q", e.logs.String())
	}
}

// Credentials NATS refuses: the streams end at the reconnect limit, and
// the log says why, without the password.
func TestNATSBadCredentials(t *testing.T) {
	ns := guardedNATSServer(t)
	addr := strings.TrimPrefix(ns.ClientURL(), "nats://")
	var e ends
	g := natsGateway(t, "nats://gw:wr0ng@"+addr, func(cfg *gqlpush.Config) {
		e.edit(cfg)
		cfg.ReconnectLimit = 300 * time.Millisecond
	})
	c := g.open(t, "/operations/Order?id=7&wg_sse")
	c.frame(t)
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "upstream unavailable")
	logs := e.logs.String()
	if !strings.Contains(strings.ToLower(logs), "authorization violation") || strings.Contains(logs, "wr0ng") {
		t.Errorf("the log should say why and hide the password: %q", logs)
	}
}

// guardedNATSServer starts a NATS server whose user gw may subscribe to
// anything but orders.vault.>, and whose user pub may publish.
func guardedNATSServer(t *testing.T) *server.Server {
	t.Helper()
	return startNATS(t, &server.Options{
		Port: -1,
		Users: []*server.User{
			{Username: "gw", Password: "s3cret", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"orders.vault.>"}},
			}},
			{Username: "pub", Password: "pub"},
		},
	})
}

// A subscription NATS drops messages of, as it fell behind, ends with an
// error that says so. The connection is the application's: gqlpush hears
// of its errors beside the handler it had, and leaves it open.
func TestNATSSlowConsumer(t *testing.T) {
	ns := natsServer(t, 0)
	pub := publisher(t, ns)
	var mu sync.Mutex
	var theirs []error
	nc, err := nats.Connect(ns.ClientURL(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		theirs = append(theirs, err)
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var e ends
	g := gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, shopOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "shop", NATS: nc, Schema: shopSchema}},
		Prefix:     "/operations/",
	}, e.edit)
	g.h.SetNATSPendingLimits(1, 1<<20) // a second message waiting is one too many
	c := g.open(t, "/operations/Order?id=7&wg_sse")
	c.frame(t)
	got := make(chan string, 1)
	go func() {
		var all strings.Builder
		for {
			f, err := readFrame(c.br)
			all.WriteString(f)
			if err != nil || strings.HasPrefix(f, "event: complete") {
				got <- all.String()
				return
			}
		}
	}()
	ctx := waitCtx(t)
	var rest string
	for rest == "" {
		for range 50 {
			pub.Publish("orders.7.updated", []byte(`{"id":"7","status":"NEW","items":[]}`))
		}
		pub.Flush()
		select {
		case rest = <-got:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("NATS never dropped a message")
		}
	}
	if !strings.Contains(rest, `"message":"NATS dropped messages of this subscription: it fell behind","extensions":{"code":"UPSTREAM_UNAVAILABLE"}`) {
		t.Fatalf("got %q", rest)
	}
	e.check(t, "NATS slow consumer", "Order", gqlpush.ReasonUpstreamUnavailable)
	mu.Lock()
	if len(theirs) == 0 || theirs[0] != nats.ErrSlowConsumer {
		t.Errorf("the connection's own error handler heard %v", theirs)
	}
	mu.Unlock()
	g.waitIdle(t)
	ctxClose := waitCtx(t)
	if err := g.h.Close(ctxClose); err != nil {
		t.Fatal(err)
	}
	if nc.IsClosed() {
		t.Error("Close closed the application's connection")
	}
}

// consumersOf reports how many consumers the ORDERS stream has.
func consumersOf(t *testing.T, ns *server.Server) int {
	t.Helper()
	js, err := jetstream.New(publisher(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(waitCtx(t), "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Consumers
}

// waitConsumers waits until the ORDERS stream has n consumers.
func waitConsumers(t *testing.T, ns *server.Server, n int) {
	t.Helper()
	ctx := waitCtx(t)
	for consumersOf(t, ns) != n {
		select {
		case <-ctx.Done():
			t.Fatalf("the ORDERS stream has %d consumers, want %d", consumersOf(t, ns), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The last client leaving deletes the JetStream consumer, and so does
// closing the handler: none is left on the server for its inactive
// threshold.
func TestJetStreamConsumerDeleted(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), nil)
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	firstResult(t, c, func() { jsPublish(t, js, "7", "NEW") })
	if n := consumersOf(t, ns); n != 1 {
		t.Fatalf("%d consumers while the stream is open", n)
	}
	c.leave()
	g.waitIdle(t)
	waitConsumers(t, ns, 0)

	c = g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	firstResult(t, c, func() { jsPublish(t, js, "7", "SHIPPED") })
	if err := g.h.Close(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := consumersOf(t, ns); n != 0 {
		t.Fatalf("%d consumers once the handler is closed", n)
	}
}

// A consumer JetStream refuses (here, the stream's consumer limit is
// reached) ends the stream with what JetStream said, at once.
func TestJetStreamConsumerRefused(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStreamWith(t, ns, func(cfg *jetstream.StreamConfig) { cfg.MaxConsumers = 1 })
	var e ends
	g := natsGateway(t, ns.ClientURL(), e.edit)
	a := g.open(t, "/operations/Events?id=7&wg_sse")
	a.frame(t)
	firstResult(t, a, func() { jsPublish(t, js, "7", "NEW") })
	b := g.open(t, "/operations/Events?id=8&wg_sse")
	b.frame(t)
	wantEnd(t, b, "UPSTREAM_UNAVAILABLE", "JetStream refused the consumer: maximum consumers limit reached")
	e.check(t, "JetStream consumer refused", "Events", gqlpush.ReasonUpstreamUnavailable)
	jsPublish(t, js, "7", "SHIPPED")
	nextWith(t, a, "SHIPPED")
}

// A JetStream stream that has delivered nothing yet loses nothing the
// stream takes while NATS is away: it starts after the stream's last
// message as it was when the stream opened, at every reconnect.
func TestJetStreamReconnectKeepsWhatCameMeanwhile(t *testing.T) {
	ns, restart := restartable(t)
	js, _ := ordersStream(t, ns, 0)
	jsPublish(t, js, "7", "OLD") // before the stream opens: not sent
	g := natsGateway(t, ns.ClientURL(), func(cfg *gqlpush.Config) {
		// So that the gateway is still away when the message is
		// published; the loss did not depend on it.
		cfg.Upstreams[0].NATSOptions = []nats.Option{nats.ReconnectWait(time.Second)}
	})
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	waitConsumers(t, ns, 1)
	ns.Shutdown()
	ns.WaitForShutdown()
	waitStats(t, g.h, "NATS lost", func(s gqlpush.Stats) bool { return s.UpstreamConns == 0 })
	js = restart()
	jsPublish(t, js, "7", "SHIPPED") // while the gateway reconnects
	waitStats(t, g.h, "connected again", func(s gqlpush.Stats) bool { return s.UpstreamConns == 1 })
	if f := c.frame(t); !strings.Contains(f, "SHIPPED") {
		t.Fatalf("the first result is %q, want the message published during the reconnect", f)
	}
}

// NATS goes away for longer than nats.go waits for a read's answer while a
// client catches up: the client still gets everything, in order, once NATS
// is back. (A read that timed out used to count as caught up.)
func TestJetStreamReplayAcrossANATSRestart(t *testing.T) {
	ns, restart := restartable(t)
	js, _ := ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), func(cfg *gqlpush.Config) {
		cfg.QueueSize = 8
		cfg.WriteTimeout = time.Minute
		cfg.Upstreams[0].NATSOptions = []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}
	})
	last := seenAndGone(t, g, js)
	pad := strings.Repeat("x", 2048)
	const missed = 5000
	if err := publishMany(js, 0, missed, pad); err != nil {
		t.Fatal(err)
	}
	r, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	r.frame(t)
	for i := range 10 {
		f := r.frame(t)
		if !strings.Contains(f, fmt.Sprintf(`"id":"S%d%s"`, i, pad)) {
			t.Fatalf("frame %d: %.60q", i, f)
		}
	}
	// The client stops reading (its socket fills); NATS goes away.
	ns.Shutdown()
	ns.WaitForShutdown()
	waitStats(t, g.h, "NATS lost", func(s gqlpush.Stats) bool { return s.UpstreamConns == 0 })
	// The client reads on while NATS stays away longer than nats.go waits
	// for the answer to a read (a second, after which the read ends with
	// nothing and no error): the outage is the scenario, not a wait.
	got := make(chan string, 1)
	go func() {
		for i := 10; ; i++ {
			f, err := readFrame(r.br)
			if err != nil {
				got <- fmt.Sprintf("stream ended after S%d: %v", i-1, err)
				return
			}
			if !strings.Contains(f, fmt.Sprintf(`"id":"S%d%s"`, i, pad)) {
				if len(f) > 120 {
					f = f[:120]
				}
				got <- fmt.Sprintf("frame %d: %q", i, f)
				return
			}
			if i == missed-1 {
				got <- "all"
				return
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	js2 := restart()
	waitStats(t, g.h, "connected again", func(s gqlpush.Stats) bool { return s.UpstreamConns == 1 })
	stop := waitCtx(t).Done()
	for {
		select {
		case res := <-got:
			if res != "all" {
				t.Fatal(res)
			}
			return
		case <-time.After(50 * time.Millisecond):
			js2.Publish(waitCtx(t), "stream.orders.7", []byte(`{"id":"AFTER","status":"NEW"}`))
		case <-stop:
			t.Fatal("nothing more came")
		}
	}
}

// A replay JetStream will not make a consumer for is a 502 for the request
// that resumes; the stream that runs goes on.
func TestJetStreamReplayRefused(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStreamWith(t, ns, func(cfg *jetstream.StreamConfig) { cfg.MaxConsumers = 1 })
	g := natsGateway(t, ns.ClientURL(), nil)
	last := seenAndGone(t, g, js)
	waitConsumers(t, ns, 0)
	a := g.open(t, "/operations/Events?id=7&wg_sse") // the one consumer there may be
	a.frame(t)
	firstResult(t, a, func() { jsPublish(t, js, "7", "SHIPPED") })
	resp, body := g.do(t, "/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	if msg, code := errorOf(t, body); resp.StatusCode != http.StatusBadGateway || code != "UPSTREAM_UNAVAILABLE" || !strings.Contains(msg, "maximum consumers limit reached") {
		t.Fatalf("resuming: %d %s %q", resp.StatusCode, code, msg)
	}
	jsPublish(t, js, "7", "DELIVERED")
	nextWith(t, a, "DELIVERED")
}

// restartable starts a NATS server with JetStream; restart starts it again,
// once the test has shut it down, on the same port and store, and returns
// a JetStream client of it.
func restartable(t *testing.T) (*server.Server, func() jetstream.JetStream) {
	dir := t.TempDir()
	ns := natsServerAt(t, -1, dir)
	port := ns.Addr().(*net.TCPAddr).Port
	return ns, func() jetstream.JetStream {
		t.Helper()
		js, err := jetstream.New(publisher(t, natsServerAt(t, port, dir)))
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
}

// withoutJetStream restarts the NATS server ns on its port without
// JetStream, as an operator who left it out of the configuration would.
func withoutJetStream(t *testing.T, ns *server.Server) {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	startNATS(t, &server.Options{Port: port})
}

// NATS comes back without JetStream under open streams of a JetStream
// subject: they end with an error that says so at the reconnect limit,
// rather than wait in silence.
func TestJetStreamGoneFromTheServer(t *testing.T) {
	ns := natsServer(t, 0)
	ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), func(cfg *gqlpush.Config) {
		cfg.ReconnectLimit = 300 * time.Millisecond
		cfg.Upstreams[0].NATSOptions = []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}
	})
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	waitConsumers(t, ns, 1)
	withoutJetStream(t, ns)
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", "JetStream is not enabled on the NATS server")
	g.waitIdle(t)
}
