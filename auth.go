package gqlpush

import (
	"net/http"
	"strings"

	"github.com/vektah/gqlparser/v2/ast"
)

// A Principal is the verified identity behind a request.
type Principal struct {
	Subject string         // the user's id (the "sub" claim of a JWT)
	Roles   []string       // checked by @rbac
	Claims  map[string]any // all verified claims, read by @fromClaim
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
