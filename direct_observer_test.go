package gqlpush_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// TestDirectWritesCounted: Observer.FramesDelivered
// is called after frames were written to a client. Two clients of one shared
// subscription each read every result; the results are larger than a socket
// takes at once, so the publisher's direct writes are cut short and the
// streams' goroutines finish them. Every result a client read must have been
// counted once.
func TestDirectWritesCounted(t *testing.T) {
	const events = 20
	rec := newDropRecorder()
	up, h, srv := bigGateway(t, rec.observer())
	g := &gateway{up: up, h: h, srv: srv}

	// Each client reads every result and counts them, until its stream ends.
	var got, last [2]atomic.Int64
	done := make(chan error, 2)
	for i := range 2 {
		conn := dialSmallWindow(t, srv.Listener.Addr().String())
		fmt.Fprintf(conn, "GET /Big?wg_sse HTTP/1.1\r\nHost: gqlpush\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		frames := gqlpushtest.NewSSEReader(resp.Body)
		if f, err := frames.Next(); err != nil || f.Raw != ":\n\n" {
			t.Fatalf("first frame %q, %v", f.Raw, err)
		}
		conn.SetReadDeadline(time.Now().Add(waitTime))
		go func() {
			for {
				f, err := frames.NextEvent()
				if err != nil {
					done <- err
					return
				}
				var id int64
				if _, err := fmt.Sscanf(f.Data, `{"data":{"gql_messageCreated":{"id":"%d"`, &id); err == nil {
					got[i].Add(1)
					last[i].Store(id)
				}
			}
		}()
	}
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, 2)
	content := strings.Repeat("x", 64<<10)
	for range events {
		up.Chat.Post("", content)
	}
	waitUntil(t, func() bool { return last[0].Load() == events && last[1].Load() == events }, func() string {
		return fmt.Sprintf("clients at results %d and %d of %d", last[0].Load(), last[1].Load(), events)
	})
	// Close returns when every stream and every writer is done, and with
	// them every call of FramesDelivered.
	if err := h.Close(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != io.EOF {
			t.Logf("client's stream ended with %v", err)
		}
	}
	read := got[0].Load() + got[1].Load()
	if n := rec.frames.Load(); n != read {
		t.Errorf("clients read %d results (%d and %d); FramesDelivered counted %d", read, got[0].Load(), got[1].Load(), n)
	}
}
