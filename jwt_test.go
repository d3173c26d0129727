package gqlpush_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush"
)

var testSecret = []byte(strings.Repeat("k", 32))

// hs256 signs claims valid for an hour, for alice, with testSecret. edit may
// change them first.
func hs256(t testing.TB, edit func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if edit != nil {
		edit(c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withRoles sets the roles claim to raw JSON; "" removes it.
func withRoles(raw string) func(jwt.MapClaims) {
	return func(c jwt.MapClaims) {
		if raw == "" {
			delete(c, "roles")
			return
		}
		c["roles"] = json.RawMessage(raw)
	}
}

func TestJWTRolesClaim(t *testing.T) {
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	nested, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{Secret: testSecret, RolesClaim: "realm_access.roles"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		a     *gqlpush.JWTAuthenticator
		edit  func(jwt.MapClaims)
		roles []string // nil: the token is refused
	}{
		{"array", a, withRoles(`["admin"]`), []string{"admin"}},
		{"two in an array", a, withRoles(`["admin","editor"]`), []string{"admin", "editor"}},
		{"space-separated string", a, withRoles(`"admin editor"`), []string{"admin", "editor"}},
		{"empty string", a, withRoles(`""`), []string{}},
		{"empty array", a, withRoles(`[]`), []string{}},
		{"absent", a, withRoles(""), []string{}},
		{"null", a, withRoles(`null`), []string{}},
		{"nested array", a, withRoles(`["admin",["suspended"]]`), nil},
		{"number in the array", a, withRoles(`["admin",3]`), nil},
		{"boolean in the array", a, withRoles(`["admin",false]`), nil},
		{"object in the array", a, withRoles(`["admin",{"role":"suspended"}]`), nil},
		{"null in the array", a, withRoles(`["admin",null]`), nil},
		{"empty string in the array", a, withRoles(`[""]`), nil},
		{"object", a, withRoles(`{"a":1}`), nil},
		{"number", a, withRoles(`42`), nil},
		{"boolean", a, withRoles(`true`), nil},
		{"nested path", nested, func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []string{"admin"}} }, []string{"admin"}},
		{"nested path absent", nested, func(c jwt.MapClaims) { c["realm_access"] = map[string]any{} }, []string{}},
		{"nested path, not a list", nested, func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []any{"admin", 1}} }, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			token := hs256(t, tt.edit)
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.Header = bearer(token)
			p, err := tt.a.Authenticate(r)
			if tt.roles == nil {
				if p != nil || !errors.Is(err, gqlpush.ErrInvalidRolesClaim) {
					t.Fatalf("got %+v, %v; want ErrInvalidRolesClaim", p, err)
				}
				if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "suspended") {
					t.Errorf("the error shows the token or a claim value: %v", err)
				}
				return
			}
			if err != nil || p == nil || p.Subject != "alice" {
				t.Fatalf("got %+v, %v", p, err)
			}
			if !slices.Equal(p.Roles, tt.roles) {
				t.Errorf("roles %q, want %q", p.Roles, tt.roles)
			}
		})
	}
}

// TestJWTInvalidRolesClaimEndToEnd: a deny rule does not fail open on a
// roles claim it cannot read; the token is refused with 401.
func TestJWTInvalidRolesClaimEndToEnd(t *testing.T) {
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{Secret: testSecret})
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
			resp, body := g.do(t, path, bearer(hs256(t, withRoles(tt.roles))))
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

// oversize is the length of the oversized key sets the tests serve: far
// more than loopback socket buffers hold, so a server that could write it
// all would show that the client read it all.
const oversize = 64 << 20

// bodyReport tells what a handler of an oversized key set wrote.
type bodyReport struct {
	written  int64 // body bytes the server's writes took
	complete bool  // all of them: the client read the whole body
}

// writePadded answers with the key set set padded to oversize bytes by an
// extra member, still valid JSON, without a Content-Length unless declare.
func writePadded(w http.ResponseWriter, r *http.Request, set []byte, declare bool) bodyReport {
	head := string(set[:len(set)-1]) + `,"padding":"`
	const tail = `"}`
	w.Header().Set("Content-Type", "application/json")
	if declare {
		w.Header().Set("Content-Length", strconv.Itoa(oversize))
	}
	var rep bodyReport
	write := func(s string) bool {
		n, err := w.Write([]byte(s))
		rep.written += int64(n)
		return err == nil && r.Context().Err() == nil
	}
	if !write(head) {
		return rep
	}
	chunk := strings.Repeat("a", 32<<10)
	for rep.written+int64(len(tail)) < oversize {
		if !write(chunk[:min(int64(len(chunk)), oversize-int64(len(tail))-rep.written)]) {
			return rep
		}
	}
	rep.complete = write(tail)
	return rep
}

// receive waits for a report of a handler.
func receive(t *testing.T, reports <-chan bodyReport) bodyReport {
	t.Helper()
	select {
	case rep := <-reports:
		return rep
	case <-time.After(waitTime):
		t.Fatal("the key set server did not finish")
		return bodyReport{}
	}
}

func TestJWKSURLTooLarge(t *testing.T) {
	is := newIssuer(t)
	for _, tt := range []struct {
		name    string
		declare bool
	}{
		{"streamed", false},
		{"declared in Content-Length", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reports := make(chan bodyReport, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reports <- writePadded(w, r, is.jwks, tt.declare)
			}))
			defer srv.Close()
			a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{JWKSURL: srv.URL})
			if err == nil {
				a.Close()
				t.Fatal("a key set larger than MaxJWKSBytes was accepted")
			}
			if !strings.Contains(err.Error(), "JWKSURL") || !strings.Contains(err.Error(), "larger than MaxJWKSBytes") {
				t.Errorf("error %q does not say the key set is too large", err)
			}
			rep := receive(t, reports)
			if tt.declare {
				return // refused on its header: the server may or may not have written it all into socket buffers
			}
			if rep.written <= gqlpush.MaxJWKSBytes || rep.complete {
				t.Errorf("the server wrote %d bytes (all: %v): want more than MaxJWKSBytes, not all", rep.written, rep.complete)
			}
		})
	}
}

// TestJWKSURLTooLargeOnRefresh: an oversized set on a refresh fails that
// refresh, is logged, and the keys held keep verifying.
func TestJWKSURLTooLargeOnRefresh(t *testing.T) {
	first, second := newIssuer(t), newIssuer(t)
	rotated := []byte(strings.ReplaceAll(string(second.jwks), `"rsa1"`, `"rsa2"`))
	var fetches atomic.Int32
	reports := make(chan bodyReport, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) == 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Write(first.jwks)
			return
		}
		reports <- writePadded(w, r, rotated, false)
	}))
	defer srv.Close()
	var log syncBuffer
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{
		JWKSURL: srv.URL, Issuer: testIssuer,
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	authenticate := func(token string) error {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header = bearer(token)
		_, err := a.Authenticate(r)
		return err
	}
	// The unknown key id makes the authenticator fetch the set again.
	if err := authenticate(second.sign(t, jwt.SigningMethodRS256, "rsa2", second.rsa, second.claims("alice"))); err == nil {
		t.Fatal("a key from the oversized set was used")
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	if rep := receive(t, reports); rep.written <= gqlpush.MaxJWKSBytes || rep.complete {
		t.Errorf("the server wrote %d bytes (all: %v): want more than MaxJWKSBytes, not all", rep.written, rep.complete)
	}
	if l := log.String(); !strings.Contains(l, "refresh of the JSON Web Key Set failed") || !strings.Contains(l, "larger than MaxJWKSBytes") {
		t.Errorf("log %q", l)
	}
	if err := authenticate(first.rs256(t, first.claims("alice"))); err != nil {
		t.Errorf("the keys held before the failed refresh: %v", err)
	}
}

func TestJWKSURLNeverAnswers(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop) // before srv.Close, which waits for the handler
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.WithJWKSTimeout(gqlpush.JWTConfig{JWKSURL: srv.URL}, 50*time.Millisecond))
	if err == nil {
		a.Close()
		t.Fatal("started without a key set")
	}
	// The client's Timeout and the context of the fetch end together; either
	// may tell.
	if msg := err.Error(); !strings.Contains(msg, "JWKSURL") || !strings.Contains(msg, "deadline exceeded") && !strings.Contains(msg, "Timeout exceeded") {
		t.Errorf("error %q does not say the fetch timed out", err)
	}
}

// TestJWKSURLSlowRefresh: the fetch for an unknown key id has the time of a
// fetch, not only that of the wait for its turn.
func TestJWKSURLSlowRefresh(t *testing.T) {
	first, second := newIssuer(t), newIssuer(t)
	rotated := []byte(strings.ReplaceAll(string(second.jwks), `"rsa1"`, `"rsa2"`))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if fetches.Add(1) == 1 {
			w.Write(first.jwks)
			return
		}
		// A key set a few round trips away.
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Write(rotated)
	}))
	defer srv.Close()
	a, err := gqlpush.NewJWTAuthenticator(gqlpush.JWTConfig{JWKSURL: srv.URL, Issuer: testIssuer})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.Header = bearer(second.sign(t, jwt.SigningMethodRS256, "rsa2", second.rsa, second.claims("alice")))
	if p, err := a.Authenticate(r); err != nil || p == nil {
		t.Fatalf("a token of the rotated key: %+v, %v", p, err)
	}
}
