package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

const (
	// testSecret is the HS256 secret of the tests, longer than the 32
	// bytes required. It must never show in what the gateway prints.
	testSecret = "gateway-test-secret-0123456789abcdefghij"
)

// authOps are operations on the in-process upstream that need a token:
// one with @auth, one whose room comes from the token; and one open to all.
var authOps = map[string]string{
	"Mine.graphql":  "subscription @auth { gql_messageCreated { id content } }\n",
	"Room.graphql":  "subscription ($room: String! @fromClaim(name: \"room\")) {\n  gql_messageCreated(room: $room) { content room }\n}\n",
	"Count.graphql": "subscription @auth { gql_countdown(from: 2) }\n",
	"Open.graphql":  "subscription { gql_messageCreated { id content } }\n",
}

// writeSecret writes a secret file of mode perm (umask aside) and returns
// its path.
func writeSecret(t *testing.T, dir, content string, perm os.FileMode) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(perm); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// do makes a request and reads the whole response.
func (g *gateway) do(t *testing.T, method, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v (so far %q)", method, path, err, b)
	}
	return resp, string(b)
}

// openOK opens an SSE stream that must start: 200 and the first comment.
func (g *gateway) openOK(t *testing.T, path string, header http.Header) *stream {
	t.Helper()
	s := g.openWith(t, path, header)
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", path, s.resp.StatusCode, s.rest(t))
	}
	if f := s.frame(t); f != comment {
		t.Fatalf("%s: first frame %q", path, f)
	}
	return s
}

// wantRefused checks a response refused before the stream with status and
// code, and the header that goes with it.
func wantRefused(t *testing.T, what string, resp *http.Response, body string, status int, code gqlpush.Code, header, value string) {
	t.Helper()
	want := fmt.Sprintf(`"extensions":{"code":"%s"}`, code)
	if resp.StatusCode != status || !strings.Contains(body, want) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s: %d %s %q, want %d and %s", what, resp.StatusCode, resp.Header.Get("Content-Type"), body, status, want)
	}
	if got := resp.Header.Get(header); got != value {
		t.Errorf("%s: %s %q, want %q", what, header, got, value)
	}
}

// checkNoSecrets fails when anything the gateway printed or logged holds
// one of secrets, whole or its last 16 characters (a token's signature).
func checkNoSecrets(t *testing.T, g *gateway, secrets ...string) {
	t.Helper()
	out := g.stdout.String() + g.stderr.String()
	for _, s := range secrets {
		if strings.Contains(out, s) || (len(s) > 16 && strings.Contains(out, s[len(s)-16:])) {
			t.Errorf("the gateway printed a secret (%.6s…):\n%s", s, out)
		}
	}
}

func TestAuthConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// A JWKS URL whose server answers 404, and one that serves no key set.
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	notJWKS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>login</html>")
	}))
	defer notJWKS.Close()

	tmp := t.TempDir()
	good := writeFiles(t, filepath.Join(tmp, "good"), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id } }\n"})
	guarded := writeFiles(t, filepath.Join(tmp, "guarded"), authOps)
	secret := writeSecret(t, tmp, testSecret+"\n", 0o600)
	short := writeSecret(t, tmp, "hunter2hunter2\n", 0o600)
	blank := writeSecret(t, tmp, "\n", 0o600)
	jwks := filepath.Join(writeFiles(t, filepath.Join(tmp, "jwks"), map[string]string{
		"good.json":    string(jwttest.NewIssuer(t).JWKS),
		"garbage.json": "s3cr3t-not-json",
		"empty.json":   `{"keys":[]}`,
		"nokeys.json":  `{"issuer":"x"}`,
		"badkey.json":  `{"keys":[{"kty":"nope","kid":"k"}]}`,
	}), "good.json")
	jwksFile := func(name string) string { return filepath.Join(filepath.Dir(jwks), name) }
	missing := filepath.Join(tmp, "missing")
	const up = "gql=ws://127.0.0.1:1/graphql" // never dialled
	base := []string{"-operations", good, "-upstream", up}

	tests := []struct {
		name    string
		args    []string
		want    []string // in the message
		notWant []string
	}{
		{name: "secret file missing", args: []string{"-jwt-secret-file", missing},
			want: []string{"-jwt-secret-file " + missing, "no such file"}},
		{name: "secret file is a directory", args: []string{"-jwt-secret-file", tmp},
			want: []string{"-jwt-secret-file " + tmp, "a directory, not a file"}},
		{name: "secret file name empty", args: []string{"-jwt-secret-file", ""},
			want: []string{"-jwt-secret-file: empty"}},
		{name: "short secret", args: []string{"-jwt-secret-file", short},
			want: []string{"-jwt-secret-file " + short, "shorter than 32 bytes"}, notWant: []string{"hunter2"}},
		{name: "secret of a newline", args: []string{"-jwt-secret-file", blank},
			want: []string{"shorter than 32 bytes"}},
		{name: "secret and key set", args: []string{"-jwt-secret-file", secret, "-jwks", jwks},
			want: []string{"-jwt-secret-file and -jwks: give one of them, not both"}},
		{name: "key set file missing", args: []string{"-jwks", missing},
			want: []string{"-jwks " + missing, "no such file"}},
		{name: "key set file not JSON", args: []string{"-jwks", jwksFile("garbage.json")},
			want: []string{"-jwks " + jwksFile("garbage.json"), "not a JSON Web Key Set"}, notWant: []string{"s3cr3t"}},
		{name: "key set without keys", args: []string{"-jwks", jwksFile("empty.json")},
			want: []string{"-jwks " + jwksFile("empty.json"), "the key set has no keys"}},
		{name: "key set without a keys member", args: []string{"-jwks", jwksFile("nokeys.json")},
			want: []string{"the key set has no keys"}},
		{name: "key set with an unknown key type", args: []string{"-jwks", jwksFile("badkey.json")},
			want: []string{jwksFile("badkey.json"), "JWKS"}},
		{name: "key set empty flag", args: []string{"-jwks", ""},
			want: []string{"-jwks: empty"}},
		{name: "key set URL unreachable", args: []string{"-jwks", "http://user:hunter2@127.0.0.1:1/jwks?token=abc123#frag"},
			want:    []string{"-jwks", "http://user:xxxxx@127.0.0.1:1/jwks"},
			notWant: []string{"hunter2", "abc123", "token=", "frag"}},
		{name: "key set URL answers 404", args: []string{"-jwks", notFound.URL + "/jwks?key=abc123"},
			want: []string{"-jwks", notFound.URL + "/jwks", "404"}, notWant: []string{"abc123"}},
		{name: "key set URL serves no key set", args: []string{"-jwks", notJWKS.URL + "/jwks"},
			want: []string{"-jwks", notJWKS.URL + "/jwks"}},
		{name: "key set URL of another scheme", args: []string{"-jwks", "ftp://user:hunter2@example.com/jwks"},
			want: []string{`scheme "ftp" is not http or https`}, notWant: []string{"hunter2"}},
		{name: "key set URL without host", args: []string{"-jwks", "https:///jwks"},
			want: []string{"-jwks https:///jwks: the URL has no host"}},
		{name: "key set URL malformed", args: []string{"-jwks", "https://user:hunter2@exa mple.com/jwks"},
			want: []string{"-jwks: not a URL"}, notWant: []string{"hunter2"}},

		{name: "issuer without keys", args: []string{"-jwt-issuer", jwttest.Iss},
			want: []string{"-jwt-issuer: no tokens are verified without -jwt-secret-file or -jwks"}},
		{name: "audience without keys", args: []string{"-jwt-audience", jwttest.Aud},
			want: []string{"-jwt-audience: no tokens are verified"}},
		{name: "cookie without keys", args: []string{"-auth-cookie", "session"},
			want: []string{"-auth-cookie: no tokens are verified"}},
		{name: "roles claim without keys", args: []string{"-roles-claim", "groups"},
			want: []string{"-roles-claim: no tokens are verified"}},
		{name: "leeway without keys", args: []string{"-jwt-leeway", "5s"},
			want: []string{"-jwt-leeway: no tokens are verified"}},
		{name: "negative leeway", args: []string{"-jwt-secret-file", secret, "-jwt-leeway", "-1s"},
			want: []string{"-jwt-leeway -1s: must not be negative; 0s allows no clock skew"}},
		{name: "leeway without unit", args: []string{"-jwt-secret-file", secret, "-jwt-leeway", "30"},
			want: []string{`invalid value "30" for flag -jwt-leeway`}},
		{name: "empty issuer", args: []string{"-jwt-secret-file", secret, "-jwt-issuer", ""},
			want: []string{"-jwt-issuer: empty"}},
		{name: "empty audience", args: []string{"-jwt-secret-file", secret, "-jwt-audience", ""},
			want: []string{"-jwt-audience: empty"}},
		{name: "bad cookie name", args: []string{"-jwt-secret-file", secret, "-auth-cookie", "my session"},
			want: []string{`-auth-cookie "my session": not a cookie name`}},
		{name: "empty cookie name", args: []string{"-jwt-secret-file", secret, "-auth-cookie", ""},
			want: []string{`-auth-cookie "": not a cookie name (- reads no cookie)`}},
		{name: "bad roles claim", args: []string{"-jwt-secret-file", secret, "-roles-claim", "realm_access..roles"},
			want: []string{`-roles-claim "realm_access..roles": not a claim path`}},
		{name: "auth operations without keys", args: []string{"-operations", guarded},
			want: []string{filepath.Join(guarded, "Mine.graphql"), "requires authentication", "need -jwt-secret-file or -jwks"}},

		// gqlpush checks these, under the flag's name.
		{name: "negative max streams", args: []string{"-max-streams", "-1"},
			want: []string{"-max-streams: gqlpush: Config.MaxStreams is negative"}},
		{name: "negative max streams per principal", args: []string{"-max-streams-per-principal", "-2"},
			want: []string{"-max-streams-per-principal: gqlpush: Config.MaxStreamsPerPrincipal is negative"}},
		{name: "max streams not a number", args: []string{"-max-streams", "many"},
			want: []string{`invalid value "many" for flag -max-streams`}},
		{name: "negative max anonymous streams", args: []string{"-max-anonymous-streams", "-1"},
			want: []string{"-max-anonymous-streams: gqlpush: Config.MaxAnonymousStreams is negative"}},
		{name: "negative max subscriptions", args: []string{"-max-subscriptions", "-1"},
			want: []string{"-max-subscriptions: gqlpush: Config.MaxSubscriptions is negative"}},
		{name: "negative max upstream conns", args: []string{"-max-upstream-conns", "-3"},
			want: []string{"-max-upstream-conns: gqlpush: Config.MaxUpstreamConns is negative"}},
		{name: "more anonymous streams than streams", args: []string{"-max-streams", "2", "-max-anonymous-streams", "3"},
			want: []string{"-max-anonymous-streams: gqlpush: Config.MaxAnonymousStreams is more than MaxStreams"}},

		{name: "forward Connection", args: []string{"-forward-header", "Connection"},
			want: []string{`-forward-header: gqlpush: upstream "gql": ForwardHeaders holds Connection, which belongs to one connection and cannot be forwarded`}},
		{name: "forward upgrade", args: []string{"-forward-header", "X-Tenant", "-forward-header", "upgrade"},
			want: []string{"-forward-header: gqlpush:", "ForwardHeaders holds Upgrade, which belongs to one connection"}},
		{name: "forward Host", args: []string{"-forward-header", "host"},
			want: []string{"-forward-header: gqlpush:", "ForwardHeaders holds Host, which belongs to one connection"}},
		{name: "forward a WebSocket header", args: []string{"-forward-header", "Sec-WebSocket-Protocol"},
			want: []string{"-forward-header: gqlpush:", "ForwardHeaders holds Sec-Websocket-Protocol, which belongs to one connection"}},
		{name: "forward a bad name", args: []string{"-forward-header", "X Tenant"},
			want: []string{"-forward-header: gqlpush:", `ForwardHeaders holds "X Tenant", not a header name`}},
		{name: "forward an empty name", args: []string{"-forward-header", ""},
			want: []string{"-forward-header: gqlpush:", `ForwardHeaders holds "", not a header name`}},

		{name: "CORS wildcard", args: []string{"-cors-origin", "*"},
			want: []string{"-cors-origin: gqlpush: Config.CORSOrigins holds *", "origins are listed one by one"}},
		{name: "CORS origin with a path", args: []string{"-cors-origin", "https://app.example.com/app"},
			want: []string{`-cors-origin: gqlpush: Config.CORSOrigins holds "https://app.example.com/app", not an origin like https://app.example.com`}},
		{name: "CORS origin without scheme", args: []string{"-cors-origin", "https://ok.example.com", "-cors-origin", "app.example.com"},
			want: []string{`-cors-origin: gqlpush: Config.CORSOrigins holds "app.example.com", not an origin`}},
		{name: "CORS origin with a query", args: []string{"-cors-origin", "https://app.example.com?x=1"},
			want: []string{"-cors-origin: gqlpush:", "not an origin"}},
		{name: "CORS origin with credentials", args: []string{"-cors-origin", "https://user:hunter2@app.example.com"},
			want: []string{"-cors-origin: an origin has no user info"}, notWant: []string{"hunter2"}},
		{name: "CORS origin with credentials, malformed", args: []string{"-cors-origin", "https://user:hunter2@app example.com"},
			want: []string{"-cors-origin: an origin has no user info"}, notWant: []string{"hunter2"}},

		{name: "client IP header without a cap", args: []string{"-client-ip-header", "X-Forwarded-For"},
			want: []string{"-client-ip-header X-Forwarded-For: only counts callers for -max-streams-per-principal, which sets no cap"}},
		{name: "client IP header bad name", args: []string{"-max-streams-per-principal", "1", "-client-ip-header", "X-Forwarded-For:"},
			want: []string{`-client-ip-header "X-Forwarded-For:": not a header name`}},
		{name: "client IP header empty", args: []string{"-max-streams-per-principal", "1", "-client-ip-header", ""},
			want: []string{`-client-ip-header "": not a header name`}},
		{name: "client IP header without trusted proxies", args: []string{"-max-streams-per-principal", "1", "-client-ip-header", "X-Real-IP"},
			want: []string{"-client-ip-header X-Real-IP: without -trusted-proxy any client can forge the header", "name the proxies that set it with -trusted-proxy"}},
		{name: "trusted proxy without a cap", args: []string{"-trusted-proxy", "10.0.0.1"},
			want: []string{"-trusted-proxy 10.0.0.1: only names callers for -max-streams-per-principal, which sets no cap"}},
		{name: "trusted proxy prefix too long", args: []string{"-max-streams-per-principal", "1", "-trusted-proxy", "10.0.0.1", "-trusted-proxy", "10.0.0.0/33"},
			want: []string{`-trusted-proxy "10.0.0.0/33": not an address or a CIDR prefix like 10.0.0.0/8`}},
		{name: "trusted proxy by name", args: []string{"-max-streams-per-principal", "1", "-trusted-proxy", "proxy.example.com"},
			want: []string{`-trusted-proxy "proxy.example.com": not an address or a CIDR prefix`}},
		{name: "trusted proxy with a zone", args: []string{"-max-streams-per-principal", "1", "-trusted-proxy", "fe80::1%eth0"},
			want: []string{`-trusted-proxy "fe80::1%eth0": not an address or a CIDR prefix`}},
		{name: "trusted proxy empty", args: []string{"-max-streams-per-principal", "1", "-trusted-proxy", ""},
			want: []string{`-trusted-proxy "": not an address or a CIDR prefix`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, base...), tc.args...)
			if slices.Contains(tc.args, "-operations") {
				args = append([]string{"-upstream", up}, tc.args...)
			}
			checkUsageError(t, busy.Addr().String(), args, tc.want, append(tc.notWant, testSecret))
		})
	}

	// With a good secret, the gateway gets as far as listening: the
	// address is taken, so that fails (status 1), and the other cases
	// fail for their flags alone.
	var stdout, stderr, report syncBuffer
	withSecret := append(append([]string{}, base...), "-jwt-secret-file", secret)
	err = run(context.Background(), append([]string{"-listen", busy.Addr().String()}, withSecret...), &stdout, &stderr)
	if code := exitCode(err, &report); code != 1 {
		t.Errorf("good secret: exit status %d, want 1 (address in use); error: %v", code, err)
	}
}

// TestAuthFlagsToConfig checks what the authentication, limit and CORS
// flags set in the configuration.
func TestAuthFlagsToConfig(t *testing.T) {
	tmp := t.TempDir()
	ops := writeFiles(t, filepath.Join(tmp, "ops"), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id } }\n"})
	base := []string{"-operations", ops, "-upstream", "ws://127.0.0.1:1/graphql", "-upstream", "gql=ws://127.0.0.1:2/graphql"}
	parse := func(t *testing.T, args ...string) (*config, gqlpush.Config) {
		t.Helper()
		cfg, err := parseConfig(append(append([]string{}, base...), args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg, cfg.handlerConfig()
	}

	t.Run("defaults", func(t *testing.T) {
		cfg, hc := parse(t)
		if cfg.jwt != nil || hc.Authenticator != nil {
			t.Errorf("an authenticator without -jwt-secret-file or -jwks: %+v", cfg.jwt)
		}
		if hc.MaxStreams != 0 || hc.MaxStreamsPerPrincipal != 0 || hc.MaxAnonymousStreams != 0 || hc.MaxSubscriptions != 0 || hc.MaxUpstreamConns != 0 {
			t.Errorf("caps %d %d %d %d %d: want none", hc.MaxStreams, hc.MaxStreamsPerPrincipal, hc.MaxAnonymousStreams, hc.MaxSubscriptions, hc.MaxUpstreamConns)
		}
		if hc.CORSOrigins != nil || hc.ClientAddress != nil || cfg.trustedProxies != nil {
			t.Errorf("origins %q, client address set %v, trusted proxies %v: want none", hc.CORSOrigins, hc.ClientAddress != nil, cfg.trustedProxies)
		}
		for _, u := range hc.Upstreams {
			if u.ForwardHeaders != nil {
				t.Errorf("upstream %q forwards %q", u.Name, u.ForwardHeaders)
			}
		}
		if cfg.authLabel() != "none: every caller is anonymous" {
			t.Errorf("auth %q", cfg.authLabel())
		}
	})

	t.Run("every flag", func(t *testing.T) {
		secret := writeSecret(t, tmp, testSecret+"\r\n", 0o600)
		cfg, hc := parse(t, "-jwt-secret-file", secret, "-jwt-issuer", jwttest.Iss, "-jwt-audience", jwttest.Aud,
			"-auth-cookie", "session", "-roles-claim", "realm_access.roles", "-jwt-leeway", "5s",
			"-forward-header", "x-tenant", "-forward-header", "Authorization",
			"-max-streams", "100", "-max-streams-per-principal", "3", "-max-anonymous-streams", "40",
			"-max-subscriptions", "500", "-max-upstream-conns", "8",
			"-trusted-proxy", "192.0.2.0/24", "-trusted-proxy", "2001:db8::1", "-client-ip-header", "x-real-ip",
			"-cors-origin", "https://app.example.com", "-cors-origin", "http://localhost:3000")
		j := cfg.jwt
		if j == nil {
			t.Fatal("no JWT configuration")
		}
		if string(j.Secret) != testSecret {
			t.Errorf("the secret read is %d bytes, want the file less its line end (%d bytes)", len(j.Secret), len(testSecret))
		}
		if j.JWKS != nil || j.JWKSURL != "" || j.Issuer != jwttest.Iss || j.Audience != jwttest.Aud || j.Cookie != "session" || j.RolesClaim != "realm_access.roles" || j.Leeway != 5*time.Second {
			t.Errorf("JWT configuration: issuer %q audience %q cookie %q roles %q leeway %v, JWKS %d bytes, URL %q",
				j.Issuer, j.Audience, j.Cookie, j.RolesClaim, j.Leeway, len(j.JWKS), j.JWKSURL)
		}
		if want := "HS256 secret from " + secret; cfg.authLabel() != want {
			t.Errorf("auth %q, want %q", cfg.authLabel(), want)
		}
		if hc.MaxStreams != 100 || hc.MaxStreamsPerPrincipal != 3 || hc.MaxAnonymousStreams != 40 || hc.MaxSubscriptions != 500 || hc.MaxUpstreamConns != 8 {
			t.Errorf("caps %d %d %d %d %d, want 100 3 40 500 8", hc.MaxStreams, hc.MaxStreamsPerPrincipal, hc.MaxAnonymousStreams, hc.MaxSubscriptions, hc.MaxUpstreamConns)
		}
		if want := []string{"https://app.example.com", "http://localhost:3000"}; !slices.Equal(hc.CORSOrigins, want) {
			t.Errorf("CORS origins %q, want %q", hc.CORSOrigins, want)
		}
		// As given: gqlpush canonicalises the names.
		for _, u := range hc.Upstreams {
			if want := []string{"x-tenant", "Authorization"}; !slices.Equal(u.ForwardHeaders, want) {
				t.Errorf("upstream %q forwards %q, want %q", u.Name, u.ForwardHeaders, want)
			}
		}
		if cfg.clientIPHeader != "X-Real-Ip" {
			t.Errorf("client IP header %q, want X-Real-Ip", cfg.clientIPHeader)
		}
		checkClientAddress(t, hc, "X-Real-Ip", []clientAddressCase{
			{"from a trusted proxy", "192.0.2.9:40000", "203.0.113.7", "203.0.113.7"},
			{"from the trusted IPv6 proxy", "[2001:db8::1]:443", "203.0.113.7", "203.0.113.7"},
			{"from elsewhere", "198.51.100.1:40000", "203.0.113.7", "198.51.100.1"},
		})
		if len(cfg.warnings) > 0 {
			t.Errorf("warnings %q, want none", cfg.warnings)
		}
	})

	t.Run("trusted proxies", func(t *testing.T) {
		cfg, hc := parse(t, "-max-streams-per-principal", "1", "-trusted-proxy", "10.1.2.3/8", "-trusted-proxy", "192.0.2.1",
			"-trusted-proxy", "::ffff:198.51.100.7", "-trusted-proxy", "::ffff:198.18.0.0/111", "-trusted-proxy", "2001:DB8::/32")
		want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"),
			netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:db8::/32")}
		if !slices.Equal(cfg.trustedProxies, want) {
			t.Errorf("trusted proxies %v, want %v", cfg.trustedProxies, want)
		}
		if cfg.clientIPHeader != "X-Forwarded-For" {
			t.Errorf("client IP header %q, want X-Forwarded-For by default", cfg.clientIPHeader)
		}
		if len(cfg.warnings) > 0 {
			t.Errorf("warnings %q, want none", cfg.warnings)
		}
		// The rightmost address that is not a trusted proxy's: what the
		// client wrote to the left of its own address is never read.
		checkClientAddress(t, hc, "X-Forwarded-For", []clientAddressCase{
			{"no header", "10.0.0.1:40000", "", "10.0.0.1"},
			{"one hop", "10.0.0.1:40000", "203.0.113.7", "203.0.113.7"},
			{"a forged hop", "10.0.0.1:40000", "9.9.9.9, 203.0.113.7", "203.0.113.7"},
			{"through trusted proxies", "10.0.0.1:40000", "9.9.9.9, 203.0.113.7, 198.19.0.5, 192.0.2.1, 10.9.9.9", "203.0.113.7"},
			{"through trusted proxies alone", "10.0.0.1:40000", "192.0.2.1, 10.9.9.9", "192.0.2.1"},
			{"a hop that is no address", "10.0.0.1:40000", "203.0.113.7, unknown", "10.0.0.1"},
			{"through a trusted proxy, mapped", "[::ffff:10.0.0.1]:40000", "203.0.113.7, ::ffff:198.51.100.7", "203.0.113.7"},
			{"from an untrusted peer", "198.51.100.1:40000", "203.0.113.7", "198.51.100.1"},
		})

		cfg, _ = parse(t, "-max-streams-per-principal", "1", "-trusted-proxy", "0.0.0.0/0")
		if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "-trusted-proxy 0.0.0.0/0: trusts every address") {
			t.Errorf("warnings %q, want one about trusting every address", cfg.warnings)
		}
	})

	t.Run("more streams than connections", func(t *testing.T) {
		cfg, _ := parse(t, "-max-streams", "20000")
		if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "-max-streams 20000 is more than -max-conns 10000") {
			t.Errorf("warnings %q, want one about -max-conns", cfg.warnings)
		}
		for _, args := range [][]string{{"-max-streams", "20000", "-max-conns", "0"}, {"-max-streams", "50", "-max-conns", "50"}} {
			if cfg, _ := parse(t, args...); len(cfg.warnings) > 0 {
				t.Errorf("%q: warnings %q, want none", args, cfg.warnings)
			}
		}
	})

	t.Run("defaults with a secret", func(t *testing.T) {
		// One line end goes, the rest of the file is the secret.
		secret := writeSecret(t, tmp, testSecret+"\n\n", 0o600)
		cfg, _ := parse(t, "-jwt-secret-file", secret, "-auth-cookie", "-")
		j := cfg.jwt
		if string(j.Secret) != testSecret+"\n" || j.Issuer != "" || j.Audience != "" || j.Cookie != "-" || j.RolesClaim != gqlpushjwt.DefaultRolesClaim || j.Leeway != gqlpushjwt.DefaultLeeway {
			t.Errorf("JWT configuration: %d-byte secret, issuer %q audience %q cookie %q roles %q leeway %v",
				len(j.Secret), j.Issuer, j.Audience, j.Cookie, j.RolesClaim, j.Leeway)
		}
	})

	t.Run("no leeway", func(t *testing.T) {
		secret := writeSecret(t, tmp, testSecret, 0o600)
		// gqlpushjwt reads a zero Leeway as its default: none is negative.
		for _, v := range []string{"0s", "0"} {
			if cfg, _ := parse(t, "-jwt-secret-file", secret, "-jwt-leeway", v); cfg.jwt.Leeway >= 0 {
				t.Errorf("-jwt-leeway %s: Leeway %v, want a negative one, which gqlpushjwt reads as none", v, cfg.jwt.Leeway)
			}
		}
	})

	t.Run("world-readable secret", func(t *testing.T) {
		secret := writeSecret(t, tmp, testSecret, 0o644)
		cfg, _ := parse(t, "-jwt-secret-file", secret)
		if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "readable by group or others (mode -rw-r--r--)") {
			t.Errorf("warnings %q", cfg.warnings)
		}
	})

	t.Run("key set URL", func(t *testing.T) {
		raw := "https://user:hunter2@issuer.example.com/.well-known/jwks.json?key=abc123"
		cfg, _ := parse(t, "-jwks", raw)
		if cfg.jwt.JWKSURL != raw || cfg.jwt.Secret != nil || cfg.jwt.JWKS != nil || cfg.jwt.Cookie != gqlpushjwt.DefaultCookie {
			t.Errorf("JWT configuration: URL %q, %d-byte secret, JWKS %d bytes, cookie %q", cfg.jwt.JWKSURL, len(cfg.jwt.Secret), len(cfg.jwt.JWKS), cfg.jwt.Cookie)
		}
		if want := "JSON Web Key Set at https://user:xxxxx@issuer.example.com/.well-known/jwks.json"; cfg.authLabel() != want {
			t.Errorf("auth %q, want %q", cfg.authLabel(), want)
		}
		if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "-jwt-audience") {
			t.Errorf("warnings %q, want one about the audience", cfg.warnings)
		}

		cfg, _ = parse(t, "-jwks", "http://keys.example.com/jwks", "-jwt-audience", jwttest.Aud)
		if len(cfg.warnings) != 1 || !strings.Contains(cfg.warnings[0], "plain http") {
			t.Errorf("warnings %q, want one about plain http", cfg.warnings)
		}
	})
}

// A clientAddressCase is a request to the ClientAddress of the flags: from
// remote, with header (when not empty), and the address it counts by.
type clientAddressCase struct{ name, remote, header, want string }

func checkClientAddress(t *testing.T, hc gqlpush.Config, header string, cases []clientAddressCase) {
	t.Helper()
	if hc.ClientAddress == nil {
		t.Fatal("no ClientAddress")
	}
	for _, tc := range cases {
		r := httptest.NewRequest(http.MethodGet, "/operations/Messages", nil)
		r.RemoteAddr = tc.remote
		if tc.header != "" {
			r.Header.Set(header, tc.header)
		}
		if got := hc.ClientAddress(r); got != tc.want {
			t.Errorf("%s: %s: %q from %s: client address %q, want %q", tc.name, header, tc.header, tc.remote, got, tc.want)
		}
	}
}

// TestAuthEndToEnd runs the gateway with an HS256 secret in front of the
// in-process upstream: tokens in the Authorization header and in the
// cookie, a claim variable, a forwarded header, the stream caps by subject
// and by the address a proxy reports, and CORS.
func TestAuthEndToEnd(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := writeFiles(t, t.TempDir(), map[string]string{"chat.graphql": gqlpushtest.ChatSchema})
	ops := writeFiles(t, filepath.Join(dir, "ops"), authOps)
	secret := writeSecret(t, dir, testSecret+"\n", 0o600)
	g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-schema", "gql="+filepath.Join(dir, "chat.graphql"),
		"-jwt-secret-file", secret, "-jwt-issuer", jwttest.Iss, "-jwt-audience", jwttest.Aud, "-auth-cookie", "session",
		"-forward-header", "X-Tenant", "-max-streams-per-principal", "1",
		"-trusted-proxy", "127.0.0.1", "-trusted-proxy", "10.0.0.0/8", "-client-ip-header", "X-Forwarded-For",
		"-cors-origin", "https://app.example.com", "-heartbeat", "1h")

	withRoom := func(sub, room string) jwt.MapClaims {
		c := jwttest.Claims(sub)
		c["room"] = room
		return c
	}
	alice := jwttest.HS256(t, []byte(testSecret), withRoom("alice", "a"))
	bob := jwttest.HS256(t, []byte(testSecret), withRoom("bob", "b"))
	expired := jwttest.Claims("alice")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	otherAudience := jwttest.Claims("alice")
	otherAudience["aud"] = "another-app"
	otherIssuer := jwttest.Claims("alice")
	otherIssuer["iss"] = "https://elsewhere.test"
	bad := map[string]string{
		"another secret": jwttest.HS256(t, []byte(strings.Repeat("x", 32)), jwttest.Claims("alice")),
		"expired":        jwttest.HS256(t, []byte(testSecret), expired),
		"other audience": jwttest.HS256(t, []byte(testSecret), otherAudience),
		"other issuer":   jwttest.HS256(t, []byte(testSecret), otherIssuer),
		"tampered":       alice[:len(alice)-4] + "AAAA",
	}

	// No token, where one is needed.
	for _, path := range []string{"/operations/Mine?wg_sse=true", "/operations/Room?wg_sse=true", "/operations/Count?wg_subscribe_once=true"} {
		resp, body := g.do(t, http.MethodGet, path, nil)
		wantRefused(t, path+" without a token", resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", "Bearer")
	}
	// Tokens that are not valid, even where none is needed.
	for name, tok := range bad {
		for _, path := range []string{"/operations/Mine?wg_sse=true", "/operations/Open?wg_sse=true"} {
			resp, body := g.do(t, http.MethodGet, path, bearer(tok))
			wantRefused(t, path+" with a token of "+name, resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", `Bearer error="invalid_token"`)
		}
	}
	// The token in the default cookie is not read: -auth-cookie names
	// another.
	resp, body := g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", http.Header{"Cookie": {gqlpushjwt.DefaultCookie + "=" + alice}})
	wantRefused(t, "token in the default cookie", resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", "Bearer")

	// Alice by the Authorization header, Bob by the cookie.
	header := bearer(alice)
	header.Set("X-Tenant", "acme")
	sa := g.openOK(t, "/operations/Mine?wg_sse=true", header)
	sb := g.openOK(t, "/operations/Room?wg_sse=true", http.Header{"Cookie": {"session=" + bob}})
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 2); err != nil {
		t.Fatalf("upstream runs %d subscriptions, want 2", up.Subscriptions())
	}
	up.Chat.Post("b", "for bob")
	if f := sa.dataFrame(t); !strings.Contains(f, `"content":"for bob"`) {
		t.Errorf("alice, on every room, got %q", f)
	}
	if f, want := sb.dataFrame(t), `{"data":{"gql_messageCreated":{"content":"for bob","room":"b"}}}`; !strings.Contains(f, "data: "+want+"\n") {
		t.Errorf("bob got %q, want %s", f, want)
	}
	// Bob's room is his token's: a message to room a skips him.
	up.Chat.Post("a", "for alice")
	up.Chat.Post("b", "for bob again")
	if f := sa.dataFrame(t); !strings.Contains(f, `"content":"for alice"`) {
		t.Errorf("alice got %q", f)
	}
	if f := sb.dataFrame(t); !strings.Contains(f, `"content":"for bob again"`) {
		t.Errorf("bob got %q, want his second message", f)
	}
	var rooms []string
	for _, m := range up.Received() {
		if m.Type == "subscribe" {
			rooms = append(rooms, jsonField(m.Variables(), "room"))
		}
	}
	if !slices.Contains(rooms, `"b"`) {
		t.Errorf("no subscription upstream with the room of bob's token; rooms: %q", rooms)
	}

	// X-Tenant reached the upstream on alice's connection; the token, not
	// forwarded, never did.
	tenants := 0
	for _, c := range up.Conns() {
		if c.Header.Get("X-Tenant") == "acme" {
			tenants++
		}
		if c.Header.Get("Authorization") != "" || c.Header.Get("Cookie") != "" {
			t.Errorf("connection %d got the caller's credentials: %v", c.ID, c.Header)
		}
	}
	if tenants != 1 {
		t.Errorf("%d upstream connections with X-Tenant: acme, want 1: %+v", tenants, up.Conns())
	}

	// One stream per subject: Alice's second is refused, whatever carries
	// her token and whichever the operation.
	resp, body = g.do(t, http.MethodGet, "/operations/Open?wg_sse=true", http.Header{"Cookie": {"session=" + alice}})
	wantRefused(t, "alice's second stream", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", "5")

	// Anonymous callers count by the address the proxies report: the
	// test's requests come from 127.0.0.1, a trusted proxy, and 10.0.0.1
	// is another.
	g.openOK(t, "/operations/Open?wg_sse=true", http.Header{"X-Forwarded-For": {"203.0.113.7, 10.0.0.1"}})
	resp, body = g.do(t, http.MethodGet, "/operations/Open?wg_sse=true", http.Header{"X-Forwarded-For": {"203.0.113.7"}})
	wantRefused(t, "second stream of 203.0.113.7", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", "5")
	g.openOK(t, "/operations/Open?wg_sse=true", http.Header{"X-Forwarded-For": {"198.51.100.1"}})
	// Without the header, by the remote address: the proxy's.
	g.openOK(t, "/operations/Open?wg_sse=true", nil)
	resp, body = g.do(t, http.MethodGet, "/operations/Open?wg_sse=true", nil)
	wantRefused(t, "second stream of the remote address", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", "5")

	// CORS: a listed origin's preflight is answered, another's refused.
	preflight := func(origin string) http.Header {
		return http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"GET"}, "Access-Control-Request-Headers": {"authorization"}}
	}
	resp, _ = g.do(t, http.MethodOptions, "/operations/Mine", preflight("https://app.example.com"))
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight of a listed origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = g.do(t, http.MethodOptions, "/operations/Mine", preflight("https://evil.example.com"))
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight of another origin: %d %v", resp.StatusCode, resp.Header)
	}
	carol := jwttest.HS256(t, []byte(testSecret), jwttest.Claims("carol"))
	resp, body = g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", http.Header{"Origin": {"https://app.example.com"}, "Cookie": {"session=" + carol}})
	if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("cross-origin request: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
		t.Errorf("cross-origin request: Access-Control-Allow-Origin %q", got)
	}

	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	log := g.stderr.String()
	if want := "auth=\"HS256 secret from " + secret + "\""; !strings.Contains(log, want) {
		t.Errorf("log does not say %s:\n%s", want, log)
	}
	if strings.Contains(log, "level=WARN") {
		t.Errorf("warnings with a private secret file:\n%s", log)
	}
	checkNoSecrets(t, g, append(slices.Collect(maps.Values(bad)), testSecret, alice, bob, carol)...)
}

// TestSecretFileWarning: a secret file others may read is used, with a
// warning that names the file and never shows the secret.
func TestSecretFileWarning(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	secret := writeSecret(t, dir, testSecret, 0o644)
	g := startGateway(t, "-operations", writeFiles(t, filepath.Join(dir, "ops"), authOps), "-upstream", "gql="+up.URL, "-jwt-secret-file", secret)
	tok := jwttest.HS256(t, []byte(testSecret), jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	resp, body := g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", bearer(tok))
	if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if log := g.stderr.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, secret+": readable by group or others (mode -rw-r--r--)") {
		t.Errorf("no warning about the secret file's mode:\n%s", log)
	}
	checkNoSecrets(t, g, testSecret, tok)
}

// TestJWKSFile verifies RS256 tokens with a key set read from a file.
func TestJWKSFile(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	is := jwttest.NewIssuer(t)
	dir := writeFiles(t, t.TempDir(), map[string]string{"jwks.json": string(is.JWKS)})
	g := startGateway(t, "-operations", writeFiles(t, filepath.Join(dir, "ops"), authOps), "-upstream", "gql="+up.URL,
		"-jwks", filepath.Join(dir, "jwks.json"), "-jwt-issuer", jwttest.Iss)

	good := is.RS256(t, jwttest.Claims("alice"))
	resp, body := g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", bearer(good))
	if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("RS256 token: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	resp, body = g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", http.Header{"Cookie": {gqlpushjwt.DefaultCookie + "=" + good}})
	if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("RS256 token in the default cookie: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	other := jwttest.NewIssuer(t)
	bad := map[string]string{
		// The public key set passed off as an HMAC secret.
		"HS256 keyed with the key set": jwttest.Sign(t, jwt.SigningMethodHS256, "rsa1", is.JWKS, jwttest.Claims("alice")),
		"another key, same key id":     other.RS256(t, jwttest.Claims("alice")),
		"unknown key id":               jwttest.Sign(t, jwt.SigningMethodRS256, "rsa2", is.RSA, jwttest.Claims("alice")),
	}
	for name, tok := range bad {
		resp, body := g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", bearer(tok))
		wantRefused(t, name, resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	resp, body = g.do(t, http.MethodGet, "/operations/Count?wg_subscribe_once=true", nil)
	wantRefused(t, "no token", resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", "Bearer")

	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	// No -jwt-audience with a key set: the operator is warned.
	if log := g.stderr.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "tokens of any audience are accepted") {
		t.Errorf("no warning about the audience:\n%s", log)
	}
	checkNoSecrets(t, g, append(slices.Collect(maps.Values(bad)), good)...)
}

// TestJWKSURL verifies RS256 tokens with a key set fetched from a URL that
// holds credentials, which never show, and caps the streams in all.
func TestJWKSURL(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	is := jwttest.NewIssuer(t)
	var fetches atomic.Int32
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		if r.URL.Path != "/jwks" || r.URL.Query().Get("key") != "abc123" || user != "gw" || pass != "hunter2" {
			http.NotFound(w, r)
			return
		}
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(is.JWKS)
	}))
	t.Cleanup(keys.Close)
	jwksURL := strings.Replace(keys.URL, "http://", "http://gw:hunter2@", 1) + "/jwks?key=abc123"
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), authOps), "-upstream", "gql="+up.URL,
		"-jwks", jwksURL, "-jwt-issuer", jwttest.Iss, "-jwt-audience", jwttest.Aud, "-max-streams", "1", "-heartbeat", "1h")
	if n := fetches.Load(); n < 1 {
		t.Fatalf("the gateway listens, and fetched the key set %d times", n)
	}

	alice, bob := is.RS256(t, jwttest.Claims("alice")), is.RS256(t, jwttest.Claims("bob"))
	s := g.openOK(t, "/operations/Mine?wg_sse=true", bearer(alice))
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatalf("upstream runs %d subscriptions, want 1", up.Subscriptions())
	}
	up.Chat.Post("", "hello")
	if f := s.dataFrame(t); !strings.Contains(f, `"content":"hello"`) {
		t.Errorf("got %q", f)
	}
	// -max-streams 1: Bob's stream is one too many.
	resp, body := g.do(t, http.MethodGet, "/operations/Mine?wg_sse=true", bearer(bob))
	wantRefused(t, "a second stream", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", "5")
	resp, body = g.do(t, http.MethodGet, "/operations/Mine?wg_sse=true", nil)
	wantRefused(t, "no token", resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", "Bearer")

	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	log := g.stderr.String()
	if want := "JSON Web Key Set at " + strings.Replace(keys.URL, "http://", "http://gw:xxxxx@", 1) + "/jwks"; !strings.Contains(log, want) {
		t.Errorf("log does not say %q:\n%s", want, log)
	}
	if strings.Contains(log, "level=WARN") {
		t.Errorf("warnings with a loopback URL and an audience:\n%s", log)
	}
	checkNoSecrets(t, g, "hunter2", "abc123", alice, bob)
}

// TestJWTLeeway runs the gateway with the default -jwt-leeway and with
// others: a token whose exp passed 5 s ago is accepted within the default
// 30 s and refused with 0s, and a stream opened with a token ends once its
// exp plus the leeway has passed.
func TestJWTLeeway(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	ops := writeFiles(t, filepath.Join(dir, "ops"), authOps)
	secret := writeSecret(t, dir, testSecret, 0o600)
	// token is alice's, issued an hour before it expires at exp.
	token := func(exp time.Time) string {
		c := jwttest.Claims("alice")
		c["iat"], c["nbf"], c["exp"] = exp.Add(-time.Hour).Unix(), exp.Add(-time.Hour).Unix(), exp.Unix()
		return jwttest.HS256(t, []byte(testSecret), c)
	}
	const once = "/operations/Count?wg_subscribe_once=true"
	expired := token(time.Now().Add(-5 * time.Second))

	t.Run("default", func(t *testing.T) {
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-jwt-secret-file", secret)
		resp, body := g.do(t, http.MethodGet, once, bearer(expired))
		if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("a token 5 s past its exp: %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	})

	t.Run("none", func(t *testing.T) {
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-jwt-secret-file", secret, "-jwt-leeway", "0s")
		resp, body := g.do(t, http.MethodGet, once, bearer(expired))
		wantRefused(t, "a token 5 s past its exp", resp, body, http.StatusUnauthorized, gqlpush.CodeUnauthenticated, "WWW-Authenticate", `Bearer error="invalid_token"`)
		// A token still valid is accepted.
		resp, body = g.do(t, http.MethodGet, once, bearer(token(time.Now().Add(time.Minute))))
		if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("a valid token: %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	})

	t.Run("stream ends at exp plus leeway", func(t *testing.T) {
		const leeway = 4 * time.Second
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-jwt-secret-file", secret, "-jwt-leeway", leeway.String(), "-heartbeat", "1h")
		// exp is a whole second, at least one in the past: the token is
		// accepted for two seconds more at least, and the stream ends
		// within three.
		exp := time.Unix(time.Now().Unix()-1, 0)
		s := g.openOK(t, "/operations/Mine?wg_sse=true", bearer(token(exp)))
		want := `data: {"errors":[{"message":"token expired","extensions":{"code":"UNAUTHENTICATED"}}]}` + "\n\n" + completeEvt
		if rest := s.rest(t); rest != want {
			t.Errorf("the stream ended with %q, want %q", rest, want)
		}
		if now := time.Now(); now.Before(exp.Add(leeway)) {
			t.Errorf("the stream ended at %v, before exp %v plus the leeway %v", now, exp, leeway)
		}
	})
}
