package gqlpush_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
)

// shopSchema is a NATS upstream's schema: its subscription fields name the
// subjects that feed them.
const shopSchema = `
type Query { x: Int }
enum Status { NEW SHIPPED }
interface Node { id: ID! }
type Item { sku: String! qty: Int! }
type Order implements Node { id: ID! status: Status! total: Float items: [Item!]! }
union Change = Order | Item
type Subscription {
  changes: Change @natsSubscribe(subjects: ["changes"])
  orderUpdated(id: ID!): Order! @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"])
  anyOrder: Order @natsSubscribe(subjects: ["orders.*.updated", "orders.*.created"])
  orderEvents(id: ID!): Order @natsSubscribe(subjects: ["stream.orders.{{ args.id }}"], stream: "ORDERS")
}
`

var shopOperations = map[string]string{
	"Order":  `subscription ($id: ID!) { shop_orderUpdated(id: $id) { id status items { sku qty } } }`,
	"Orders": `subscription { o: shop_anyOrder { __typename id } }`,
	"Seven":  `subscription { shop_orderUpdated(id: 7) { id } }`,
	"Events": `subscription ($id: ID!) { shop_orderEvents(id: $id) { id status } }`,
	"Changes": `subscription { c: shop_changes { __typename ... on Order { id st: status } ...item } }
fragment item on Item { sku }`,
}

// natsServer starts a NATS server, with JetStream, on a loopback port of
// its own (or port, when not 0), until the test ends.
func natsServer(t *testing.T, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	return natsServerAt(t, port, t.TempDir())
}

// natsServerAt starts a NATS server on port (-1: any) with JetStream kept
// in dir; it is shut down when the test ends.
func natsServerAt(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	return startNATS(t, &server.Options{Port: port, JetStream: true, StoreDir: dir})
}

// startNATS starts a NATS server on loopback with opts; it is shut down
// when the test ends.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.NoLog, opts.NoSigs = "127.0.0.1", true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(waitTime) {
		t.Fatal("the NATS server did not start")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// natsGateway serves shopOperations in front of a NATS upstream at url.
func natsGateway(t *testing.T, url string, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	return gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, shopOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "shop", URL: url, Schema: shopSchema}},
		Prefix:     "/operations/",
	}, edit)
}

// A shop is a NATS server, a connection that publishes to it, and a
// gateway of shopOperations in front of it.
type shop struct {
	*gateway
	ns   *server.Server
	pub  *nats.Conn
	base uint32 // the server's subscriptions before the gateway's
}

func newShop(t *testing.T, edit func(*gqlpush.Config)) *shop {
	t.Helper()
	ns := natsServer(t, 0)
	pub := publisher(t, ns)
	base := ns.NumSubscriptions()
	return &shop{gateway: natsGateway(t, ns.ClientURL(), edit), ns: ns, pub: pub, base: base}
}

// waitSubs waits until the gateway holds n subscriptions on the server.
func (s *shop) waitSubs(t *testing.T, n uint32) {
	t.Helper()
	waitNATSSubs(t, s.ns, s.base+n)
}

// publisher connects to ns to publish, until the test ends.
func publisher(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitNATSSubs waits until the NATS server holds base+n subscriptions of
// clients.
func waitNATSSubs(t *testing.T, ns *server.Server, want uint32) {
	t.Helper()
	ctx := waitCtx(t)
	for ns.NumSubscriptions() != want {
		select {
		case <-ctx.Done():
			t.Fatalf("the NATS server holds %d subscriptions, want %d", ns.NumSubscriptions(), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestNATSStream(t *testing.T) {
	g := newShop(t, nil)
	c := g.open(t, "/operations/Order?id=7&wg_sse")
	if f := c.frame(t); f != ":\n\n" {
		t.Fatalf("first frame %q", f)
	}
	g.waitSubs(t, 1)
	// A payload of more than the selection, in another order: the result
	// is what a GraphQL server would send.
	g.pub.Publish("orders.7.updated", []byte(`{"total":9.5,"items":[{"qty":2,"sku":"a","price":3}],"status":"SHIPPED","id":7}`))
	g.pub.Publish("orders.8.updated", []byte(`{"id":"8","status":"NEW","items":[]}`)) // another order's subject
	g.pub.Publish("orders.7.updated", []byte(`not JSON`))
	if got, want := normIDs(c.frame(t)), "id: T.0\ndata: "+`{"data":{"shop_orderUpdated":{"id":"7","status":"SHIPPED","items":[{"sku":"a","qty":2}]}}}`+"\n\n"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := normIDs(c.frame(t)); !strings.HasPrefix(got, "id: T.1\ndata: "+`{"data":null,"errors":[{"message":"The payload is not valid JSON`) || !strings.Contains(got, `"path":["shop_orderUpdated"]`) {
		t.Fatalf("a payload that is not JSON: %q", got)
	}
	c.leave()
	g.waitSubs(t, 0)
	g.waitIdle(t)
}

// Identical requests share one NATS subscription; the last client leaving
// unsubscribes.
func TestNATSSharing(t *testing.T) {
	g := newShop(t, nil)
	a := g.open(t, "/operations/Order?id=7&wg_sse")
	b := g.open(t, "/operations/Order?wg_variables=%7B%22id%22%3A%227%22%7D&wg_sse")
	other := g.open(t, "/operations/Order?id=8&wg_sse")
	for _, c := range []*client{a, b, other} {
		c.frame(t)
	}
	g.waitSubs(t, 2)
	g.pub.Publish("orders.7.updated", []byte(`{"id":"7","status":"NEW","items":[]}`))
	for _, c := range []*client{a, b} {
		if f := c.frame(t); !strings.Contains(f, `"id":"7"`) {
			t.Fatalf("got %q", f)
		}
	}
	a.leave()
	b.leave()
	g.waitSubs(t, 1)
	other.leave()
	g.waitSubs(t, 0)
}

// Several subjects, wildcards among them, merge into one stream of results.
func TestNATSSeveralSubjects(t *testing.T) {
	g := newShop(t, nil)
	c := g.open(t, "/operations/Orders?wg_sse")
	c.frame(t)
	g.waitSubs(t, 2)
	// One at a time: nats.go delivers each subject's messages on a
	// goroutine of its own, so messages of two subjects may pass each
	// other on the way.
	for i, subject := range []string{"orders.1.created", "orders.2.updated"} {
		id := fmt.Sprint(i + 1)
		g.pub.Publish(subject, []byte(`{"id":`+id+`}`))
		if got, want := normIDs(c.frame(t)), `data: {"data":{"o":{"__typename":"Order","id":"`+id+`"}}}`; !strings.Contains(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// A value rendered into a subject cannot change its shape: a 400 naming
// the variable, and nothing subscribed.
func TestNATSSubjectInjection(t *testing.T) {
	g := newShop(t, nil)
	for _, v := range []string{"", "7.8", "*", ">", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "é.x"} {
		resp, body := g.get(t, http.MethodGet, "/operations/Order?id="+url.QueryEscape(v))
		msg, code := errorOf(t, body)
		if resp.StatusCode != http.StatusBadRequest || code != "BAD_USER_INPUT" || !strings.Contains(msg, `variable "id"`) {
			t.Errorf("id %q: %d %s %q", v, resp.StatusCode, code, msg)
		}
	}
	if n := g.ns.NumSubscriptions(); n != g.base {
		t.Errorf("%d subscriptions on the NATS server, want %d", n, g.base)
	}
	if s := g.h.Stats(); s.Subscriptions != 0 {
		t.Errorf("%+v", s)
	}
}

// An operation that writes the subject's argument as a literal.
func TestNATSLiteral(t *testing.T) {
	g := newShop(t, nil)
	c := g.open(t, "/operations/Seven?wg_sse")
	c.frame(t)
	g.waitSubs(t, 1)
	g.pub.Publish("orders.7.updated", []byte(`{"id":"7"}`))
	if f := c.frame(t); !strings.Contains(f, `{"data":{"shop_orderUpdated":{"id":"7"}}}`) {
		t.Fatalf("got %q", f)
	}
}

func TestNATSConfigErrors(t *testing.T) {
	op := func(src string) []*gqlpush.Operation { return mustParse(t, map[string]string{"Op": src}) }
	for _, tt := range []struct {
		name   string
		schema string
		ops    []*gqlpush.Operation
		want   string
	}{
		{"no directive", `type Query { x: Int } type Subscription { a: Int }`, op(`subscription { shop_a }`), "schema:1:43: subscription field a of a NATS upstream has no @natsSubscribe"},
		{"unknown argument", "type Query { x: Int }\ntype Subscription { a(id: ID): Int @natsSubscribe(subjects: [\"a.{{ args.nope }}\"]) }", op(`subscription { shop_a }`), `schema:2:63: @natsSubscribe on a: subject "a.{{ args.nope }}": the field has no argument "nope"`},
		{"a bad subject", "type Query { x: Int }\ntype Subscription { a: Int @natsSubscribe(subjects: [\"a..b\"]) }", op(`subscription { shop_a }`), "has an empty token"},
		{"argument not given", "type Query { x: Int }\ntype Subscription { a(id: ID): Int @natsSubscribe(subjects: [\"a.{{ args.id }}\"]) }", op(`subscription { shop_a }`), `Op.graphql:1:16: argument id is not given`},
		{"a literal that changes the subject", "type Query { x: Int }\ntype Subscription { a(id: ID): Int @natsSubscribe(subjects: [\"a.{{ args.id }}\"]) }", op(`subscription { shop_a(id: "x.y") }`), `Op.graphql:1:28: argument id renders the NATS subject "a.{{ args.id }}": it holds '.', which subjects reserve`},
		{"no schema", "", op(`subscription { shop_a }`), "Schema is required for a NATS upstream"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gqlpush.NewHandler(gqlpush.Config{
				Operations: tt.ops,
				Upstreams:  []gqlpush.Upstream{{Name: "shop", URL: "nats://user:secret@127.0.0.1:1", Schema: tt.schema}},
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
	// The directive on a GraphQL server's schema means nothing.
	_, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: op(`subscription { gql_a }`),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/graphql", Schema: "type Query { x: Int }\ntype Subscription { a: Int @natsSubscribe(subjects: [\"a\"]) }"}},
	})
	var ce *gqlpush.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Schema" || !strings.Contains(err.Error(), "schema:2:29: @natsSubscribe is for the fields of NATS upstreams") {
		t.Fatalf("got %v", err)
	}
}

// NATS lost under open streams: they stay open while nats.go reconnects,
// and get results again after.
func TestNATSRestartUnderStreams(t *testing.T) {
	ns := natsServer(t, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	g := natsGateway(t, ns.ClientURL(), nil)
	c := g.open(t, "/operations/Order?id=7&wg_sse")
	c.frame(t)
	waitStats(t, g.h, "connected to NATS", func(s gqlpush.Stats) bool { return s.UpstreamConns == 1 })
	ns.Shutdown()
	ns.WaitForShutdown()
	waitStats(t, g.h, "NATS lost", func(s gqlpush.Stats) bool { return s.UpstreamConns == 0 })
	again := natsServer(t, port) // the same address again
	waitStats(t, g.h, "connected again", func(s gqlpush.Stats) bool { return s.UpstreamConns == 1 })
	pub := publisher(t, again)
	// nats.go makes its subscriptions again on reconnect; publish until one
	// arrives, as the moment it is back is not told.
	f := firstResult(t, c, func() { pub.Publish("orders.7.updated", []byte(`{"id":"7","status":"NEW","items":[]}`)) })
	if !strings.Contains(f, `"id":"7"`) {
		t.Fatalf("got %q", f)
	}
}

// NATS unreachable from the start: the handler starts, and streams wait,
// then end with UPSTREAM_UNAVAILABLE at the reconnect limit.
func TestNATSUnreachable(t *testing.T) {
	ln := newLocalListener(t)
	addr := ln.Addr().String()
	ln.Close() // nobody listens there
	g := natsGateway(t, "nats://"+addr, func(cfg *gqlpush.Config) { cfg.ReconnectLimit = 300 * time.Millisecond })
	c := g.open(t, "/operations/Order?id=7&wg_sse")
	c.frame(t)
	if rest := c.rest(t); !strings.Contains(rest, "UPSTREAM_UNAVAILABLE") || !strings.HasSuffix(rest, "event: complete\ndata: \n\n") {
		t.Fatalf("got %q", rest)
	}
}

// JetStream: ids are the stream's sequences, and a client that comes back
// with the id of its last event gets what it missed, from the stream, even
// from a new handler.
func TestJetStreamResume(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), nil)
	last := seenAndGone(t, g, js)
	token, _, _ := strings.Cut(last, ".")
	jsPublish(t, js, "8", "NEW")
	shipped := jsPublish(t, js, "7", "SHIPPED")
	jsPublish(t, js, "7", "NEW")
	// A new handler: the ids are the stream's, good in any process.
	g2 := natsGateway(t, ns.ClientURL(), nil)
	c2, _ := g2.openWith(t, g2.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	if f := c2.frame(t); f != ":\n\n" {
		t.Fatalf("first frame %q", f)
	}
	for i, want := range []string{`"status":"SHIPPED"`, `"status":"NEW"`} {
		f := c2.frame(t)
		if !strings.Contains(f, want) || !strings.HasPrefix(f, "id: "+token+".") {
			t.Fatalf("resumed with %q, want %s under token %s", f, want, token)
		}
		if i == 0 && lastIDOf(t, f) != fmt.Sprintf("%s.%d", token, shipped) {
			t.Fatalf("id %s, want the stream's sequence %d", lastIDOf(t, f), shipped)
		}
	}
}

// seenAndGone opens a stream of order 7's events on g, reads a result
// published to js, leaves, and returns the result's id.
func seenAndGone(t *testing.T, g *gateway, js jetstream.JetStream) string {
	t.Helper()
	c := g.open(t, "/operations/Events?id=7&wg_sse")
	c.frame(t)
	last := lastIDOf(t, firstResult(t, c, func() { jsPublish(t, js, "7", "NEW") }))
	c.leave()
	g.waitIdle(t)
	return last
}

// publishMany publishes order 7's events with ids S<from> to S<from+n-1>,
// each padded with pad, a batch at a time so that nats.go never holds
// more unacknowledged than it allows, and waits for the stream to have
// them all. It may be called from any goroutine.
func publishMany(js jetstream.JetStream, from, n int, pad string) error {
	for i := from; i < from+n; {
		for end := min(i+256, from+n); i < end; i++ {
			if _, err := js.PublishAsync("stream.orders.7", fmt.Appendf(nil, `{"id":"S%d%s","status":"NEW"}`, i, pad)); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(waitTime):
			return errors.New("the stream did not take what was published")
		}
	}
	return nil
}

func lastIDOf(t *testing.T, frame string) string {
	t.Helper()
	id, _, ok := strings.Cut(strings.TrimPrefix(frame, "id: "), "\n")
	if !ok || !strings.HasPrefix(frame, "id: ") {
		t.Fatalf("no id in %q", frame)
	}
	return id
}

// An id older than what the stream holds gets event: reset first, then the
// live results.
func TestJetStreamResumeOutsideRetention(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStream(t, ns, 2) // keeps the last 2 messages
	publish := func(status string) { jsPublish(t, js, "7", status) }
	g := natsGateway(t, ns.ClientURL(), nil)
	last := seenAndGone(t, g, js)
	for range 3 {
		publish("NEW") // what followed last is gone from the stream
	}
	c2, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	if f := c2.frame(t); f != ":\n\n" {
		t.Fatalf("first frame %q", f)
	}
	if f := c2.frame(t); f != "event: reset\ndata: \n\n" {
		t.Fatalf("want the reset, got %q", f)
	}
	// Then only what comes next.
	if f := firstResult(t, c2, func() { publish("SHIPPED") }); !strings.Contains(f, `"SHIPPED"`) {
		t.Fatalf("after the reset: %q", f)
	}
	// An id past the stream's last message, of a stream since deleted and
	// made again, is reset too.
	token, _, _ := strings.Cut(last, ".")
	c3, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {token + ".999"}})
	c3.frame(t)
	if f := c3.frame(t); f != "event: reset\ndata: \n\n" {
		t.Fatalf("an id past the last message: %q", f)
	}
}

// ordersStream creates the ORDERS stream on ns, keeping maxMsgs messages
// (0: no limit), and returns a JetStream client of it.
func ordersStream(t *testing.T, ns *server.Server, maxMsgs int64) (jetstream.JetStream, context.Context) {
	t.Helper()
	return ordersStreamWith(t, ns, func(cfg *jetstream.StreamConfig) {
		if maxMsgs > 0 {
			cfg.MaxMsgs = maxMsgs
		}
	})
}

// ordersStreamWith makes the ORDERS stream with what edit sets.
func ordersStreamWith(t *testing.T, ns *server.Server, edit func(*jetstream.StreamConfig)) (jetstream.JetStream, context.Context) {
	t.Helper()
	js, err := jetstream.New(publisher(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx := waitCtx(t)
	cfg := jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"stream.orders.>"}}
	edit(&cfg)
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return js, ctx
}

func jsPublish(t *testing.T, js jetstream.JetStream, id, status string) uint64 {
	t.Helper()
	ack, err := js.Publish(waitCtx(t), "stream.orders."+id, []byte(`{"id":"`+id+`","status":"`+status+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// firstResult publishes until c reads a frame, and returns it: a JetStream
// consumer starts with what comes after it is made, a moment after the
// stream has opened, and nats.go subscribes again a moment after it has
// reconnected, neither of which anything tells.
func firstResult(t *testing.T, c *client, publish func()) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		f, err := readFrame(c.br)
		if err == nil {
			got <- f
		}
	}()
	ctx := waitCtx(t)
	for {
		publish()
		select {
		case f := <-got:
			return f
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("nothing arrived")
			return ""
		}
	}
}

// nextWith reads c's frames up to one holding want, past results that
// firstResult's publishing left behind, and fails t on any other frame.
func nextWith(t *testing.T, c *client, want string) string {
	t.Helper()
	for {
		f := c.frame(t)
		if strings.Contains(f, want) {
			return f
		}
		if !strings.HasPrefix(f, "id: ") {
			t.Fatalf("got %q, waiting for %s", f, want)
		}
	}
}

// A union's member is the one the payload's __typename names; a payload
// that names none is a field error, and the stream goes on.
func TestNATSUnion(t *testing.T) {
	g := newShop(t, nil)
	c := g.open(t, "/operations/Changes?wg_sse")
	c.frame(t)
	g.waitSubs(t, 1)
	for _, m := range []string{
		`{"__typename":"Item","sku":"a","qty":1}`,
		`{"__typename":"Order","id":1,"status":"NEW","items":[]}`,
		`{"id":"1"}`,
		`{"__typename":"Node","id":"1"}`,
		`{"__typename":"Order","id":1,"status":"LOST"}`,
	} {
		g.pub.Publish("changes", []byte(m))
	}
	for i, want := range []string{
		`{"data":{"c":{"__typename":"Item","sku":"a"}}}`,
		`{"data":{"c":{"__typename":"Order","id":"1","st":"NEW"}}}`,
		`{"data":{"c":null},"errors":[{"message":"Could not determine the concrete type of field Subscription.shop_changes of union type Change: the value has no \"__typename\" string member","path":["c"]}]}`,
		`{"data":{"c":null},"errors":[{"message":"Could not determine the concrete type of field Subscription.shop_changes: __typename \"Node\" is not a possible type of union type Change","path":["c"]}]}`,
		`{"data":{"c":null},"errors":[{"message":"Enum \"Status\" cannot represent value: \"LOST\"","path":["c","st"]}]}`,
	} {
		if got := normIDs(c.frame(t)); got != fmt.Sprintf("id: T.%d\ndata: %s\n\n", i, want) {
			t.Errorf("message %d: got %q\nwant data: %s", i, got, want)
		}
	}
}

// Core NATS results resume from the in-memory window, as a GraphQL
// upstream's do.
func TestNATSResumeFromWindow(t *testing.T) {
	g := newShop(t, nil)
	a := g.open(t, "/operations/Order?id=7&wg_sse")
	b := g.open(t, "/operations/Order?id=7&wg_sse") // holds the subscription while a is away
	a.frame(t)
	b.frame(t)
	g.waitSubs(t, 1)
	order := func(status string) []byte { return []byte(`{"id":"7","status":"` + status + `","items":[]}`) }
	g.pub.Publish("orders.7.updated", order("NEW"))
	last := lastIDOf(t, a.frame(t))
	b.frame(t)
	a.leave()
	g.pub.Publish("orders.7.updated", order("SHIPPED"))
	g.pub.Publish("orders.7.updated", order("NEW"))
	b.frame(t)
	b.frame(t) // both are in the window now
	a2, _ := g.openWith(t, g.srv.URL+"/operations/Order?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	a2.frame(t)
	for _, want := range []string{"SHIPPED", "NEW"} {
		if f := a2.frame(t); !strings.Contains(f, `"status":"`+want+`"`) {
			t.Fatalf("resumed with %q, want %s", f, want)
		}
	}
}

// wg_subscribe_once answers with the first message's result, and leaves
// no subscription behind.
func TestNATSSubscribeOnce(t *testing.T) {
	g := newShop(t, nil)
	type answer struct {
		status int
		body   string
	}
	got := make(chan answer, 1)
	go func() {
		resp, body := g.get(t, http.MethodGet, "/operations/Order?id=7&wg_subscribe_once=true")
		got <- answer{resp.StatusCode, body}
	}()
	g.waitSubs(t, 1)
	g.pub.Publish("orders.7.updated", []byte(`{"id":"7","status":"NEW","items":[],"total":1}`))
	a := <-got
	if a.status != http.StatusOK || a.body != `{"data":{"shop_orderUpdated":{"id":"7","status":"NEW","items":[]}}}` {
		t.Fatalf("%d %q", a.status, a.body)
	}
	g.waitSubs(t, 0)
	g.waitIdle(t)
}

// A subject may take a claim of the caller's token: each caller reads its
// own subject, and a claim that would change the subject's shape is
// refused as a variable would be.
func TestNATSFromClaim(t *testing.T) {
	is := jwttest.NewIssuer(t)
	a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKS: is.JWKS, Issuer: jwttest.Iss, Audience: jwttest.Aud})
	if err != nil {
		t.Fatal(err)
	}
	g := newShop(t, func(cfg *gqlpush.Config) {
		cfg.Operations = mustParse(t, map[string]string{"Mine": `subscription ($me: ID! @fromClaim(name: "sub")) { shop_orderUpdated(id: $me) { id } }`})
		cfg.Authenticator = a
	})
	alice, _ := g.openWith(t, g.srv.URL+"/operations/Mine?wg_sse", bearer(is.RS256(t, jwttest.Claims("alice"))))
	alice.frame(t)
	g.waitSubs(t, 1)
	g.pub.Publish("orders.bob.updated", []byte(`{"id":"bob"}`))
	g.pub.Publish("orders.alice.updated", []byte(`{"id":"alice"}`))
	if f := normIDs(alice.frame(t)); f != "id: T.0\ndata: {\"data\":{\"shop_orderUpdated\":{\"id\":\"alice\"}}}\n\n" {
		t.Fatalf("got %q", f)
	}
	resp, body := g.do(t, "/operations/Mine?wg_sse", bearer(is.RS256(t, jwttest.Claims("a.>"))))
	if msg, code := errorOf(t, body); resp.StatusCode != http.StatusBadRequest || code != "BAD_USER_INPUT" || !strings.Contains(msg, `variable "me"`) {
		t.Fatalf("a claim holding '.': %d %s %q", resp.StatusCode, code, msg)
	}
	g.waitSubs(t, 1)
}

// numbersSchema has subscription fields whose subjects take an Int, a
// Float and a Boolean argument.
const numbersSchema = `
type Query { x: Int }
type Order { id: ID! }
type Subscription {
  byNumber(n: Int!): Order @natsSubscribe(subjects: ["num.{{ args.n }}"])
  byFloat(f: Float!): Order @natsSubscribe(subjects: ["flt.{{ args.f }}"])
  byFlag(b: Boolean!): Order @natsSubscribe(subjects: ["flag.{{ args.b }}"])
}
`

// Int, Float and Boolean variables render in subjects as their JSON
// text, from the query string and from wg_variables alike.
func TestNATSNumbersInSubjects(t *testing.T) {
	ns := natsServer(t, 0)
	pub := publisher(t, ns)
	g := gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, map[string]string{
			"Num":  `subscription ($n: Int!) { shop_byNumber(n: $n) { id } }`,
			"Flt":  `subscription ($f: Float!) { shop_byFloat(f: $f) { id } }`,
			"Flag": `subscription ($b: Boolean!) { shop_byFlag(b: $b) { id } }`,
		}),
		Upstreams: []gqlpush.Upstream{{Name: "shop", URL: ns.ClientURL(), Schema: numbersSchema}},
		Prefix:    "/operations/",
	}, nil)
	for _, tt := range []struct{ path, subject string }{
		{"/operations/Num?n=7&wg_sse", "num.7"},
		{"/operations/Num?wg_variables=%7B%22n%22%3A7%7D&wg_sse", "num.7"},
		{"/operations/Flt?f=2&wg_sse", "flt.2"},
		{"/operations/Flag?b=true&wg_sse", "flag.true"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			c, resp := g.openWith(t, g.srv.URL+tt.path, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d, body %q", tt.path, resp.StatusCode, c.rest(t))
			}
			c.frame(t)
			f := firstResult(t, c, func() { pub.Publish(tt.subject, []byte(`{"id":"1"}`)) })
			if !strings.Contains(f, `"id":"1"`) {
				t.Fatalf("got %q", f)
			}
			c.leave()
		})
	}
}

// Clients that come back with Last-Event-ID after a restart catch up from
// the stream, each at its own pace, then share the one subscription: one
// JetStream consumer in all once they have caught up.
func TestJetStreamResumersShare(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), nil)
	last := seenAndGone(t, g, js)
	jsPublish(t, js, "7", "SHIPPED")

	g2 := natsGateway(t, ns.ClientURL(), nil) // a new handler
	var clients []*client
	for range 5 {
		r, _ := g2.openWith(t, g2.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
		r.frame(t)
		if f := r.frame(t); !strings.Contains(f, "SHIPPED") {
			t.Fatalf("resumed with %q", f)
		}
		clients = append(clients, r)
	}
	if s := g2.h.Stats(); s.Subscriptions != 1 {
		t.Errorf("5 streams that caught up hold %d subscriptions, want 1", s.Subscriptions)
	}
	waitConsumers(t, ns, 1) // the replays' consumers are deleted
	jsPublish(t, js, "7", "DELIVERED")
	for i, r := range clients {
		if f := r.frame(t); !strings.Contains(f, "DELIVERED") {
			t.Fatalf("client %d: %q", i, f)
		}
	}
}

// idFrames reads n result frames of c and checks that their ids are
// S<from>, S<from+1>, …: every message once, in order.
func idFrames(c *client, from, n int) error {
	for i := from; i < from+n; i++ {
		f, err := readFrame(c.br)
		if want := fmt.Sprintf(`"id":"S%d"`, i); err != nil || !strings.Contains(f, want) {
			return fmt.Errorf("frame %d: %q, %v; want %s", i, f, err, want)
		}
	}
	return nil
}

// A client that missed far more than its queue holds gets it all, read
// from the stream as fast as it reads, not dropped as a slow client; and
// so does one that catches up while new messages keep coming, many times
// its queue's worth.
func TestJetStreamReplayAtTheClientsPace(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStream(t, ns, 0)
	g := natsGateway(t, ns.ClientURL(), func(cfg *gqlpush.Config) { cfg.QueueSize = 8 })
	last := seenAndGone(t, g, js)
	publish := func(from, n int) {
		if err := publishMany(js, from, n, ""); err != nil {
			t.Error(err)
		}
	}
	const missed = 1000
	publish(0, missed)
	r, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	r.frame(t)
	if err := idFrames(r, 0, missed); err != nil {
		t.Fatal(err)
	}

	r.leave()
	g.waitIdle(t)

	// Another comes back from the same id while the subscription it
	// starts takes many times its queue's worth of new messages as it
	// catches up.
	r2, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	r2.frame(t)
	go publish(missed, 500)
	if err := idFrames(r2, 0, missed+500); err != nil {
		t.Fatal(err)
	}
	if s := g.h.Stats(); s.Subscriptions != 1 {
		t.Errorf("%d subscriptions, want 1", s.Subscriptions)
	}
}

// A stream that keeps few messages per subject may drop what a client
// missed while it still holds older messages of other subjects: the client
// gets event: reset, not a silent gap.
func TestJetStreamResumeAfterASubjectsLimit(t *testing.T) {
	ns := natsServer(t, 0)
	js, _ := ordersStreamWith(t, ns, func(cfg *jetstream.StreamConfig) { cfg.MaxMsgsPerSubject = 2 })
	jsPublish(t, js, "8", "NEW") // another subject's, older than anything of order 7
	g := natsGateway(t, ns.ClientURL(), nil)
	last := seenAndGone(t, g, js)
	for _, status := range []string{"SHIPPED", "DELIVERED", "NEW"} { // the first is dropped
		jsPublish(t, js, "7", status)
	}
	c, _ := g.openWith(t, g.srv.URL+"/operations/Events?id=7&wg_sse", http.Header{"Last-Event-Id": {last}})
	c.frame(t)
	if f := c.frame(t); f != "event: reset\ndata: \n\n" {
		t.Fatalf("want the reset, got %q", f)
	}
}
