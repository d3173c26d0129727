package gqlpush_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush"
)

// issuer mints tokens with real keys: an RSA, an EC and an Ed25519 key, each
// with a key id, published as a JSON Web Key Set.
type issuer struct {
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
	jwks []byte
}

const (
	testIssuer   = "https://issuer.test"
	testAudience = "gqlpush"
)

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	pad := func(n *big.Int, size int) string { return b64(n.FillBytes(make([]byte, size))) }
	set := map[string]any{"keys": []any{
		map[string]any{"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		map[string]any{"kty": "EC", "kid": "ec1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": pad(ek.X, 32), "y": pad(ek.Y, 32)},
		map[string]any{"kty": "OKP", "kid": "ed1", "alg": "EdDSA", "use": "sig", "crv": "Ed25519", "x": b64(dk.Public().(ed25519.PublicKey))},
	}}
	jwks, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{rsa: rk, ec: ek, ed: dk, jwks: jwks}
}

// claims are good claims for the test audience, valid for an hour.
func (is *issuer) claims(sub string, roles ...string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if roles != nil {
		c["roles"] = roles
	}
	return c
}

func (is *issuer) sign(t testing.TB, method jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (is *issuer) rs256(t testing.TB, c jwt.MapClaims) string {
	return is.sign(t, jwt.SigningMethodRS256, "rsa1", is.rsa, c)
}

// authOperations guard the countdown with each rule.
var authOperations = map[string]string{
	"Open":       `subscription { gql_countdown(from: 1) }`,
	"Auth":       `subscription @auth { gql_countdown(from: 1) }`,
	"RequireAll": `subscription @rbac(requireMatchAll: [admin, editor]) { gql_countdown(from: 1) }`,
	"RequireAny": `subscription @rbac(requireMatchAny: [admin, "editor"]) { gql_countdown(from: 1) }`,
	"DenyAll":    `subscription @rbac(denyMatchAll: [banned, suspended]) { gql_countdown(from: 1) }`,
	"DenyAny":    `subscription @rbac(denyMatchAny: [banned]) { gql_countdown(from: 1) }`,
	"Mixed":      `subscription @auth @rbac(requireMatchAny: [reader], denyMatchAny: [banned]) { gql_countdown(from: 1) }`,
	"Mine":       `subscription ($room: String! @fromClaim(name: "org.room")) { gql_messageCreated(room: $room) { content room } }`,
	"Count":      `subscription ($n: Int! @fromClaim(name: "n")) { gql_countdown(from: $n) }`,
}

func newAuthGateway(t *testing.T, is *issuer, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{JWKS: is.jwks, Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	return newGateway(t, func(cfg *gqlpush.Config) {
		cfg.Operations = mustParse(t, authOperations)
		cfg.Authenticator = a
		if edit != nil {
			edit(cfg)
		}
	})
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func TestAuthTable(t *testing.T) {
	is := newIssuer(t)
	g := newAuthGateway(t, is, nil)
	good := is.rs256(t, is.claims("alice", "admin", "editor", "reader"))
	with := func(edit func(jwt.MapClaims)) string {
		c := is.claims("alice", "reader")
		edit(c)
		return is.rs256(t, c)
	}
	roles := func(r ...string) http.Header { return bearer(is.rs256(t, is.claims("bob", r...))) }
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&is.rsa.PublicKey))})
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	unsigned := strings.Join(strings.Split(good, ".")[:2], ".") + "."
	noneToken := must(jwt.NewWithClaims(jwt.SigningMethodNone, is.claims("alice", "admin")).SignedString(jwt.UnsafeAllowNoneSignatureType))
	tamperedParts := strings.Split(good, ".")
	tamperedParts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","roles":["admin","editor"],"exp":9999999999,"iss":"` + testIssuer + `","aud":"` + testAudience + `"}`))

	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		code   string
	}{
		// Credentials.
		{"open operation, no token", "/operations/Open?wg_subscribe_once", nil, 200, ""},
		{"open operation, good token", "/operations/Open?wg_subscribe_once", bearer(good), 200, ""},
		{"missing token", "/operations/Auth?wg_subscribe_once", nil, 401, "UNAUTHENTICATED"},
		{"good RS256 token", "/operations/Auth?wg_subscribe_once", bearer(good), 200, ""},
		{"good ES256 token", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodES256, "ec1", is.ec, is.claims("a"))), 200, ""},
		{"good EdDSA token", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodEdDSA, "ed1", is.ed, is.claims("a"))), 200, ""},
		{"token in a cookie", "/operations/Auth?wg_subscribe_once", http.Header{"Cookie": {"access_token=" + good}}, 200, ""},
		{"cookie and header agree", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good}, "Cookie": {"access_token=" + good}}, 200, ""},
		{"cookie and header disagree", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good}, "Cookie": {"access_token=" + is.rs256(t, is.claims("eve"))}}, 401, "UNAUTHENTICATED"},
		{"two cookies", "/operations/Auth?wg_subscribe_once", http.Header{"Cookie": {"access_token=" + good + "; access_token=" + good}}, 401, "UNAUTHENTICATED"},
		{"two Authorization headers", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, 401, "UNAUTHENTICATED"},
		{"malformed token", "/operations/Auth?wg_subscribe_once", bearer("not.a.jwt"), 401, "UNAUTHENTICATED"},
		{"malformed token on an open operation", "/operations/Open?wg_subscribe_once", bearer("garbage"), 401, "UNAUTHENTICATED"},
		{"Basic credentials", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}, 401, "UNAUTHENTICATED"},
		{"empty bearer", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer "}}, 401, "UNAUTHENTICATED"},
		{"oversized token", "/operations/Auth?wg_subscribe_once", bearer(strings.Repeat("a", gqlpush.MaxTokenBytes+1)), 401, "UNAUTHENTICATED"},
		{"alg none", "/operations/Auth?wg_subscribe_once", bearer(noneToken), 401, "UNAUTHENTICATED"},
		{"unsigned", "/operations/Auth?wg_subscribe_once", bearer(unsigned), 401, "UNAUTHENTICATED"},
		{"HS256 signed with the RSA public key", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodHS256, "rsa1", rsaPublicPEM, is.claims("alice", "admin"))), 401, "UNAUTHENTICATED"},
		{"wrong signature", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodRS256, "rsa1", otherKey, is.claims("alice"))), 401, "UNAUTHENTICATED"},
		{"tampered claims", "/operations/Auth?wg_subscribe_once", bearer(strings.Join(tamperedParts, ".")), 401, "UNAUTHENTICATED"},
		{"unknown kid", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodRS256, "rsa9", is.rsa, is.claims("alice"))), 401, "UNAUTHENTICATED"},
		{"key of another type for the kid", "/operations/Auth?wg_subscribe_once", bearer(is.sign(t, jwt.SigningMethodES256, "rsa1", is.ec, is.claims("alice"))), 401, "UNAUTHENTICATED"},
		{"expired", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"expired within the leeway", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-5 * time.Second).Unix() })), 200, ""},
		{"no expiry", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { delete(c, "exp") })), 401, "UNAUTHENTICATED"},
		{"not yet valid", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"issued in the future", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"wrong issuer", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })), 401, "UNAUTHENTICATED"},
		{"no issuer", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { delete(c, "iss") })), 401, "UNAUTHENTICATED"},
		{"wrong audience", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), 401, "UNAUTHENTICATED"},
		{"audience among several", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["aud"] = []string{"x", testAudience} })), 200, ""},
		{"token in the query string", "/operations/Auth?wg_subscribe_once&access_token=" + good, nil, 401, "UNAUTHENTICATED"},
		{"token in the query string, open operation", "/operations/Open?wg_subscribe_once&access_token=" + good, nil, 400, "BAD_USER_INPUT"},
		// Roles.
		{"requireMatchAll: all", "/operations/RequireAll?wg_subscribe_once", roles("admin", "editor"), 200, ""},
		{"requireMatchAll: some", "/operations/RequireAll?wg_subscribe_once", roles("admin"), 403, "FORBIDDEN"},
		{"requireMatchAll: none", "/operations/RequireAll?wg_subscribe_once", roles(), 403, "FORBIDDEN"},
		{"requireMatchAll: anonymous", "/operations/RequireAll?wg_subscribe_once", nil, 401, "UNAUTHENTICATED"},
		{"requireMatchAny: one", "/operations/RequireAny?wg_subscribe_once", roles("editor"), 200, ""},
		{"requireMatchAny: none", "/operations/RequireAny?wg_subscribe_once", roles("reader"), 403, "FORBIDDEN"},
		{"denyMatchAll: some", "/operations/DenyAll?wg_subscribe_once", roles("banned"), 200, ""},
		{"denyMatchAll: all", "/operations/DenyAll?wg_subscribe_once", roles("banned", "suspended", "reader"), 403, "FORBIDDEN"},
		{"denyMatchAny: clean", "/operations/DenyAny?wg_subscribe_once", roles("reader"), 200, ""},
		{"denyMatchAny: forbidden role present", "/operations/DenyAny?wg_subscribe_once", roles("reader", "banned"), 403, "FORBIDDEN"},
		{"two rules, both hold", "/operations/Mixed?wg_subscribe_once", roles("reader"), 200, ""},
		{"two rules, one fails", "/operations/Mixed?wg_subscribe_once", roles("reader", "banned"), 403, "FORBIDDEN"},
		{"roles as one string", "/operations/RequireAll?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["roles"] = "admin editor" })), 200, ""},
		{"roles of the wrong type", "/operations/RequireAny?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["roles"] = 7 })), 401, "UNAUTHENTICATED"},
		{"a role of the wrong type", "/operations/DenyAny?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["roles"] = []any{"reader", []string{"banned"}} })), 401, "UNAUTHENTICATED"},
		// Claims.
		{"claim variable", "/operations/Count?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["n"] = 2 })), 200, ""},
		{"claim variable supplied by the client", "/operations/Count?wg_subscribe_once&n=5", bearer(with(func(c jwt.MapClaims) { c["n"] = 2 })), 400, "BAD_USER_INPUT"},
		{"claim variable in wg_variables", "/operations/Count?wg_subscribe_once&wg_variables=%7B%22n%22%3A5%7D", bearer(with(func(c jwt.MapClaims) { c["n"] = 2 })), 400, "BAD_USER_INPUT"},
		{"claim missing", "/operations/Count?wg_subscribe_once", bearer(good), 400, "BAD_USER_INPUT"},
		{"claim of the wrong type", "/operations/Count?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["n"] = "two" })), 400, "BAD_USER_INPUT"},
		{"claim variable, anonymous", "/operations/Count?wg_subscribe_once", nil, 401, "UNAUTHENTICATED"},
	}
	if len(tests) < 25 {
		t.Fatal("the table should hold at least 25 cases")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := g.do(t, tt.path, tt.header)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 {
				if body != `{"data":{"gql_countdown":1}}` && body != `{"data":{"gql_countdown":2}}` {
					t.Errorf("body %q", body)
				}
				return
			}
			msg, code := errorOf(t, body)
			if code != tt.code {
				t.Errorf("code %q, want %q", code, tt.code)
			}
			switch tt.status {
			case 401:
				if msg != "not authenticated" {
					t.Errorf("401 message %q tells more than the code", msg)
				}
				if wa := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("WWW-Authenticate %q", wa)
				}
			case 403:
				if msg != "forbidden" {
					t.Errorf("403 message %q tells more than the code", msg)
				}
			}
		})
	}
	if s := g.h.Stats(); s.Streams != 0 {
		t.Errorf("streams left: %+v", s)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestJWTAuthenticatorConfig(t *testing.T) {
	is := newIssuer(t)
	secret := []byte(strings.Repeat("s", 32))
	for _, tt := range []struct {
		name string
		cfg  gqlpush.JWTConfig
		want string
	}{
		{"no keys", gqlpush.JWTConfig{}, "exactly one of"},
		{"two key sources", gqlpush.JWTConfig{Secret: secret, JWKS: is.jwks}, "exactly one of"},
		{"short secret", gqlpush.JWTConfig{Secret: []byte("short")}, "shorter than 32 bytes"},
		{"none", gqlpush.JWTConfig{Secret: secret, Algorithms: []string{"none"}}, `"none" cannot be used`},
		{"RS256 with a secret", gqlpush.JWTConfig{Secret: secret, Algorithms: []string{"RS256"}}, `"RS256" cannot be used`},
		{"HS256 with a key set", gqlpush.JWTConfig{JWKS: is.jwks, Algorithms: []string{"HS256"}}, `"HS256" cannot be used`},
		{"bad key set", gqlpush.JWTConfig{JWKS: []byte(`{"keys":[{"kty":"nope"}]}`)}, "JWKS"},
		{"unreachable key set URL", gqlpush.JWTConfig{JWKSURL: "http://user:secret@127.0.0.1:1/jwks?token=abc"}, "JWKSURL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := gqlpush.NewJWTAuthenticator(tt.cfg)
			if a != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "abc") {
				t.Errorf("the error shows a credential: %v", err)
			}
		})
	}
}

func TestJWTSecret(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{Secret: secret, Cookie: "session", RolesClaim: "realm_access.roles"})
	if err != nil {
		t.Fatal(err)
	}
	is := newIssuer(t)
	c := is.claims("alice")
	c["realm_access"] = map[string]any{"roles": []string{"admin"}}
	good := is.sign(t, jwt.SigningMethodHS256, "", secret, c)
	for _, tt := range []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"HS256", bearer(good), true},
		{"named cookie", http.Header{"Cookie": {"session=" + good}}, true},
		{"default cookie name unused", http.Header{"Cookie": {"access_token=" + good}}, false},
		{"HS512 not allowed", bearer(is.sign(t, jwt.SigningMethodHS512, "", secret, c)), false},
		{"RS256 not allowed", bearer(is.rs256(t, c)), false},
		{"another secret", bearer(is.sign(t, jwt.SigningMethodHS256, "", []byte(strings.Repeat("x", 32)), c)), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.Header = tt.header
			p, err := a.Authenticate(r)
			switch {
			case tt.ok && (err != nil || p == nil || p.Subject != "alice" || len(p.Roles) != 1 || p.Roles[0] != "admin"):
				t.Fatalf("got %+v %v", p, err)
			case !tt.ok && err == nil && p != nil:
				t.Fatalf("accepted: %+v", p)
			}
		})
	}
}

func TestJWKSURLRotation(t *testing.T) {
	first, second := newIssuer(t), newIssuer(t)
	var mu sync.Mutex
	current := first.jwks
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(current)
	}))
	defer jwks.Close()
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{JWKSURL: jwks.URL, Issuer: testIssuer})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	check := func(token string, ok bool) {
		t.Helper()
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header = bearer(token)
		p, err := a.Authenticate(r)
		if ok != (err == nil && p != nil) {
			t.Fatalf("accepted=%v (%v), want %v", err == nil, err, ok)
		}
	}
	check(first.rs256(t, first.claims("alice")), true)
	// The issuer rotates to a new key with a new id: the unknown id makes
	// the authenticator fetch the set again.
	mu.Lock()
	current = []byte(strings.ReplaceAll(string(second.jwks), `"rsa1"`, `"rsa2"`))
	mu.Unlock()
	check(second.sign(t, jwt.SigningMethodRS256, "rsa2", second.rsa, second.claims("alice")), true)
	// A token of the old key with the new id fails.
	check(first.sign(t, jwt.SigningMethodRS256, "rsa2", first.rsa, first.claims("alice")), false)
}
