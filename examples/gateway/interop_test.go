package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
			files := map[string]string{"node.graphql": nodeSchema}
			for name, src := range nodeOperations {
				files["ops/"+name] = src
			}
			tmp := writeFiles(t, t.TempDir(), files)
			g := startGateway(t,
				"-operations", filepath.Join(tmp, "ops"),
				"-upstream", "node="+up.url,
				"-schema", "node="+filepath.Join(tmp, "node.graphql"),
				// No heartbeat may come between the frames compared.
				"-heartbeat", "1h")

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

				resp, body = g.get(t, "/operations/Greetings?wg_sse=true")
				want = comment +
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
			})

			// An upstream named in -protocol gets only that protocol.
			t.Run("explicit protocol", func(t *testing.T) {
				g := startGateway(t,
					"-operations", filepath.Join(tmp, "ops"),
					"-upstream", "node="+up.url,
					"-protocol", "node="+protocol)
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
// and, once the gateway has redialled and resubscribed, gets the new
// server's results, in the same stream of ids.
func TestInteropUpstreamRestart(t *testing.T) {
	node, dir := interopSetup(t)
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		t.Run(protocol, func(t *testing.T) {
			up := startNode(t, node, dir, protocol)
			files := map[string]string{}
			for name, src := range nodeOperations {
				files["ops/"+name] = src
			}
			tmp := writeFiles(t, t.TempDir(), files)
			g := startGateway(t,
				"-operations", filepath.Join(tmp, "ops"),
				"-upstream", "node="+up.url,
				"-reconnect-limit", "30s",
				"-heartbeat", "1h")

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
			_, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimSuffix(up.url, "/graphql"), "ws://"))
			if err != nil {
				t.Fatal(err)
			}
			again := startNode(t, node, dir, protocol, "--port", port)
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
			conn := again.wait(t, "its connection", func(e nodeEvent) bool { return e.Event == "connect" && e.Conn == sub.Conn })
			if conn.Protocol != protocol {
				t.Errorf("the gateway reconnected with %q, want %q", conn.Protocol, protocol)
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
	line      string
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
	n := &nodeServer{listening: make(chan string, 1), changed: make(chan struct{}), readDone: make(chan struct{}), process: cmd.Process}
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
