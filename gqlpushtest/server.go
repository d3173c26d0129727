// Package gqlpushtest provides an in-process upstream GraphQL server for
// tests: the server side of graphql-transport-ws and of the legacy graphql-ws
// protocol, over a real WebSocket on loopback or over an in-memory
// [gqlpush.Dialer], with any graph-gophers schema (a chat by default).
//
// It records every message it receives, so a test can assert what the
// upstream saw: the subscribe, the complete when the client left, the
// connection_init payload, the handshake headers.
//
//	srv := gqlpushtest.NewServer(nil)
//	defer srv.Close()
//	h, _ := gqlpush.NewHandler(gqlpush.Config{
//		Operations: ops,
//		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: srv.URL, Schema: gqlpushtest.ChatSchema}},
//	})
//
// It can also play a broken or malicious upstream, so that a gateway's
// defences are tested against something real: [Hostile] (in Options, or
// later with [Server.SetHostile]) floods pings or results, sends junk or
// oversized results, closes with a chosen code, redirects the handshake or
// reads slowly; [Server.Handshakes] counts dials, to check a gateway's
// backoff.
//
// On the gateway's side, [SSEReader] reads the frames of a stream as a
// client receives them, to check what the upstream's results became.
package gqlpushtest

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	graphql "github.com/graph-gophers/graphql-go"
)

// Subprotocols the server speaks.
const (
	ProtocolTransportWS = "graphql-transport-ws"
	ProtocolLegacyWS    = "graphql-ws"
)

// Options configure a [Server]. The zero value serves [ChatSchema] over
// graphql-transport-ws and graphql-ws.
type Options struct {
	// Schema is the executable schema served. Nil means [NewChatSchema]
	// with a new [Chat], available as Server.Chat.
	Schema *graphql.Schema

	// Protocols the server accepts. Nil means both.
	Protocols []string

	// InitTimeout closes a connection that sends no connection_init in
	// time, with 4408. Zero means 3 s.
	InitTimeout time.Duration

	// AcceptInit decides whether a connection_init is accepted; a false
	// answer closes the connection with 4403 Forbidden. Nil accepts all.
	AcceptInit func(payload json.RawMessage, header http.Header) bool

	// KeepAlive is how often a graphql-ws (legacy) connection is sent
	// "ka". Zero means 1 s; negative sends none.
	KeepAlive time.Duration

	// Hostile makes the server misbehave as a broken or malicious upstream
	// would. The zero value behaves. [Server.SetHostile] changes it later.
	Hostile Hostile
}

// A Server is an upstream GraphQL server. Create it with [NewServer] (on a
// loopback port) or [NewUnstartedServer]; close it with [Server.Close].
type Server struct {
	// URL is the WebSocket address, ws://127.0.0.1:<port>/graphql, once
	// started.
	URL string

	// Chat is the built-in resolver when Options.Schema is nil.
	Chat *Chat

	schema *graphql.Schema
	opts   Options
	http   *httptest.Server

	ctx    context.Context // ends every session
	cancel context.CancelFunc
	wg     sync.WaitGroup // every session, forwarder and flood goroutine

	mu         sync.Mutex
	hostile    Hostile // for connections accepted from now on
	handshakes int     // connections attempted, see Handshakes
	nextConn   int
	conns      map[int]*session
	received   []Message
	infos      []ConnInfo
	live       int           // subscriptions running
	changed    chan struct{} // closed and replaced on every change
	closed     bool
	silent     bool
	down       bool
}

// A Message is one message the server received.
type Message struct {
	Conn    int             // which connection, from 1
	Type    string          // "subscribe", "complete", "start", "stop", ...
	ID      string          // of the subscription, if any
	Payload json.RawMessage // as received
}

// Query returns the query of a subscribe or start message.
func (m Message) Query() string {
	var p struct{ Query string }
	json.Unmarshal(m.Payload, &p)
	return p.Query
}

// Variables returns the variables of a subscribe or start message, as JSON.
func (m Message) Variables() json.RawMessage {
	var p struct{ Variables json.RawMessage }
	json.Unmarshal(m.Payload, &p)
	return p.Variables
}

// ConnInfo describes one accepted connection.
type ConnInfo struct {
	ID          int
	Subprotocol string
	Header      http.Header     // of the WebSocket handshake
	InitPayload json.RawMessage // of connection_init
}

// NewServer starts a server on a loopback port. opts may be nil.
func NewServer(opts *Options) *Server {
	s := NewUnstartedServer(opts)
	s.Start()
	return s
}

// NewUnstartedServer returns a server that listens nowhere until
// [Server.Start]; its [Server.Dialer] works without it.
func NewUnstartedServer(opts *Options) *Server {
	s := &Server{conns: make(map[int]*session), changed: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	s.schema = s.opts.Schema
	if s.schema == nil {
		s.Chat = NewChat()
		s.schema = NewChatSchema(s.Chat)
	}
	if s.opts.Protocols == nil {
		s.opts.Protocols = []string{ProtocolTransportWS, ProtocolLegacyWS}
	}
	if s.opts.InitTimeout == 0 {
		s.opts.InitTimeout = 3 * time.Second
	}
	if s.opts.KeepAlive == 0 {
		s.opts.KeepAlive = time.Second
	}
	s.hostile = s.opts.Hostile
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Start listens on a loopback port and sets URL.
func (s *Server) Start() {
	s.http = httptest.NewServer(s)
	s.URL = "ws" + strings.TrimPrefix(s.http.URL, "http") + "/graphql"
}

// Restart closes every connection and the listener, then listens again on
// the same address: the upstream restarts under its clients.
func (s *Server) Restart() error {
	addr := s.http.Listener.Addr().String()
	s.http.CloseClientConnections()
	s.http.Close()
	s.CloseConnections()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.http = httptest.NewUnstartedServer(s)
	s.http.Listener.Close()
	s.http.Listener = l
	s.http.Start()
	return nil
}

// Close closes every connection and the listener and waits for every
// goroutine of the server.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	if s.http != nil {
		s.http.CloseClientConnections()
		s.http.Close()
	}
	s.wg.Wait()
}

// ServeHTTP accepts a WebSocket and serves it, or answers a query posted
// over HTTP. It makes the server mountable in any mux, as the demo does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, down := s.handshake()
	if down {
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
		return
	}
	if h.Redirect != "" {
		// Set by hand rather than with http.Redirect, which would resolve
		// a relative Location against the request: the test chose it.
		w.Header().Set("Location", h.Redirect)
		w.WriteHeader(http.StatusFound)
		return
	}
	if r.Method == http.MethodPost {
		s.serveQuery(w, r)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: s.opts.Protocols})
	if err != nil {
		return
	}
	proto := c.Subprotocol()
	if proto == "" {
		// As graphql-ws does: the handshake succeeds, then 4406.
		c.Close(4406, "Subprotocol not acceptable")
		return
	}
	if !s.add() {
		c.CloseNow()
		return
	}
	defer s.wg.Done()
	s.serve(&wsTransport{c: c}, proto, r.Header.Clone(), h)
}

// add counts a goroutine in, unless the server is closed.
func (s *Server) add() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// CloseConnections drops every connection abruptly, as a crashed upstream
// would; the server keeps accepting new ones.
func (s *Server) CloseConnections() {
	for _, c := range s.sessions() {
		c.t.closeNow()
	}
}

// sessions returns the connections being served now.
func (s *Server) sessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*session, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// SetDown takes the server down (true) or back up (false). While down it
// drops every connection and refuses new ones — the WebSocket handshake
// gets 503, the in-memory dialer an error — as a crashed upstream would,
// without giving up its address.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
	if down {
		s.CloseConnections()
	}
}

// SetSilent makes the server stop sending anything — results, pongs, ka,
// and what [Hostile] sends — while it keeps its connections open and goes on
// reading, as a hung upstream would; false makes it speak again. What it did
// not send is lost, except that floods pause and then resume.
func (s *Server) SetSilent(silent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent = silent
	s.changedLocked() // wakes paused floods
}

func (s *Server) isSilent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.silent
}

// CompleteAll ends every running subscription from the server side: each
// client receives complete.
func (s *Server) CompleteAll() {
	for _, c := range s.sessions() {
		c.completeAll()
	}
}

// Received returns a copy of every message received so far, in order. The
// server keeps them all, for tests: a long-running server's record grows by
// a subscribe and a complete per subscription.
func (s *Server) Received() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// Conns returns what is known of every connection accepted so far.
func (s *Server) Conns() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.infos)
}

// Subscriptions reports how many subscriptions are running now.
func (s *Server) Subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// WaitFor waits until a received message matches, and returns it. Messages
// received before the call count.
func (s *Server) WaitFor(ctx context.Context, match func(Message) bool) (Message, error) {
	var m Message
	err := s.wait(ctx, func() bool {
		for _, r := range s.received {
			if match(r) {
				m = r
				return true
			}
		}
		return false
	})
	return m, err
}

// WaitMatches waits until at least n received messages match, and returns
// every match so far, in order.
func (s *Server) WaitMatches(ctx context.Context, n int, match func(Message) bool) ([]Message, error) {
	var ms []Message
	err := s.wait(ctx, func() bool {
		ms = ms[:0]
		for _, r := range s.received {
			if match(r) {
				ms = append(ms, r)
			}
		}
		return len(ms) >= n
	})
	return ms, err
}

// WaitSubscriptions waits until exactly n subscriptions are running.
func (s *Server) WaitSubscriptions(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return s.live == n })
}

// WaitConns waits until at least n connections have been accepted.
func (s *Server) WaitConns(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return len(s.infos) >= n })
}

// wait calls cond, under the server's lock, whenever the state changes, until
// it holds or ctx ends.
func (s *Server) wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok := cond()
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changedLocked wakes every waiter.
func (s *Server) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

var (
	errClosed = errors.New("gqlpushtest: server closed")
	errDown   = errors.New("gqlpushtest: server down")
)
