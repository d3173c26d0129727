package gqlpush_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

// TestStress joins and leaves thousands of streams at random while the
// upstream posts, completes subscriptions and drops its connections, then
// checks that nothing is left: no stream, no shared subscription, no upstream
// subscription, no goroutine.
func TestStress(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	up := gqlpushtest.NewUnstartedServer(nil)
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations:     mustParse(t, testOperations),
		Upstreams:      []gqlpush.Upstream{{Name: "gql", URL: "ws://upstream.invalid/", Schema: gqlpushtest.ChatSchema, Dialer: up.Dialer()}},
		QueueSize:      4,
		ResumeFrames:   8,
		ResumeGrace:    time.Millisecond,
		IdleTimeout:    time.Millisecond,
		ReconnectLimit: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	const workers, steps = 16, 250 // 4000 steps
	targets := []string{
		"/Room?wg_sse&room=r0", "/Room?wg_sse&room=r1", "/Room?room=r1", "/Room?wg_sse&wg_json_patch&room=r2",
		"/Room?wg_sse&wg_deduplicate", "/Sub?wg_sse", "/Count?wg_sse&from=2", "/Count?wg_subscribe_once",
		"/Room?wg_subscribe_once&room=r0", "/Count?wg_sse&wg_subscribe_once",
	}
	type open struct {
		w      *recorder
		cancel context.CancelFunc
		done   chan struct{}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		outputs []string
	)
	closeOne := func(o open) {
		o.cancel()
		<-o.done
		o.w.Flush()
		mu.Lock()
		outputs = append(outputs, o.w.seen())
		mu.Unlock()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []open
			for range steps {
				// Jitter, so that the upstream makes progress between
				// steps and the steps interleave differently each time.
				time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
				switch n := r.IntN(100); {
				case n < 45:
					ctx, cancel := context.WithCancel(context.Background())
					req := httptest.NewRequestWithContext(ctx, http.MethodGet, targets[r.IntN(len(targets))], nil)
					if r.IntN(4) == 0 {
						req.Header.Set("Last-Event-ID", fmt.Sprintf("%016d.%d", r.IntN(3), r.IntN(10)))
					}
					o := open{w: newRecorder(), cancel: cancel, done: make(chan struct{})}
					go func() {
						defer close(o.done)
						h.ServeHTTP(o.w, req)
					}()
					mine = append(mine, o)
				case n < 75 && len(mine) > 0:
					i := r.IntN(len(mine))
					closeOne(mine[i])
					mine = append(mine[:i], mine[i+1:]...)
				case n < 96:
					up.Chat.Post(fmt.Sprintf("r%d", r.IntN(3)), fmt.Sprintf("m%d", r.IntN(3)))
				case n < 98:
					up.CompleteAll()
				default:
					up.CloseConnections()
				}
			}
			for _, o := range mine {
				closeOne(o)
			}
		}()
	}
	wg.Wait()

	waitStats(t, h, "nothing left", func(s gqlpush.Stats) bool { return s == (gqlpush.Stats{}) })
	ctx := waitCtx(t)
	if err := up.WaitSubscriptions(ctx, 0); err != nil {
		t.Fatalf("%d upstream subscriptions left", up.Subscriptions())
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	up.Close()

	// Every response is made of whole frames.
	var frames, resets, ends, subscribes int
	for _, m := range up.Received() {
		if m.Type == "subscribe" {
			subscribes++
		}
	}
	for _, out := range outputs {
		frames += strings.Count(out, "data: {")
		resets += strings.Count(out, "event: reset")
		ends += strings.Count(out, "event: complete")
	}
	t.Logf("%d responses, %d result frames, %d resets, %d ends, %d upstream subscribes, %d upstream connections",
		len(outputs), frames, resets, ends, subscribes, len(up.Conns()))
	for _, out := range outputs {
		if out == "" || strings.HasPrefix(out, "{") && !strings.Contains(out, "\n") {
			continue // nothing yet, or a once body
		}
		for _, frame := range strings.SplitAfter(out, "\n\n") {
			if frame == "" || frame == "\n" {
				continue
			}
			if !strings.HasSuffix(frame, "\n\n") {
				t.Fatalf("cut frame %q in %q", frame, out)
			}
			for _, line := range strings.Split(strings.TrimSuffix(frame, "\n\n"), "\n") {
				if !(line == ":" || line == "" || strings.HasPrefix(line, "data: ") || strings.HasPrefix(line, "id: ") ||
					strings.HasPrefix(line, "event: ") || strings.HasPrefix(line, "{") || strings.HasPrefix(line, "[")) {
					t.Fatalf("stray line %q in %q", line, out)
				}
			}
		}
	}
}
