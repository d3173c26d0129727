package gqlpush_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestForwardingAndIsolation(t *testing.T) {
	is := jwttest.NewIssuer(t)
	var logs syncBuffer
	g := newAuthGateway(t, is, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].ForwardHeaders = []string{"authorization", "X-Tenant"}
		cfg.Upstreams[0].InitPayloadFunc = func(r *http.Request, p *gqlpush.Principal) (json.RawMessage, error) {
			return json.Marshal(map[string]any{"user": p.Subject})
		}
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	token := func(sub, room string) string {
		c := jwttest.Claims(sub)
		c["org"] = map[string]any{"room": room}
		return is.RS256(t, c)
	}
	alice, bob := token("alice", "a"), token("bob", "b")
	open := func(tok string) *client {
		c, _ := g.openWith(t, g.srv.URL+"/operations/Mine?wg_sse", http.Header{
			"Authorization": {"Bearer " + tok},
			"X-Tenant":      {"t1"},
			"Cookie":        {"other=secret-cookie"},
		})
		c.frame(t)
		return c
	}
	ca, cb := open(alice), open(bob)
	g.waitSubscriptions(t, 2)

	conns := g.up.Conns()
	if len(conns) != 2 {
		t.Fatalf("%d upstream connections for two users, want 2", len(conns))
	}
	seen := map[string]bool{}
	for _, c := range conns {
		var init struct{ User string }
		json.Unmarshal(c.InitPayload, &init)
		seen[init.User] = true
		if c.Header.Get("X-Tenant") != "t1" {
			t.Errorf("X-Tenant not forwarded: %v", c.Header)
		}
		if c.Header.Get("Cookie") != "" {
			t.Errorf("an unnamed Cookie was forwarded")
		}
		want := map[string]string{"alice": "Bearer " + alice, "bob": "Bearer " + bob}[init.User]
		if got := c.Header.Get("Authorization"); got != want {
			t.Errorf("connection of %s forwarded Authorization %.20q…", init.User, got)
		}
	}
	if !seen["alice"] || !seen["bob"] {
		t.Errorf("init payloads %v", seen)
	}
	for _, sub := range g.up.Received() {
		if sub.Type == "subscribe" && !strings.Contains(string(sub.Variables()), `"room":"`) {
			t.Errorf("subscribe without the claim variable: %s", sub.Variables())
		}
	}
	g.up.Chat.Post("b", "for bob")
	g.up.Chat.Post("a", "for alice")
	if f := ca.frame(t); !strings.Contains(f, `"for alice"`) {
		t.Errorf("alice got %q", f)
	}
	if f := cb.frame(t); !strings.Contains(f, `"for bob"`) {
		t.Errorf("bob got %q", f)
	}
	// A bad token is logged without the token.
	bad := alice[:len(alice)-4] + "AAAA"
	if resp, _ := g.do(t, "/operations/Mine?wg_sse", bearer(bad)); resp.StatusCode != 401 {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	for _, secret := range []string{alice, bob, bad, "secret-cookie", alice[len(alice)-20:]} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a credential reached the log:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "authentication failed") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}
}

func TestSameForwardedValuesShare(t *testing.T) {
	is := jwttest.NewIssuer(t)
	g := newAuthGateway(t, is, func(cfg *gqlpush.Config) {
		cfg.Upstreams[0].ForwardHeaders = []string{"X-Tenant"}
	})
	c := jwttest.Claims("alice")
	c["org"] = map[string]any{"room": "a"}
	tok := is.RS256(t, c)
	for range 2 {
		c, _ := g.openWith(t, g.srv.URL+"/operations/Mine?wg_sse", http.Header{"Authorization": {"Bearer " + tok}, "X-Tenant": {"same"}})
		c.frame(t)
	}
	g.waitSubscriptions(t, 1)
	if n := len(g.up.Conns()); n != 1 {
		t.Errorf("%d connections for equal forwarded values, want 1", n)
	}
}

func TestTokenExpiresMidStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := jwttest.NewIssuer(t)
		a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKS: is.JWKS, Issuer: jwttest.Iss, Audience: jwttest.Aud, Leeway: -1})
		if err != nil {
			t.Fatal(err)
		}
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Operations = mustParse(t, authOperations)
			cfg.Authenticator = a
			cfg.Heartbeat = -1
		})
		c := jwttest.Claims("alice")
		c["org"] = map[string]any{"room": "a"}
		c["exp"] = time.Now().Add(time.Minute).Unix()
		w, _, done := b.openSSE(t, "/Mine?wg_sse", bearer(is.RS256(t, c)))
		if got := w.seen(); got != ":\n\n" {
			t.Fatalf("opened with %q", got)
		}
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		if got := w.seen(); got != "" {
			t.Fatalf("before expiry: %q", got)
		}
		time.Sleep(time.Nanosecond)
		<-done
		want := `data: {"errors":[{"message":"token expired","extensions":{"code":"UNAUTHENTICATED"}}]}` + "\n\nevent: complete\ndata: \n\n"
		if got := w.seen(); got != want {
			t.Fatalf("at expiry: %q, want %q", got, want)
		}
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 0 {
			t.Errorf("%d upstream subscriptions after expiry", n)
		}
		if _, err := b.up.WaitFor(context.Background(), isType("complete")); err != nil {
			t.Error(err)
		}
		b.close(t)
	})
}

func TestStreamCaps(t *testing.T) {
	is := jwttest.NewIssuer(t)
	g := newAuthGateway(t, is, func(cfg *gqlpush.Config) {
		cfg.MaxStreams = 3
		cfg.MaxStreamsPerPrincipal = 2
	})
	user := func(sub string) http.Header {
		c := jwttest.Claims(sub)
		c["org"] = map[string]any{"room": sub}
		return bearer(is.RS256(t, c))
	}
	openAs := func(h http.Header) (*client, *http.Response) {
		return g.openWith(t, g.srv.URL+"/operations/Mine?wg_sse", h)
	}
	refused := func(h http.Header, why string) {
		t.Helper()
		c, resp := openAs(h)
		body := c.rest(t)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d %q", why, resp.StatusCode, body)
		}
		if _, code := errorOf(t, body); code != "TOO_MANY_STREAMS" {
			t.Fatalf("%s: code %q", why, code)
		}
	}
	a1, _ := openAs(user("alice"))
	a2, _ := openAs(user("alice"))
	a1.frame(t)
	a2.frame(t)
	refused(user("alice"), "a third stream for alice")
	b1, _ := openAs(user("bob"))
	b1.frame(t)
	refused(user("carol"), "a fourth stream in all")
	a1.leave()
	g.waitStreams(t, 2)
	c1, resp := openAs(user("carol"))
	if resp.StatusCode != 200 {
		t.Fatalf("after a stream closed: %d", resp.StatusCode)
	}
	c1.frame(t)
	for _, c := range []*client{a2, b1, c1} {
		c.leave()
	}
	g.waitIdle(t)
}

func TestAnonymousCapByAddress(t *testing.T) {
	g := newGateway(t, func(cfg *gqlpush.Config) {
		cfg.MaxStreamsPerPrincipal = 1
		cfg.ClientAddress = func(r *http.Request) string { return r.Header.Get("X-Client") }
	})
	open := func(addr string) (*client, *http.Response) {
		return g.openWith(t, g.srv.URL+"/operations/Sub?wg_sse", http.Header{"X-Client": {addr}})
	}
	c1, _ := open("10.0.0.1")
	c1.frame(t)
	if _, resp := open("10.0.0.1"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second stream from one address: %d", resp.StatusCode)
	}
	if _, resp := open("10.0.0.2"); resp.StatusCode != 200 {
		t.Fatalf("another address: %d", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	g := newGateway(t, func(cfg *gqlpush.Config) {
		cfg.CORSOrigins = []string{"https://app.example.com"}
		cfg.Upstreams[0].ForwardHeaders = []string{"X-Tenant"}
	})
	req := func(method, origin string, extra http.Header) *http.Response {
		r, _ := http.NewRequestWithContext(waitCtx(t), method, g.srv.URL+"/operations/Count?wg_subscribe_once", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		for k, v := range extra {
			r.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pre := http.Header{"Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"authorization"}}

	resp := req(http.MethodOptions, "https://app.example.com", pre)
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" || resp.Header.Get("Access-Control-Allow-Headers") != "Authorization, Last-Event-ID, Cache-Control, X-Tenant" {
		t.Errorf("preflight from a listed origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp = req(http.MethodGet, "https://app.example.com", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("GET from a listed origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp = req(http.MethodOptions, "https://evil.example.com", pre)
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp = req(http.MethodGet, "https://evil.example.com", nil)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("GET from another origin got CORS headers: %v", resp.Header)
	}
	resp = req(http.MethodOptions, "", nil)
	if resp.StatusCode != 405 {
		t.Errorf("OPTIONS that is no preflight: %d", resp.StatusCode)
	}
	for _, bad := range [][]string{{"*"}, {"app.example.com"}, {"https://app.example.com/path"}} {
		_, err := gqlpush.NewHandler(gqlpush.Config{
			Operations:  mustParse(t, map[string]string{"X": "subscription { gql_a }"}),
			Upstreams:   []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/"}},
			CORSOrigins: bad,
		})
		if err == nil || !strings.Contains(err.Error(), "CORSOrigins") {
			t.Errorf("origins %q: %v", bad, err)
		}
	}
}

func TestForwardHeadersChecked(t *testing.T) {
	for _, name := range []string{"Connection", "upgrade", "Sec-WebSocket-Key", "Host", "bad name"} {
		_, err := gqlpush.NewHandler(gqlpush.Config{
			Operations: mustParse(t, map[string]string{"X": "subscription { gql_a }"}),
			Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: "ws://127.0.0.1:1/", ForwardHeaders: []string{name}}},
		})
		if err == nil || !strings.Contains(err.Error(), "ForwardHeaders") {
			t.Errorf("%q accepted: %v", name, err)
		}
	}
}

func TestForwardedAddress(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48"), netip.MustParsePrefix("fe80::/10")}
	addr := gqlpush.ForwardedAddress("x-forwarded-for", trusted)
	for _, tt := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no proxy: the header is ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, "203.0.113.9"},
		{"behind one proxy", "10.0.0.2:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"a forged entry left of the client's", "10.0.0.2:5000", []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"forged, then through two proxies", "10.0.0.2:5000", []string{"1.1.1.1, 203.0.113.9, 10.9.9.9"}, "203.0.113.9"},
		{"over two header lines", "10.0.0.2:5000", []string{"1.1.1.1, 203.0.113.9", "10.9.9.9"}, "203.0.113.9"},
		{"a forged trusted address stays untrusted left of the client", "10.0.0.2:5000", []string{"10.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"all trusted: the leftmost", "10.0.0.2:5000", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"no header from a proxy", "10.0.0.2:5000", nil, "10.0.0.2"},
		{"garbage from the proxy's side", "10.0.0.2:5000", []string{"203.0.113.9, garbage"}, "10.0.0.2"},
		{"with a port", "10.0.0.2:5000", []string{"203.0.113.9:41000"}, "203.0.113.9"},
		{"IPv6 proxy and client", "[2001:db8:ffff::1]:5000", []string{"2001:db8:1::7"}, "2001:db8:1::7"},
		{"mapped IPv4", "10.0.0.2:5000", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"a proxy on a link-local address with a zone", "[fe80::1%eth0]:5000", []string{"203.0.113.9"}, "203.0.113.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := addr(r); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	// Without trusted proxies the header is never read.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "127.0.0.1:80"
	r.Header.Set("X-Forwarded-For", "1.2.3.4")
	if got := gqlpush.ForwardedAddress("X-Forwarded-For", nil)(r); got != "127.0.0.1" {
		t.Fatalf("with no trusted proxy: %q", got)
	}
}

// IPv6 callers count per /64: one host usually holds the whole block.
func TestAnonymousIPv6CountedPer64(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.MaxStreamsPerPrincipal = 1 })
		from := func(addr string) (*recorder, context.CancelFunc, chan struct{}) {
			ctx, cancel := context.WithCancel(context.Background())
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/Sub?wg_sse", nil)
			r.RemoteAddr = addr
			w := newRecorder()
			done := make(chan struct{})
			go func() { defer close(done); b.h.ServeHTTP(w, r) }()
			synctest.Wait()
			return w, cancel, done
		}
		w1, leave1, done1 := from("[2001:db8:0:1::1]:4000")
		w2, leave2, done2 := from("[2001:db8:0:1:ffff::2]:4000")
		w3, leave3, done3 := from("[2001:db8:0:2::1]:4000")
		if w1.status != 200 || w2.status != http.StatusTooManyRequests || w3.status != 200 {
			t.Fatalf("statuses %d, %d, %d; want 200, 429 (same /64), 200", w1.status, w2.status, w3.status)
		}
		for _, l := range []context.CancelFunc{leave1, leave2, leave3} {
			l()
		}
		for _, d := range []chan struct{}{done1, done2, done3} {
			<-d
		}
		b.close(t)
	})
}
