package gqlpush_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
)

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

func newAuthGateway(t *testing.T, is *jwttest.Issuer, edit func(*gqlpush.Config)) *gateway {
	t.Helper()
	a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKS: is.JWKS, Issuer: jwttest.Iss, Audience: jwttest.Aud})
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
	is := jwttest.NewIssuer(t)
	g := newAuthGateway(t, is, nil)
	good := is.RS256(t, jwttest.Claims("alice", "admin", "editor", "reader"))
	with := func(edit func(jwt.MapClaims)) string {
		c := jwttest.Claims("alice", "reader")
		edit(c)
		return is.RS256(t, c)
	}
	roles := func(r ...string) http.Header { return bearer(is.RS256(t, jwttest.Claims("bob", r...))) }
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&is.RSA.PublicKey))})
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	unsigned := strings.Join(strings.Split(good, ".")[:2], ".") + "."
	noneToken := must(jwt.NewWithClaims(jwt.SigningMethodNone, jwttest.Claims("alice", "admin")).SignedString(jwt.UnsafeAllowNoneSignatureType))
	tamperedParts := strings.Split(good, ".")
	tamperedParts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","roles":["admin","editor"],"exp":9999999999,"iss":"` + jwttest.Iss + `","aud":"` + jwttest.Aud + `"}`))

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
		{"good ES256 token", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodES256, "ec1", is.EC, jwttest.Claims("a"))), 200, ""},
		{"good EdDSA token", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodEdDSA, "ed1", is.Ed25519, jwttest.Claims("a"))), 200, ""},
		{"token in a cookie", "/operations/Auth?wg_subscribe_once", http.Header{"Cookie": {"access_token=" + good}}, 200, ""},
		{"cookie and header agree", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good}, "Cookie": {"access_token=" + good}}, 200, ""},
		{"cookie and header disagree", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good}, "Cookie": {"access_token=" + is.RS256(t, jwttest.Claims("eve"))}}, 401, "UNAUTHENTICATED"},
		{"two cookies", "/operations/Auth?wg_subscribe_once", http.Header{"Cookie": {"access_token=" + good + "; access_token=" + good}}, 401, "UNAUTHENTICATED"},
		{"two Authorization headers", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, 401, "UNAUTHENTICATED"},
		{"malformed token", "/operations/Auth?wg_subscribe_once", bearer("not.a.jwt"), 401, "UNAUTHENTICATED"},
		{"malformed token on an open operation", "/operations/Open?wg_subscribe_once", bearer("garbage"), 401, "UNAUTHENTICATED"},
		{"Basic credentials", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}, 401, "UNAUTHENTICATED"},
		{"empty bearer", "/operations/Auth?wg_subscribe_once", http.Header{"Authorization": {"Bearer "}}, 401, "UNAUTHENTICATED"},
		{"oversized token", "/operations/Auth?wg_subscribe_once", bearer(strings.Repeat("a", gqlpushjwt.MaxTokenBytes+1)), 401, "UNAUTHENTICATED"},
		{"alg none", "/operations/Auth?wg_subscribe_once", bearer(noneToken), 401, "UNAUTHENTICATED"},
		{"unsigned", "/operations/Auth?wg_subscribe_once", bearer(unsigned), 401, "UNAUTHENTICATED"},
		{"HS256 signed with the RSA public key", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodHS256, "rsa1", rsaPublicPEM, jwttest.Claims("alice", "admin"))), 401, "UNAUTHENTICATED"},
		{"wrong signature", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa1", otherKey, jwttest.Claims("alice"))), 401, "UNAUTHENTICATED"},
		{"tampered claims", "/operations/Auth?wg_subscribe_once", bearer(strings.Join(tamperedParts, ".")), 401, "UNAUTHENTICATED"},
		{"unknown kid", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa9", is.RSA, jwttest.Claims("alice"))), 401, "UNAUTHENTICATED"},
		{"key of another type for the kid", "/operations/Auth?wg_subscribe_once", bearer(jwttest.Sign(t, jwt.SigningMethodES256, "rsa1", is.EC, jwttest.Claims("alice"))), 401, "UNAUTHENTICATED"},
		{"expired", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"expired within the leeway", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-5 * time.Second).Unix() })), 200, ""},
		{"no expiry", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { delete(c, "exp") })), 401, "UNAUTHENTICATED"},
		{"not yet valid", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"issued in the future", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() })), 401, "UNAUTHENTICATED"},
		{"wrong issuer", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" })), 401, "UNAUTHENTICATED"},
		{"no issuer", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { delete(c, "iss") })), 401, "UNAUTHENTICATED"},
		{"wrong audience", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), 401, "UNAUTHENTICATED"},
		{"audience among several", "/operations/Auth?wg_subscribe_once", bearer(with(func(c jwt.MapClaims) { c["aud"] = []string{"x", jwttest.Aud} })), 200, ""},
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

var testSecret = []byte(strings.Repeat("k", 32))

// TestJWTInvalidRolesClaimEndToEnd: a deny rule does not fail open on a
// roles claim it cannot read; the token is refused with 401.
func TestJWTInvalidRolesClaimEndToEnd(t *testing.T) {
	a, err := gqlpushjwt.New(gqlpushjwt.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, func(cfg *gqlpush.Config) {
		cfg.Operations = mustParse(t, map[string]string{
			"NotSuspended": `subscription @rbac(denyMatchAny: [suspended]) { gql_countdown(from: 1) }`,
		})
		cfg.Authenticator = a
	})
	const path = "/operations/NotSuspended?wg_subscribe_once"
	for _, tt := range []struct {
		name, roles string
		status      int
		code        string
	}{
		{"clean", `["admin"]`, 200, ""},
		{"suspended", `["admin","suspended"]`, 403, "FORBIDDEN"},
		{"suspended, nested", `["admin",["suspended"]]`, 401, "UNAUTHENTICATED"},
		{"number", `["admin",3]`, 401, "UNAUTHENTICATED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := jwttest.Claims("alice")
			c["roles"] = json.RawMessage(tt.roles)
			resp, body := g.do(t, path, bearer(jwttest.HS256(t, testSecret, c)))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 {
				if body != `{"data":{"gql_countdown":1}}` {
					t.Errorf("body %q", body)
				}
				return
			}
			if _, code := errorOf(t, body); code != tt.code {
				t.Errorf("code %q, want %q", code, tt.code)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); tt.status == 401 && wa != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate %q", wa)
			}
		})
	}
	if s := g.h.Stats(); s.Streams != 0 {
		t.Errorf("streams left: %+v", s)
	}
}
