package gqlpush_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// liveBubble serves liveOperations in a synctest bubble, its queries posted
// through rt (nil: up's in-memory client).
func liveBubble(t *testing.T, up *gqlpushtest.Server, rt http.RoundTripper, edit func(*gqlpush.Config)) *bubble {
	return newBubbleWith(t, up, func(cfg *gqlpush.Config) {
		cfg.Operations = liveOperations(t)
		client := up.HTTPClient()
		if rt != nil {
			client = &http.Client{Transport: rt}
		}
		cfg.Upstreams[0].HTTPClient = client
		if edit != nil {
			edit(cfg)
		}
	})
}

// A live query polls at its interval: the first result at once, nothing
// while it does not change, one frame when it does; the operation's @live
// interval wins over the Handler's; polling stops when the last client
// leaves.
func TestLivePolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		b := liveBubble(t, up, nil, nil)
		defer b.close(t)
		up.Chat.Post("", "one")
		w, cancel, done := b.serve("/Messages?wg_live&wg_sse")
		synctest.Wait()
		if got := w.seen(); !strings.HasPrefix(got, ":\n\nid: ") || !strings.HasSuffix(got, `data: {"data":{"gql_messages":[{"content":"one"}]}}`+"\n\n") {
			t.Fatalf("at once: %q", got)
		}
		if n := up.Queries(); n != 1 {
			t.Fatalf("%d queries at once", n)
		}
		time.Sleep(gqlpush.DefaultLivePollInterval - time.Nanosecond)
		synctest.Wait()
		if n := up.Queries(); n != 1 {
			t.Fatalf("%d queries before the interval", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n, got := up.Queries(), w.seen(); n != 2 || got != "" {
			t.Fatalf("after the interval: %d queries, sent %q", n, got)
		}
		up.Chat.Post("", "two")
		time.Sleep(gqlpush.DefaultLivePollInterval)
		synctest.Wait()
		if got := w.seen(); strings.Count(got, "data: ") != 1 || !strings.Contains(got, `{"content":"two"}`) {
			t.Fatalf("after a change: %q", got)
		}
		cancel()
		<-done
		synctest.Wait()
		n := up.Queries()
		time.Sleep(10 * gqlpush.DefaultLivePollInterval)
		synctest.Wait()
		if m := up.Queries(); m != n {
			t.Fatalf("%d queries after the last client left", m-n)
		}

		// @live(pollingIntervalSeconds: 5)
		_, cancel, done = b.serve("/Slow?wg_live")
		synctest.Wait()
		n = up.Queries()
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if m := up.Queries(); m != n {
			t.Fatalf("a query polled every 5 s was polled after %v", 5*time.Second-time.Nanosecond)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if m := up.Queries(); m != n+1 {
			t.Fatalf("%d polls at 5 s", m-n)
		}
		cancel()
		<-done
	})
}

// slowTransport answers after a delay, and counts the requests under way
// at once.
type slowTransport struct {
	rt    http.RoundTripper
	delay time.Duration
	fail  bool

	mu        sync.Mutex
	now, most int
	requests  int
}

func (s *slowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.now++
	s.requests++
	s.most = max(s.most, s.now)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.now--
		s.mu.Unlock()
	}()
	time.Sleep(s.delay)
	if s.fail {
		return nil, errors.New("connection refused")
	}
	return s.rt.RoundTrip(r)
}

// Polls never overlap: an answer slower than the interval delays the next
// poll.
func TestLivePollsNeverOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		st := &slowTransport{rt: up.HTTPClient().Transport, delay: 3 * time.Second}
		b := liveBubble(t, up, st, nil)
		defer b.close(t)
		_, cancel, done := b.serve("/Messages?wg_live")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		st.mu.Lock()
		defer st.mu.Unlock()
		// At 0, 3, 6 and 9 s: each as soon as the one before answered.
		if st.most != 1 || st.requests != 4 {
			t.Fatalf("%d requests, %d at once at most", st.requests, st.most)
		}
	})
}

// An upstream that cannot be reached ends a live stream with
// UPSTREAM_UNAVAILABLE once it has failed for ReconnectLimit, not before.
func TestLiveReconnectLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		st := &slowTransport{rt: up.HTTPClient().Transport, fail: true}
		b := liveBubble(t, up, st, func(cfg *gqlpush.Config) { cfg.ReconnectLimit = 5 * time.Second })
		defer b.close(t)
		w, _, done := b.serve("/Messages?wg_live&wg_sse")
		synctest.Wait()
		w.seen()
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := w.seen(); got != "" {
			t.Fatalf("before the limit: %q", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		<-done
		if got := w.seen(); got != `data: {"errors":[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}`+"\n\nevent: complete\ndata: \n\n" {
			t.Fatalf("at the limit: %q", got)
		}
	})
}
