package gqlpush

import (
	"net/http"
	"slices"
	"strings"
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

// Claim returns the claim at path, as @fromClaim reads it: "sub",
// "org.id". A claim whose own name holds dots ("https://example.com/roles")
// is found too: at each level the longest name that exists wins. nil when
// there is none.
func (p *Principal) Claim(path string) any {
	if p == nil {
		return nil
	}
	return lookupClaim(p.Claims, path)
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

// authenticate verifies the request's credentials, if any, and checks the
// operation's rules. Invalid credentials are refused even where none are
// needed.
func (h *Handler) authenticate(r *http.Request, ep *endpoint) (*Principal, *httpError) {
	var p *Principal
	if h.cfg.Authenticator != nil {
		var err error
		p, err = h.cfg.Authenticator.Authenticate(r)
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
