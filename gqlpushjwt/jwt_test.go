package gqlpushjwt_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
)

var testSecret = []byte(strings.Repeat("k", 32))

// hs256 signs good claims for alice with testSecret; edit may change them
// first.
func hs256(t testing.TB, edit func(jwt.MapClaims)) string {
	t.Helper()
	c := jwttest.Claims("alice")
	edit(c)
	return jwttest.HS256(t, testSecret, c)
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
	a, err := gqlpushjwt.New(gqlpushjwt.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	nested, err := gqlpushjwt.New(gqlpushjwt.Config{Secret: testSecret, RolesClaim: "realm_access.roles"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		a     *gqlpushjwt.Authenticator
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
				if p != nil || !errors.Is(err, gqlpushjwt.ErrInvalidRolesClaim) {
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
	is := jwttest.NewIssuer(t)
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
				reports <- writePadded(w, r, is.JWKS, tt.declare)
			}))
			defer srv.Close()
			a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKSURL: srv.URL})
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
			if rep.written <= gqlpushjwt.MaxJWKSBytes || rep.complete {
				t.Errorf("the server wrote %d bytes (all: %v): want more than MaxJWKSBytes, not all", rep.written, rep.complete)
			}
		})
	}
}

// TestJWKSURLTooLargeOnRefresh: an oversized set on a refresh fails that
// refresh, is logged, and the keys held keep verifying.
func TestJWKSURLTooLargeOnRefresh(t *testing.T) {
	first, second := jwttest.NewIssuer(t), jwttest.NewIssuer(t)
	rotated := []byte(strings.ReplaceAll(string(second.JWKS), `"rsa1"`, `"rsa2"`))
	var fetches atomic.Int32
	reports := make(chan bodyReport, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) == 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Write(first.JWKS)
			return
		}
		reports <- writePadded(w, r, rotated, false)
	}))
	defer srv.Close()
	logged := make(chan string, 8)
	a, err := gqlpushjwt.New(gqlpushjwt.Config{
		JWKSURL: srv.URL, Issuer: jwttest.Iss,
		Logger: slog.New(lineHandler(logged)),
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
	if err := authenticate(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa2", second.RSA, jwttest.Claims("alice"))); err == nil {
		t.Fatal("a key from the oversized set was used")
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	if rep := receive(t, reports); rep.written <= gqlpushjwt.MaxJWKSBytes || rep.complete {
		t.Errorf("the server wrote %d bytes (all: %v): want more than MaxJWKSBytes, not all", rep.written, rep.complete)
	}
	select {
	case l := <-logged:
		if !strings.Contains(l, "refresh of the JSON Web Key Set failed") || !strings.Contains(l, "larger than MaxJWKSBytes") {
			t.Errorf("logged %q", l)
		}
	case <-time.After(waitTime):
		t.Error("the failed refresh was not logged")
	}
	if err := authenticate(first.RS256(t, jwttest.Claims("alice"))); err != nil {
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
	a, err := gqlpushjwt.New(gqlpushjwt.WithJWKSTimeout(gqlpushjwt.Config{JWKSURL: srv.URL}, 50*time.Millisecond))
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
	first, second := jwttest.NewIssuer(t), jwttest.NewIssuer(t)
	rotated := []byte(strings.ReplaceAll(string(second.JWKS), `"rsa1"`, `"rsa2"`))
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if fetches.Add(1) == 1 {
			w.Write(first.JWKS)
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
	a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKSURL: srv.URL, Issuer: jwttest.Iss})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.Header = bearer(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa2", second.RSA, jwttest.Claims("alice")))
	if p, err := a.Authenticate(r); err != nil || p == nil {
		t.Fatalf("a token of the rotated key: %+v, %v", p, err)
	}
}

func TestJWTAuthenticatorConfig(t *testing.T) {
	is := jwttest.NewIssuer(t)
	secret := []byte(strings.Repeat("s", 32))
	for _, tt := range []struct {
		name string
		cfg  gqlpushjwt.Config
		want string
	}{
		{"no keys", gqlpushjwt.Config{}, "exactly one of"},
		{"two key sources", gqlpushjwt.Config{Secret: secret, JWKS: is.JWKS}, "exactly one of"},
		{"short secret", gqlpushjwt.Config{Secret: []byte("short")}, "shorter than 32 bytes"},
		{"none", gqlpushjwt.Config{Secret: secret, Algorithms: []string{"none"}}, `"none" cannot be used`},
		{"RS256 with a secret", gqlpushjwt.Config{Secret: secret, Algorithms: []string{"RS256"}}, `"RS256" cannot be used`},
		{"HS256 with a key set", gqlpushjwt.Config{JWKS: is.JWKS, Algorithms: []string{"HS256"}}, `"HS256" cannot be used`},
		{"bad key set", gqlpushjwt.Config{JWKS: []byte(`{"keys":[{"kty":"nope"}]}`)}, "JWKS"},
		{"unreachable key set URL", gqlpushjwt.Config{JWKSURL: "http://user:secret@127.0.0.1:1/jwks?token=abc"}, "JWKSURL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := gqlpushjwt.New(tt.cfg)
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
	a, err := gqlpushjwt.New(gqlpushjwt.Config{Secret: secret, Cookie: "session", RolesClaim: "realm_access.roles"})
	if err != nil {
		t.Fatal(err)
	}
	is := jwttest.NewIssuer(t)
	c := jwttest.Claims("alice")
	c["realm_access"] = map[string]any{"roles": []string{"admin"}}
	good := jwttest.Sign(t, jwt.SigningMethodHS256, "", secret, c)
	for _, tt := range []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"HS256", bearer(good), true},
		{"named cookie", http.Header{"Cookie": {"session=" + good}}, true},
		{"default cookie name unused", http.Header{"Cookie": {"access_token=" + good}}, false},
		{"HS512 not allowed", bearer(jwttest.Sign(t, jwt.SigningMethodHS512, "", secret, c)), false},
		{"RS256 not allowed", bearer(is.RS256(t, c)), false},
		{"another secret", bearer(jwttest.Sign(t, jwt.SigningMethodHS256, "", []byte(strings.Repeat("x", 32)), c)), false},
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
	first, second := jwttest.NewIssuer(t), jwttest.NewIssuer(t)
	var mu sync.Mutex
	current := first.JWKS
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(current)
	}))
	defer jwks.Close()
	a, err := gqlpushjwt.New(gqlpushjwt.Config{JWKSURL: jwks.URL, Issuer: jwttest.Iss})
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
	check(first.RS256(t, jwttest.Claims("alice")), true)
	// The issuer rotates to a new key with a new id: the unknown id makes
	// the authenticator fetch the set again.
	mu.Lock()
	current = []byte(strings.ReplaceAll(string(second.JWKS), `"rsa1"`, `"rsa2"`))
	mu.Unlock()
	check(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa2", second.RSA, jwttest.Claims("alice")), true)
	// A token of the old key with the new id fails.
	check(jwttest.Sign(t, jwt.SigningMethodRS256, "rsa2", first.RSA, jwttest.Claims("alice")), false)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// waitTime bounds every wait: generous, for a loaded machine.
const waitTime = 30 * time.Second

// lineHandler sends each record logged, its message and attributes, on
// the channel, when there is room.
type lineHandler chan<- string

func (h lineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h lineHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h lineHandler) WithGroup(string) slog.Handler            { return h }

func (h lineHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	select {
	case h <- line:
	default:
	}
	return nil
}
