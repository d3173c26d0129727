package gqlpush

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vektah/gqlparser/v2/ast"
)

// A Principal is the verified identity behind a request.
type Principal struct {
	Subject string         // the user's id (the "sub" claim of a JWT)
	Roles   []string       // checked by @rbac
	Claims  map[string]any // all verified claims, read by @fromClaim
	// Expires is when the credentials stop being valid; a stream opened
	// with them ends then. Zero means never.
	Expires time.Time
}

// An Authenticator verifies the credentials of a request. It returns a nil
// Principal and a nil error when the request carries no credentials at all,
// and an error when it carries credentials that are not valid: such a
// request is refused with 401 even on an operation that needs no login.
type Authenticator interface {
	Authenticate(r *http.Request) (*Principal, error)
}

// accessRules are an operation's @auth and @rbac directives.
type accessRules struct {
	requireAuth bool
	rbac        map[string][]string // argument name → roles
	pos         *ast.Position       // of the first rule, for messages
}

// rbacArguments are the arguments @rbac takes.
var rbacArguments = []string{"requireMatchAll", "requireMatchAny", "denyMatchAll", "denyMatchAny"}

func parseAccessRules(ds ast.DirectiveList, fail func(*ast.Position, string, ...any) error) (accessRules, error) {
	var r accessRules
	seen := map[string]bool{}
	for _, d := range ds {
		if d.Name != directiveAuth && d.Name != directiveRBAC {
			continue
		}
		if seen[d.Name] {
			return r, fail(d.Position, "@%s given twice", d.Name)
		}
		seen[d.Name] = true
		if r.pos == nil {
			r.pos = d.Position
		}
		r.requireAuth = true
		switch d.Name {
		case directiveAuth:
			if len(d.Arguments) > 0 {
				return r, fail(d.Arguments[0].Position, "@auth takes no arguments")
			}
		case directiveRBAC:
			if len(d.Arguments) == 0 {
				return r, fail(d.Position, "@rbac needs at least one of %s", strings.Join(rbacArguments, ", "))
			}
			r.rbac = map[string][]string{}
			for _, a := range d.Arguments {
				known := false
				for _, n := range rbacArguments {
					known = known || n == a.Name
				}
				if !known {
					return r, fail(a.Position, "@rbac has no argument %q (it takes %s)", a.Name, strings.Join(rbacArguments, ", "))
				}
				roles, err := roleList(a.Value, fail)
				if err != nil {
					return r, err
				}
				r.rbac[a.Name] = roles
			}
		}
	}
	return r, nil
}

// roleList reads a list of roles written as enum names or strings.
func roleList(v *ast.Value, fail func(*ast.Position, string, ...any) error) ([]string, error) {
	one := func(v *ast.Value) (string, error) {
		if (v.Kind != ast.EnumValue && v.Kind != ast.StringValue) || v.Raw == "" {
			return "", fail(v.Position, "a role is a name or a non-empty string")
		}
		return v.Raw, nil
	}
	if v.Kind != ast.ListValue {
		r, err := one(v)
		if err != nil {
			return nil, err
		}
		return []string{r}, nil
	}
	roles := make([]string, 0, len(v.Children))
	for _, c := range v.Children {
		r, err := one(c.Value)
		if err != nil {
			return nil, err
		}
		roles = append(roles, r)
	}
	return roles, nil
}

// Well-known claims @fromClaim names by an enum value.
var wellKnownClaims = map[string]string{
	"USERID":         "sub",
	"EMAIL":          "email",
	"EMAIL_VERIFIED": "email_verified",
	"NAME":           "name",
	"NICKNAME":       "nickname",
	"LOCATION":       "location",
	"PROVIDER":       "provider",
	"ISSUER":         "iss",
}

func parseFromClaim(d *ast.Directive, fail func(*ast.Position, string, ...any) error) (string, error) {
	if len(d.Arguments) != 1 || d.Arguments[0].Name != "name" {
		return "", fail(d.Position, "@fromClaim takes exactly one argument, name")
	}
	v := d.Arguments[0].Value
	switch v.Kind {
	case ast.EnumValue:
		claim, ok := wellKnownClaims[v.Raw]
		if !ok {
			return "", fail(v.Position, "@fromClaim: unknown claim %s (write a claim path as a string, or one of USERID, EMAIL, EMAIL_VERIFIED, NAME, NICKNAME, LOCATION, PROVIDER, ISSUER)", v.Raw)
		}
		return claim, nil
	case ast.StringValue, ast.BlockValue:
		if v.Raw == "" || strings.HasPrefix(v.Raw, ".") || strings.HasSuffix(v.Raw, ".") || strings.Contains(v.Raw, "..") {
			return "", fail(v.Position, "@fromClaim: %q is not a claim path like \"sub\" or \"org.id\"", v.Raw)
		}
		return v.Raw, nil
	}
	return "", fail(v.Position, "@fromClaim: name is a claim path string or a well-known claim name")
}

// allows checks the @rbac rules against a principal's roles: every rule
// given must hold.
func (r accessRules) allows(p *Principal) bool {
	if r.requireAuth && p == nil {
		return false
	}
	has := func(role string) bool { return slices.Contains(p.Roles, role) }
	all := func(roles []string) bool {
		for _, role := range roles {
			if !has(role) {
				return false
			}
		}
		return true
	}
	any := func(roles []string) bool {
		return slices.ContainsFunc(roles, has)
	}
	for rule, roles := range r.rbac {
		var ok bool
		switch rule {
		case "requireMatchAll":
			ok = all(roles)
		case "requireMatchAny":
			ok = any(roles)
		case "denyMatchAll":
			ok = !all(roles)
		case "denyMatchAny":
			ok = !any(roles)
		}
		if !ok {
			return false
		}
	}
	return true
}

// lookupClaim finds a claim by path: "sub", "org.id". A claim whose own name
// holds dots ("https://example.com/roles") is found too: at each level the
// longest name that exists wins.
func lookupClaim(claims map[string]any, path string) any {
	if v, ok := claims[path]; ok {
		return v
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' {
			continue
		}
		if sub, ok := claims[path[:i]].(map[string]any); ok {
			if v := lookupClaim(sub, path[i+1:]); v != nil {
				return v
			}
		}
	}
	return nil
}

// errNotAuthenticated answers a request without valid credentials where
// they are needed. Missing and invalid credentials get the same message: a
// client learns nothing of which check failed.
func errNotAuthenticated(presented bool) *httpError {
	e := &httpError{status: http.StatusUnauthorized, code: CodeUnauthenticated, msg: "not authenticated", bearer: "Bearer"}
	if presented {
		e.bearer = `Bearer error="invalid_token"` // RFC 6750, section 3.1
	}
	return e
}

var errForbidden = &httpError{status: http.StatusForbidden, code: CodeForbidden, msg: "forbidden"}

// authenticate verifies the request's credentials, if any, and checks the
// operation's rules. Invalid credentials are refused even where none are
// needed.
func (h *Handler) authenticate(r *http.Request, ep *endpoint) (*Principal, *httpError) {
	var p *Principal
	if h.auth != nil {
		var err error
		p, err = h.auth.Authenticate(r)
		if err != nil {
			h.log.Debug("authentication failed", "operation", ep.op.name, "err", scrubURLs(err.Error()))
			return nil, errNotAuthenticated(true)
		}
		if p != nil && !p.Expires.IsZero() && !time.Now().Before(p.Expires) {
			return nil, errNotAuthenticated(true)
		}
	}
	if p == nil && ep.needsAuth {
		return nil, errNotAuthenticated(false)
	}
	if !ep.op.rules.allows(p) {
		return nil, errForbidden
	}
	return p, nil
}

// hopByHop are headers that belong to one connection and can never be
// forwarded onto the upstream's WebSocket handshake.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

// checkForwardHeaders canonicalises the names of Upstream.ForwardHeaders.
func checkForwardHeaders(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		c := http.CanonicalHeaderKey(strings.TrimSpace(n))
		if c == "" || strings.ContainsAny(c, " :\r\n") {
			return nil, errors.New("ForwardHeaders: " + strconv.Quote(n) + " is not a header name")
		}
		if slices.Contains(hopByHop, c) || strings.HasPrefix(c, "Sec-Websocket-") {
			return nil, errors.New("ForwardHeaders: " + c + " belongs to one connection and cannot be forwarded")
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// forward builds what goes upstream for one caller: the handshake headers
// (the upstream's own, then the allowed client headers) and the
// connection_init payload. identity digests what was taken from the caller:
// callers whose forwarded values differ never share an upstream connection
// or a subscription. Nothing forwarded, no identity.
func (h *Handler) forward(r *http.Request, up *upstream, p *Principal) (http.Header, json.RawMessage, string, *httpError) {
	header, init := up.header, up.init
	if len(up.forward) == 0 && up.initFunc == nil {
		return header, init, "", nil
	}
	d := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		d.Write(n[:])
		d.Write(b)
	}
	if len(up.forward) > 0 {
		header = up.header.Clone()
		for _, name := range up.forward {
			vals := r.Header.Values(name)
			field([]byte(name))
			field([]byte(strconv.Itoa(len(vals))))
			for _, v := range vals {
				field([]byte(v))
			}
			if len(vals) > 0 {
				header[name] = slices.Clone(vals)
			}
		}
	}
	if up.initFunc != nil {
		payload, err := up.initFunc(r, p)
		if err == nil && payload != nil && !isJSONObject(payload) {
			err = errors.New("not a JSON object")
		}
		if err != nil {
			h.log.Error("building the connection_init payload failed", "upstream", up.label, "err", scrubURLs(err.Error()))
			return nil, nil, "", &httpError{status: http.StatusInternalServerError, code: CodeInternal, msg: "internal error"}
		}
		init = payload
		field([]byte("init"))
		field(payload)
	}
	return header, init, hex.EncodeToString(d.Sum(nil)), nil
}

func isJSONObject(b []byte) bool {
	var obj map[string]any
	return json.Unmarshal(b, &obj) == nil && obj != nil
}

// RetryAfter is the Retry-After of a 429: a hint, in seconds, of when a
// stream may be free again.
const RetryAfter = 5

// tooMany is the 429 of a cap reached.
func tooMany(code, msg string) *httpError {
	return &httpError{status: http.StatusTooManyRequests, code: code, msg: msg, retry: strconv.Itoa(RetryAfter)}
}

var (
	errTooManyStreams       = tooMany(CodeTooManyStreams, "too many streams")
	errTooManySubscriptions = tooMany(CodeTooManySubscriptions, "too many subscriptions")
	errTooManyUpstreamConns = tooMany(CodeTooManyUpstreamConns, "too many upstream connections")
)

// limits caps open streams: in all, for anonymous callers, and per caller.
// A subscription kept by ResumeGrace is charged to a caller as well (see
// charge). The counts move only under the lock, and each acquire or charge
// is undone by exactly one call of the function it returns.
type limits struct {
	max, perMax, anonMax int // 0: no cap

	mu    sync.Mutex
	total int
	anon  int
	per   map[string]int // streams and charges by caller
}

// acquire takes a stream for the caller key. A refusal says whether the
// caller's own cap refused it (byCaller): then the caller may make room
// by giving up a subscription charged to it.
func (l *limits) acquire(key string, anonymous bool) (release func(), byCaller bool, herr *httpError) {
	if l.max == 0 && l.perMax == 0 && l.anonMax == 0 {
		return func() {}, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max, anonymous && l.anonMax > 0 && l.anon >= l.anonMax:
		return nil, false, errTooManyStreams
	case l.perMax > 0 && l.per[key] >= l.perMax:
		return nil, true, errTooManyStreams
	}
	l.total++
	if anonymous {
		l.anon++
	}
	l.per[key]++
	return l.releaser(key, anonymous, true), false, nil
}

// charge counts a kept subscription against key's cap, whatever the count:
// the stream that leaves it is about to give its own place back.
func (l *limits) charge(key string) (release func()) {
	if l.perMax == 0 {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.per[key]++
	return l.releaser(key, false, false)
}

func (l *limits) releaser(key string, anonymous, stream bool) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if stream {
				l.total--
			}
			if anonymous {
				l.anon--
			}
			if l.per[key]--; l.per[key] == 0 {
				delete(l.per, key)
			}
		})
	}
}

// limitKey names whose streams a request counts against: the principal's
// subject, or, for anonymous callers, their address; an IPv6 address by its
// /64, the block one host or one customer usually holds whole.
func (h *Handler) limitKey(r *http.Request, p *Principal) string {
	if p != nil && p.Subject != "" {
		return "sub:" + p.Subject
	}
	var host string
	if h.clientAddress != nil {
		host = h.clientAddress(r)
	} else {
		var err error
		if host, _, err = net.SplitHostPort(r.RemoteAddr); err != nil {
			host = r.RemoteAddr
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.Is6() {
			p, _ := a.WithZone("").Prefix(64)
			return "addr:" + p.String()
		}
		return "addr:" + a.String()
	}
	return "addr:" + host
}

// ForwardedAddress returns a Config.ClientAddress for a server behind
// proxies: it reads the caller's address from the header the proxies append
// to (X-Forwarded-For: client, proxy1, proxy2), trusting only the proxies
// in trusted. Read from the right, as nginx's real_ip_recursive does, the
// address is the first one not in a trusted range: what a client wrote
// itself, to the left of its own address, is never taken. A request that
// does not come from a trusted proxy is named by its RemoteAddr, whatever
// the header says; so is one whose header is malformed. With no trusted
// range, the header is never read.
func ForwardedAddress(header string, trusted []netip.Prefix) func(r *http.Request) string {
	header = http.CanonicalHeaderKey(header)
	trusted = slices.Clone(trusted)
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap().WithZone("") // a prefix contains no zoned address
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		remote, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			remote = r.RemoteAddr
		}
		ra, err := netip.ParseAddr(remote)
		if err != nil || !isTrusted(ra) {
			return remote
		}
		var hops []string
		for _, v := range r.Header.Values(header) {
			hops = append(hops, strings.Split(v, ",")...)
		}
		client := remote
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := hopAddr(hops[i])
			if !ok {
				return remote // not an address: trust nothing to its left
			}
			client = a.String()
			if !isTrusted(a) {
				break
			}
		}
		// The first untrusted hop from the right; or, when every hop is a
		// trusted proxy, the leftmost, where the request came from.
		return client
	}
}

// hopAddr reads one entry of X-Forwarded-For: an address, or an address and
// a port, as some proxies write.
func hopAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
