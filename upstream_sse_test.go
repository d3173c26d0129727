package gqlpush_test

import (
	"net/http"
	"testing"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// sseUpstreamGateway serves the test operations in front of a gqlpushtest
// server subscribed to over GraphQL over SSE.
func sseUpstreamGateway(t *testing.T, opts *gqlpushtest.Options, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	up := gqlpushtest.NewServer(opts)
	t.Cleanup(up.Close)
	g := gatewayWith(t, gqlpush.Config{
		Operations: mustParse(t, testOperations),
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.HTTPURL, Protocol: gqlpush.ProtocolSSE, Schema: gqlpushtest.ChatSchema}},
		Prefix:     "/operations/",
	}, edit)
	g.up = up
	return g
}

// TestSSEUpstreamEndToEnd: clients of a graphql-sse upstream get the same
// bytes as those of a WebSocket one; one upstream request serves a key
// however many clients share it, and ends when the last one leaves.
func TestSSEUpstreamEndToEnd(t *testing.T) {
	for _, postOnly := range []bool{false, true} {
		name := map[bool]string{false: "GET", true: "POST"}[postOnly]
		t.Run(name, func(t *testing.T) {
			g := sseUpstreamGateway(t, &gqlpushtest.Options{SSEPostOnly: postOnly}, nil)
			a := g.open(t, "/operations/Sub?wg_sse")
			b := g.open(t, "/operations/Sub?wg_sse")
			a.frame(t)
			b.frame(t)
			g.waitSubscriptions(t, 1)
			g.waitStreams(t, 2)
			m := g.up.Chat.Post("", "hello")
			want := "id: T.0\ndata: {\"data\":{\"gql_messageCreated\":{\"content\":\"hello\",\"id\":\"" + m.ID + "\"}}}\n\n"
			for _, c := range []*client{a, b} {
				if got := normIDs(c.frame(t)); got != want {
					t.Errorf("frame %q, want %q", got, want)
				}
			}
			subs := 0
			for _, m := range g.up.Received() {
				if m.Type == "subscribe" {
					subs++
				}
			}
			conns := g.up.Conns()
			if subs != 1 || len(conns) == 0 || conns[len(conns)-1].Subprotocol != gqlpushtest.ProtocolSSE {
				t.Errorf("the upstream got %d subscribes over %+v, want 1 over graphql-sse", subs, conns)
			}
			a.leave()
			m = g.up.Chat.Post("", "still here")
			if got, want := normIDs(b.frame(t)), "id: T.1\ndata: {\"data\":{\"gql_messageCreated\":{\"content\":\"still here\",\"id\":\""+m.ID+"\"}}}\n\n"; got != want {
				t.Errorf("frame %q, want %q", got, want)
			}
			b.leave()
			g.waitSubscriptions(t, 0)
			g.waitFor(t, "the subscription stopped", isType("complete"))
			g.waitIdle(t)
		})
	}
}

// TestSSEUpstreamCompletes: an upstream that completes a subscription, or
// answers once, over SSE.
func TestSSEUpstreamCompletes(t *testing.T) {
	g := sseUpstreamGateway(t, nil, nil)
	c := g.open(t, "/operations/Count?wg_sse&from=2")
	c.frame(t)
	want := "id: T.0\ndata: {\"data\":{\"gql_countdown\":2}}\n\nid: T.1\ndata: {\"data\":{\"gql_countdown\":1}}\n\nevent: complete\ndata: \n\n"
	if got := normIDs(c.rest(t)); got != want {
		t.Errorf("stream %q, want %q", got, want)
	}
	resp, body := g.get(t, http.MethodGet, "/operations/Count?wg_subscribe_once&from=5")
	if resp.StatusCode != http.StatusOK || body != `{"data":{"gql_countdown":5}}` {
		t.Errorf("once: %d %s", resp.StatusCode, body)
	}
	g.waitSubscriptions(t, 0)
	g.waitIdle(t)
}

// TestSSEUpstreamRestart: an upstream that restarts under its clients is
// asked again; the clients keep their streams and get what comes next.
func TestSSEUpstreamRestart(t *testing.T) {
	g := sseUpstreamGateway(t, nil, nil)
	c := g.open(t, "/operations/Sub?wg_sse")
	c.frame(t)
	g.waitSubscriptions(t, 1)
	m := g.up.Chat.Post("", "before")
	if got, want := normIDs(c.frame(t)), "id: T.0\ndata: {\"data\":{\"gql_messageCreated\":{\"content\":\"before\",\"id\":\""+m.ID+"\"}}}\n\n"; got != want {
		t.Fatalf("frame %q, want %q", got, want)
	}
	if err := g.up.Restart(); err != nil {
		t.Fatal(err)
	}
	g.waitSubscriptions(t, 1)
	m = g.up.Chat.Post("", "after")
	if got, want := normIDs(c.frame(t)), "id: T.1\ndata: {\"data\":{\"gql_messageCreated\":{\"content\":\"after\",\"id\":\""+m.ID+"\"}}}\n\n"; got != want {
		t.Fatalf("frame %q, want %q", got, want)
	}
	if s := g.h.Stats(); s.Streams != 1 || s.UpstreamConns != 1 {
		t.Errorf("Stats %+v, want the stream and one upstream request", s)
	}
}
