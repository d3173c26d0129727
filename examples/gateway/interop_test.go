package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// nodeSchema is the schema of interop/server.mjs.
const nodeSchema = `
type Query {
  hello: String!
  messages(room: String): [Message!]!
  messageCount(room: String): Int!
  failing: String
}

type Message {
  id: ID!
  content: String!
  room: String!
}

type Subscription {
  messageCreated(room: String): Message!
  countdown(from: Int!): Int!
  greetings: String!
}
`

// nodeOperations are served by the gateway in front of the Node upstream.
var nodeOperations = map[string]string{
	"Messages.graphql":  "subscription Messages($room: String) {\n  node_messageCreated(room: $room) { id content room }\n}\n",
	"Countdown.graphql": "subscription ($from: Int!) { node_countdown(from: $from) }\n",
	"Greetings.graphql": "subscription { node_greetings }\n",
}

// TestInterop runs the gateway in front of the reference Node servers of
// interop/ (graphql-ws and subscriptions-transport-ws) and checks what
// clients see and what the upstream hears.
func TestInterop(t *testing.T) {
	node, dir := interopSetup(t)
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(protocol, func(t *testing.T) {
			up := startNode(t, node, dir, protocol)
			g := nodeGateway(t, up, nodeOperations)

			t.Run("stream", func(t *testing.T) {
				s := g.open(t, "/operations/Messages?wg_sse=true&room=lobby")
				if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
					t.Fatalf("got %d %s, want 200 text/event-stream", s.resp.StatusCode, ct)
				}
				if f := s.frame(t); f != comment {
					t.Fatalf("first frame %q, want %q", f, comment)
				}
				ids := idNames{}
				for i := 1; i <= 3; i++ {
					f := ids.norm(s.frame(t))
					if !isMessageFrame(f) {
						t.Fatalf("frame %d: %q", i, f)
					}
					if want := messageFrame(i-1, i, "lobby"); f != want {
						t.Errorf("frame %d:\n got %q\nwant %q", i, f, want)
					}
				}
				// The upstream got the operation rewritten for it, with the
				// variables of the request.
				sub := up.wait(t, "subscribe to room lobby", func(e nodeEvent) bool {
					return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"lobby"`
				})
				if !strings.Contains(sub.Query, "node_messageCreated: messageCreated(room: $room)") {
					t.Errorf("upstream query:\n%s", sub.Query)
				}
				s.close()
				up.wait(t, "unsubscribe from room lobby", isUnsubscribe("messageCreated", "lobby"))
			})

			// Auto offers graphql-transport-ws first; the legacy server
			// refuses it before connection_init, so it reports only the
			// connection that speaks what it speaks.
			t.Run("protocol", func(t *testing.T) {
				up.wait(t, "a connection", func(e nodeEvent) bool { return e.Event == "connect" })
				for _, e := range up.eventsNow() {
					if e.Event == "connect" && e.Protocol != protocol {
						t.Errorf("connection %d speaks %q, want %q", e.Conn, e.Protocol, protocol)
					}
				}
			})

			t.Run("once", func(t *testing.T) {
				resp, body := g.get(t, "/operations/Messages?wg_subscribe_once=true&room=once")
				want := `{"data":{"node_messageCreated":{"id":"1","content":"message 1","room":"once"}}}`
				if resp.StatusCode != http.StatusOK || body != want {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				// The gateway unsubscribed upstream after the first result.
				up.wait(t, "unsubscribe from room once", isUnsubscribe("messageCreated", "once"))

				resp, body = g.get(t, "/operations/Messages?wg_sse=true&wg_subscribe_once=true&room=once-sse")
				want = comment + `data: {"data":{"node_messageCreated":{"id":"1","content":"message 1","room":"once-sse"}}}` + "\n\n" + completeEvt
				if resp.StatusCode != http.StatusOK || body != want {
					t.Errorf("SSE: got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
				up.wait(t, "unsubscribe from room once-sse", isUnsubscribe("messageCreated", "once-sse"))
			})

			t.Run("client leaves", func(t *testing.T) {
				s := g.open(t, "/operations/Messages?wg_sse=true&room=leave")
				if f := s.frame(t); f != comment {
					t.Fatalf("first frame %q, want %q", f, comment)
				}
				// A result proves the upstream subscription runs.
				if f := s.frame(t); normIDs(f) != messageFrame(0, 1, "leave") {
					t.Fatalf("got %q, want the first result", f)
				}
				sub := up.wait(t, "subscribe to room leave", func(e nodeEvent) bool {
					return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"leave"`
				})
				s.close()
				unsub := up.wait(t, "unsubscribe from room leave", isUnsubscribe("messageCreated", "leave"))
				if unsub.ID != sub.ID || unsub.Conn != sub.Conn {
					t.Errorf("unsubscribed %d/%s, subscribed %d/%s", unsub.Conn, unsub.ID, sub.Conn, sub.ID)
				}
			})

			t.Run("upstream completes", func(t *testing.T) {
				resp, body := g.get(t, "/operations/Countdown?wg_sse=true&from=3")
				want := comment +
					"id: TOKEN1.0\n" + `data: {"data":{"node_countdown":3}}` + "\n\n" +
					"id: TOKEN1.1\n" + `data: {"data":{"node_countdown":2}}` + "\n\n" +
					"id: TOKEN1.2\n" + `data: {"data":{"node_countdown":1}}` + "\n\n" +
					completeEvt
				if resp.StatusCode != http.StatusOK || normIDs(body) != want {
					t.Errorf("countdown: got %d %q\nwant 200 %q", resp.StatusCode, body, want)
				}

				checkGreetings(t, g)
			})

			// An upstream named in -protocol gets only that protocol.
			t.Run("explicit protocol", func(t *testing.T) {
				g := nodeGateway(t, up, nodeOperations, "-protocol", "node="+protocol)
				resp, body := g.get(t, "/operations/Messages?wg_subscribe_once=true&room=explicit")
				want := `{"data":{"node_messageCreated":{"id":"1","content":"message 1","room":"explicit"}}}`
				if resp.StatusCode != http.StatusOK || body != want {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
				sub := up.wait(t, "subscribe to room explicit", func(e nodeEvent) bool {
					return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"explicit"`
				})
				conn := up.wait(t, "its connection", func(e nodeEvent) bool { return e.Event == "connect" && e.Conn == sub.Conn })
				if conn.Protocol != protocol {
					t.Errorf("connection %d speaks %q, want %q", conn.Conn, conn.Protocol, protocol)
				}
			})

			if err := g.stop(t); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// messageRE matches a result of node_messageCreated, with its id normalised.
var messageRE = regexp.MustCompile(`^id: TOKEN1\.([0-9]+)\ndata: \{"data":\{"node_messageCreated":\{"id":"([0-9]+)","content":"message [0-9]+","room":"[a-z-]+"\}\}\}\n\n$`)

func isMessageFrame(f string) bool { return messageRE.MatchString(f) }

// messageFrame is the seq-th result of a subscription to room, the n-th
// message of the server, with its id normalised.
func messageFrame(seq, n int, room string) string {
	return fmt.Sprintf("id: TOKEN1.%d\n"+`data: {"data":{"node_messageCreated":{"id":"%d","content":"message %d","room":"%s"}}}`+"\n\n", seq, n, n, room)
}

// TestInteropUpstreamRestart kills the Node upstream under a streaming
// client and starts another on the same port: the client stays connected
// and, once the gateway has redialled (over WebSocket) or asked again (over
// SSE) and resubscribed, gets the new server's results, in the same stream
// of ids.
func TestInteropUpstreamRestart(t *testing.T) {
	node, dir := interopSetup(t)
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws", "graphql-sse", "yoga"} {
		t.Run(protocol, func(t *testing.T) {
			up := startNode(t, node, dir, protocol)
			g := nodeGateway(t, up, nodeOperations, append(gatewayProtocol(protocol), "-reconnect-limit", "30s")...)

			s := g.open(t, "/operations/Messages?wg_sse=true&room=restart")
			if f := s.frame(t); f != comment {
				t.Fatalf("first frame %q, want %q", f, comment)
			}
			ids := idNames{}
			seq := 0
			// next reads the next result: the next in the stream of ids,
			// and the next message of the server or, from a new server, its
			// first. It returns the server's message number.
			prev := 0
			next := func() int {
				t.Helper()
				f := ids.norm(s.frame(t))
				m := messageRE.FindStringSubmatch(f)
				if m == nil {
					t.Fatalf("result %d: %q, want a result", seq, f)
				}
				n, _ := strconv.Atoi(m[2])
				if n != prev+1 && n != 1 {
					t.Fatalf("result %d: message %d after %d", seq, n, prev)
				}
				if want := messageFrame(seq, n, "restart"); f != want {
					t.Fatalf("result %d:\n got %q\nwant %q", seq, f, want)
				}
				seq++
				prev = n
				return n
			}
			for next() < 2 {
			}
			up.wait(t, "subscribe to room restart", func(e nodeEvent) bool {
				return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"restart"`
			})

			up.kill(t)
			u, err := url.Parse(up.url)
			if err != nil {
				t.Fatal(err)
			}
			again := startNode(t, node, dir, protocol, "--port", u.Port())
			if again.url != up.url {
				t.Fatalf("the new server listens on %s, want %s", again.url, up.url)
			}

			// What the old server sent before it died comes first, then
			// the new server's first message.
			for next() != 1 {
			}
			sub := again.wait(t, "subscribe to room restart", func(e nodeEvent) bool {
				return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"restart"`
			})
			if !strings.Contains(sub.Query, "node_messageCreated: messageCreated(room: $room)") {
				t.Errorf("upstream query:\n%s", sub.Query)
			}
			if slices.Contains(sseServers, protocol) {
				checkSSEGet(t, sub)
			} else {
				conn := again.wait(t, "its connection", func(e nodeEvent) bool { return e.Event == "connect" && e.Conn == sub.Conn })
				if conn.Protocol != protocol {
					t.Errorf("the gateway reconnected with %q, want %q", conn.Protocol, protocol)
				}
			}
			for next() < 3 {
			}

			s.close()
			again.wait(t, "unsubscribe from room restart", isUnsubscribe("messageCreated", "restart"))
			if err := g.stop(t); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// sseServers are the modes of interop/server.mjs that serve subscriptions
// over Server-Sent Events: graphql-sse's reference handler and GraphQL
// Yoga. The gateway subscribes to either with -protocol graphql-sse.
var sseServers = []string{"graphql-sse", "yoga"}

// gatewayProtocol is the -protocol flag that the gateway needs in front of
// server.mjs in mode: none for WebSocket, which auto finds.
func gatewayProtocol(mode string) []string {
	if slices.Contains(sseServers, mode) {
		return []string{"-protocol", "node=graphql-sse"}
	}
	return nil
}

// isSubscribeTo matches the subscription to room that the upstream received.
func isSubscribeTo(room string) func(nodeEvent) bool {
	return func(e nodeEvent) bool {
		return e.Event == "subscribe" && jsonField(e.Variables, "room") == `"`+room+`"`
	}
}

// isRefused matches a request that the upstream refused as its fail mode
// says.
func isRefused(e nodeEvent) bool { return e.Event == "refused" }

// checkSSEGet checks that a subscription came to an SSE upstream as the
// protocol's GET, asking for an event stream.
// checkGreetings follows Greetings, whose upstream sends three results and
// completes, over SSE and in plain mode.
func checkGreetings(t *testing.T, g *gateway) {
	t.Helper()
	resp, body := g.get(t, "/operations/Greetings?wg_sse=true")
	want := comment +
		"id: TOKEN1.0\n" + `data: {"data":{"node_greetings":"Hi"}}` + "\n\n" +
		"id: TOKEN1.1\n" + `data: {"data":{"node_greetings":"Bonjour"}}` + "\n\n" +
		"id: TOKEN1.2\n" + `data: {"data":{"node_greetings":"Hola"}}` + "\n\n" +
		completeEvt
	if resp.StatusCode != http.StatusOK || normIDs(body) != want {
		t.Errorf("greetings: got %d %q\nwant 200 %q", resp.StatusCode, body, want)
	}

	// Plain mode: the end of the response is the end of the stream.
	resp, body = g.get(t, "/operations/Greetings")
	want = `{"data":{"node_greetings":"Hi"}}` + "\n\n" +
		`{"data":{"node_greetings":"Bonjour"}}` + "\n\n" +
		`{"data":{"node_greetings":"Hola"}}` + "\n\n"
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" || body != want {
		t.Errorf("greetings, plain: got %d %s %q\nwant 200 application/json %q", resp.StatusCode, ct, body, want)
	}
}

func checkSSEGet(t *testing.T, e nodeEvent) {
	t.Helper()
	if accept := jsonField(e.Headers, "accept"); e.Method != http.MethodGet || accept != `"text/event-stream"` {
		t.Errorf("subscription %d came as %s with Accept %s, want GET with text/event-stream", e.Conn, e.Method, accept)
	}
}

// tokenOf is the token of a result frame's id, which names its shared
// subscription.
func tokenOf(t *testing.T, frame string) string {
	t.Helper()
	token, _, _ := strings.Cut(eventIDOf(t, frame), ".")
	return token
}

// TestInteropSSE runs the gateway in front of the reference servers of
// GraphQL over SSE in interop/, graphql-sse's handler and GraphQL Yoga,
// with -protocol graphql-sse: one upstream request per shared
// subscription, whose events reach clients as the gateway's own frames.
func TestInteropSSE(t *testing.T) {
	node, dir := interopSetup(t)
	for _, server := range sseServers {
		t.Run(server, func(t *testing.T) {
			up := startNode(t, node, dir, server)
			g := nodeGateway(t, up, nodeOperations, gatewayProtocol(server)...)

			t.Run("stream", func(t *testing.T) {
				s := g.open(t, "/operations/Messages?wg_sse=true&room=lobby")
				if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
					t.Fatalf("got %d %s, want 200 text/event-stream", s.resp.StatusCode, ct)
				}
				if f := s.frame(t); f != comment {
					t.Fatalf("first frame %q, want %q", f, comment)
				}
				ids := idNames{}
				for i := 1; i <= 3; i++ {
					if f, want := ids.norm(s.frame(t)), messageFrame(i-1, i, "lobby"); f != want {
						t.Fatalf("frame %d:\n got %q\nwant %q", i, f, want)
					}
				}
				// The upstream got the operation rewritten for it, with the
				// variables of the request, in the query string of a GET.
				sub := up.wait(t, "subscribe to room lobby", isSubscribeTo("lobby"))
				checkSSEGet(t, sub)
				if !strings.Contains(sub.Query, "node_messageCreated: messageCreated(room: $room)") {
					t.Errorf("upstream query:\n%s", sub.Query)
				}
				if string(sub.Variables) != `{"room":"lobby"}` || string(sub.OperationName) != `"Messages"` {
					t.Errorf("upstream variables %s, operationName %s", sub.Variables, sub.OperationName)
				}
				// The client leaves: the gateway ends the request, and the
				// server stops that subscription.
				s.close()
				unsub := up.wait(t, "unsubscribe from room lobby", isUnsubscribe("messageCreated", "lobby"))
				if unsub.Conn != sub.Conn {
					t.Errorf("request %d was stopped, request %d subscribed", unsub.Conn, sub.Conn)
				}
			})

			t.Run("once", func(t *testing.T) {
				resp, body := g.get(t, "/operations/Messages?wg_subscribe_once=true&room=once")
				want := `{"data":{"node_messageCreated":{"id":"1","content":"message 1","room":"once"}}}`
				if resp.StatusCode != http.StatusOK || body != want {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
				// The gateway ended the request after the first result.
				up.wait(t, "unsubscribe from room once", isUnsubscribe("messageCreated", "once"))
			})

			// The upstream's "event: complete" ends the client's stream.
			t.Run("upstream completes", func(t *testing.T) {
				resp, body := g.get(t, "/operations/Countdown?wg_sse=true&from=3")
				want := comment +
					"id: TOKEN1.0\n" + `data: {"data":{"node_countdown":3}}` + "\n\n" +
					"id: TOKEN1.1\n" + `data: {"data":{"node_countdown":2}}` + "\n\n" +
					"id: TOKEN1.2\n" + `data: {"data":{"node_countdown":1}}` + "\n\n" +
					completeEvt
				if resp.StatusCode != http.StatusOK || normIDs(body) != want {
					t.Errorf("countdown: got %d %q\nwant 200 %q", resp.StatusCode, body, want)
				}
				sub := up.wait(t, "subscribe to a countdown", func(e nodeEvent) bool {
					return e.Event == "subscribe" && string(e.Variables) == `{"from":3}`
				})
				checkSSEGet(t, sub)
				up.wait(t, "the countdown's end", func(e nodeEvent) bool { return e.Event == "complete" && e.Conn == sub.Conn })

				checkGreetings(t, g)
			})

			// Clients of one operation with the same variables share one
			// upstream request; other variables make another. The request
			// ends when the last of its clients leaves, not before.
			t.Run("sharing", func(t *testing.T) {
				a := g.open(t, "/operations/Messages?wg_sse=true&room=shared")
				if f := a.frame(t); f != comment {
					t.Fatalf("a: first frame %q, want %q", f, comment)
				}
				fa := a.frame(t)
				if f := normIDs(fa); f != messageFrame(0, 1, "shared") {
					t.Fatalf("a: got %q, want the first result", fa)
				}
				sub := up.wait(t, "subscribe to room shared", isSubscribeTo("shared"))

				b := g.open(t, "/operations/Messages?wg_sse=true&room=shared")
				if f := b.frame(t); f != comment {
					t.Fatalf("b: first frame %q, want %q", f, comment)
				}
				fb := b.frame(t)
				if !isMessageFrame(normIDs(fb)) || tokenOf(t, fb) != tokenOf(t, fa) {
					t.Fatalf("b: got %q, want a result of a's subscription (%q)", fb, fa)
				}

				other := g.open(t, "/operations/Messages?wg_sse=true&room=other")
				if f := other.frame(t); f != comment {
					t.Fatalf("other: first frame %q, want %q", f, comment)
				}
				fo := other.frame(t)
				if f := normIDs(fo); f != messageFrame(0, 1, "other") || tokenOf(t, fo) == tokenOf(t, fa) {
					t.Fatalf("other: got %q, want the first result of a subscription of its own (a has %q)", fo, fa)
				}

				// Each client has had a result, so each request it needed
				// has been made.
				if n := up.count(isSubscribeTo("shared")); n != 1 {
					t.Errorf("room shared: %d upstream requests, want 1", n)
				}
				if n := up.count(isSubscribeTo("other")); n != 1 {
					t.Errorf("room other: %d upstream requests, want 1", n)
				}

				// a leaves: b's results go on, from the same request.
				a.close()
				ids := idNames{}
				prev := ids.norm(fb)
				for range 2 {
					f := ids.norm(b.frame(t))
					m, p := messageRE.FindStringSubmatch(f), messageRE.FindStringSubmatch(prev)
					if m == nil || m[1] != strconv.Itoa(atoi(t, p[1])+1) || !strings.HasPrefix(f, "id: TOKEN1.") {
						t.Fatalf("b, after a left: got %q after %q, want the next result", f, prev)
					}
					prev = f
				}
				if n := up.count(isUnsubscribe("messageCreated", "shared")); n != 0 {
					t.Errorf("the upstream stopped room shared with b still there")
				}

				// b, the last client, leaves: the request ends.
				b.close()
				unsub := up.wait(t, "unsubscribe from room shared", isUnsubscribe("messageCreated", "shared"))
				if unsub.Conn != sub.Conn {
					t.Errorf("request %d was stopped, request %d subscribed", unsub.Conn, sub.Conn)
				}
				other.close()
				up.wait(t, "unsubscribe from room other", isUnsubscribe("messageCreated", "other"))
				if n := up.count(isSubscribeTo("shared")); n != 1 {
					t.Errorf("room shared: %d upstream requests, want 1", n)
				}
			})

			// Without -forward-header, no client header reaches the
			// upstream; with -forward-header Authorization, each request
			// carries the value of its clients, and clients with different
			// values share nothing.
			t.Run("forwarded headers", func(t *testing.T) {
				// firstResult opens a stream and reads its first result.
				firstResult := func(g *gateway, room string, h http.Header) (*stream, string) {
					t.Helper()
					s := g.openWith(t, "/operations/Messages?wg_sse=true&room="+room, h)
					if f := s.frame(t); f != comment {
						t.Fatalf("first frame %q, want %q", f, comment)
					}
					f := s.frame(t)
					if !isMessageFrame(normIDs(f)) {
						t.Fatalf("got %q, want a result", f)
					}
					return s, f
				}

				s, _ := firstResult(g, "unforwarded", http.Header{"Authorization": {"Bearer carol"}})
				sub := up.wait(t, "subscribe to room unforwarded", isSubscribeTo("unforwarded"))
				if h := jsonField(sub.Headers, "authorization"); h != "" {
					t.Errorf("without -forward-header, the upstream got Authorization %s", h)
				}
				s.close()

				fg := nodeGateway(t, up, nodeOperations, append(gatewayProtocol(server), "-forward-header", "Authorization")...)
				alice := http.Header{"Authorization": {"Bearer alice"}, "X-Not-Forwarded": {"1"}}
				a1, f1 := firstResult(fg, "fwd", alice)
				a2, f2 := firstResult(fg, "fwd", alice)
				b, fb := firstResult(fg, "fwd", http.Header{"Authorization": {"Bearer bob"}})
				if tokenOf(t, f1) != tokenOf(t, f2) || tokenOf(t, fb) == tokenOf(t, f1) {
					t.Errorf("alice's streams share %q and %q, bob's %q: want alice's alike, bob's apart", f1, f2, fb)
				}
				var got []string
				for _, e := range up.eventsNow() {
					if isSubscribeTo("fwd")(e) {
						got = append(got, jsonField(e.Headers, "authorization"))
						if h := jsonField(e.Headers, "x-not-forwarded"); h != "" {
							t.Errorf("request %d came with X-Not-Forwarded %s", e.Conn, h)
						}
					}
				}
				slices.Sort(got)
				if want := []string{`"Bearer alice"`, `"Bearer bob"`}; !slices.Equal(got, want) {
					t.Errorf("the upstream got requests with Authorization %v, want %v", got, want)
				}
				a1.close()
				a2.close()
				b.close()
				up.waitN(t, "two unsubscribes from room fwd", 2, isUnsubscribe("messageCreated", "fwd"))
				if err := fg.stop(t); err != nil {
					t.Errorf("run: %v", err)
				}
			})

			// Without the schema, the gateway cannot check an operation:
			// both servers answer one that does not validate with a stream
			// of one result, the errors, and the end, which the client gets
			// as they are.
			t.Run("refused operation", func(t *testing.T) {
				tmp := writeFiles(t, t.TempDir(), map[string]string{"ops/Nope.graphql": "subscription {\n  node_nope\n}\n"})
				g := startGateway(t, append([]string{"-operations", filepath.Join(tmp, "ops"), "-upstream", "node=" + up.url, "-heartbeat", "1h"}, gatewayProtocol(server)...)...)
				ext := "" // graphql-sse passes graphql-js's errors as they are
				if server == "yoga" {
					ext = `,"extensions":{"code":"GRAPHQL_VALIDATION_FAILED"}`
				}
				errs := `{"errors":[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":2,"column":3}]` + ext + `}]}`
				resp, body := g.get(t, "/operations/Nope?wg_sse=true")
				if want := comment + "id: TOKEN1.0\ndata: " + errs + "\n\n" + completeEvt; resp.StatusCode != http.StatusOK || normIDs(body) != want {
					t.Errorf("got %d %q\nwant 200 %q", resp.StatusCode, body, want)
				}
				sub := up.wait(t, "the subscription Nope", func(e nodeEvent) bool { return e.Event == "subscribe" && strings.Contains(e.Query, "nope") })
				checkSSEGet(t, sub)
				if want := "subscription {\n  node_nope: nope\n}"; sub.Query != want {
					t.Errorf("upstream query:\n%s\nwant\n%s", sub.Query, want)
				}
			})

			if err := g.stop(t); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// atoi is strconv.Atoi for digits that a regular expression matched.
func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInteropSSEFailures has the SSE upstreams answer the gateway's
// requests badly, as a failing server or a proxy in front of one would,
// before any GraphQL library sees them (server.mjs's fail command): the
// gateway asks again after a 500 and its client's stream goes on once the
// upstream is back, or ends with UPSTREAM_UNAVAILABLE at the reconnect
// limit; a page of HTML ends the stream so too; a 405 to its GET makes
// it POST.
func TestInteropSSEFailures(t *testing.T) {
	node, dir := interopSetup(t)
	for _, server := range sseServers {
		t.Run(server, func(t *testing.T) {
			up := startNode(t, node, dir, server)
			// Each case has a gateway of its own, so that nothing one
			// remembers of the upstream carries over to the next.
			gateway := func(t *testing.T, reconnectLimit string) *gateway {
				t.Helper()
				return nodeGateway(t, up, nodeOperations, append(gatewayProtocol(server), "-reconnect-limit", reconnectLimit)...)
			}
			// ended checks that a stream, read to its end, held nothing
			// but an UPSTREAM_UNAVAILABLE error frame and the end.
			ended := func(t *testing.T, s *stream) {
				t.Helper()
				if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
					t.Fatalf("got %d %s, want 200 text/event-stream", s.resp.StatusCode, ct)
				}
				rest := withoutHeartbeats(s.rest(t))
				if !strings.HasPrefix(rest, `data: {"errors":[`) || !strings.HasSuffix(rest, unavailable+"\n\n"+completeEvt) || strings.Count(rest, "\n\n") != 2 {
					t.Errorf("stream ended with %q, want an error frame with %s, then %q", rest, unavailable, completeEvt)
				}
			}

			t.Run("500 then back", func(t *testing.T) {
				g := gateway(t, "30s")
				up.fail(t, "500")
				before := up.count(isRefused)
				s := g.open(t, "/operations/Messages?wg_sse=true&room=back")
				// A second refused request: the gateway asked again.
				r := up.waitN(t, "a second refused request", before+2, isRefused)
				if r.Status != http.StatusInternalServerError {
					t.Fatalf("refused with %d, want 500", r.Status)
				}
				up.fail(t, "off")
				if f := s.frame(t); f != comment {
					t.Fatalf("first frame %q, want %q", f, comment)
				}
				if f := normIDs(s.frame(t)); f != messageFrame(0, 1, "back") {
					t.Fatalf("once the upstream is back: got %q, want the first result", f)
				}
				checkSSEGet(t, up.wait(t, "subscribe to room back", isSubscribeTo("back")))
				s.close()
				up.wait(t, "unsubscribe from room back", isUnsubscribe("messageCreated", "back"))
			})

			t.Run("500 for good", func(t *testing.T) {
				g := gateway(t, "1s")
				up.fail(t, "500")
				before := up.count(isRefused)
				s := g.open(t, "/operations/Messages?wg_sse=true&room=gone")
				ended(t, s)
				up.fail(t, "off")
				if n := up.count(isRefused) - before; n < 1 {
					t.Errorf("the upstream was asked %d times", n)
				}
				if n := up.count(isSubscribeTo("gone")); n != 0 {
					t.Errorf("the upstream got %d subscriptions to room gone", n)
				}
			})

			// A page of HTML is no answer of a GraphQL server: asking
			// again would get it again, so the stream ends at the first,
			// well before the reconnect limit.
			t.Run("html", func(t *testing.T) {
				g := gateway(t, "1h")
				up.fail(t, "html")
				before := up.count(isRefused)
				s := g.open(t, "/operations/Messages?wg_sse=true&room=html")
				ended(t, s)
				up.fail(t, "off")
				if n := up.count(isRefused) - before; n != 1 {
					t.Errorf("the gateway asked %d times, want once", n)
				}
				if n := up.count(isSubscribeTo("html")); n != 0 {
					t.Errorf("the upstream got %d subscriptions to room html", n)
				}
			})

			t.Run("405 to GET", func(t *testing.T) {
				g := gateway(t, "30s")
				up.fail(t, "get")
				before := up.count(isRefused)
				s := g.open(t, "/operations/Messages?wg_sse=true&room=post")
				if f := s.frame(t); f != comment {
					t.Fatalf("first frame %q, want %q", f, comment)
				}
				ids := idNames{}
				for i := 1; i <= 2; i++ {
					if f, want := ids.norm(s.frame(t)), messageFrame(i-1, i, "post"); f != want {
						t.Fatalf("frame %d:\n got %q\nwant %q", i, f, want)
					}
				}
				r := up.waitN(t, "the refused GET", before+1, isRefused)
				if r.Method != http.MethodGet || r.Status != http.StatusMethodNotAllowed {
					t.Errorf("refused %s with %d, want GET with 405", r.Method, r.Status)
				}
				sub := up.wait(t, "subscribe to room post", isSubscribeTo("post"))
				ct, accept := jsonField(sub.Headers, "content-type"), jsonField(sub.Headers, "accept")
				if sub.Method != http.MethodPost || ct != `"application/json"` || accept != `"text/event-stream"` {
					t.Errorf("subscription %d came as %s with Content-Type %s, Accept %s; want POST, application/json, text/event-stream", sub.Conn, sub.Method, ct, accept)
				}
				if !strings.Contains(sub.Query, "node_messageCreated: messageCreated(room: $room)") || string(sub.Variables) != `{"room":"post"}` {
					t.Errorf("upstream query, variables:\n%s\n%s", sub.Query, sub.Variables)
				}
				s.close()
				up.wait(t, "unsubscribe from room post", isUnsubscribe("messageCreated", "post"))
				up.fail(t, "off")
			})
		})
	}
}

// nodeQueries are query operations of the Node upstream, which the gateway
// posts to it over GraphQL over HTTP (graphql-http), at the upstream's
// URL with http for ws.
var nodeQueries = map[string]string{
	"Count.graphql": "query Count($room: String) {\n  node_messageCount(room: $room)\n  node_messages(room: $room) { id content room }\n}\n",
	// Followed live, its first result can only come from the poll made at
	// once: the next is an hour away.
	"Hello.graphql":   "query Hello @live(pollingIntervalSeconds: 3600) {\n  node_hello\n}\n",
	"Failing.graphql": "query {\n  node_hello\n  node_failing\n}\n",
}

// countQuery is what the upstream is posted for Count: the namespaced
// fields aliased back.
const countQuery = "query Count ($room: String) {\n" +
	"  node_messageCount: messageCount(room: $room)\n" +
	"  node_messages: messages(room: $room) {\n    id\n    content\n    room\n  }\n}"

// countResult is the result of Count for room, to which the messages of
// posted were posted.
func countResult(room string, posted ...nodeEvent) string {
	msgs := make([]string, len(posted))
	for i, p := range posted {
		msgs[i] = fmt.Sprintf(`{"id":"%s","content":"posted %s","room":"%s"}`, p.ID, p.ID, room)
	}
	return fmt.Sprintf(`{"data":{"node_messageCount":%d,"node_messages":[%s]}}`, len(posted), strings.Join(msgs, ","))
}

// isQuery matches a query received over HTTP whose variable room is room.
func isQuery(room string) func(nodeEvent) bool {
	return func(e nodeEvent) bool {
		return e.Event == "query" && jsonField(e.Variables, "room") == `"`+room+`"`
	}
}

// checkPosted checks that a query the upstream received came as the
// GraphQL-over-HTTP POST of query, variables and operationName (JSON, null
// for none).
func checkPosted(t *testing.T, e nodeEvent, query, variables, operationName string) {
	t.Helper()
	if e.Method != http.MethodPost {
		t.Errorf("query %d came with %s, want POST", e.N, e.Method)
	}
	if ct, accept := jsonField(e.Headers, "content-type"), jsonField(e.Headers, "accept"); ct != `"application/json"` || accept != `"application/graphql-response+json, application/json"` {
		t.Errorf("query %d came with Content-Type %s, Accept %s", e.N, ct, accept)
	}
	if e.Query != query {
		t.Errorf("query %d:\n%s\nwant\n%s", e.N, e.Query, query)
	}
	if string(e.Variables) != variables || string(e.OperationName) != operationName {
		t.Errorf("query %d came with variables %s, operationName %s; want %s, %s", e.N, e.Variables, e.OperationName, variables, operationName)
	}
}

// TestInteropQuery runs the gateway in front of the reference
// GraphQL-over-HTTP server, graphql-http, serving the schema of the Node
// upstream: a query is answered once with the upstream's result, or
// followed live, each poll a POST that the upstream receives.
// nodeGateway runs the gateway in front of the Node server up, with ops
// and the server's schema, and extra flags.
func nodeGateway(t *testing.T, up *nodeServer, ops map[string]string, extra ...string) *gateway {
	t.Helper()
	files := map[string]string{"node.graphql": nodeSchema}
	for name, src := range ops {
		files["ops/"+name] = src
	}
	tmp := writeFiles(t, t.TempDir(), files)
	return startGateway(t, append([]string{
		"-operations", filepath.Join(tmp, "ops"),
		"-upstream", "node=" + up.url,
		"-schema", "node=" + filepath.Join(tmp, "node.graphql"),
		// No heartbeat may come between the frames compared.
		"-heartbeat", "1h",
	}, extra...)...)
}

func TestInteropQuery(t *testing.T) {
	node, dir := interopSetup(t)
	// The server answers queries over HTTP alike, whatever it speaks over
	// WebSocket.
	up := startNode(t, node, dir, "graphql-transport-ws")
	g := nodeGateway(t, up, nodeQueries, "-live-interval", "100ms")

	t.Run("once", func(t *testing.T) {
		resp, body := g.get(t, "/operations/Count?room=once")
		want := countResult("once")
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" || body != want {
			t.Errorf("got %d %s %q, want 200 application/json %q", resp.StatusCode, ct, body, want)
		}
		q := up.wait(t, "the query for room once", isQuery("once"))
		checkPosted(t, q, countQuery, `{"room":"once"}`, `"Count"`)

		p := up.post(t, "once")
		resp, body = g.get(t, "/operations/Count?room=once")
		if want := countResult("once", p); resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("after a post: got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	})

	t.Run("live", func(t *testing.T) {
		s := g.open(t, "/operations/Count?wg_live=true&wg_sse=true&room=live")
		if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
			t.Fatalf("got %d %s, want 200 text/event-stream", s.resp.StatusCode, ct)
		}
		if f := s.frame(t); f != comment {
			t.Fatalf("first frame %q, want %q", f, comment)
		}
		ids := idNames{}
		if f, want := ids.norm(s.frame(t)), "id: TOKEN1.0\ndata: "+countResult("live")+"\n\n"; f != want {
			t.Fatalf("first result:\n got %q\nwant %q", f, want)
		}
		// A second poll, whose result is the same, pushes nothing: the
		// upstream ran it before it read the post, so the next frame is
		// the changed result.
		polls := 0
		q := up.wait(t, "a second poll for room live", func(e nodeEvent) bool {
			if isQuery("live")(e) {
				polls++
			}
			return polls == 2
		})
		checkPosted(t, q, countQuery, `{"room":"live"}`, `"Count"`)
		p := up.post(t, "live")
		if f, want := ids.norm(s.frame(t)), "id: TOKEN1.1\ndata: "+countResult("live", p)+"\n\n"; f != want {
			t.Fatalf("after a post:\n got %q\nwant %q", f, want)
		}

		// A client that joins, in plain mode, starts with the current
		// result.
		plain := g.open(t, "/operations/Count?wg_live=true&room=live")
		if ct := plain.resp.Header.Get("Content-Type"); plain.resp.StatusCode != http.StatusOK || ct != "application/json" {
			t.Fatalf("plain: got %d %s, want 200 application/json", plain.resp.StatusCode, ct)
		}
		if f, want := plain.frame(t), countResult("live", p)+"\n\n"; f != want {
			t.Fatalf("plain, first result:\n got %q\nwant %q", f, want)
		}
		s.close()
		plain.close()
	})

	// @live is the gateway's: the upstream never sees it (graphql-http
	// would refuse an unknown directive).
	t.Run("directive", func(t *testing.T) {
		resp, body := g.get(t, "/operations/Hello")
		want := `{"data":{"node_hello":"world"}}`
		if resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
		q := up.wait(t, "the query Hello", func(e nodeEvent) bool { return e.Event == "query" && string(e.OperationName) == `"Hello"` })
		checkPosted(t, q, "query Hello {\n  node_hello: hello\n}", "null", `"Hello"`)

		s := g.open(t, "/operations/Hello?wg_live=true&wg_sse=true")
		if f := s.frame(t); f != comment {
			t.Fatalf("first frame %q, want %q", f, comment)
		}
		if f, want := normIDs(s.frame(t)), "id: TOKEN1.0\ndata: "+want+"\n\n"; f != want {
			t.Fatalf("live:\n got %q\nwant %q", f, want)
		}
		s.close()
	})

	// A field error is part of the result: data and errors pass through,
	// the error's path naming the field as the operation wrote it.
	t.Run("field error", func(t *testing.T) {
		resp, body := g.get(t, "/operations/Failing")
		want := `{"data":{"node_hello":"world","node_failing":null},"errors":[{"message":"failing on purpose","locations":[{"line":3,"column":3}],"path":["node_failing"]}]}`
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" || body != want {
			t.Errorf("got %d %s %q, want 200 application/json %q", resp.StatusCode, ct, body, want)
		}
		q := up.wait(t, "the query Failing", func(e nodeEvent) bool { return e.Event == "query" && strings.Contains(e.Query, "failing") })
		checkPosted(t, q, "query {\n  node_hello: hello\n  node_failing: failing\n}", "null", "null")
	})

	// Without the schema, the gateway cannot check an operation: the
	// upstream refuses it (400, application/graphql-response+json), and its
	// errors are the result.
	t.Run("refused upstream", func(t *testing.T) {
		tmp := writeFiles(t, t.TempDir(), map[string]string{"ops/Unknown.graphql": "query {\n  node_nope\n}\n"})
		g := startGateway(t, "-operations", filepath.Join(tmp, "ops"), "-upstream", "node="+up.url, "-heartbeat", "1h")
		resp, body := g.get(t, "/operations/Unknown")
		want := `{"errors":[{"message":"Cannot query field \"nope\" on type \"Query\".","locations":[{"line":2,"column":3}]}]}`
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" || body != want {
			t.Errorf("got %d %s %q, want 200 application/json %q", resp.StatusCode, ct, body, want)
		}
		q := up.wait(t, "the query Unknown", func(e nodeEvent) bool { return e.Event == "query" && strings.Contains(e.Query, "nope") })
		checkPosted(t, q, "query {\n  node_nope: nope\n}", "null", "null")
	})
}

// interopSetup finds node and the interop directory, ../../interop with its
// node_modules. It skips the test when either is missing, unless
// GQLPUSH_INTEROP=1 (set by CI after npm ci): then that is a failure.
func interopSetup(t *testing.T) (node, dir string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("GQLPUSH_INTEROP") == "1" {
			t.Fatalf("%s (GQLPUSH_INTEROP=1 requires the interop servers)", msg)
		}
		t.Skip(msg)
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "interop"))
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing("node is not installed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		missing("run npm ci in %s: %v", dir, err)
	}
	return node, dir
}

// A nodeEvent is one line that server.mjs prints on stdout.
type nodeEvent struct {
	Event     string          `json:"event"`
	Conn      int             `json:"conn"`
	Protocol  string          `json:"protocol"`
	ID        string          `json:"id"`
	Field     string          `json:"field"`
	Query     string          `json:"query"`
	Variables json.RawMessage `json:"variables"`
	Args      json.RawMessage `json:"args"`

	// Of a query received over HTTP.
	N             int             `json:"n"`
	Method        string          `json:"method"`
	OperationName json.RawMessage `json:"operationName"`
	Headers       json.RawMessage `json:"headers"`

	// Of a message posted with the post command.
	Room  string `json:"room"`
	Count int    `json:"count"`

	// Of a fail command, and of a request refused as it says.
	Mode   string `json:"mode"`
	Status int    `json:"status"`

	line string
}

func isUnsubscribe(field, room string) func(nodeEvent) bool {
	return func(e nodeEvent) bool {
		return e.Event == "unsubscribe" && e.Field == field && jsonField(e.Args, "room") == `"`+room+`"`
	}
}

// A nodeServer is a running interop/server.mjs. Its stdout is read by a
// goroutine the test owns, into events.
type nodeServer struct {
	url string

	listening chan string // cap 1: the URL of the LISTENING line
	process   *os.Process
	stdin     io.WriteCloser
	stop      func() // ends the process and waits for it and its reader; idempotent
	readDone  chan struct{}

	mu      sync.Mutex
	events  []nodeEvent
	changed chan struct{} // closed and replaced on every event
}

// startNode starts the server for protocol, with more flags for server.mjs
// when given. It stops when the test ends: its stdin closes (it exits on
// EOF), it is killed should it linger, and the reader and the process are
// waited for.
func startNode(t *testing.T, node, dir, protocol string, flags ...string) *nodeServer {
	t.Helper()
	args := append([]string{"server.mjs", "--protocol", protocol}, flags...)
	if !slices.Contains(flags, "--port") {
		args = append(args, "--port", "0")
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer // read only after Wait
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &nodeServer{listening: make(chan string, 1), changed: make(chan struct{}), readDone: make(chan struct{}), process: cmd.Process, stdin: stdin}
	go n.read(stdout, n.readDone)
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			stdin.Close()
			timer := time.NewTimer(waitTime)
			defer timer.Stop()
			select {
			case <-n.readDone: // exited on EOF
			case <-timer.C:
			}
			cmd.Process.Kill()
			<-n.readDone
			cmd.Wait()
		})
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("node %s %s stderr:\n%s\nstdout events:\n%s", protocol, strings.Join(flags, " "), stderr.String(), n.dump())
		}
	})
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case n.url = <-n.listening:
	case <-n.readDone:
		t.Fatal("node exited before listening")
	case <-timer.C:
		t.Fatal("node never printed LISTENING")
	}
	return n
}

// kill kills the server with SIGKILL, as a crash would: it closes nothing
// itself. It returns once the process is gone.
func (n *nodeServer) kill(t *testing.T) {
	t.Helper()
	if err := n.process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill node: %v", err)
	}
	n.stop()
}

// post has the server post a message to room, with its stdin command, and
// returns the server's "posted" event.
func (n *nodeServer) post(t *testing.T, room string) nodeEvent {
	t.Helper()
	before := 0
	for _, e := range n.eventsNow() {
		if e.Event == "posted" {
			before++
		}
	}
	if _, err := io.WriteString(n.stdin, "post "+room+"\n"); err != nil {
		t.Fatalf("post to node: %v", err)
	}
	return n.wait(t, "a post to room "+room, func(e nodeEvent) bool {
		return e.Event == "posted" && e.Count == before+1
	})
}

// fail has the server answer the requests that come next as mode says (500,
// html, get, off: see server.mjs), and returns once it does.
func (n *nodeServer) fail(t *testing.T, mode string) {
	t.Helper()
	before := n.count(func(e nodeEvent) bool { return e.Event == "fail" })
	if _, err := io.WriteString(n.stdin, "fail "+mode+"\n"); err != nil {
		t.Fatalf("fail %s to node: %v", mode, err)
	}
	n.waitN(t, "fail "+mode, before+1, func(e nodeEvent) bool { return e.Event == "fail" })
}

// read reads the server's stdout until EOF, then closes done.
func (n *nodeServer) read(r io.Reader, done chan<- struct{}) {
	defer close(done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "LISTENING "); ok {
			select {
			case n.listening <- u:
			default:
			}
			continue
		}
		ev := nodeEvent{line: line}
		json.Unmarshal([]byte(line), &ev)
		n.mu.Lock()
		n.events = append(n.events, ev)
		close(n.changed)
		n.changed = make(chan struct{})
		n.mu.Unlock()
	}
	// A line too long for the scanner: keep the pipe drained until EOF, so
	// the server never blocks on it.
	io.Copy(io.Discard, r)
}

// wait waits until the server has printed an event that matches; events
// printed before the call count.
func (n *nodeServer) wait(t *testing.T, what string, match func(nodeEvent) bool) nodeEvent {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	for i := 0; ; {
		n.mu.Lock()
		events, changed := n.events, n.changed
		n.mu.Unlock()
		for ; i < len(events); i++ {
			if match(events[i]) {
				return events[i]
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("the upstream never reported %s; it reported:\n%s", what, n.dump())
		}
	}
}

// waitN waits until the server has printed count events that match, and
// returns the last of them.
func (n *nodeServer) waitN(t *testing.T, what string, count int, match func(nodeEvent) bool) nodeEvent {
	t.Helper()
	seen := 0
	// wait calls match once per event, in order.
	return n.wait(t, what, func(e nodeEvent) bool {
		if match(e) {
			seen++
		}
		return seen == count
	})
}

// count returns how many of the events printed so far match.
func (n *nodeServer) count(match func(nodeEvent) bool) int {
	c := 0
	for _, e := range n.eventsNow() {
		if match(e) {
			c++
		}
	}
	return c
}

// eventsNow returns the events printed so far.
func (n *nodeServer) eventsNow() []nodeEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

func (n *nodeServer) dump() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for _, e := range n.events {
		b.WriteString(e.line)
		b.WriteByte('\n')
	}
	return b.String()
}
