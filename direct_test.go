package gqlpush_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
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
// chunks. Alone on its subscription, the client's results are written by
// the publisher itself; with a second client, which reads all the while, by
// a writer goroutine.
func TestDirectWritesCutShort(t *testing.T) {
	for _, tc := range []struct {
		name  string
		other bool
	}{{"alone", false}, {"shared", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const events = 60
			up, h, srv := bigGateway(t, nil)
			conn := dialSmallWindow(t, srv.Listener.Addr().String())
			_, frames := openRawSSE(t, conn, "/Big?wg_sse")
			g := &gateway{up: up, h: h, srv: srv}
			streams := 1
			if tc.other {
				other := g.open(t, "/Big?wg_sse")
				go io.Copy(io.Discard, other.br)
				streams++
			}
			g.waitSubscriptions(t, 1)
			g.waitStreams(t, streams)

			// The client reads nothing while the results come: its
			// socket fills part way through one of them.
			content := strings.Repeat("x", 64<<10)
			for range events {
				up.Chat.Post("", content)
			}
			conn.SetReadDeadline(time.Now().Add(waitTime))
			// Every result, in order. (The test upstream may drop a
			// result its resolver could not hand over within a second,
			// on a very slow machine: ids must rise, and the last one
			// come.)
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
		})
	}
}

// bigGateway serves Big, results of any size, at the root, over sockets
// whose send buffers are small, with no heartbeats and room for 64 MiB of
// unread results per client; Close is left to the caller, and done at the
// end of the test too. edits may change the configuration.
func bigGateway(t *testing.T, obs *gqlpush.Observer, edits ...func(*gqlpush.Config)) (*gqlpushtest.Server, *gqlpush.Handler, *httptest.Server) {
	t.Helper()
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	cfg := gqlpush.Config{
		Operations: mustParse(t, map[string]string{"Big": `subscription { gql_messageCreated { id content } }`}),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
		QueueBytes: 64 << 20,
		Heartbeat:  -1,
		Observer:   obs,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	h, err := gqlpush.NewHandler(cfg)
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

// TestDirectWritesShared: a result for many idle streams of one
// subscription is written to their sockets by several writers at once, each
// the frame its stream takes: SSE or plain, chunked over HTTP/1.1, as it is
// over HTTP/1.0. Every client gets the same results, in order, byte for
// byte as its kind frames them.
func TestDirectWritesShared(t *testing.T) {
	const (
		clients = 120 // more than one writer's share on two cores and more
		events  = 20
	)
	g := newGateway(t, nil)
	addr := g.srv.Listener.Addr().String()
	type result struct {
		contents []string
		err      error
	}
	results := make(chan result, clients)
	for i := range clients {
		_, sse, body := openMixedClient(t, addr, i)
		if sse {
			if f, err := gqlpushtest.NewSSEReader(body).Next(); err != nil || f.Raw != ":\n\n" {
				t.Fatalf("client %d: first frame %q, %v", i, f.Raw, err)
			}
		}
		go func() {
			r := result{}
			defer func() { results <- r }()
			frames := gqlpushtest.NewSSEReader(body)
			for len(r.contents) == 0 || r.contents[len(r.contents)-1] != fmt.Sprint("m", events-1) {
				var data string
				if sse {
					f, err := frames.NextEvent()
					if err != nil {
						r.err = err
						return
					}
					if f.Raw != "id: "+f.ID+"\ndata: "+f.Data+"\n\n" {
						r.err = fmt.Errorf("after %q: frame %q", r.contents, f.Raw)
						return
					}
					data = f.Data
				} else {
					line, err := body.ReadString('\n')
					if err != nil {
						r.err = err
						return
					}
					if line == "\n" {
						continue // the blank line after a result
					}
					data = strings.TrimSuffix(line, "\n")
				}
				m := sharedResult.FindStringSubmatch(data)
				if m == nil {
					r.err = fmt.Errorf("after %q: %q", r.contents, data)
					return
				}
				r.contents = append(r.contents, m[1])
			}
		}()
	}
	g.waitSubscriptions(t, 1)
	g.waitStreams(t, clients)
	for i := range events {
		g.up.Chat.Post("", fmt.Sprint("m", i))
	}
	// The test upstream may drop a result its resolver could not hand over
	// within a second, on a very slow machine: every client must have the
	// same results, the last among them.
	var first []string
	for range clients {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if first == nil {
			first = r.contents
		}
		if !slices.Equal(r.contents, first) {
			t.Fatalf("one client got %q, another %q", r.contents, first)
		}
	}
}

var sharedResult = regexp.MustCompile(`^\{"data":\{"gql_messageCreated":\{"content":"(m[0-9]+)","id":"[0-9]+"\}\}\}$`)

// openRawSSE asks for path's SSE stream on conn, as an HTTP/1.1 client
// would, and reads the response's head and the opening comment: the stream
// has begun. conn's reads are bounded by waitTime from now.
func openRawSSE(t *testing.T, conn net.Conn, path string) (*http.Response, *gqlpushtest.SSEReader) {
	t.Helper()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gqlpush\r\n\r\n", path)
	conn.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	frames := gqlpushtest.NewSSEReader(resp.Body)
	if f, err := frames.Next(); err != nil || f.Raw != ":\n\n" {
		t.Fatalf("first frame %q, %v", f.Raw, err)
	}
	return resp, frames
}

// openMixedClient opens the i-th of a mix of clients of Sub, on a socket
// with a small receive window: SSE for an even i, plain for an odd one; over
// HTTP/1.0 when i%4 is 2 or 3, HTTP/1.1 otherwise. It returns the
// connection, whether the client is SSE, and the response's body, whose
// reads are bounded by waitTime from now.
func openMixedClient(t *testing.T, addr string, i int) (net.Conn, bool, *bufio.Reader) {
	t.Helper()
	sse, proto := i%2 == 0, "HTTP/1.1"
	if i%4 >= 2 {
		proto = "HTTP/1.0"
	}
	path := "/operations/Sub"
	if sse {
		path += "?wg_sse"
	}
	conn := dialSmallWindow(t, addr)
	fmt.Fprintf(conn, "GET %s %s\r\nHost: gqlpush\r\n\r\n", path, proto)
	conn.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, sse, bufio.NewReader(resp.Body)
}
