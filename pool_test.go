package gqlpush_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// The upstream pool's tests run against a recording receiver: no hub, no
// client, only what the pool delivers for each subscription it opens.

// recording is a receiver that keeps what it is given.
type recording struct {
	mu      sync.Mutex
	results []string
	reason  gqlpush.Reason // "" until the end
	errors  string
}

func (r *recording) Publish(raw []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, string(raw)) // the pool reuses raw's bytes
	return nil
}

func (r *recording) End(reason gqlpush.Reason, errors string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason != "" {
		panic("a second end")
	}
	r.reason, r.errors = reason, errors
}

func (r *recording) got() ([]string, gqlpush.Reason, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.results...), r.reason, r.errors
}

// poolHandler is a handler whose pool reaches up in memory; the tests use
// only its pool.
func poolHandler(t *testing.T, up *gqlpushtest.Server, edit func(*gqlpush.Config)) *gqlpush.Handler {
	t.Helper()
	b := newBubbleWith(t, up, edit)
	return b.h
}

func TestPoolDeliversAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		h := poolHandler(t, up, nil)
		var a, b recording
		closeA, err := h.OpenUpstream("Room", `{"room":"x"}`, "", &a)
		if err != nil {
			t.Fatal(err)
		}
		closeB, err := h.OpenUpstream("Room", `{"room":"y"}`, "", &b)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		subs := up.Received()
		var vars []string
		for _, m := range subs {
			if m.Type == "subscribe" {
				vars = append(vars, string(m.Variables()))
			}
		}
		if strings.Join(vars, " ") != `{"room":"x"} {"room":"y"}` || len(up.Conns()) != 1 {
			t.Fatalf("subscribes with %v on %d connections, want both on one", vars, len(up.Conns()))
		}
		up.Chat.Post("x", "one")
		up.Chat.Post("y", "two")
		up.Chat.Post("x", "three")
		synctest.Wait()
		if got, _, _ := a.got(); len(got) != 2 || !strings.Contains(got[0], `"one"`) || !strings.Contains(got[1], `"three"`) {
			t.Fatalf("x got %v", got)
		}
		if got, _, _ := b.got(); len(got) != 1 || !strings.Contains(got[0], `"two"`) {
			t.Fatalf("y got %v", got)
		}
		closeA()
		synctest.Wait()
		if n := up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions after one close", n)
		}
		closeB()
		time.Sleep(gqlpush.DefaultIdleTimeout)
		synctest.Wait()
		if s := h.Stats(); s.UpstreamConns != 0 {
			t.Fatalf("%d connections after the idle timeout", s.UpstreamConns)
		}
		if _, reason, _ := a.got(); reason != "" {
			t.Fatalf("a subscription closed by its opener was ended: %s", reason)
		}
		h.Close(context.Background())
		up.Close()
	})
}

func TestPoolEnds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		op     string
		act    func(up *gqlpushtest.Server)
		reason gqlpush.Reason
		errors string
	}{
		{"upstream complete", "Count", nil, gqlpush.ReasonComplete, ""},
		{"upstream error", "CountReq", nil, gqlpush.ReasonUpstreamError, `Variable \"from\" has invalid value null`},
		{"upstream gone for good", "Sub", func(up *gqlpushtest.Server) { up.SetDown(true) }, gqlpush.ReasonUpstreamUnavailable, "UPSTREAM_UNAVAILABLE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := gqlpushtest.NewUnstartedServer(nil)
				h := poolHandler(t, up, nil)
				var r recording
				vars := `{"from":2}`
				if tt.op == "CountReq" {
					vars = "" // $from is required: the upstream refuses it
				}
				closeSub, err := h.OpenUpstream(tt.op, vars, "", &r)
				if err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if tt.act != nil {
					tt.act(up)
				}
				time.Sleep(gqlpush.DefaultReconnectLimit + time.Second)
				synctest.Wait()
				_, reason, errs := r.got()
				if reason != tt.reason || !strings.Contains(errs, tt.errors) {
					t.Fatalf("ended with %q %s, want %q and errors with %q", reason, errs, tt.reason, tt.errors)
				}
				closeSub() // after an end: nothing happens
				h.Close(context.Background())
				up.Close()
			})
		})
	}
}

// An upstream that restarts is redialled and every subscription made again,
// with no end.
func TestPoolResubscribes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		h := poolHandler(t, up, nil)
		var r recording
		closeSub, err := h.OpenUpstream("Sub", "", "", &r)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		up.CloseConnections()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		up.Chat.Post("", "after")
		synctest.Wait()
		got, reason, _ := r.got()
		if reason != "" || len(got) != 1 || !strings.Contains(got[0], `"after"`) {
			t.Fatalf("got %v and end %q", got, reason)
		}
		if n := len(up.Conns()); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
		closeSub()
		h.Close(context.Background())
		up.Close()
	})
}

// Callers whose forwarded values differ get connections of their own, up to
// MaxUpstreamConns; the same values share one.
func TestPoolCapsConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := gqlpushtest.NewUnstartedServer(nil)
		h := poolHandler(t, up, func(cfg *gqlpush.Config) { cfg.MaxUpstreamConns = 2 })
		var closers []func()
		for _, digest := range []string{"a", "a", "b"} {
			c, err := h.OpenUpstream("Sub", "", digest, &recording{})
			if err != nil {
				t.Fatalf("digest %s: %v", digest, err)
			}
			closers = append(closers, c)
		}
		if _, err := h.OpenUpstream("Sub", "", "c", &recording{}); err == nil || !strings.Contains(err.Error(), "too many upstream connections") {
			t.Fatalf("a third connection: %v", err)
		}
		synctest.Wait()
		if n := len(up.Conns()); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
		for _, c := range closers {
			c()
		}
		h.Close(context.Background())
		up.Close()
	})
}
