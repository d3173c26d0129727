package gqlpush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The hub's tests run against a scripted source: no WebSocket, no upstream,
// only what the hub asks of a source and what a source may do to it.

// fakeSource is a scripted source: it records what it opens, and a test
// delivers through the receivers it was given.
type fakeSource struct {
	mu      sync.Mutex
	opened  []*fakeSub
	fail    error         // open fails with it
	hold    chan struct{} // open waits for it to close, when not nil
	entered chan struct{} // open signals here when it starts waiting on hold
}

type fakeSub struct {
	req    *openRequest
	r      receiver
	mu     sync.Mutex
	closed int // close calls
}

func (s *fakeSub) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
}

func (s *fakeSub) closes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (f *fakeSource) open(req *openRequest, r receiver) (handle, error) {
	f.mu.Lock()
	hold, entered, fail := f.hold, f.entered, f.fail
	f.mu.Unlock()
	if hold != nil {
		if entered != nil {
			entered <- struct{}{}
		}
		<-hold
	}
	if fail != nil {
		return nil, fail
	}
	s := &fakeSub{req: req, r: r}
	f.mu.Lock()
	f.opened = append(f.opened, s)
	f.mu.Unlock()
	return s, nil
}

func (f *fakeSource) close(context.Context) error { return nil }
func (f *fakeSource) conns() int                  { return 0 }

func (f *fakeSource) subs() []*fakeSub {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeSub(nil), f.opened...)
}

// testHub is a hub in front of a fakeSource, with one operation.
type testHub struct {
	*hub
	src *fakeSource
	ep  *endpoint
}

func newTestHub(edit func(*Config)) *testHub {
	cfg := &Config{
		QueueSize:    DefaultQueueSize,
		QueueBytes:   DefaultQueueBytes,
		ResumeFrames: DefaultResumeFrames,
		Logger:       slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(cfg)
	}
	src := &fakeSource{}
	ep := &endpoint{op: &Operation{name: "Op"}, up: &upstream{name: "up", src: src}, src: src}
	l := &limits{max: cfg.MaxStreams, perMax: cfg.MaxStreamsPerPrincipal, per: map[string]int{}}
	return &testHub{hub: newHub(cfg, l), src: src, ep: ep}
}

func (th *testHub) key(vars string) subKey { return subKey{ep: th.ep, vars: vars} }

func (th *testHub) mustJoin(t *testing.T, vars, lastID string) *subscriber {
	t.Helper()
	s, _, err := th.join(context.Background(), th.key(vars), "addr:192.0.2.1", nil, nil, lastID)
	if err != nil {
		t.Fatalf("join %s: %v", vars, err)
	}
	return s
}

func result(n int) []byte { return fmt.Appendf(nil, `{"data":{"n":%d}}`, n) }

// taken returns the data lines of what s can take now, and its end.
func taken(s *subscriber) ([]string, ending) {
	evs, end := s.take(nil)
	var out []string
	for _, ev := range evs {
		out = append(out, string(ev.json))
	}
	return out, end
}

func TestHubSharesOneSubscriptionPerKey(t *testing.T) {
	th := newTestHub(nil)
	a := th.mustJoin(t, `{"room":"x"}`, "")
	b := th.mustJoin(t, `{"room":"x"}`, "")
	c := th.mustJoin(t, `{"room":"y"}`, "")
	subs := th.src.subs()
	if len(subs) != 2 {
		t.Fatalf("%d opens, want 2 (one per key)", len(subs))
	}
	if string(subs[0].req.vars) != `{"room":"x"}` || subs[0].req.ep != th.ep {
		t.Fatalf("opened %+v", subs[0].req)
	}
	subs[0].r.publish(result(1), 0)
	for _, s := range []*subscriber{a, b} {
		if got, _ := taken(s); strings.Join(got, ",") != `{"data":{"n":1}}` {
			t.Fatalf("a subscriber of x took %v", got)
		}
	}
	if got, _ := taken(c); len(got) != 0 {
		t.Fatalf("the subscriber of y took %v", got)
	}
	// The subscription stops when, and only when, its last client leaves.
	th.leave(a)
	if n := subs[0].closes(); n != 0 {
		t.Fatalf("closed %d times with a subscriber left", n)
	}
	th.leave(b)
	if n := subs[0].closes(); n != 1 {
		t.Fatalf("closed %d times after the last subscriber left, want 1", n)
	}
	th.leave(c)
	if subs, _ := th.stats(); subs != 0 {
		t.Fatalf("%d subscriptions left", subs)
	}
}

func TestHubDeliversInOrderWithIDs(t *testing.T) {
	th := newTestHub(nil)
	s := th.mustJoin(t, "", "")
	r := th.src.subs()[0].r
	for i := range 5 {
		if err := r.publish(result(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	evs, _ := s.take(nil)
	if len(evs) != 5 {
		t.Fatalf("took %d events, want 5", len(evs))
	}
	for i, ev := range evs {
		want := fmt.Sprintf("id: %s.%d\ndata: %s\n\n", s.sh.token, i, result(i))
		if string(ev.sse) != want {
			t.Fatalf("event %d is %q, want %q", i, ev.sse, want)
		}
	}
	// What is not a GraphQL result is refused, and takes no sequence number.
	if err := r.publish([]byte(`[1]`), 0); err == nil {
		t.Fatal("a list was taken for a result")
	}
	r.publish(result(5), 0)
	if evs, _ := s.take(nil); len(evs) != 1 || evs[0].seq != 5 {
		t.Fatalf("after a refused result: %v", evs)
	}
	th.leave(s)
}

func TestHubSourceEnd(t *testing.T) {
	th := newTestHub(nil)
	s := th.mustJoin(t, "", "")
	sub := th.src.subs()[0]
	sub.r.publish(result(1), 0)
	sub.r.end(endComplete)
	got, end := taken(s)
	if len(got) != 1 || end.why != probComplete {
		t.Fatalf("took %v and %v, want the result, then the end", got, end.why)
	}
	// Anything after the end is dropped; the subscription is out of the
	// hub, and a new client starts a new one.
	sub.r.publish(result(2), 0)
	if got, _ := taken(s); len(got) != 0 {
		t.Fatalf("took %v after the end", got)
	}
	s2 := th.mustJoin(t, "", "")
	if n := len(th.src.subs()); n != 2 {
		t.Fatalf("%d opens, want a second one after the end", n)
	}
	th.leave(s)
	if n := sub.closes(); n != 0 {
		t.Fatalf("a subscription its source ended was closed %d times", n)
	}
	th.leave(s2)
}

func TestHubSlowSubscribers(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  func(*Config)
		n    int // results published while the slow one reads nothing
		size int
	}{
		{"by count", func(c *Config) { c.QueueSize = 4 }, 5, 10},
		{"by bytes", func(c *Config) { c.QueueBytes = 1000 }, 3, 600},
	} {
		t.Run(tt.name, func(t *testing.T) {
			th := newTestHub(tt.cfg)
			fast := th.mustJoin(t, "", "")
			slow := th.mustJoin(t, "", "")
			r := th.src.subs()[0].r
			for i := range tt.n {
				r.publish(fmt.Appendf(nil, `{"data":{"s":"%s%d"}}`, strings.Repeat("x", tt.size), i), 0)
				if got, _ := taken(fast); len(got) != 1 {
					t.Fatalf("the fast one took %d", len(got))
				}
			}
			if got, end := taken(slow); len(got) != 0 || end.why != probSlowConsumer {
				t.Fatalf("the slow one took %d results and %v, want none and the slow end", len(got), end.why)
			}
			// The log holds nothing for it any more: only the resume
			// window.
			if _, events := th.stats(); events > DefaultResumeFrames {
				t.Fatalf("%d events held", events)
			}
			th.leave(slow)
			th.leave(fast)
		})
	}
}

// The resume window's bytes can move its start past where a subscriber
// behind holds the log; when that subscriber leaves last, the stopped
// subscription lets its log go whole.
func TestHubStopsWithASubscriberBehind(t *testing.T) {
	th := newTestHub(func(c *Config) { c.QueueBytes = 100 })
	s := th.mustJoin(t, "", "")
	r := th.src.subs()[0].r
	for i := range 2 { // two results of about 60 bytes: not slow, past the window
		r.publish(fmt.Appendf(nil, `{"data":{"s":"%s%d"}}`, strings.Repeat("x", 20), i), 0)
	}
	th.leave(s) // unread: no panic, nothing held
	if subs, events := th.stats(); subs != 0 || events != 0 {
		t.Fatalf("%d subscriptions and %d events held", subs, events)
	}
	if n := th.src.subs()[0].closes(); n != 1 {
		t.Fatalf("closed %d times", n)
	}
}

func TestHubResume(t *testing.T) {
	th := newTestHub(func(c *Config) { c.ResumeFrames = 3 })
	keeper := th.mustJoin(t, "", "")
	r := th.src.subs()[0].r
	for i := range 6 {
		r.publish(result(i), 0)
	}
	taken(keeper)
	token := keeper.sh.token
	for _, tt := range []struct {
		name, id string
		want     string // results, or "reset"
	}{
		{"inside the window", token + ".3", `{"data":{"n":4}},{"data":{"n":5}}`},
		{"just before it", token + ".2", `{"data":{"n":3}},{"data":{"n":4}},{"data":{"n":5}}`},
		{"outside it", token + ".1", "reset"},
		{"the last one", token + ".5", ""},
		{"from the future", token + ".9", "reset"},
		{"another subscription's", "aaaaaaaaaaaaaaaa.4", "reset"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, reset, err := th.join(context.Background(), th.key(""), "x", nil, nil, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			defer th.leave(s)
			got, _ := taken(s)
			if reset {
				got = []string{"reset"}
			}
			if strings.Join(got, ",") != tt.want {
				t.Fatalf("got %v, want %s", got, tt.want)
			}
		})
	}
	th.leave(keeper)
}

func TestHubOpenFails(t *testing.T) {
	th := newTestHub(nil)
	th.src.fail = errTooManyUpstreamConns
	if _, _, err := th.join(context.Background(), th.key(""), "x", nil, nil, ""); !errors.Is(err, errTooManyUpstreamConns) {
		t.Fatalf("got %v", err)
	}
	if subs, _ := th.stats(); subs != 0 {
		t.Fatalf("%d subscriptions left after a failed open", subs)
	}
	th.src.fail = nil
	s := th.mustJoin(t, "", "")
	th.leave(s)
}

// A client that asks for a subscription its source is still opening waits
// for it, and then shares it: one open. The open runs without the hub's
// lock: the hub serves everything else meanwhile.
func TestHubJoinWhileOpening(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := newTestHub(nil)
		th.src.hold = make(chan struct{})
		joined := make(chan *subscriber, 2)
		join := func() {
			s, _, _ := th.join(context.Background(), th.key(""), "x", nil, nil, "")
			joined <- s
		}
		go join()
		synctest.Wait() // the first is inside open
		go join()
		synctest.Wait() // the second waits for it
		if subs, _ := th.stats(); subs != 1 || len(th.src.subs()) != 0 {
			t.Fatalf("while opening: %d subscriptions, %d opened", subs, len(th.src.subs()))
		}
		close(th.src.hold)
		a, b := <-joined, <-joined
		if a == nil || b == nil || a.sh != b.sh {
			t.Fatalf("the two clients got %p and %p", a, b)
		}
		if n := len(th.src.subs()); n != 1 {
			t.Fatalf("%d opens, want 1", n)
		}
		th.leave(a)
		th.leave(b)
	})
}

// When the open fails, a client that waited for it tries again.
func TestHubJoinWhileOpeningFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := newTestHub(nil)
		th.src.hold = make(chan struct{})
		th.src.fail = errTooManyUpstreamConns
		errs := make(chan error, 2)
		join := func() {
			s, _, err := th.join(context.Background(), th.key(""), "x", nil, nil, "")
			if err == nil {
				th.leave(s)
			}
			errs <- err
		}
		go join()
		synctest.Wait()
		go join()
		synctest.Wait()
		th.src.mu.Lock()
		th.src.fail = nil
		th.src.mu.Unlock()
		close(th.src.hold)
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("errors %v and %v: want one refusal and one success", e1, e2)
		}
	})
}

func TestHubResumeGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := newTestHub(func(c *Config) { c.ResumeGrace = 5 * time.Second })
		s := th.mustJoin(t, "", "")
		sub := th.src.subs()[0]
		th.leave(s)
		time.Sleep(4 * time.Second)
		s = th.mustJoin(t, "", "") // back within the grace: the same one
		if len(th.src.subs()) != 1 || sub.closes() != 0 {
			t.Fatalf("%d opens, %d closes", len(th.src.subs()), sub.closes())
		}
		th.leave(s)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := sub.closes(); n != 1 {
			t.Fatalf("closed %d times after the grace", n)
		}
	})
}

// Clients join and leave, and the source delivers and ends, all at once:
// the race detector watches, and at the end every subscription the source
// opened was closed once, or ended by the source, and the hub is empty.
func TestHubRaces(t *testing.T) {
	th := newTestHub(func(c *Config) { c.QueueSize = 8 })
	var clients, source sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		clients.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []*subscriber
			for range 2000 {
				switch rng.IntN(3) {
				case 0:
					if s, _, err := th.join(context.Background(), th.key(fmt.Sprint(rng.IntN(3))), "x", nil, nil, ""); err == nil {
						mine = append(mine, s)
					}
				case 1:
					if len(mine) > 0 {
						k := rng.IntN(len(mine))
						taken(mine[k])
						th.leave(mine[k])
						mine = append(mine[:k], mine[k+1:]...)
					}
				default:
					for _, s := range mine {
						taken(s)
					}
				}
			}
			for _, s := range mine {
				th.leave(s)
			}
		})
	}
	ended := map[*fakeSub]bool{}
	source.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			subs := th.src.subs()
			if len(subs) == 0 {
				continue
			}
			sub := subs[i%len(subs)]
			if i%50 == 49 {
				ended[sub] = true
				sub.r.end(endComplete)
			} else {
				sub.r.publish(result(i), 0)
			}
		}
	})
	clients.Wait()
	close(stop)
	source.Wait()
	if subs, _ := th.stats(); subs != 0 {
		t.Fatalf("%d subscriptions left", subs)
	}
	for i, sub := range th.src.subs() {
		if n := sub.closes(); n > 1 || (n == 0 && !ended[sub]) {
			t.Fatalf("subscription %d closed %d times (ended by the source: %v)", i, n, ended[sub])
		}
	}
}

// replaySource is a fakeSource with positions that replays what a test
// scripts: pages of positions, then caught.
type replaySource struct {
	fakeSource
	mu      sync.Mutex
	pages   [][]uint64 // what each next returns, in turn; caught after the last
	during  func()     // called within the next that returns the last page
	fail    error      // next fails with it
	reset   bool       // replay reports that the source no longer holds it
	readers []*fakeReplay
}

type fakeReplay struct {
	src    *replaySource
	after  uint64
	closed int
}

func (f *replaySource) replay(_ context.Context, req *openRequest, after uint64) (replayReader, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reset {
		return nil, true, nil
	}
	r := &fakeReplay{src: f, after: after}
	f.readers = append(f.readers, r)
	return r, false, nil
}

func (r *fakeReplay) next(max int, fn func([]byte, uint64)) (bool, error) {
	f := r.src
	f.mu.Lock()
	if f.fail != nil {
		f.mu.Unlock()
		return false, f.fail
	}
	var page []uint64
	if len(f.pages) > 0 {
		page, f.pages = f.pages[0], f.pages[1:]
	}
	last, during := len(f.pages) == 0, f.during
	f.mu.Unlock()
	for _, pos := range page {
		fn(result(int(pos)), pos)
	}
	if last && during != nil {
		during()
	}
	return last, nil
}

func (r *fakeReplay) close() {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	r.closed++
}

// newReplayHub is a testHub whose operation reads a JetStream stream.
func newReplayHub(edit func(*Config)) (*testHub, *replaySource) {
	th := newTestHub(edit)
	src := &replaySource{}
	th.ep = &endpoint{op: &Operation{name: "Op"}, up: &upstream{name: "up", src: src}, src: src, nats: &natsBinding{field: &natsField{stream: "S"}}}
	th.src = &src.fakeSource
	return th, src
}

// begun joins a first subscriber, whose subscription has begun.
func (th *testHub) begun(t *testing.T) (*subscriber, receiver) {
	t.Helper()
	live := th.mustJoin(t, "", "")
	r := th.src.subs()[0].r
	r.begin()
	return live, r
}

// positions reads what s can take now: the positions of the results, and
// its end.
func positions(t *testing.T, s *subscriber) ([]uint64, ending) {
	t.Helper()
	evs, end := s.take(nil)
	var out []uint64
	for _, ev := range evs {
		if want := string(result(int(ev.pos))); string(ev.json) != want {
			t.Fatalf("the event at %d is %s, want %s", ev.pos, ev.json, want)
		}
		out = append(out, ev.pos)
	}
	return out, end
}

func wantPositions(t *testing.T, s *subscriber, want ...uint64) {
	t.Helper()
	got, end := positions(t, s)
	if fmt.Sprint(got) != fmt.Sprint(want) || end.why != 0 {
		t.Fatalf("took %v (end %v), want %v", got, end.why, want)
	}
}

// A client whose last event the log does not hold reads the replay, a page
// per take, then the log past what the replay gave it: nothing twice,
// nothing missed.
func TestHubReplayThenLog(t *testing.T) {
	th, src := newReplayHub(nil)
	live, r := th.begun(t)
	src.pages = [][]uint64{{2, 3}, {4, 5}}
	src.during = func() { // the live subscription goes on meanwhile
		for pos := uint64(4); pos <= 6; pos++ {
			r.publish(result(int(pos)), pos)
		}
	}
	s := th.mustJoin(t, "", positionalToken(th.key(""))+".1")
	if len(th.src.subs()) != 1 || len(src.readers) != 1 || src.readers[0].after != 1 {
		t.Fatalf("%d subscriptions and replays %+v, want the live one and a replay after 1", len(th.src.subs()), src.readers)
	}
	r.publish(result(2), 2) // in the log too, after the new client's cursor
	r.publish(result(3), 3)
	wantPositions(t, s, 2, 3)
	wantPositions(t, s, 4, 5, 6) // the last page, then the log past 5
	if src.readers[0].closed != 1 {
		t.Fatalf("the replay closed %d times, want once when caught up", src.readers[0].closed)
	}
	r.publish(result(7), 7)
	wantPositions(t, s, 7)
	wantPositions(t, live, 2, 3, 4, 5, 6, 7)
	th.leave(s)
	th.leave(live)
}

// A client that falls a queue behind the log while it catches up keeps
// reading the replay, which has what the log let go of, and is not dropped.
func TestHubReplayFallsBehind(t *testing.T) {
	th, src := newReplayHub(func(cfg *Config) { cfg.QueueSize = 2 })
	s := th.mustJoin(t, "", "")
	th.leave(s) // the log no longer holds what s read
	src.pages = [][]uint64{{2}, {3, 4}}
	src.during = func() {
		src.during = nil
		r := th.src.subs()[1].r
		r.begin()
		for pos := uint64(5); pos <= 8; pos++ { // more than the queue
			r.publish(result(int(pos)), pos)
		}
		src.pages = [][]uint64{{5, 6, 7, 8}} // so the replay is not caught up
	}
	s = th.mustJoin(t, "", positionalToken(th.key(""))+".1")
	wantPositions(t, s, 2)
	wantPositions(t, s, 3, 4)
	wantPositions(t, s, 5, 6, 7, 8)
	th.src.subs()[1].r.publish(result(9), 9)
	wantPositions(t, s, 9)
	th.leave(s)
}

// A replay that fails ends the stream; one the source no longer holds is a
// reset; a client that leaves while it catches up lets its replay go.
func TestHubReplayEnds(t *testing.T) {
	th, src := newReplayHub(nil)
	id := positionalToken(th.key("")) + ".1"
	src.fail = errors.New("boom")
	s := th.mustJoin(t, "", id)
	if got, end := positions(t, s); len(got) != 0 || end.why != probUpstreamGone {
		t.Fatalf("a failed replay: took %v, end %v", got, end.why)
	}
	th.leave(s)
	if src.readers[0].closed != 1 {
		t.Fatalf("the failed replay closed %d times", src.readers[0].closed)
	}

	src.fail = nil
	src.pages = [][]uint64{{2}, {3}}
	s = th.mustJoin(t, "", id)
	wantPositions(t, s, 2)
	th.leave(s)
	if src.readers[1].closed != 1 {
		t.Fatalf("the replay of a client gone closed %d times", src.readers[1].closed)
	}
	if subs, _ := th.stats(); subs != 0 {
		t.Fatalf("%d subscriptions left", subs)
	}

	src.reset = true
	s, reset, err := th.join(context.Background(), th.key(""), "addr:192.0.2.1", nil, nil, id)
	if err != nil || !reset || s.replay != nil {
		t.Fatalf("a replay the source cannot give: reset %v, err %v", reset, err)
	}
	th.leave(s)
}

// A client whose id is past what the log holds yet (another instance
// issued it, and this one's subscription lags) gets nothing twice: the
// replay finds nothing after it, and the log's events up to it are
// skipped.
func TestHubReplayOfNothing(t *testing.T) {
	th, _ := newReplayHub(nil)
	live, r := th.begun(t)
	r.publish(result(3), 3)
	s := th.mustJoin(t, "", positionalToken(th.key(""))+".5")
	wantPositions(t, s) // caught up at once
	for pos := uint64(4); pos <= 6; pos++ {
		r.publish(result(int(pos)), pos)
	}
	wantPositions(t, s, 6)
	th.leave(s)
	th.leave(live)
}

// The log is read only once the shared subscription has begun: until then
// it may lack what follows the replay's end.
func TestHubReplayWaitsForTheBeginning(t *testing.T) {
	th, src := newReplayHub(nil)
	src.pages = [][]uint64{{2}}
	s := th.mustJoin(t, "", positionalToken(th.key(""))+".1")
	r := th.src.subs()[0].r
	wantPositions(t, s, 2)
	if s.replay == nil {
		t.Fatal("the replay was let go before the subscription began")
	}
	r.begin()
	wantPositions(t, s) // caught up, and now begun
	if s.replay != nil {
		t.Fatal("the replay is still read")
	}
	r.publish(result(3), 3)
	wantPositions(t, s, 3)
	th.leave(s)
}

// When the shared subscription ends while a client catches up, the client
// gets the end alone, not the log's later events: its last id stays where
// the replay left it, so it can resume from there.
func TestHubReplayCutShort(t *testing.T) {
	th, src := newReplayHub(nil)
	live, r := th.begun(t)
	src.pages = [][]uint64{{2}, {3}, {4}}
	s := th.mustJoin(t, "", positionalToken(th.key(""))+".1")
	r.publish(result(10), 10)
	wantPositions(t, s, 2)
	r.end(endUpstreamGone)
	if got, end := positions(t, s); len(got) != 0 || end.why != probUpstreamGone {
		t.Fatalf("took %v and %v, want the end alone", got, end.why)
	}
	th.leave(s)
	th.leave(live)
}

// A replay read that fails is tried again, within the reconnect limit.
func TestHubReplayRetries(t *testing.T) {
	th, src := newReplayHub(func(cfg *Config) { cfg.ReconnectLimit = time.Hour })
	src.fail = errors.New("boom")
	src.pages = [][]uint64{{2}, {3}}
	s := th.mustJoin(t, "", positionalToken(th.key(""))+".1")
	wantPositions(t, s) // failed; not over
	src.mu.Lock()
	src.fail = nil
	src.mu.Unlock()
	wantPositions(t, s, 2)
	th.leave(s)
}

// A client that leaves while its replay is being set up starts nothing,
// and its replay is let go.
func TestHubReplayOfAClientGone(t *testing.T) {
	th, src := newReplayHub(nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := th.join(ctx, th.key(""), "x", nil, nil, positionalToken(th.key(""))+".1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("join: %v", err)
	}
	if len(src.readers) != 1 || src.readers[0].closed != 1 {
		t.Fatalf("replays %+v, want one, closed", src.readers)
	}
	if subs, _ := th.stats(); subs != 0 || len(th.src.subs()) != 0 {
		t.Fatalf("%d subscriptions, %d opened", subs, len(th.src.subs()))
	}
}
