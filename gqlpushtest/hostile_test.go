package gqlpushtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// A peer is a client of either transport that speaks the protocol by hand,
// so that each hostile mode is checked on both.
type peer struct {
	t   *testing.T
	c   msgConn
	ctx context.Context
}

type msgConn interface {
	Read(ctx context.Context) ([]byte, error)
	Write(ctx context.Context, b []byte) error
}

type wsConn struct{ c *websocket.Conn }

func (w wsConn) Read(ctx context.Context) ([]byte, error) {
	_, b, err := w.c.Read(ctx)
	return b, err
}

func (w wsConn) Write(ctx context.Context, b []byte) error {
	return w.c.Write(ctx, websocket.MessageText, b)
}

type dialFunc func(t *testing.T, srv *gqlpushtest.Server, proto string) *peer

// eachTransport runs test over a WebSocket and over the in-memory dialer.
func eachTransport(t *testing.T, test func(t *testing.T, dial dialFunc)) {
	t.Run("websocket", func(t *testing.T) { test(t, dialWS) })
	t.Run("memory", func(t *testing.T) { test(t, dialMemory) })
}

func dialWS(t *testing.T, srv *gqlpushtest.Server, proto string) *peer {
	w := dial(t, srv, proto)
	// Oversized results are meant to exceed a gateway's limit, not ours.
	w.c.SetReadLimit(1 << 24)
	return &peer{t: t, c: wsConn{w.c}, ctx: w.ctx}
}

func dialMemory(t *testing.T, srv *gqlpushtest.Server, proto string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := srv.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: proto})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &peer{t: t, c: c, ctx: ctx}
}

func (p *peer) send(msg string) {
	p.t.Helper()
	if err := p.c.Write(p.ctx, []byte(msg)); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) recv() string {
	p.t.Helper()
	b, err := p.c.Read(p.ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	return string(b)
}

func (p *peer) expect(want string) {
	p.t.Helper()
	if got := p.recv(); got != want {
		p.t.Fatalf("got %.200s, want %s", got, want)
	}
}

// expectCountdownAmidPings reads, skipping the pings of a flood, the result
// and the end of subscription 1, a countdown from 1.
func (p *peer) expectCountdownAmidPings() {
	p.t.Helper()
	var got []string
	for len(got) < 2 {
		if m := p.recv(); m != `{"type":"ping"}` {
			got = append(got, m)
		}
	}
	if want := []string{
		`{"id":"1","type":"next","payload":{"data":{"countdown":1}}}`,
		`{"id":"1","type":"complete"}`,
	}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		p.t.Fatalf("got %q, want %q", got, want)
	}
}

// init opens the connection: connection_init, then its ack.
func (p *peer) init() {
	p.t.Helper()
	p.send(`{"type":"connection_init"}`)
	p.expect(`{"type":"connection_ack"}`)
}

// closed expects the connection to close before any other message, and
// returns the close code and reason.
func (p *peer) closed() (int, string) {
	p.t.Helper()
	b, err := p.c.Read(p.ctx)
	if err == nil {
		p.t.Fatalf("got %.200s, want the connection closed", b)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code), ce.Reason
	}
	var pe *gqlpush.CloseError
	if errors.As(err, &pe) {
		return pe.Code, pe.Reason
	}
	p.t.Fatalf("closed without a code: %v", err)
	return 0, ""
}

// result is a next or data message as a client sees it.
type result struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func (p *peer) recvResult() result {
	p.t.Helper()
	var r result
	if b := p.recv(); json.Unmarshal([]byte(b), &r) != nil {
		p.t.Fatalf("not JSON: %.200s", b)
	}
	return r
}

// readToPong sends a ping and reads up to its pong, past the results of
// subscription 1 only.
func (p *peer) readToPong() {
	p.t.Helper()
	p.send(`{"type":"ping"}`)
	for {
		m := p.recv()
		if m == `{"type":"pong"}` {
			return
		}
		if !strings.HasPrefix(m, `{"id":"1","type":"next"`) {
			p.t.Fatalf("got %.100s, want a result of 1 or a pong", m)
		}
	}
}

func newHostile(t *testing.T, h gqlpushtest.Hostile) *gqlpushtest.Server {
	srv := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: h, KeepAlive: time.Hour})
	t.Cleanup(srv.Close)
	return srv
}

func TestPingFlood(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := newHostile(t, gqlpushtest.Hostile{PingFlood: true})
		p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		p.init()
		for range 200 {
			p.expect(`{"type":"ping"}`)
		}
		// The flood goes on while the server serves, and the pongs that
		// answer it are not recorded.
		p.send(`{"type":"pong"}`)
		p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		p.expectCountdownAmidPings()
		for _, m := range srv.Received() {
			if m.Type == "pong" {
				t.Errorf("recorded %+v", m)
			}
		}

		// graphql-ws has no ping: its connections are not flooded.
		l := dial(t, srv, gqlpushtest.ProtocolLegacyWS)
		l.init()
		l.expect(`{"type":"ka"}`)
		l.send(`{"id":"1","type":"start","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		l.expect(`{"id":"1","type":"data","payload":{"data":{"countdown":1}}}`)
		l.expect(`{"id":"1","type":"complete"}`)
	})
}

func TestCloseCode(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		t.Run("after ack", func(t *testing.T) {
			srv := newHostile(t, gqlpushtest.Hostile{CloseCode: 4500, CloseReason: "go away"})
			p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
			p.init()
			if code, reason := p.closed(); code != 4500 || reason != "go away" {
				t.Fatalf("closed with %d %q, want 4500 \"go away\"", code, reason)
			}
		})
		t.Run("after result", func(t *testing.T) {
			srv := newHostile(t, gqlpushtest.Hostile{CloseCode: 1012, CloseAfterResult: true})
			p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
			p.init()
			// The first subscription's first result closes, not the
			// first result of the connection.
			p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { messageCreated { content } }"}}`)
			if err := srv.WaitSubscriptions(p.ctx, 1); err != nil {
				t.Fatal(err)
			}
			p.send(`{"id":"2","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
			p.expect(`{"id":"2","type":"next","payload":{"data":{"countdown":1}}}`)
			p.expect(`{"id":"2","type":"complete"}`)
			srv.Chat.Post("", "last")
			p.expect(`{"id":"1","type":"next","payload":{"data":{"messageCreated":{"content":"last"}}}}`)
			if code, _ := p.closed(); code != 1012 {
				t.Fatalf("closed with %d, want 1012", code)
			}
		})
		t.Run("after a countdown's first result", func(t *testing.T) {
			srv := newHostile(t, gqlpushtest.Hostile{CloseCode: 4000, CloseAfterResult: true})
			p := dial(t, srv, gqlpushtest.ProtocolLegacyWS)
			p.init()
			p.expect(`{"type":"ka"}`)
			p.send(`{"id":"1","type":"start","payload":{"query":"subscription { countdown(from: 3) }"}}`)
			p.expect(`{"id":"1","type":"data","payload":{"data":{"countdown":3}}}`)
			if code, _ := p.closed(); code != 4000 {
				t.Fatalf("closed with %d, want 4000", code)
			}
		})
	})
}

func TestOversizedResult(t *testing.T) {
	const size = 100_000
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := newHostile(t, gqlpushtest.Hostile{OversizedResult: size})
		p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		p.init()
		p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { messageCreated { content } }"}}`)
		if err := srv.WaitSubscriptions(p.ctx, 1); err != nil {
			t.Fatal(err)
		}
		srv.Chat.Post("", "one")
		r := p.recvResult()
		var data struct{ Data struct{ Padding string } }
		if r.ID != "1" || r.Type != "next" || len(r.Payload) < size ||
			json.Unmarshal(r.Payload, &data) != nil || len(data.Data.Padding) == 0 {
			t.Fatalf("first result: %s %s, %d bytes: %.100s", r.ID, r.Type, len(r.Payload), r.Payload)
		}
		srv.Chat.Post("", "two")
		p.expect(`{"id":"1","type":"next","payload":{"data":{"messageCreated":{"content":"two"}}}}`)

		// In a result flood, the first result is the oversized one.
		srv.SetHostile(gqlpushtest.Hostile{OversizedResult: size, ResultFlood: 100})
		f := dial(t, srv, gqlpushtest.ProtocolLegacyWS)
		f.init()
		f.expect(`{"type":"ka"}`)
		f.send(`{"id":"1","type":"start","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		if r := f.recvResult(); r.Type != "data" || len(r.Payload) < size || !strings.Contains(string(r.Payload), "padding") {
			t.Fatalf("first result: %s, %d bytes: %.100s", r.Type, len(r.Payload), r.Payload)
		}
		if r := f.recvResult(); r.Type != "data" || len(r.Payload) >= size || !strings.Contains(string(r.Payload), "flood") {
			t.Fatalf("second result: %s, %d bytes: %.100s", r.Type, len(r.Payload), r.Payload)
		}
	})
}

func TestResultFlood(t *testing.T) {
	const size = 1000
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		t.Run("back to back", func(t *testing.T) {
			srv := newHostile(t, gqlpushtest.Hostile{ResultFlood: size})
			p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
			p.init()
			p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
			for range 100 {
				if r := p.recvResult(); r.ID != "1" || r.Type != "next" || len(r.Payload) < size || !json.Valid(r.Payload) {
					t.Fatalf("got %s %s, %d bytes", r.ID, r.Type, len(r.Payload))
				}
			}
			// Once the client stops it, the flood ends. A write in
			// progress goes on until the client takes it, so it reads on
			// to a pong before it waits for the end; then everything
			// after a second pong is another subscription's.
			p.send(`{"id":"1","type":"complete"}`)
			p.readToPong()
			if err := srv.WaitSubscriptions(p.ctx, 0); err != nil {
				t.Fatal(err)
			}
			p.readToPong()
			p.send(`{"id":"2","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
			if r := p.recvResult(); r.ID != "2" || r.Type != "next" {
				t.Fatalf("after the pong: %s %s", r.ID, r.Type)
			}
		})
		t.Run("apart, until completed", func(t *testing.T) {
			srv := newHostile(t, gqlpushtest.Hostile{ResultFlood: size, ResultInterval: time.Millisecond})
			p := dial(t, srv, gqlpushtest.ProtocolLegacyWS)
			p.init()
			p.expect(`{"type":"ka"}`)
			p.send(`{"id":"1","type":"start","payload":{"query":"subscription { countdown(from: 1) }"}}`)
			for range 3 {
				if r := p.recvResult(); r.ID != "1" || r.Type != "data" || len(r.Payload) < size {
					t.Fatalf("got %s %s, %d bytes", r.ID, r.Type, len(r.Payload))
				}
			}
			srv.CompleteAll()
			for r := p.recvResult(); r.Type != "complete"; r = p.recvResult() {
				if r.Type != "data" {
					t.Fatalf("got %s before complete", r.Type)
				}
			}
		})
	})
}

// A flood pauses while the server is silent, and resumes after.
func TestFloodWhileSilent(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := newHostile(t, gqlpushtest.Hostile{PingFlood: true})
		p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		p.init()
		p.expect(`{"type":"ping"}`)
		srv.SetSilent(true)
		p.send(`{"id":"none","type":"complete"}`)
		if _, err := srv.WaitFor(p.ctx, func(m gqlpushtest.Message) bool { return m.ID == "none" }); err != nil {
			t.Fatal(err)
		}
		srv.SetSilent(false)
		p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		p.expectCountdownAmidPings()
		for range 100 {
			p.expect(`{"type":"ping"}`)
		}
	})
}

// A flood to a client that has stopped reading blocks on the connection
// rather than buffering; Close still ends it, and goleak checks that
// nothing is left.
func TestFloodToStalledClient(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := gqlpushtest.NewServer(&gqlpushtest.Options{Hostile: gqlpushtest.Hostile{PingFlood: true, ResultFlood: 64 << 10}})
		p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		p.init()
		p.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		if err := srv.WaitSubscriptions(p.ctx, 1); err != nil {
			t.Fatal(err)
		}
		srv.Close()
	})
}

func TestJunk(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		for _, tc := range []struct {
			name    string
			h       gqlpushtest.Hostile
			size    int
			isValid bool
		}{
			{"unknown type", gqlpushtest.Hostile{Junk: 5, JunkBytes: 500}, 500, true},
			{"not JSON", gqlpushtest.Hostile{Junk: 3, JunkInvalid: true}, 64, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				srv := newHostile(t, tc.h)
				p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
				p.init()
				for range tc.h.Junk {
					m := p.recv()
					if len(m) < tc.size*3/4 || len(m) > tc.size*5/4 {
						t.Errorf("%d bytes of junk, want about %d", len(m), tc.size)
					}
					if json.Valid([]byte(m)) != tc.isValid {
						t.Fatalf("junk %.100s: JSON %v, want %v", m, !tc.isValid, tc.isValid)
					}
					var typ struct{ Type string }
					if tc.isValid && (json.Unmarshal([]byte(m), &typ) != nil || !strings.HasPrefix(typ.Type, "junk-")) {
						t.Fatalf("junk %.100s", m)
					}
				}
				p.send(`{"type":"ping"}`)
				p.expect(`{"type":"pong"}`)
			})
		}
	})
}

func TestRedirect(t *testing.T) {
	const to = "ws://elsewhere.example/graphql"
	srv := newHostile(t, gqlpushtest.Hostile{Redirect: to})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http"+strings.TrimPrefix(srv.URL, "ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", gqlpushtest.ProtocolTransportWS)
	// A transport of its own, so that no idle connection outlives the test.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != to {
		t.Fatalf("%s, Location %q; want 302 to %s", resp.Status, resp.Header.Get("Location"), to)
	}
	if n := srv.Handshakes(); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
	if len(srv.Conns()) != 0 {
		t.Errorf("redirected, yet served: %+v", srv.Conns())
	}
	// The in-memory dialer has no handshake to redirect.
	dialMemory(t, srv, gqlpushtest.ProtocolTransportWS).init()
	if n := srv.Handshakes(); n != 2 {
		t.Errorf("%d handshakes, want 2", n)
	}
}

func TestReadDelay(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := newHostile(t, gqlpushtest.Hostile{ReadDelay: 5 * time.Millisecond})
		p := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		p.init()
		for range 5 {
			p.send(`{"type":"ping"}`)
		}
		for range 5 {
			p.expect(`{"type":"pong"}`)
		}
		if _, err := srv.WaitMatches(p.ctx, 5, func(m gqlpushtest.Message) bool { return m.Type == "ping" }); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHandshakes(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := 0
	check := func(what string) {
		t.Helper()
		want++
		if n := srv.Handshakes(); n != want {
			t.Fatalf("after %s: %d handshakes, want %d", what, n, want)
		}
	}
	dialWS(t, srv, gqlpushtest.ProtocolTransportWS)
	check("a WebSocket")
	dialMemory(t, srv, gqlpushtest.ProtocolTransportWS)
	check("an in-memory dial")
	if _, err := srv.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: "mqtt"}); err == nil {
		t.Fatal("unknown subprotocol accepted")
	}
	check("an in-memory dial refused")
	srv.SetDown(true)
	if _, _, err := websocket.Dial(ctx, srv.URL, nil); err == nil {
		t.Fatal("dialled a server that is down")
	}
	check("a WebSocket refused while down")
	if _, err := srv.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: gqlpushtest.ProtocolTransportWS}); err == nil {
		t.Fatal("dialled a server that is down")
	}
	check("an in-memory dial refused while down")
}

// SetHostile changes what later connections get, not the open ones.
func TestSetHostile(t *testing.T) {
	eachTransport(t, func(t *testing.T, dial dialFunc) {
		srv := newHostile(t, gqlpushtest.Hostile{})
		before := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		before.init()
		srv.SetHostile(gqlpushtest.Hostile{Junk: 1})
		before.send(`{"type":"ping"}`)
		before.expect(`{"type":"pong"}`)
		after := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		after.init()
		if m := after.recv(); !strings.HasPrefix(m, `{"type":"junk-1"`) {
			t.Fatalf("got %.100s, want junk", m)
		}
	})
}
