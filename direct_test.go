package gqlpush_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// TestDirectWritesCutShort: results written to a client's socket by the
// publisher, when the socket takes only part of one, are finished by the
// stream's own goroutine before anything else: a client that stops reading
// for a while, then reads, gets every result, in order, in well-formed
// chunks.
func TestDirectWritesCutShort(t *testing.T) {
	const events = 60
	up, h, srv := bigGateway(t, nil)

	conn := dialSmallWindow(t, srv.Listener.Addr().String())
	fmt.Fprintf(conn, "GET /Big?wg_sse HTTP/1.1\r\nHost: gqlpush\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	frames := gqlpushtest.NewSSEReader(resp.Body)
	if f, err := frames.Next(); err != nil || f.Raw != ":\n\n" {
		t.Fatalf("first frame %q, %v", f.Raw, err)
	}
	g := &gateway{up: up, h: h, srv: srv}
	// A second client, which reads all the while: results are written to
	// the sockets of a subscription's clients directly only when it has
	// more than one.
	other := g.open(t, "/Big?wg_sse")
	go io.Copy(io.Discard, other.br)
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, 2)

	// The client reads nothing while the results come: its socket fills
	// part way through one of them.
	content := strings.Repeat("x", 64<<10)
	for range events {
		up.Chat.Post("", content)
	}
	conn.SetReadDeadline(time.Now().Add(waitTime))
	// Every result, in order. (The test upstream may drop a result its
	// resolver could not hand over within a second, on a very slow
	// machine: ids must rise, and the last one come.)
	for last := 0; last < events; {
		f, err := frames.NextEvent() // the chunked reader refuses a malformed chunk
		if err != nil {
			t.Fatalf("after result %d: %v", last, err)
		}
		var id int
		if _, err := fmt.Sscanf(f.Data, `{"data":{"gql_messageCreated":{"id":"%d"`, &id); err != nil || id <= last {
			t.Fatalf("after result %d: %.120q", last, f.Data)
		}
		if want := fmt.Sprintf(`{"data":{"gql_messageCreated":{"id":"%d","content":"%s"}}}`, id, content); f.Data != want {
			t.Fatalf("result %d: %.120q", id, f.Data)
		}
		last = id
	}
}

// bigGateway serves Big, results of any size, at the root, over sockets
// whose send buffers are small, with no heartbeats and room for 64 MiB of
// unread results per client; Close is left to the caller, and done at the
// end of the test too.
func bigGateway(t *testing.T, obs *gqlpush.Observer) (*gqlpushtest.Server, *gqlpush.Handler, *httptest.Server) {
	t.Helper()
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: mustParse(t, map[string]string{"Big": `subscription { gql_messageCreated { id content } }`}),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
		QueueBytes: 64 << 20,
		Heartbeat:  -1,
		Observer:   obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { h.Close(waitCtx(t)) })
	return up, h, srv
}
