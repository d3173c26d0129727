package gqlpushtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wsClient speaks the protocol by hand, so the server is tested without
// gqlpush in the way.
type wsClient struct {
	t   *testing.T
	c   *websocket.Conn
	ctx context.Context
}

func dial(t *testing.T, srv *gqlpushtest.Server, proto string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, srv.URL, &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t: t, c: c, ctx: ctx}
}

func (w *wsClient) send(msg string) {
	w.t.Helper()
	if err := w.c.Write(w.ctx, websocket.MessageText, []byte(msg)); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsClient) recv() string {
	w.t.Helper()
	_, b, err := w.c.Read(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return string(b)
}

func (w *wsClient) expect(want string) {
	w.t.Helper()
	if got := w.recv(); got != want {
		w.t.Fatalf("got %s, want %s", got, want)
	}
}

func (w *wsClient) closedWith(code websocket.StatusCode) {
	w.t.Helper()
	_, _, err := w.c.Read(w.ctx)
	if got := websocket.CloseStatus(err); got != code {
		w.t.Fatalf("closed with %v (%v), want %v", got, err, code)
	}
}

func TestTransportWS(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	w := dial(t, srv, gqlpushtest.ProtocolTransportWS)
	w.send(`{"type":"connection_init","payload":{"token":"t"}}`)
	w.expect(`{"type":"connection_ack"}`)
	w.send(`{"type":"ping"}`)
	w.expect(`{"type":"pong"}`)
	w.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 2) }"}}`)
	w.expect(`{"id":"1","type":"next","payload":{"data":{"countdown":2}}}`)
	w.expect(`{"id":"1","type":"next","payload":{"data":{"countdown":1}}}`)
	w.expect(`{"id":"1","type":"complete"}`)

	w.send(`{"id":"2","type":"subscribe","payload":{"query":"subscription { nope }"}}`)
	w.expect(`{"id":"2","type":"error","payload":[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":1,"column":16}]}]}`)

	w.send(`{"id":"3","type":"subscribe","payload":{"query":"subscription ($r: String) { messageCreated(room: $r) { content room } }","variables":{"r":"x"}}}`)
	if err := srv.WaitSubscriptions(w.ctx, 1); err != nil {
		t.Fatal(err)
	}
	srv.Chat.Post("y", "elsewhere")
	srv.Chat.Post("x", "here")
	w.expect(`{"id":"3","type":"next","payload":{"data":{"messageCreated":{"content":"here","room":"x"}}}}`)
	w.send(`{"id":"3","type":"complete"}`)
	if err := srv.WaitSubscriptions(w.ctx, 0); err != nil {
		t.Fatal(err)
	}

	w.send(`{"id":"4","type":"subscribe","payload":{"query":"subscription { messageCreated { id } }"}}`)
	if err := srv.WaitSubscriptions(w.ctx, 1); err != nil {
		t.Fatal(err)
	}
	srv.CompleteAll()
	w.expect(`{"id":"4","type":"complete"}`)

	w.send(`{"id":"5","type":"subscribe","payload":{"query":"subscription { messageCreated { id } }"}}`)
	w.send(`{"id":"5","type":"subscribe","payload":{"query":"subscription { messageCreated { id } }"}}`)
	w.closedWith(4409)

	conns := srv.Conns()
	if len(conns) != 1 || string(conns[0].InitPayload) != `{"token":"t"}` || conns[0].Subprotocol != "graphql-transport-ws" {
		t.Errorf("conns %+v", conns)
	}
	m, err := srv.WaitFor(w.ctx, func(m gqlpushtest.Message) bool { return m.Type == "complete" && m.ID == "3" })
	if err != nil || m.Conn != 1 {
		t.Errorf("recorded complete: %+v %v", m, err)
	}
}

func TestLegacyWS(t *testing.T) {
	srv := gqlpushtest.NewServer(&gqlpushtest.Options{KeepAlive: time.Hour})
	defer srv.Close()
	w := dial(t, srv, gqlpushtest.ProtocolLegacyWS)
	w.send(`{"type":"connection_init"}`)
	w.expect(`{"type":"connection_ack"}`)
	w.expect(`{"type":"ka"}`)
	w.send(`{"id":"1","type":"start","payload":{"query":"subscription { countdown(from: 1) }"}}`)
	w.expect(`{"id":"1","type":"data","payload":{"data":{"countdown":1}}}`)
	w.expect(`{"id":"1","type":"complete"}`)
	w.send(`{"id":"2","type":"start","payload":{"query":"subscription { nope }"}}`)
	w.expect(`{"id":"2","type":"error","payload":{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":1,"column":16}]}}`)
	w.send(`{"id":"3","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
	w.closedWith(4400)
}

func TestRefusals(t *testing.T) {
	srv := gqlpushtest.NewServer(&gqlpushtest.Options{
		Protocols:   []string{gqlpushtest.ProtocolTransportWS},
		InitTimeout: 50 * time.Millisecond,
		AcceptInit: func(p json.RawMessage, _ http.Header) bool {
			return string(p) != `{"token":"bad"}`
		},
	})
	defer srv.Close()

	t.Run("unknown subprotocol", func(t *testing.T) {
		dial(t, srv, "graphql-ws").closedWith(4406)
	})
	t.Run("no connection_init", func(t *testing.T) {
		dial(t, srv, gqlpushtest.ProtocolTransportWS).closedWith(4408)
	})
	t.Run("init refused", func(t *testing.T) {
		w := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		w.send(`{"type":"connection_init","payload":{"token":"bad"}}`)
		w.closedWith(4403)
	})
	t.Run("subscribe before init", func(t *testing.T) {
		w := dial(t, srv, gqlpushtest.ProtocolTransportWS)
		w.send(`{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`)
		w.closedWith(4401)
	})
}

func TestInMemoryDialer(t *testing.T) {
	srv := gqlpushtest.NewUnstartedServer(nil)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: "mqtt"}); err == nil {
		t.Fatal("unknown subprotocol accepted")
	}
	c, err := srv.Dialer().Dial(ctx, &gqlpush.DialRequest{Subprotocol: gqlpushtest.ProtocolTransportWS})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{
		`{"type":"connection_init"}`,
		`{"id":"a","type":"subscribe","payload":{"query":"subscription { countdown(from: 1) }"}}`,
	} {
		if err := c.Write(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		`{"type":"connection_ack"}`,
		`{"id":"a","type":"next","payload":{"data":{"countdown":1}}}`,
		`{"id":"a","type":"complete"}`,
	} {
		b, err := c.Read(ctx)
		if err != nil || string(b) != want {
			t.Fatalf("read %s %v, want %s", b, err, want)
		}
	}
	c.Close()
	var ce *gqlpush.CloseError
	if _, err := c.Read(ctx); !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("after Close: %v", err)
	}
	if got := srv.Received(); len(got) != 2 || got[1].Query() != "subscription { countdown(from: 1) }" {
		t.Errorf("received %+v", got)
	}
}

func TestRestart(t *testing.T) {
	srv := gqlpushtest.NewServer(nil)
	defer srv.Close()
	url := srv.URL
	w := dial(t, srv, gqlpushtest.ProtocolTransportWS)
	w.send(`{"type":"connection_init"}`)
	w.expect(`{"type":"connection_ack"}`)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.c.Read(w.ctx); err == nil {
		t.Fatal("the old connection survived the restart")
	}
	if srv.URL != url {
		t.Fatalf("URL changed: %s → %s", url, srv.URL)
	}
	w2 := dial(t, srv, gqlpushtest.ProtocolTransportWS)
	w2.send(`{"type":"connection_init"}`)
	w2.expect(`{"type":"connection_ack"}`)
}
