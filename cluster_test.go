package gqlpush_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// testLease is the lease of the test clusters: short, so that a takeover
// comes soon.
const testLease = time.Second

// A testCluster is gateways, each with its own NATS connection, of one
// cluster in front of one upstream.
type testCluster struct {
	ns   *server.Server
	up   *gqlpushtest.Server
	gws  []*gateway
	ncs  []*nats.Conn
	seen []*clusterEvents
}

// clusterEvents records what an instance's Observer is told of the
// cluster.
type clusterEvents struct {
	mu     sync.Mutex
	events []string // "taken", "failover", "released", "lost"
	lags   int
}

func (e *clusterEvents) observer() *gqlpush.Observer {
	add := func(ev string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.events = append(e.events, ev)
	}
	return &gqlpush.Observer{
		ClusterKeyTaken: func(_ string, failover bool) {
			add(map[bool]string{false: "taken", true: "failover"}[failover])
		},
		ClusterKeyReleased: func(_ string, lost bool) {
			add(map[bool]string{false: "released", true: "lost"}[lost])
		},
		ClusterLag: func(string, time.Duration) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.lags++
		},
	}
}

// wait waits until the instance's Observer has been told events, in order.
func (e *clusterEvents) wait(t *testing.T, events ...string) {
	t.Helper()
	told := func() string {
		e.mu.Lock()
		defer e.mu.Unlock()
		return strings.Join(e.events, " ")
	}
	want := strings.Join(events, " ")
	waitUntil(t, func() bool { return told() == want }, func() string {
		return fmt.Sprintf("the Observer was told %q, want %q", told(), events)
	})
}

func newTestCluster(t *testing.T, n int, edit func(*gqlpush.Config)) *testCluster {
	t.Helper()
	tc := &testCluster{ns: natsServer(t, 0), up: gqlpushtest.NewServer(nil)}
	t.Cleanup(tc.up.Close)
	for i := range n {
		nc := publisher(t, tc.ns)
		tc.ncs = append(tc.ncs, nc)
		seen := &clusterEvents{}
		tc.seen = append(tc.seen, seen)
		tc.gws = append(tc.gws, gatewayFor(t, tc.up, func(cfg *gqlpush.Config) {
			cfg.Cluster = &gqlpush.Cluster{NATS: nc, Instance: fmt.Sprint("i", i), Lease: testLease}
			cfg.Observer = seen.observer()
			if edit != nil {
				edit(cfg)
			}
		}))
	}
	return tc
}

// A reader reads a client's frames in a goroutine of its own.
type reader struct {
	c      *client
	frames chan string
}

// readAll reads c's frames in a goroutine of its own, which ends, and is
// waited for, when the test does.
func readAll(t *testing.T, c *client) *reader {
	r := &reader{c: c, frames: make(chan string, 4096)}
	stop, done := make(chan struct{}), make(chan struct{})
	go r.read(stop, done)
	t.Cleanup(func() {
		close(stop)
		c.leave() // the read under way ends
		<-done
	})
	return r
}

// read passes c's frames on until the stream ends or stop is closed.
func (r *reader) read(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer close(r.frames)
	for {
		f, err := readFrame(r.c.br)
		if err != nil {
			return
		}
		select {
		case r.frames <- f:
		case <-stop:
			return
		}
	}
}

// next returns the reader's next frame.
func (r *reader) next(t *testing.T) string {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case f, ok := <-r.frames:
		if !ok {
			t.Fatal("the stream ended")
		}
		return f
	case <-timer.C:
		t.Fatal("no frame")
	}
	return ""
}

// until reads up to the frame holding content and returns it.
func (r *reader) until(t *testing.T, content string) string {
	t.Helper()
	for {
		if f := r.next(t); strings.Contains(f, `"content":"`+content+`"`) {
			return f
		}
	}
}

// sync posts until every reader has a result, then a mark, and reads
// every reader up to it: what is posted next reaches all of them.
func (tc *testCluster) sync(t *testing.T, rs ...*reader) {
	t.Helper()
	ctx := waitCtx(t)
	for i, r := range rs {
		for got := false; !got; {
			tc.up.Chat.Post("", fmt.Sprint("warm", i))
			select {
			case f, ok := <-r.frames:
				if !ok {
					t.Fatalf("reader %d: the stream ended", i)
				}
				got = strings.HasPrefix(f, "id: ")
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("reader %d has no result", i)
			}
		}
	}
	tc.up.Chat.Post("", "mark")
	for _, r := range rs {
		r.until(t, "mark")
	}
}

// contentsOf reads n results of r and returns their contents and ids.
func contentsOf(t *testing.T, r *reader, n int) (contents, ids []string) {
	t.Helper()
	for range n {
		f := r.next(t)
		id, _, _ := strings.Cut(strings.TrimPrefix(f, "id: "), "\n")
		_, after, _ := strings.Cut(f, `"content":"`)
		content, _, _ := strings.Cut(after, `"`)
		contents, ids = append(contents, content), append(ids, id)
	}
	return contents, ids
}

// Clients on three instances see every result, in order, with the same
// ids, while the upstream holds one subscription; when the last client
// leaves, it holds none.
func TestClusterOneUpstreamSubscription(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	var rs []*reader
	for _, g := range tc.gws {
		rs = append(rs, readAll(t, g.open(t, "/operations/Sub?wg_sse")))
	}
	tc.sync(t, rs...)
	if n := tc.up.Subscriptions(); n != 1 {
		t.Fatalf("the upstream holds %d subscriptions, want 1", n)
	}
	for _, c := range []string{"a", "b", "c"} {
		tc.up.Chat.Post("", c)
	}
	var first []string
	for i, r := range rs {
		got, ids := contentsOf(t, r, 3)
		if strings.Join(got, ",") != "a,b,c" {
			t.Fatalf("instance %d: %v", i, got)
		}
		if i == 0 {
			first = ids
		} else if strings.Join(ids, " ") != strings.Join(first, " ") {
			t.Fatalf("instance %d has ids %v, instance 0 %v", i, ids, first)
		}
	}
	for _, r := range rs {
		r.c.leave()
	}
	if err := tc.up.WaitSubscriptions(waitCtx(t), 0); err != nil {
		t.Fatalf("after the last client left: %v (%d subscriptions)", err, tc.up.Subscriptions())
	}
	for _, g := range tc.gws {
		g.waitIdle(t)
	}
	// One instance took the key and lets it go; each read results.
	owners := 0
	for _, e := range tc.seen {
		e.mu.Lock()
		events, lags := strings.Join(e.events, " "), e.lags
		e.mu.Unlock()
		if events != "" {
			owners++
			e.wait(t, "taken", "released")
		}
		if lags == 0 {
			t.Error("an instance's Observer heard of no lag")
		}
	}
	if owners != 1 {
		t.Errorf("%d instances took the key, want 1", owners)
	}
}

// moverScene sets three instances up: a client of the first keeps the key
// running; one of the second reads the result first, then leaves; then
// the rest are posted. It returns the cluster, the first client, and the
// id of the second's last result.
func moverScene(t *testing.T, first string, rest ...string) (*testCluster, *reader, string) {
	t.Helper()
	tc := newTestCluster(t, 3, nil)
	keeper := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	mover := readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, keeper, mover)
	tc.up.Chat.Post("", first)
	_, ids := contentsOf(t, mover, 1)
	mover.c.leave()
	for _, c := range rest {
		tc.up.Chat.Post("", c)
	}
	return tc, keeper, ids[0]
}

// A client that moves to another instance with Last-Event-ID gets what it
// missed, nothing twice.
func TestClusterResumeElsewhere(t *testing.T) {
	tc, keeper, last := moverScene(t, "a", "b", "c")
	keeper.until(t, "c")
	moved := readAll(t, tc.gws[2].openURL2(t, "/operations/Sub?wg_sse", http.Header{"Last-Event-Id": {last}}))
	if f := moved.next(t); f != ":\n\n" {
		t.Fatalf("first frame %q", f)
	}
	tc.up.Chat.Post("", "d")
	if got, _ := contentsOf(t, moved, 3); strings.Join(got, ",") != "b,c,d" {
		t.Fatalf("resumed with %v, want b,c,d", got)
	}
}

// The owner dies (its NATS connection cut, with no clean-up): another
// instance with clients takes the key over within the lease, and their
// streams go on, with no reset, no error and increasing ids.
func TestClusterFailover(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	owner := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, owner) // gws[0] owns the key
	rs := []*reader{readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse")), readAll(t, tc.gws[2].open(t, "/operations/Sub?wg_sse"))}
	tc.sync(t, append(rs, owner)...)
	tc.up.Chat.Post("", "before")
	var last []string
	for _, r := range rs {
		_, ids := contentsOf(t, r, 1)
		last = append(last, ids[0])
	}
	tc.seen[0].wait(t, "taken")
	tc.ncs[0].Close() // the owner is gone for the cluster
	// Results posted until the new owner subscribes are not invented; the
	// first that reaches the others is the first it sees.
	for i, r := range rs {
		f := tc.firstFrame(t, r, "after")
		if !strings.HasPrefix(f, "id: ") || !strings.Contains(f, `"after"`) {
			t.Fatalf("instance %d: %q", i+1, f)
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(f, "id: "), "\n")
		if seqOf(t, id) <= seqOf(t, last[i]) {
			t.Fatalf("instance %d: id %s after %s", i+1, id, last[i])
		}
	}
	// The dead owner's upstream subscription goes once it cannot renew
	// its lease: one is left.
	if err := tc.up.WaitSubscriptions(waitCtx(t), 1); err != nil {
		t.Fatalf("%v: %d subscriptions", err, tc.up.Subscriptions())
	}
	tc.seen[0].wait(t, "taken", "lost")
	for _, e := range tc.seen[1:] {
		e.mu.Lock()
		events := strings.Join(e.events, " ")
		e.mu.Unlock()
		if events != "" && events != "failover" {
			t.Errorf("a surviving instance's Observer was told %q", events)
		}
	}
}

func seqOf(t *testing.T, id string) uint64 {
	t.Helper()
	_, n, ok := strings.Cut(id, ".")
	var seq uint64
	if _, err := fmt.Sscan(n, &seq); !ok || err != nil {
		t.Fatalf("id %q", id)
	}
	return seq
}

// An owner whose lease another instance took cannot publish: the subject
// holds the new owner's mark, so its next result is refused, and it lets
// its upstream subscription go. No client sees a result twice.
func TestClusterStaleOwnerFenced(t *testing.T) {
	tc := newTestCluster(t, 2, nil)
	a, b := tc.twoReaders(t)
	js := tc.js(t)
	kv, err := js.KeyValue(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	// The lease is gone, as if it had expired while its owner was away.
	keys, err := kv.Keys(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.HasPrefix(k, "l.") {
			if err := kv.Purge(waitCtx(t), k); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 20 {
		tc.up.Chat.Post("", fmt.Sprint("n", i))
	}
	tc.seen[1].wait(t, "failover")
	tc.seen[0].wait(t, "taken", "lost")
	if err := tc.up.WaitSubscriptions(waitCtx(t), 1); err != nil {
		t.Fatalf("%v: %d subscriptions", err, tc.up.Subscriptions())
	}
	tc.up.Chat.Post("", "final")
	// What was posted while the key changed hands may be missing (no one
	// was subscribed yet); nothing may come twice or out of order.
	for _, r := range []*reader{a, b} {
		var got []string
		for f := r.next(t); ; f = r.next(t) {
			_, after, _ := strings.Cut(f, `"content":"`)
			c, _, _ := strings.Cut(after, `"`)
			if c == "final" {
				break
			}
			got = append(got, c)
		}
		for i := 1; i < len(got); i++ {
			var prev, cur int
			fmt.Sscanf(got[i-1], "n%d", &prev)
			fmt.Sscanf(got[i], "n%d", &cur)
			if cur <= prev {
				t.Fatalf("got %v: a result twice or out of order", got)
			}
		}
	}
}

// Callers whose forwarded credentials differ never share a subscription,
// on one instance or across instances.
func TestClusterIdentitiesApart(t *testing.T) {
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].ForwardHeaders = []string{"X-Tenant"}
	})
	a := readAll(t, tc.gws[0].openURL2(t, "/operations/Sub?wg_sse", http.Header{"X-Tenant": {"a"}}))
	b := readAll(t, tc.gws[1].openURL2(t, "/operations/Sub?wg_sse", http.Header{"X-Tenant": {"b"}}))
	tc.sync(t, a, b)
	if n := tc.up.Subscriptions(); n != 2 {
		t.Fatalf("two tenants hold %d upstream subscriptions, want 2", n)
	}
}

func (g *gateway) openURL2(t *testing.T, path string, h http.Header) *client {
	t.Helper()
	c, resp := g.openWith(t, g.srv.URL+path, h)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d", path, resp.StatusCode)
	}
	return c
}

// The cluster's NATS unreachable: a stream waits, then ends with
// UPSTREAM_UNAVAILABLE at the reconnect limit, like one whose upstream is
// unreachable.
func TestClusterNATSUnreachable(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Cluster = &gqlpush.Cluster{URL: "nats://127.0.0.1:1", Lease: testLease}
		cfg.ReconnectLimit = 300 * time.Millisecond
	})
	endsUnavailable(t, g, "upstream unavailable")
}

// endsUnavailable opens a stream of Sub on g and reads it to its end,
// UPSTREAM_UNAVAILABLE with msg; then g holds nothing, and neither does
// its upstream.
func endsUnavailable(t *testing.T, g *gateway, msg string) {
	t.Helper()
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	wantEnd(t, c, "UPSTREAM_UNAVAILABLE", msg)
	g.waitIdle(t)
	if n := g.up.Subscriptions(); n != 0 {
		t.Fatalf("the upstream holds %d subscriptions", n)
	}
}

// The cluster's NATS restarts under open streams: they stay open, and
// results reach them again once it is back.
func TestClusterNATSRestart(t *testing.T) {
	tc, restart, rs := restartableCluster(t, nil)
	tc.ns.Shutdown()
	tc.ns.WaitForShutdown()
	restart()
	tc.sync(t, rs...)
	tc.up.Chat.Post("", "again")
	for _, r := range rs {
		if got, _ := contentsOf(t, r, 1); got[0] != "again" {
			t.Fatalf("got %v", got)
		}
	}
	if err := tc.up.WaitSubscriptions(waitCtx(t), 1); err != nil {
		t.Fatalf("%v: %d subscriptions", err, tc.up.Subscriptions())
	}
}

// restartableCluster is two instances that dial a NATS server the test can
// restart, each with a reader of Sub, synced; edit may change each one's
// configuration.
func restartableCluster(t *testing.T, edit func(*gqlpush.Config)) (*testCluster, func() jetstream.JetStream, []*reader) {
	t.Helper()
	ns, restart := restartable(t)
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	tc := &testCluster{ns: ns, up: up}
	var rs []*reader
	for i := range 2 {
		g := gatewayFor(t, up, func(cfg *gqlpush.Config) {
			cfg.Cluster = &gqlpush.Cluster{URL: ns.ClientURL(), Instance: fmt.Sprint("i", i), Lease: testLease,
				NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}}
			if edit != nil {
				edit(cfg)
			}
		})
		rs = append(rs, readAll(t, g.open(t, "/operations/Sub?wg_sse")))
	}
	tc.sync(t, rs...)
	return tc, restart, rs
}

// A Cluster's settings are checked when the Handler is made.
func TestClusterConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cl    gqlpush.Cluster
		field string
	}{
		{gqlpush.Cluster{}, "Cluster.URL"},
		{gqlpush.Cluster{URL: "nats://x:1", NATS: &nats.Conn{}}, "Cluster.URL"},
		{gqlpush.Cluster{URL: "http://x:1"}, "Cluster.URL"},
		{gqlpush.Cluster{URL: "nats://x:1", Name: "a.b"}, "Cluster.Name"},
		{gqlpush.Cluster{URL: "nats://x:1", Instance: "a b"}, "Cluster.Instance"},
		{gqlpush.Cluster{URL: "nats://x:1", Lease: -time.Second}, "Cluster.Lease"},
		{gqlpush.Cluster{URL: "nats://x:1", Lease: time.Nanosecond}, "Cluster.Lease"},
		{gqlpush.Cluster{URL: "nats://x:1", MaxAge: 50 * time.Millisecond}, "Cluster.MaxAge"},
		{gqlpush.Cluster{URL: "nats://x:1", MaxAge: time.Second, Lease: 2 * time.Second}, "Cluster.MaxAge"},
	} {
		cl := tt.cl
		_, err := gqlpush.NewHandler(gqlpush.Config{
			Operations: mustParse(t, testOperations),
			Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/"}},
			Cluster:    &cl,
		})
		var cerr *gqlpush.ConfigError
		if !errors.As(err, &cerr) || cerr.Field != tt.field {
			t.Errorf("%+v: %v, want an error on %s", tt.cl, err, tt.field)
		}
	}
}

// Instances that run different versions of an operation (a deploy under
// way) do not share its results: each gets what its own selects.
func TestClusterOperationVersionsApart(t *testing.T) {
	n := 0
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		if n == 1 {
			ops := maps.Clone(testOperations)
			ops["Sub"] = `subscription { gql_messageCreated { id } }`
			cfg.Operations = mustParse(t, ops)
		}
		n++
	})
	a := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	b := readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, a) // b's results hold no content to sync on
	ctx := waitCtx(t)
	for f := ""; !strings.HasPrefix(f, "id: "); {
		tc.up.Chat.Post("", "secret")
		select {
		case f = <-b.frames:
			if strings.Contains(f, "content") {
				t.Fatalf("the instance whose Sub selects only id sent %q", f)
			}
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no result on the instance whose Sub selects only id")
		}
	}
	if n := tc.up.Subscriptions(); n != 2 {
		t.Fatalf("two versions of Sub hold %d upstream subscriptions, want 2", n)
	}
	a.until(t, "secret")
}

// The first client of a fresh cluster gets its subscription's first
// results, and one upstream subscription: the key is taken only once the
// client's reader knows where it starts.
func TestClusterFirstKeyOfAFreshCluster(t *testing.T) {
	tc := newTestCluster(t, 1, nil)
	c := tc.gws[0].open(t, "/operations/Count?wg_sse&from=3")
	c.frame(t)
	var got []string
	for {
		f := c.frame(t)
		if strings.HasPrefix(f, "event: complete") {
			break
		}
		_, data, _ := strings.Cut(f, "data: ")
		got = append(got, strings.TrimSpace(data))
	}
	if want := `{"data":{"gql_countdown":3}} {"data":{"gql_countdown":2}} {"data":{"gql_countdown":1}}`; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %s", got, want)
	}
	tc.seen[0].wait(t, "taken", "released")
}

// A stillProxy passes bytes between its clients and a server until it is
// stilled; then its connections stay open and carry nothing, as across a
// network that died, until the test ends. While late is held, what the
// server sends waits (late, not lost): a test unlocks it before it ends.
type stillProxy struct {
	addr  string
	still chan struct{}
	end   chan struct{}
	late  sync.Mutex
	mu    sync.Mutex
	conns []net.Conn
}

func newStillProxy(t *testing.T, target string) *stillProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stillProxy{addr: l.Addr().String(), still: make(chan struct{}), end: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		close(p.end)
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			wg.Add(2)
			go p.pipe(&wg, c, s, &p.late)
			go p.pipe(&wg, s, c, nil)
		}
	}()
	return p
}

func (p *stillProxy) pipe(wg *sync.WaitGroup, dst, src net.Conn, gate *sync.Mutex) {
	defer wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.still:
			<-p.end
			return
		default:
		}
		if n > 0 {
			if gate != nil {
				gate.Lock()
				gate.Unlock()
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close returns when its context ends, even with the cluster's NATS gone
// silent (the connection still up), though what it asks on the way out
// would wait an hour for an answer.
func TestClusterCloseWhileNATSIsSilent(t *testing.T) {
	ns := natsServer(t, 0)
	px := newStillProxy(t, ns.Addr().String())
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Cluster = &gqlpush.Cluster{URL: "nats://" + px.addr, Lease: testLease}
		cfg.AckTimeout = time.Hour
	})
	r := readAll(t, g.open(t, "/operations/Sub?wg_sse"))
	(&testCluster{up: up}).sync(t, r)
	close(px.still)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- g.h.Close(ctx) }()
	select {
	case <-closed:
	case <-waitCtx(t).Done():
		t.Fatal("Close outlived its context")
	}
}

// A key quiet for longer than the stream keeps its messages (its subject
// empty) is still its owner's: the next result goes through, and no one
// took the key.
func TestClusterQuietKeyAgedOut(t *testing.T) {
	tc := newTestCluster(t, 1, nil)
	r := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, r)
	tc.ageOut(t)
	tc.up.Chat.Post("", "after")
	if got, _ := contentsOf(t, r, 1); got[0] != "after" {
		t.Fatalf("got %v", got)
	}
	tc.seen[0].wait(t, "taken")
}

// A burst past what the stream keeps of a key may take results from it
// before a reader reads them; a client then gets every result up to the
// gap and an error frame, never a silent gap.
func TestClusterBurstNeverASilentGap(t *testing.T) {
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		cfg.ResumeFrames = 1 // the stream keeps 2 messages of a key
		cfg.QueueSize = 100000
		cfg.QueueBytes = 1 << 30
	})
	rs := []*reader{readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse")), readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse"))}
	tc.sync(t, rs...)
	const n = 3000
	for i := range n {
		tc.up.Chat.Post("", fmt.Sprint("b", i))
	}
	for i, r := range rs {
		for want := 0; want < n; want++ {
			f := r.next(t)
			if !strings.HasPrefix(f, "id: ") {
				if !strings.Contains(f, "results were lost in the cluster's stream") {
					t.Fatalf("reader %d, after b%d: %q", i, want-1, f)
				}
				t.Logf("reader %d: %d of %d, then told of the gap", i, want, n)
				break
			}
			if !strings.Contains(f, fmt.Sprintf(`"content":"b%d"`, want)) {
				t.Fatalf("reader %d: %q, want b%d", i, f, want)
			}
		}
	}
}

// ageOut empties the cluster's stream, as MaxAge does for quiet keys.
func (tc *testCluster) ageOut(t *testing.T) {
	t.Helper()
	js := tc.js(t)
	st, err := js.Stream(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// firstFrame posts content until r has a frame, and returns it.
func (tc *testCluster) firstFrame(t *testing.T, r *reader, content string) string {
	t.Helper()
	ctx := waitCtx(t)
	for {
		tc.up.Chat.Post("", content)
		select {
		case f := <-r.frames:
			return f
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no frame")
		}
	}
}

// The owner of a quiet key (its messages aged out) goes, dead or shut
// down: the next owner finds the subject empty and numbers its results
// from 1 again, and readers take that for no gap: nothing was lost.
func TestClusterQuietKeyChangesHands(t *testing.T) {
	for _, tt := range []struct {
		name string
		gone func(t *testing.T, tc *testCluster)
	}{
		{"dies", func(_ *testing.T, tc *testCluster) { tc.ncs[0].Close() }},
		{"shuts down", func(t *testing.T, tc *testCluster) {
			if err := tc.gws[0].h.Close(waitCtx(t)); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t, 2, nil)
			_, b := tc.twoReaders(t) // the first instance owns the key
			tc.ageOut(t)
			tt.gone(t, tc)
			if f := tc.firstFrame(t, b, "after"); !strings.HasPrefix(f, "id: ") || !strings.Contains(f, `"after"`) {
				t.Fatalf("the other reader got %q, want the result \"after\"", f)
			}
		})
	}
}

// A client that resumes past results gone from the stream (a burst pushed
// one out before the replay read it) is told, not given a silent gap.
func TestClusterReplayFindsAGap(t *testing.T) {
	tc, keeper, last := moverScene(t, "r1", "r2", "r3")
	_, kept := contentsOf(t, keeper, 3)
	js := tc.js(t)
	st, err := js.Stream(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(waitCtx(t), seqOf(t, kept[1])); err != nil { // r2 is gone
		t.Fatal(err)
	}
	moved := readAll(t, tc.gws[2].openURL2(t, "/operations/Sub?wg_sse", http.Header{"Last-Event-Id": {last}}))
	moved.next(t)
	if f := moved.next(t); !strings.Contains(f, "results were lost in the cluster's stream") {
		t.Fatalf("resumed with %q, want the error", f)
	}
}

// js is a JetStream client of the cluster's NATS server.
func (tc *testCluster) js(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(publisher(t, tc.ns))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// twoReaders opens a client on the first instance, which takes the key,
// then one on the second, and syncs both.
func (tc *testCluster) twoReaders(t *testing.T) (*reader, *reader) {
	t.Helper()
	a := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, a)
	b := readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, a, b)
	return a, b
}

// An instance at its own limit of upstream connections cannot serve a key
// it takes: its own readers end, as a single instance's would, and it
// gives the key back. Another instance's readers keep their stream, and
// that instance takes the key over.
func TestClusterOwnLimitStaysLocal(t *testing.T) {
	n := 0
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].ForwardHeaders = []string{"X-Tenant"}
		if n == 0 {
			cfg.MaxUpstreamConns = 1
		}
		n++
	})
	b := http.Header{"X-Tenant": {"b"}}
	kept := readAll(t, tc.gws[1].openURL2(t, "/operations/Sub?wg_sse", b))
	tc.sync(t, kept) // the second instance owns tenant b's key
	local := readAll(t, tc.gws[0].openURL2(t, "/operations/Sub?wg_sse", b))
	tc.sync(t, kept, local)
	a := readAll(t, tc.gws[0].openURL2(t, "/operations/Sub?wg_sse", http.Header{"X-Tenant": {"a"}}))
	tc.sync(t, a) // the first instance holds its one upstream connection
	tc.seen[0].wait(t, "taken")

	// Tenant b's lease is gone, as if it had expired; a new reader wakes
	// the first instance, which takes the key before the second notices.
	kv, err := tc.js(t).KeyValue(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if e, err := kv.Get(waitCtx(t), k); err == nil && strings.HasPrefix(k, "l.") && string(e.Value()) == "i1" {
			if err := kv.Purge(waitCtx(t), k); err != nil {
				t.Fatal(err)
			}
		}
	}
	late := readAll(t, tc.gws[0].openURL2(t, "/operations/Sub?wg_sse", b))
	tc.seen[0].wait(t, "taken", "failover", "released")
	for _, r := range []*reader{local, late} {
		f := r.next(t)
		for strings.HasPrefix(f, "id: ") || f == ":\n\n" {
			f = r.next(t)
		}
		if !strings.Contains(f, "too many upstream connections") || !strings.Contains(f, "UPSTREAM_UNAVAILABLE") {
			t.Fatalf("a reader of the refusing instance got %q", f)
		}
	}
	tc.sync(t, kept, a)
	if err := tc.up.WaitSubscriptions(waitCtx(t), 2); err != nil {
		t.Fatalf("%v: %d subscriptions", err, tc.up.Subscriptions())
	}
}

// A result its stream refuses (over the stream's largest message) is
// dropped, the Observer is told, and it takes no number: readers see the
// next result follow it with no gap.
func TestClusterRefusedResultLeavesNoGap(t *testing.T) {
	errs := make(chan error, 16)
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		cfg.Observer.ClusterError = func(_ string, err error) {
			select {
			case errs <- err:
			default:
			}
		}
	})
	a, b := tc.twoReaders(t)
	js := tc.js(t)
	st, err := js.Stream(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.MaxMsgSize = 1024
	if _, err := js.UpdateStream(waitCtx(t), sc); err != nil {
		t.Fatal(err)
	}
	tc.up.Chat.Post("", strings.Repeat("x", 2048))
	select {
	case <-errs:
	case <-waitCtx(t).Done():
		t.Fatal("the Observer heard of no refused result")
	}
	tc.up.Chat.Post("", "small")
	for _, r := range []*reader{a, b} {
		if got, _ := contentsOf(t, r, 1); got[0] != "small" {
			t.Fatalf("got %q, want the result after the refused one", got)
		}
	}
}

// A result the owner could not publish while the cluster's NATS was away
// is published once it is back: readers get it, in order, with no gap and
// no error.
func TestClusterPublishOutlastsAnOutage(t *testing.T) {
	errs := make(chan error, 16)
	tc, restart, rs := restartableCluster(t, func(cfg *gqlpush.Config) {
		// A lease that outlasts the outage; nothing kept to publish while
		// NATS is away, so a publish fails at once.
		cfg.Cluster.Lease = time.Minute
		cfg.Cluster.NATSOptions = append(cfg.Cluster.NATSOptions, nats.ReconnectBufSize(-1))
		cfg.Observer = &gqlpush.Observer{ClusterError: func(_ string, err error) {
			select {
			case errs <- err:
			default:
			}
		}}
	})
	tc.ns.Shutdown()
	tc.ns.WaitForShutdown()
	up := tc.up
	up.Chat.Post("", "during")
	select {
	case <-errs:
	case <-waitCtx(t).Done():
		t.Fatal("no publish failed while NATS was away")
	}
	restart()
	up.Chat.Post("", "after")
	for _, r := range rs {
		if got, _ := contentsOf(t, r, 2); got[0] != "during" || got[1] != "after" {
			t.Fatalf("got %q, want during and after", got)
		}
	}
}

// An owner that shuts down gives its key up with a mark on the key's
// subject, and an instance with readers of the key takes it over at that
// mark, not at its next turn (a third of a lease later; here longer than
// the test waits).
func TestClusterShutdownHandsOver(t *testing.T) {
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) { cfg.Cluster.Lease = 10 * waitTime })
	_, b := tc.twoReaders(t) // the first instance owns the key
	if err := tc.gws[0].h.Close(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	tc.seen[0].wait(t, "taken", "released")
	tc.seen[1].wait(t, "taken")
	if f := tc.firstFrame(t, b, "after"); !strings.HasPrefix(f, "id: ") || !strings.Contains(f, `"after"`) {
		t.Fatalf("the other reader got %q, want the result \"after\"", f)
	}
}

// The cluster's bucket deleted by hand under a key's owner: the bucket is
// made again, the owner takes the key again under a lease revision it
// had before, and what it publishes is not taken for the duplicate of
// what it published then.
func TestClusterBucketMadeAgain(t *testing.T) {
	tc := newTestCluster(t, 1, nil)
	r := readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, r)
	for i := range 5 {
		tc.up.Chat.Post("", fmt.Sprint("n", i))
	}
	if got, _ := contentsOf(t, r, 5); got[4] != "n4" {
		t.Fatalf("got %q", got)
	}
	if err := tc.js(t).DeleteKeyValue(waitCtx(t), gqlpush.DefaultClusterName); err != nil {
		t.Fatal(err)
	}
	tc.seen[0].wait(t, "taken", "lost", "failover")
	if f := tc.firstFrame(t, r, "after"); !strings.Contains(f, `"after"`) {
		t.Fatalf("got %q, want the result \"after\"", f)
	}
}

// The cluster's NATS comes back without JetStream: open streams end with
// an error that says so at the reconnect limit, rather than wait in
// silence, and so does a new one.
func TestClusterJetStreamGone(t *testing.T) {
	ns := natsServer(t, 0)
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	tc := &testCluster{ns: ns, up: up}
	g := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.ReconnectLimit = 300 * time.Millisecond
		cfg.Cluster = &gqlpush.Cluster{URL: ns.ClientURL(), Lease: testLease,
			NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}}
	})
	c := g.open(t, "/operations/Sub?wg_sse")
	tc.sync(t, readAll(t, c))
	c2 := g.open(t, "/operations/Sub?wg_sse")
	c2.frame(t)
	withoutJetStream(t, ns)
	wantEnd(t, c2, "UPSTREAM_UNAVAILABLE", "JetStream is not enabled on the NATS server")
	endsUnavailable(t, g, "")
}

// An owner shuts down while the acknowledgement of a result it published
// is late: it stops waiting for it, and its release mark carries that
// result's number all the same, so that the next owner numbers on from it
// and no reader elsewhere takes the next result for a gap.
func TestClusterReleaseAfterALateAcknowledgement(t *testing.T) {
	ns := natsServer(t, 0)
	px := newStillProxy(t, ns.Addr().String())
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	tc := &testCluster{ns: ns, up: up}
	seen0, seen1 := &clusterEvents{}, &clusterEvents{}
	g0 := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Cluster = &gqlpush.Cluster{URL: "nats://" + px.addr, Instance: "i0", Lease: 10 * time.Second,
			NATSOptions: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}}
		cfg.AckTimeout = 400 * time.Millisecond
		cfg.Observer = seen0.observer()
	})
	g1 := gatewayFor(t, up, func(cfg *gqlpush.Config) {
		cfg.Cluster = &gqlpush.Cluster{NATS: publisher(t, ns), Instance: "i1", Lease: 10 * time.Second}
		cfg.Observer = seen1.observer()
	})
	a := readAll(t, g0.open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, a)
	seen0.wait(t, "taken")
	b := readAll(t, g1.open(t, "/operations/Sub?wg_sse"))
	tc.sync(t, a, b)

	px.late.Lock() // answers to the owner are late from now on
	// Once, here or, on a failure before, when the test ends: the proxy's
	// cleanup waits for its pipes, one of which waits for the gate.
	unlate := sync.OnceFunc(px.late.Unlock)
	t.Cleanup(unlate)
	up.Chat.Post("", "x")
	b.until(t, "x") // stored: the other instance reads it
	closed := make(chan error, 1)
	go func() { closed <- g0.h.Close(waitCtx(t)) }()
	// The owner stops waiting and deletes its lease (its requests still
	// go through); then the answers come.
	kv, err := tc.js(t).KeyValue(waitCtx(t), gqlpush.DefaultClusterName)
	if err != nil {
		t.Fatal(err)
	}
	ctx := waitCtx(t)
	waitUntil(t, func() bool {
		keys, err := kv.ListKeysFiltered(ctx, "l.*")
		if err != nil {
			return false
		}
		held := false
		for range keys.Keys() {
			held = true
		}
		return !held
	}, func() string { return "the owner kept its lease" })
	unlate()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// The other instance takes the key at the mark, or, if the owner's
	// lease ran out while its answers were late, as a failover.
	seen0.wait(t, "taken", "released")
	if f := tc.firstFrame(t, b, "after"); !strings.HasPrefix(f, "id: ") || !strings.Contains(f, `"after"`) {
		t.Fatalf("the other instance's reader got %q, want the result \"after\"", f)
	}
}

// An instance that joins with other settings than the cluster's says so in
// its log.
func TestClusterSettingsDiffer(t *testing.T) {
	var e ends
	n := 0
	tc := newTestCluster(t, 2, func(cfg *gqlpush.Config) {
		if n == 1 {
			cfg.Cluster.Lease = 2 * testLease
			cfg.ResumeFrames = 7
			cfg.Logger = slog.New(slog.NewTextHandler(&e.logs, nil))
		}
		n++
	})
	tc.sync(t, readAll(t, tc.gws[0].open(t, "/operations/Sub?wg_sse")))
	tc.sync(t, readAll(t, tc.gws[1].open(t, "/operations/Sub?wg_sse")))
	// The second instance's runner finds the stream as its reader reads.
	waitUntil(t, func() bool { return strings.Contains(e.logs.String(), "another instance runs with other settings") }, func() string {
		return "the log says nothing of the settings: " + e.logs.String()
	})
	for _, want := range []string{"ResumeFrames 64", "Lease 1s"} {
		if log := e.logs.String(); !strings.Contains(log, want) {
			t.Errorf("the log holds no %q: %s", want, log)
		}
	}
}
