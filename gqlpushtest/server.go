// Package gqlpushtest provides an in-process upstream GraphQL server for
// tests: the server side of graphql-transport-ws and of the legacy graphql-ws
// protocol, over a real WebSocket on loopback or over an in-memory
// [gqlpush.Dialer], and of GraphQL over Server-Sent Events (graphql-sse, in
// its distinct connections mode) and queries over HTTP, on loopback or over
// an in-memory [http.Client], with any graph-gophers schema (a chat by
// default). All are served at one address: [Server.URL] for WebSockets,
// [Server.HTTPURL] for HTTP.
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
//
// # GraphQL over SSE
//
// A GET (the operation in the query string: query, variables,
// operationName, extensions) or a POST (the same as a JSON body) whose
// Accept names text/event-stream is answered 200, Content-Type
// text/event-stream; charset=utf-8, its header flushed at once, then with
// one frame per result and a last one when the results end, after which the
// response ends:
//
//	event: next
//	data: {"data":{"countdown":1}}
//
//	event: complete
//	data:
//
// As the graphql-sse reference handler does, a request whose operation
// cannot be read, or whose document does not parse, gets 400 and
// application/json {"errors":[…]}; a document that does not validate is a
// 400 too, unless text/event-stream is all the request accepts: then the
// errors are streamed as its one result, {"errors":[…]}, before complete.
// A server whose Options.Protocols lack [ProtocolSSE] answers 406, and
// Options.SSEPostOnly answers a GET 405 with Allow: POST.
//
// Each request counts as a connection: a [ConnInfo] of Subprotocol
// ProtocolSSE with the request's headers, and a "subscribe" [Message] with
// ID "" whose Payload holds the operation; a client that leaves before
// complete adds a "complete" Message. [Server.CompleteAll] completes SSE
// operations too; [Server.CloseConnections] closes their connections with
// no complete, and records nothing.
//
// Of [Hostile], Redirect and OversizedResult apply to SSE requests; the
// others are WebSocket behaviours. [Server.SetDown] and [Server.SetSilent]
// apply: a silent server sends no result and no complete, and holds the
// response open until the client leaves.
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

// Protocols the server speaks: the two WebSocket subprotocols, and GraphQL
// over Server-Sent Events.
const (
	ProtocolTransportWS = "graphql-transport-ws"
	ProtocolLegacyWS    = "graphql-ws"
	ProtocolSSE         = "graphql-sse"
)

// Options configure a [Server]. The zero value serves [ChatSchema] over
// graphql-transport-ws, graphql-ws and graphql-sse.
type Options struct {
	// Schema is the executable schema served. Nil means [NewChatSchema]
	// with a new [Chat], available as Server.Chat.
	Schema *graphql.Schema

	// Protocols the server accepts, of ProtocolTransportWS,
	// ProtocolLegacyWS and ProtocolSSE. Nil means all three. A WebSocket
	// handshake offering none of them is accepted, then closed with 4406;
	// an SSE request to a server without ProtocolSSE gets 406 Not
	// Acceptable.
	Protocols []string

	// SSEPostOnly refuses GraphQL-over-SSE requests made with GET: they get
	// 405 Method Not Allowed with Allow: POST, as a server that takes
	// operations only in a body does. False serves GET and POST.
	SSEPostOnly bool

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

	// HTTPURL is the same address for HTTP, http://127.0.0.1:<port>/graphql,
	// once started: for queries and for GraphQL over SSE.
	HTTPURL string

	// Chat is the built-in resolver when Options.Schema is nil.
	Chat *Chat

	schema  *graphql.Schema
	opts    Options
	wsProto []string // the WebSocket subprotocols of opts.Protocols
	http    *httptest.Server

	ctx    context.Context // ends every session
	cancel context.CancelFunc
	wg     sync.WaitGroup // every session, SSE stream, forwarder and flood goroutine

	mu         sync.Mutex
	hostile    Hostile // for connections accepted from now on
	handshakes int     // connections attempted, see Handshakes
	nextConn   int
	conns      map[int]*session
	streams    map[int]*sseStream // GraphQL-over-SSE requests being served
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
	Type    string          // "subscribe", "complete", "start", "stop", "query", ...
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

// ConnInfo describes one accepted connection: a WebSocket once it sent
// connection_init, or a GraphQL-over-SSE request.
type ConnInfo struct {
	ID          int
	Subprotocol string          // ProtocolSSE for an SSE request
	Header      http.Header     // of the WebSocket handshake or the SSE request
	InitPayload json.RawMessage // of connection_init; nil over SSE
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
	s := &Server{conns: make(map[int]*session), streams: make(map[int]*sseStream), changed: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	s.schema = s.opts.Schema
	if s.schema == nil {
		s.Chat = NewChat()
		s.schema = NewChatSchema(s.Chat)
	}
	if s.opts.Protocols == nil {
		s.opts.Protocols = []string{ProtocolTransportWS, ProtocolLegacyWS, ProtocolSSE}
	}
	for _, p := range s.opts.Protocols {
		if p != ProtocolSSE {
			s.wsProto = append(s.wsProto, p)
		}
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

// Start listens on a loopback port and sets URL and HTTPURL.
func (s *Server) Start() {
	s.http = httptest.NewServer(s)
	s.setURLs()
}

func (s *Server) setURLs() {
	s.HTTPURL = s.http.URL + "/graphql"
	s.URL = "ws" + strings.TrimPrefix(s.HTTPURL, "http")
}

// Restart closes every connection and the listener, then listens again on
// the same address: the upstream restarts under its clients.
func (s *Server) Restart() error {
	addr := s.http.Listener.Addr().String()
	// First, so that SSE streams know they are dropped rather than left
	// by their clients when their connections close.
	s.CloseConnections()
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
	s.setURLs()
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

// ServeHTTP serves a GET or POST that accepts text/event-stream as GraphQL
// over SSE, answers any other POST as a query, and accepts a WebSocket
// otherwise. It makes the server mountable in any mux, as the demo does.
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
	if (r.Method == http.MethodGet || r.Method == http.MethodPost) && acceptsEventStream(r.Header) {
		s.serveSSE(w, r, h)
		return
	}
	if r.Method == http.MethodPost {
		s.serveQuery(w, r)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: s.wsProto})
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
// would; the server keeps accepting new ones. An SSE response ends without
// its complete event, its connection closed.
func (s *Server) CloseConnections() {
	for _, c := range s.sessions() {
		c.t.closeNow()
	}
	s.dropStreams()
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
// drops every connection and refuses new ones — a WebSocket handshake or an
// SSE request gets 503, the in-memory dialer an error — as a crashed upstream would,
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
// client receives complete; an SSE response then ends.
func (s *Server) CompleteAll() {
	for _, c := range s.sessions() {
		c.completeAll()
	}
	s.completeStreams()
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
