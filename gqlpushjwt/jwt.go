// Package gqlpushjwt verifies JSON Web Tokens for gqlpush: a
// [gqlpush.Authenticator] that reads a token from the Authorization header or
// a cookie and checks it against a secret or a JSON Web Key Set, fetched from
// a URL and kept fresh.
//
//	a, err := gqlpushjwt.New(gqlpushjwt.Config{
//		JWKSURL:  "https://login.example.com/.well-known/jwks.json",
//		Issuer:   "https://login.example.com/",
//		Audience: "my-api",
//	})
//	h, err := gqlpush.NewHandler(gqlpush.Config{..., Authenticator: a})
//
// It lives apart from gqlpush so that a program that checks logins its own
// way does not build the JWT libraries in.
package gqlpushjwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gqlpush/gqlpush"
)

// Defaults of the [Config] fields left zero.
const (
	DefaultCookie     = "access_token"
	DefaultRolesClaim = "roles"
	DefaultLeeway     = 30 * time.Second
	// MaxTokenBytes bounds a token; a longer one is refused unread.
	MaxTokenBytes = 16 << 10
	// MaxJWKSBytes bounds a JSON Web Key Set fetched from JWKSURL. A
	// larger response fails that fetch, unread past the limit: the start
	// fails, a later refresh is logged and the keys already held stay.
	MaxJWKSBytes = 1 << 20
	// JWKSTimeout bounds each fetch of JWKSURL, from the request to the
	// last byte of the key set, and what a request naming an unknown key
	// id waits in all for its turn to fetch the set again and for the
	// fetch.
	JWKSTimeout = 10 * time.Second
)

// Config configures [New]. Exactly one of Secret, JWKSURL
// and JWKS gives the keys.
type Config struct {
	// Secret verifies HMAC tokens (HS256, HS384, HS512). Use at least 32
	// random bytes.
	Secret []byte

	// JWKSURL is where the JSON Web Key Set of the token issuer lives. It
	// is fetched at start, refreshed hourly, and again (at most every
	// five minutes) when a token names an unknown key id. Each fetch
	// reads at most MaxJWKSBytes and takes at most JWKSTimeout.
	JWKSURL string

	// JWKS is a JSON Web Key Set given in full (read from a file, say).
	JWKS json.RawMessage

	// Algorithms is the allow-list of signing algorithms. Nil means HS256
	// with a Secret, and RS256, ES256 and EdDSA with a key set. "none" is
	// never accepted, nor an HMAC algorithm with a key set or an
	// asymmetric one with a Secret: a public key cannot pass for a secret.
	Algorithms []string

	// Issuer, when set, is required in the "iss" claim.
	Issuer string

	// Audience, when set, must be among the "aud" claim's values.
	Audience string

	// Leeway is the clock skew allowed on "exp", "nbf" and "iat". Zero
	// means DefaultLeeway; negative means none.
	Leeway time.Duration

	// Cookie names the cookie that may carry the token, for browsers,
	// whose EventSource cannot set an Authorization header. Empty means
	// DefaultCookie; "-" means no cookie is read.
	Cookie string

	// RolesClaim is the claim path of the roles @rbac checks (an array of
	// strings, or one space-separated string). Empty means
	// DefaultRolesClaim. A path such as "realm_access.roles" reaches into
	// nested claims. An absent or null claim means no roles; a claim of
	// any other shape, or an array holding anything but non-empty strings,
	// makes the token invalid ([ErrInvalidRolesClaim]): a role that cannot
	// be read must not slip past a deny rule.
	RolesClaim string

	// HTTPClient fetches JWKSURL. Nil means http.DefaultClient. It is not
	// changed: a copy is used, whose Transport (nil means
	// http.DefaultTransport) reads at most MaxJWKSBytes of a response and
	// whose Timeout is at most JWKSTimeout.
	HTTPClient *http.Client

	// Logger receives key refresh failures. Nil means silent.
	Logger *slog.Logger

	// jwksTimeout, when positive, replaces JWKSTimeout; tests set it.
	jwksTimeout time.Duration
}

// An Authenticator verifies JSON Web Tokens (RFC 7519) from the
// Authorization header (Bearer) or a cookie. Tokens in the query string are
// never read: they end up in logs. Every token must carry "exp".
type Authenticator struct {
	parser     *jwt.Parser
	keyfunc    func(ctx context.Context) jwt.Keyfunc // ctx: the request's
	cookie     string
	rolesClaim string
	leeway     time.Duration
	cancel     context.CancelFunc // stops the key refresh
}

var _ gqlpush.Authenticator = (*Authenticator)(nil)

var (
	hmacAlgorithms       = []string{"HS256", "HS384", "HS512"}
	asymmetricAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// New checks the configuration and loads the keys. With a
// JWKSURL the first fetch must succeed. Close it to stop the key refresh.
func New(cfg Config) (*Authenticator, error) {
	sources := 0
	for _, set := range []bool{len(cfg.Secret) > 0, cfg.JWKSURL != "", len(cfg.JWKS) > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("gqlpushjwt: Config needs exactly one of Secret, JWKSURL and JWKS")
	}
	algs := cfg.Algorithms
	allowed := asymmetricAlgorithms
	if len(cfg.Secret) > 0 {
		allowed = hmacAlgorithms
		if algs == nil {
			algs = []string{"HS256"}
		}
		if len(cfg.Secret) < 32 {
			return nil, errors.New("gqlpushjwt: Config.Secret is shorter than 32 bytes")
		}
	} else if algs == nil {
		algs = []string{"RS256", "ES256", "EdDSA"}
	}
	if len(algs) == 0 {
		return nil, errors.New("gqlpushjwt: Config.Algorithms is empty")
	}
	for _, a := range algs {
		if !slices.Contains(allowed, a) {
			return nil, fmt.Errorf("gqlpushjwt: Config.Algorithms: %q cannot be used with these keys (allowed: %s)", a, strings.Join(allowed, ", "))
		}
	}
	a := &Authenticator{
		cookie:     cfg.Cookie,
		rolesClaim: cfg.RolesClaim,
		leeway:     cfg.Leeway,
	}
	if a.cookie == "" {
		a.cookie = DefaultCookie
	}
	if a.rolesClaim == "" {
		a.rolesClaim = DefaultRolesClaim
	}
	if a.leeway == 0 {
		a.leeway = DefaultLeeway
	}
	a.leeway = max(a.leeway, 0)
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithJSONNumber(),
		jwt.WithLeeway(a.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)

	switch {
	case len(cfg.Secret) > 0:
		secret := slices.Clone(cfg.Secret)
		a.keyfunc = func(context.Context) jwt.Keyfunc {
			return func(*jwt.Token) (any, error) { return secret, nil }
		}
	case len(cfg.JWKS) > 0:
		k, err := keyfunc.NewJWKSetJSON(cfg.JWKS)
		if err != nil {
			return nil, fmt.Errorf("gqlpushjwt: Config.JWKS: %w", err)
		}
		a.keyfunc = k.KeyfuncCtx
	default:
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		timeout := JWKSTimeout
		if cfg.jwksTimeout > 0 {
			timeout = cfg.jwksTimeout
		}
		ctx, cancel := context.WithCancel(context.Background())
		first := false
		k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
			Client: jwksClient(cfg.HTTPClient, timeout),
			// Bounds the first fetch and the hourly ones.
			HTTPTimeout: timeout,
			// A token naming an unknown key makes the set be fetched again,
			// at most every five minutes. This bounds the wait for that
			// turn and the fetch together (jwkset fetches under the
			// context of the wait): a request never waits long, and a key
			// set a few round trips away can still be fetched.
			RateLimitWaitMax:          timeout,
			NoErrorReturnFirstHTTPReq: &first,
			RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
				return func(_ context.Context, err error) {
					log.Warn("refresh of the JSON Web Key Set failed", "err", scrub(err.Error(), cfg.JWKSURL))
				}
			},
		})
		if err != nil {
			cancel()
			first, _, _ := strings.Cut(err.Error(), "\n") // the rest repeats it
			return nil, fmt.Errorf("gqlpushjwt: Config.JWKSURL: %s", scrub(first, cfg.JWKSURL))
		}
		a.keyfunc = k.KeyfuncCtx
		a.cancel = cancel
	}
	return a, nil
}

// Close stops the refresh of a key set fetched from JWKSURL. The refresh
// goroutine belongs to github.com/MicahParks/keyfunc: it ends soon after,
// not before Close returns.
func (a *Authenticator) Close() {
	if a.cancel != nil {
		a.cancel()
	}
}

// errJWKSTooLarge fails a fetch of a key set longer than MaxJWKSBytes.
var errJWKSTooLarge = fmt.Errorf("JSON Web Key Set larger than MaxJWKSBytes (%d bytes)", MaxJWKSBytes)

// jwksClient is the client that fetches JWKSURL: a copy of c (nil means
// http.DefaultClient) whose responses are cut at MaxJWKSBytes and whose
// requests end within timeout. github.com/MicahParks/jwkset decodes the
// response body unbounded, and bounds by HTTPTimeout only the first and the
// periodic fetches; the client bounds every one, the fetches for unknown
// key ids included.
func jwksClient(c *http.Client, timeout time.Duration) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	next := cc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	cc.Transport = limitedTransport{next: next, max: MaxJWKSBytes}
	if cc.Timeout <= 0 || cc.Timeout > timeout {
		cc.Timeout = timeout
	}
	return &cc
}

// limitedTransport refuses a response body longer than max: at once when
// its Content-Length says so, otherwise once the reader passes max.
type limitedTransport struct {
	next http.RoundTripper
	max  int64
}

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, errJWKSTooLarge
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.max}
	return resp, nil
}

// limitedBody reads at most left bytes, then fails, as http.MaxBytesReader.
type limitedBody struct {
	io.ReadCloser
	left int64 // < 0: the limit was passed
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errJWKSTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte more tells a body of exactly the limit from a longer one
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		n, b.left = int(b.left), -1
		return n, errJWKSTooLarge
	}
	b.left -= int64(n)
	return n, err
}

// Errors of [Authenticator.Authenticate]. They never hold the token.
var (
	ErrConflictingCredentials = errors.New("gqlpushjwt: the Authorization header and the cookie carry different tokens")
	ErrMalformedCredentials   = errors.New("gqlpushjwt: malformed credentials")
	// ErrInvalidRolesClaim: the roles claim of a verified token is
	// neither an array of non-empty strings nor one string. The token is
	// refused rather than read as having fewer roles, which would pass a
	// deny rule.
	ErrInvalidRolesClaim = errors.New("gqlpushjwt: the roles claim is not a list of strings")
)

// Authenticate verifies the request's token. A request without one is
// anonymous: nil, nil.
func (a *Authenticator) Authenticate(r *http.Request) (*gqlpush.Principal, error) {
	raw, err := extractToken(r.Header, a.cookie)
	if err != nil || raw == "" {
		return nil, err
	}
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(raw, claims, a.keyfunc(r.Context())); err != nil {
		return nil, fmt.Errorf("gqlpushjwt: invalid token: %w", err)
	}
	p := &gqlpush.Principal{Claims: claims}
	if sub, ok := claims["sub"].(string); ok {
		p.Subject = sub
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		p.Expires = exp.Add(a.leeway)
	}
	if p.Roles, err = rolesOf(a.rolesClaim, p.Claim(a.rolesClaim)); err != nil {
		return nil, err
	}
	return p, nil
}

// extractToken finds the bearer token of a request: in the Authorization
// header (RFC 6750, section 2.1) or in the cookie. Both may be present only
// when they agree. "" with a nil error means there is none.
func extractToken(h http.Header, cookie string) (string, error) {
	var fromHeader, fromCookie string
	switch auth := h.Values("Authorization"); len(auth) {
	case 0:
	case 1:
		scheme, token, ok := strings.Cut(strings.TrimSpace(auth[0]), " ")
		token = strings.TrimLeft(token, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || !isToken68(token) {
			return "", ErrMalformedCredentials
		}
		fromHeader = token
	default:
		return "", ErrMalformedCredentials
	}
	if cookie != "-" {
		r := http.Request{Header: http.Header{"Cookie": h.Values("Cookie")}}
		var found []string
		for _, c := range r.Cookies() {
			if c.Name == cookie {
				found = append(found, c.Value)
			}
		}
		switch {
		case len(found) > 1:
			return "", ErrMalformedCredentials
		case len(found) == 1:
			if !isToken68(found[0]) {
				return "", ErrMalformedCredentials
			}
			fromCookie = found[0]
		}
	}
	if fromHeader != "" && fromCookie != "" && fromHeader != fromCookie {
		return "", ErrConflictingCredentials
	}
	if fromHeader != "" {
		return fromHeader, nil
	}
	return fromCookie, nil
}

// isToken68 reports whether s is a non-empty token68 (RFC 7235) of bounded
// length, the shape of a bearer token.
func isToken68(s string) bool {
	if s == "" || len(s) > MaxTokenBytes {
		return false
	}
	s = strings.TrimRight(s, "=")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return true
}

// rolesOf reads the roles claim at path: an array of non-empty strings, or
// one space-separated string. Nil, an absent or null claim, is no roles.
// Any other value is an [ErrInvalidRolesClaim] that says where and of which
// JSON type, never the value itself.
func rolesOf(path string, v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.Fields(v), nil
	case []any:
		roles := make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("%w: %q[%d] is %s", ErrInvalidRolesClaim, path, i, jsonKind(e))
			}
			roles = append(roles, s)
		}
		return roles, nil
	}
	return nil, fmt.Errorf("%w: %q is %s", ErrInvalidRolesClaim, path, jsonKind(v))
}

// jsonKind names the JSON type of a decoded value, for messages.
func jsonKind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if v == "" {
			return "an empty string"
		}
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("a %T", v)
}

// anyURL finds the URLs in an error's text.
var anyURL = regexp.MustCompile(`(?i)\bhttps?://[^\s"'<>]*`)

// scrub replaces every URL in an error's text, which can only be the key
// set's (as given, or as net/http quotes it, its password masked), with its
// scheme, host and path: user info and the query, where credentials hide,
// never reach a log line or an error.
func scrub(text, rawURL string) string {
	safe := "<url>"
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		safe = u.Scheme + "://" + u.Host + u.EscapedPath()
	}
	return anyURL.ReplaceAllLiteralString(text, safe)
}
