package gqlpush_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
)

// refusal serves target in the bubble, which must be refused with a 429 and
// code, having started nothing upstream.
func (b *bubble) refusal(t *testing.T, target string, header http.Header, code string) {
	t.Helper()
	subs := b.up.Subscriptions()
	w, cancel, done := b.openSSE(t, target, header)
	defer cancel()
	<-done
	w.Flush()
	body := w.seen()
	if w.status != http.StatusTooManyRequests || w.header.Get("Retry-After") == "" {
		t.Fatalf("%s: %d (Retry-After %q) %q, want 429", target, w.status, w.header.Get("Retry-After"), body)
	}
	if _, got := errorOf(t, body); got != code {
		t.Fatalf("%s: code %q, want %s", target, got, code)
	}
	synctest.Wait()
	if n := b.up.Subscriptions(); n != subs {
		t.Fatalf("%s: refused, yet the upstream runs %d subscriptions, not %d", target, n, subs)
	}
}

// roomStream opens an SSE stream on room r as the anonymous caller of
// httptest requests (192.0.2.1).
func (b *bubble) roomStream(t *testing.T, r int, header http.Header) (*recorder, context.CancelFunc, chan struct{}) {
	t.Helper()
	w, leave, done := b.openSSE(t, fmt.Sprintf("/Room?room=r%d&wg_sse", r), header)
	if w.status != http.StatusOK {
		t.Fatalf("room r%d: %d %q", r, w.status, w.seen())
	}
	return w, leave, done
}

// A caller who opens and leaves streams on ever new variables keeps at most
// its cap of subscriptions alive through the resume grace: each new stream
// ends its oldest kept one.
func TestKeptSubscriptionsCountAgainstTheirCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perCaller = 2
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.ResumeGrace = time.Minute
			cfg.MaxStreamsPerPrincipal = perCaller
		})
		for r := range 20 {
			_, leave, done := b.roomStream(t, r, nil)
			leave()
			<-done
			synctest.Wait()
			if n := b.up.Subscriptions(); n > perCaller {
				t.Fatalf("after %d streams: %d upstream subscriptions, want at most %d", r+1, n, perCaller)
			}
		}
		if s := b.h.Stats(); s.Subscriptions != perCaller || s.Streams != 0 {
			t.Fatalf("%+v, want %d kept subscriptions and no stream", s, perCaller)
		}
		// Another caller is not affected by the first one's kept
		// subscriptions.
		b2 := func(r int) (*recorder, context.CancelFunc, chan struct{}) {
			t.Helper()
			ctx, cancel := context.WithCancel(context.Background())
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("/Room?room=o%d&wg_sse", r), nil)
			req.RemoteAddr = "198.51.100.7:4000"
			w := newRecorder()
			done := make(chan struct{})
			go func() { defer close(done); b.h.ServeHTTP(w, req) }()
			synctest.Wait()
			return w, cancel, done
		}
		w, leave, done := b2(0)
		if w.status != http.StatusOK {
			t.Fatalf("another caller: %d", w.status)
		}
		leave()
		<-done
		synctest.Wait()
		if n := b.up.Subscriptions(); n != perCaller+1 {
			t.Fatalf("%d upstream subscriptions, want %d", n, perCaller+1)
		}
		// The grace passes: nothing is left.
		time.Sleep(time.Minute)
		synctest.Wait()
		if s := b.h.Stats(); s.Subscriptions != 0 || b.up.Subscriptions() != 0 {
			t.Fatalf("after the grace: %+v, upstream %d", s, b.up.Subscriptions())
		}
		b.close(t)
	})
}

// A caller at its cap who comes back to a subscription kept for it resumes
// it, in the place it holds, without ending another.
func TestResumingAKeptSubscriptionAtTheCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.ResumeGrace = time.Minute
			cfg.MaxStreamsPerPrincipal = 2
		})
		w, leave, done := b.roomStream(t, 1, nil)
		b.up.Chat.Post("r1", "a")
		synctest.Wait()
		last := lastID(t, w.seen())
		leave()
		<-done
		_, leave2, done2 := b.roomStream(t, 2, nil) // the second place
		b.up.Chat.Post("r1", "b")
		synctest.Wait()
		w, leave, done = b.roomStream(t, 1, http.Header{"Last-Event-Id": {last}})
		if c := strings.Join(contents(w.seen()), ","); c != "b" {
			t.Fatalf("resumed with %q, want b", c)
		}
		if n := b.up.Subscriptions(); n != 2 {
			t.Fatalf("%d upstream subscriptions, want 2", n)
		}
		// Both places are streams now: a third is refused, and ends
		// nothing.
		b.refusal(t, "/Room?room=r3&wg_sse", nil, "TOO_MANY_STREAMS")
		leave()
		leave2()
		<-done
		<-done2
		b.close(t)
	})
}

func TestMaxSubscriptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.MaxSubscriptions = 2
			cfg.ResumeGrace = time.Minute
		})
		_, leave1, done1 := b.roomStream(t, 1, nil)
		_, leave2, done2 := b.roomStream(t, 2, nil)
		// A third client of a running subscription starts none.
		_, leave2b, done2b := b.roomStream(t, 2, nil)
		b.refusal(t, "/Room?room=r3&wg_sse", nil, "TOO_MANY_SUBSCRIPTIONS")
		b.refusal(t, "/Count?from=5&wg_subscribe_once", nil, "TOO_MANY_SUBSCRIPTIONS")
		// A subscription kept for resumption gives way to a new one.
		leave1()
		<-done1
		synctest.Wait()
		_, leave3, done3 := b.roomStream(t, 3, nil)
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 2 {
			t.Fatalf("%d upstream subscriptions, want 2", n)
		}
		for _, f := range []context.CancelFunc{leave2, leave2b, leave3} {
			f()
		}
		for _, d := range []chan struct{}{done2, done2b, done3} {
			<-d
		}
		b.close(t)
	})
}

// A request refused for another cap ends no kept subscription.
func TestRefusalKeepsKeptSubscriptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Upstreams[0].ForwardHeaders = []string{"X-Api-Key"}
			cfg.MaxSubscriptions = 1
			cfg.MaxUpstreamConns = 1
			cfg.ResumeGrace = time.Minute
		})
		_, leave, done := b.openSSE(t, "/Sub?wg_sse", http.Header{"X-Api-Key": {"a"}})
		leave()
		<-done
		b.refusal(t, "/Sub?wg_sse", http.Header{"X-Api-Key": {"b"}}, "TOO_MANY_UPSTREAM_CONNECTIONS")
		if s := b.h.Stats(); s.Subscriptions != 1 {
			t.Fatalf("%+v: the kept subscription is gone", s)
		}
		b.close(t)
	})
}

// headerAuth authenticates callers by an X-User header.
type headerAuth struct{}

func (headerAuth) Authenticate(r *http.Request) (*gqlpush.Principal, error) {
	if u := r.Header.Get("X-User"); u != "" {
		return &gqlpush.Principal{Subject: u}, nil
	}
	return nil, nil
}

func TestMaxAnonymousStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Authenticator = headerAuth{}
			cfg.MaxStreams = 3
			cfg.MaxAnonymousStreams = 1
		})
		var leaves []context.CancelFunc
		var dones []chan struct{}
		open := func(header http.Header) {
			t.Helper()
			w, leave, done := b.openSSE(t, "/Sub?wg_sse", header)
			if w.status != http.StatusOK {
				t.Fatalf("%v: %d", header, w.status)
			}
			leaves, dones = append(leaves, leave), append(dones, done)
		}
		open(nil)
		b.refusal(t, "/Sub?wg_sse", nil, "TOO_MANY_STREAMS")
		// From other addresses too: the cap is on anonymous callers in all.
		w, cancel, done := b.serve("/Sub?wg_sse")
		cancel()
		<-done
		if w.status != http.StatusTooManyRequests {
			t.Fatalf("anonymous from another address: %d", w.status)
		}
		open(http.Header{"X-User": {"alice"}})
		open(http.Header{"X-User": {"bob"}})
		b.refusal(t, "/Sub?wg_sse", http.Header{"X-User": {"carol"}}, "TOO_MANY_STREAMS")
		for _, l := range leaves {
			l()
		}
		for _, d := range dones {
			<-d
		}
		b.close(t)
	})
}

func TestMaxAnonymousStreamsChecked(t *testing.T) {
	_, err := gqlpush.NewHandler(gqlpush.Config{
		Operations:          mustParse(t, testOperations),
		Upstreams:           []gqlpush.Upstream{{Name: "gql", URL: "ws://upstream.invalid/graphql"}},
		MaxStreams:          10,
		MaxAnonymousStreams: 11,
	})
	if err == nil || !strings.Contains(err.Error(), "MaxAnonymousStreams is more than MaxStreams") {
		t.Fatalf("got %v", err)
	}
}

// Forwarded values are the caller's to choose: each new one would open an
// upstream connection, but for MaxUpstreamConns.
func TestMaxUpstreamConns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Upstreams[0].ForwardHeaders = []string{"X-Api-Key"}
			cfg.MaxUpstreamConns = 2
		})
		key := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
		_, leaveA, doneA := b.openSSE(t, "/Sub?wg_sse", key("a"))
		_, leaveB, doneB := b.openSSE(t, "/Sub?wg_sse", key("b"))
		b.refusal(t, "/Sub?wg_sse", key("c"), "TOO_MANY_UPSTREAM_CONNECTIONS")
		if s := b.h.Stats(); s.UpstreamConns != 2 || s.Subscriptions != 2 {
			t.Fatalf("%+v, want 2 connections and 2 subscriptions", s)
		}
		// A caller with a value already connected is served.
		_, leaveA2, doneA2 := b.openSSE(t, "/Room?room=x&wg_sse", key("a"))
		// Once a connection closes, after its idle timeout, there is room.
		leaveA()
		leaveA2()
		<-doneA
		<-doneA2
		time.Sleep(gqlpush.DefaultIdleTimeout)
		synctest.Wait()
		w, leaveC, doneC := b.openSSE(t, "/Sub?wg_sse", key("c"))
		if w.status != http.StatusOK {
			t.Fatalf("after a connection closed: %d", w.status)
		}
		leaveB()
		leaveC()
		<-doneB
		<-doneC
		b.close(t)
	})
}
