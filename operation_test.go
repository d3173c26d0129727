package gqlpush_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

func TestLoadOperations(t *testing.T) {
	fsys := fstest.MapFS{
		"Sub.graphql":         {Data: []byte("subscription MyQuery { gql_messageCreated { id } }")},
		"chat/New.graphql":    {Data: []byte("subscription Other { gql_messageCreated(room: \"a\") { id } }")},
		"chat/README.md":      {Data: []byte("not an operation")},
		"deep/a/b/C.graphql":  {Data: []byte("subscription { gql_countdown(from: 1) }")},
		"fragments.graphqlrc": {Data: []byte("ignored")},
	}
	ops, err := gqlpush.LoadOperations(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, op := range ops {
		names = append(names, op.Name())
	}
	if got, want := strings.Join(names, " "), "Sub chat/New deep/a/b/C"; got != want {
		t.Errorf("names %q, want %q", got, want)
	}
}

func TestLoadMalformedOperations(t *testing.T) {
	fsys := fstest.MapFS{
		"Good.graphql":              {Data: []byte("subscription { gql_messageCreated { id } }")},
		"Syntax.graphql":            {Data: []byte("subscription {\n  gql_messageCreated {\n    id\n  \n")},
		"Mutation.graphql":          {Data: []byte("\n\nmutation M { gql_postMessage(content: \"x\") { id } }")},
		"TwoFields.graphql":         {Data: []byte("subscription {\n  gql_a { id }\n  gql_b { id }\n}")},
		"Internal.graphql":          {Data: []byte("subscription S @internal {\n  gql_a { id }\n}")},
		"nested/InternalOp.graphql": {Data: []byte("subscription S @internalOperation { gql_a { id } }")},
	}
	_, err := gqlpush.LoadOperations(fsys)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		"Syntax.graphql:5:1: syntax error: Expected Name, found <EOF>",
		"Mutation.graphql:3:1: operation is a mutation: only subscriptions and queries are served",
		"TwoFields.graphql:3:3: a subscription selects exactly one root field, this one selects 2",
		"Internal.graphql:1:17: @internal: served operations cannot be internal",
		"nested/InternalOp.graphql:1:17: @internalOperation: served operations cannot be internal",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "Good.graphql") {
		t.Errorf("error blames a good file:\n%s", msg)
	}
	var oe *gqlpush.OperationError
	if !errors.As(err, &oe) {
		t.Errorf("%T is not an *OperationError", err)
	}
}

func TestParseOperationRules(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"empty", "", "X.graphql:1:1: no operation"},
		{"fragments only", "fragment F on Message { id }", "X.graphql:1:1: no operation"},
		{"two operations", "subscription A { gql_a }\nsubscription B { gql_b }", "X.graphql:2:1: 2 operations"},
		{"mutation", "mutation { gql_post }", "X.graphql:1:1: operation is a mutation: only subscriptions and queries are served"},
		{"fragment at the root", "subscription { ...F }\nfragment F on Subscription { gql_a }", "X.graphql:1:19: a root selection must be a field"},
		{"inline fragment at the root", "subscription { ... on Subscription { gql_a } }", "a root selection must be a field"},
		{"fragment at a query's root", "query { gql_a ...F }\nfragment F on Query { gql_b }", "X.graphql:1:18: a root selection must be a field"},
		{"introspection in a query", "query { gql_a __schema { types { name } } }", "introspection"},
		{"internal query", "query Q @internal { gql_a }", "@internal: served operations cannot be internal"},
		{"live subscription", "subscription S @live { gql_a }", "X.graphql:1:17: @live is for queries"},
		{"live zero", "query Q @live(pollingIntervalSeconds: 0) { gql_a }", "pollingIntervalSeconds must be a whole number of seconds from 1 to 3600"},
		{"live fraction", "query Q @live(pollingIntervalSeconds: 1.5) { gql_a }", "pollingIntervalSeconds must be"},
		{"live too long", "query Q @live(pollingIntervalSeconds: 3601) { gql_a }", "pollingIntervalSeconds must be"},
		{"live variable", "query Q($n: Int) @live(pollingIntervalSeconds: $n) { gql_a }", "pollingIntervalSeconds must be"},
		{"live unknown argument", "query Q @live(every: 2) { gql_a }", "unknown argument every"},
		{"live on a field", "query { gql_a @live }", "@live is not allowed on a field"},
		{"introspection root", "subscription { __typename }", "introspection"},
		{"skip on the root field", "subscription { gql_a @skip(if: true) }", "X.graphql:1:23: @skip on the root field"},
		{"fromClaim on the operation", "subscription S @fromClaim(name: \"sub\") { gql_a }", "@fromClaim belongs on a variable definition"},
		{"auth on a field", "subscription { gql_a { id @auth } }", "X.graphql:1:28: @auth is not allowed"},
		{"rbac in a fragment", "subscription { gql_a { ...F } }\nfragment F on M @rbac(requireMatchAll: [a]) { id }", "@rbac is not allowed here"},
		{"wg_ variable", "subscription ($wg_x: Int) { gql_a(x: $wg_x) }", "wg_ prefix is reserved"},
		{"auth with arguments", "subscription S @auth(x: 1) { gql_a }", "@auth takes no arguments"},
		{"rbac unknown argument", "subscription S @rbac(requireAll: [a]) { gql_a }", `@rbac has no argument "requireAll"`},
		{"rbac empty", "subscription S @rbac { gql_a }", "@rbac needs at least one"},
		{"rbac bad role", "subscription S @rbac(requireMatchAny: [1]) { gql_a }", "a role is a name or a non-empty string"},
		{"fromClaim unknown claim", "subscription ($u: String @fromClaim(name: NOPE)) { gql_a(u: $u) }", "unknown claim NOPE"},
		{"fromClaim bad path", "subscription ($u: String @fromClaim(name: \"a..b\")) { gql_a(u: $u) }", "not a claim path"},
		{"fromClaim no name", "subscription ($u: String @fromClaim) { gql_a(u: $u) }", "exactly one argument, name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gqlpush.ParseOperation("X", tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	for _, name := range []string{"", "/abs", "a//b", "../up", "a/./b", "with?query", "pct%41"} {
		if _, err := gqlpush.ParseOperation(name, "subscription { gql_a }"); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
}

func TestNewHandlerChecksOperations(t *testing.T) {
	up := gqlpush.Upstream{Name: "gql", URL: "ws://127.0.0.1:1/graphql", Schema: gqlpushtest.ChatSchema}
	tests := []struct {
		name string
		src  string
		ups  []gqlpush.Upstream
		want string
	}{
		{"unknown prefix", "subscription {\n  chat_messageCreated { id }\n}", nil, "X.graphql:2:3: field chat_messageCreated names no configured upstream (fields start with one of: gql_)"},
		{"no prefix, no unnamed upstream", "subscription { messageCreated { id } }", nil, "names no configured upstream"},
		{"unknown field", "subscription { gql_nope { id } }", nil, `X.graphql:1:16: invalid against the upstream schema: Cannot query field "gql_nope" on type "Subscription"`},
		{"unknown subfield", "subscription {\n  gql_messageCreated {\n    id\n    author\n  }\n}", nil, `X.graphql:4:5: invalid against the upstream schema: Cannot query field "author" on type "Message"`},
		{"wrong argument type", "subscription { gql_countdown(from: \"x\") }", nil, "X.graphql:1:36: invalid against the upstream schema"},
		{"undeclared variable", "subscription { gql_countdown(from: $n) }", nil, `Variable "$n" is not defined`},
		{"default of the wrong type", "subscription ($n: Int = \"x\") { gql_countdown(from: $n) }", nil, `X.graphql:1:25: invalid against the upstream schema: Int cannot represent non-integer value: "x"`},
		{"needs an authenticator", "subscription S @auth { gql_countdown(from: 1) }", nil, "Config.Authenticator is nil"},
		{"claim needs an authenticator", "subscription ($n: Int! @fromClaim(name: \"n\")) { gql_countdown(from: $n) }", nil, "Config.Authenticator is nil"},
		{"longest upstream name wins", "subscription { gql_x_messageCreated { id } }", []gqlpush.Upstream{up, {Name: "gql_x", URL: "ws://127.0.0.1:1/x"}}, ""},
		{"unnamed upstream takes the rest", "subscription { messageCreated { id } }", []gqlpush.Upstream{up, {URL: "ws://127.0.0.1:1/x", Schema: gqlpushtest.ChatSchema}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := gqlpush.ParseOperation("X", tt.src)
			if err != nil {
				t.Fatal(err)
			}
			ups := tt.ups
			if ups == nil {
				ups = []gqlpush.Upstream{up}
			}
			h, err := gqlpush.NewHandler(gqlpush.Config{Operations: []*gqlpush.Operation{op}, Upstreams: ups})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if h != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewHandlerChecksConfig(t *testing.T) {
	op, err := gqlpush.ParseOperation("X", "subscription { gql_countdown(from: 1) }")
	if err != nil {
		t.Fatal(err)
	}
	ops := []*gqlpush.Operation{op}
	good := gqlpush.Upstream{Name: "gql", URL: "ws://127.0.0.1:1/graphql"}
	with := func(f func(*gqlpush.Upstream)) []gqlpush.Upstream {
		u := good
		f(&u)
		return []gqlpush.Upstream{u}
	}
	tests := []struct {
		name            string
		cfg             gqlpush.Config
		field, upstream string // of the *ConfigError; "" for an *OperationError
		kind            error
		want            string
	}{
		{"no operations", gqlpush.Config{Upstreams: []gqlpush.Upstream{good}}, "Operations", "", gqlpush.ErrRequired, "Config.Operations is required"},
		{"nil operation", gqlpush.Config{Operations: []*gqlpush.Operation{nil}, Upstreams: []gqlpush.Upstream{good}}, "Operations", "", gqlpush.ErrInvalid, "nil operation"},
		{"duplicate operation", gqlpush.Config{Operations: []*gqlpush.Operation{op, op}, Upstreams: []gqlpush.Upstream{good}}, "", "", nil, "X.graphql: a second operation"},
		{"no upstreams", gqlpush.Config{Operations: ops}, "Upstreams", "", gqlpush.ErrRequired, "Config.Upstreams is required"},
		{"no URL", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.URL = "" })}, "URL", `"gql"`, gqlpush.ErrRequired, `upstream "gql": URL is required`},
		{"http URL", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.URL = "http://h/graphql" })}, "URL", `"gql"`, gqlpush.ErrInvalid, `scheme "http", not ws or wss`},
		{"relative URL", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.URL = "/graphql" })}, "URL", `"gql"`, gqlpush.ErrInvalid, "not an absolute URL"},
		{"bad name", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.Name = "g-q" })}, "Name", `"g-q"`, gqlpush.ErrInvalid, "letters, digits and underscores"},
		{"name ending in _", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.Name = "gql_" })}, "Name", `"gql_"`, gqlpush.ErrInvalid, "not ending with _"},
		{"two unnamed", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good, {URL: good.URL}, {URL: good.URL}}}, "Name", "#3", gqlpush.ErrConflict, "one at most may have no name"},
		{"same name twice", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good, good}}, "Name", `"gql"`, gqlpush.ErrConflict, "another upstream's too"},
		{"unknown protocol", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.Protocol = "sse" })}, "Protocol", `"gql"`, gqlpush.ErrInvalid, `"sse" is not auto`},
		{"SSE upstream at a ws URL", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.Protocol = gqlpush.ProtocolSSE })}, "URL", `"gql"`, gqlpush.ErrInvalid, `scheme "ws", not http or https, as a graphql-sse upstream's must`},
		{"SSE upstream with an init payload", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) {
			u.Protocol, u.URL, u.InitPayload = gqlpush.ProtocolSSE, "http://h/graphql", []byte(`{"token":"x"}`)
		})}, "InitPayload", `"gql"`, gqlpush.ErrConflict, "InitPayload is sent over WebSocket only"},
		{"SSE upstream with an init payload function", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) {
			u.Protocol, u.URL = gqlpush.ProtocolSSE, "https://h/graphql"
			u.InitPayloadFunc = func(*http.Request, *gqlpush.Principal) (json.RawMessage, error) { return nil, nil }
		})}, "InitPayloadFunc", `"gql"`, gqlpush.ErrConflict, "InitPayloadFunc is sent over WebSocket only"},
		{"SSE upstream with a dialer", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) {
			u.Protocol, u.URL, u.Dialer = gqlpush.ProtocolSSE, "http://h/graphql", &gqlpush.WebSocketDialer{}
		})}, "Dialer", `"gql"`, gqlpush.ErrConflict, "a graphql-sse upstream's requests go through HTTPClient"},
		{"init payload not an object", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.InitPayload = []byte(`[1]`) })}, "InitPayload", `"gql"`, gqlpush.ErrInvalid, "InitPayload is not a JSON object"},
		{"hop-by-hop header forwarded", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.ForwardHeaders = []string{"Connection"} })}, "ForwardHeaders", `"gql"`, gqlpush.ErrInvalid, "belongs to one connection"},
		{"schema not SDL", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.Schema = "type {" })}, "Schema", `"gql"`, gqlpush.ErrInvalid, `upstream "gql": Schema schema:`},
		{"negative timeout", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, AckTimeout: -1}, "AckTimeout", "", gqlpush.ErrNegative, "Config.AckTimeout is negative"},
		{"negative queue", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, QueueSize: -1}, "QueueSize", "", gqlpush.ErrNegative, "QueueSize is negative"},
		{"negative once timeout", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, OnceTimeout: -1}, "OnceTimeout", "", gqlpush.ErrNegative, "OnceTimeout is negative"},
		{"prefix without a slash", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, Prefix: "api/live/"}, "Prefix", "", gqlpush.ErrInvalid, "Config.Prefix does not start with /"},
		{"CORS wildcard", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, CORSOrigins: []string{"*"}}, "CORSOrigins", "", gqlpush.ErrInvalid, "holds *"},
		{"CORS origin with a password", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, CORSOrigins: []string{"https://user:hunter2@app.example.com"}}, "CORSOrigins", "", gqlpush.ErrInvalid, "a URL with user info"},
		{"CORS origin with a fragment", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, CORSOrigins: []string{"https://app.example.com#x"}}, "CORSOrigins", "", gqlpush.ErrInvalid, "not an origin"},
		{"forwarded header not a token", gqlpush.Config{Operations: ops, Upstreams: with(func(u *gqlpush.Upstream) { u.ForwardHeaders = []string{"X(Tenant"} })}, "ForwardHeaders", `"gql"`, gqlpush.ErrInvalid, "not a header name"},
		{"anonymous cap over the cap", gqlpush.Config{Operations: ops, Upstreams: []gqlpush.Upstream{good}, MaxStreams: 2, MaxAnonymousStreams: 3}, "MaxAnonymousStreams", "", gqlpush.ErrConflict, "more than MaxStreams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := gqlpush.NewHandler(tt.cfg)
			if h != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error shows a URL or a password: %v", err)
			}
			var ce *gqlpush.ConfigError
			if tt.field == "" {
				if errors.As(err, &ce) {
					t.Errorf("a *ConfigError, want an *OperationError: %v", err)
				}
				return
			}
			if !errors.As(err, &ce) || ce.Field != tt.field || ce.Upstream != tt.upstream || !errors.Is(err, tt.kind) {
				t.Fatalf("got %#v, want field %s of upstream %q, %v", ce, tt.field, tt.upstream, tt.kind)
			}
		})
	}
	// An operation that needs a login without an Authenticator.
	guarded, err := gqlpush.ParseOperation("G", "subscription @auth { gql_countdown(from: 1) }")
	if err != nil {
		t.Fatal(err)
	}
	_, err = gqlpush.NewHandler(gqlpush.Config{Operations: []*gqlpush.Operation{guarded}, Upstreams: []gqlpush.Upstream{good}})
	var oe *gqlpush.OperationError
	if !errors.Is(err, gqlpush.ErrNoAuthenticator) || !errors.As(err, &oe) || oe.File != "G.graphql" {
		t.Fatalf("got %v, want ErrNoAuthenticator for G.graphql", err)
	}
}

func TestUpstreamQueryRewrite(t *testing.T) {
	g := newGateway(t, func(cfg *gqlpush.Config) {
		cfg.Operations = mustParse(t, map[string]string{
			"Aliased": `subscription Named($n: Int! = 2) { count: gql_countdown(from: $n) }`,
		})
	})
	_, _ = g.get(t, "GET", "/operations/Aliased?wg_sse")
	sub := g.waitFor(t, "subscribe", isType("subscribe"))
	want := "subscription Named ($n: Int!) {\n  count: countdown(from: $n)\n}"
	if sub.Query() != want {
		t.Errorf("upstream query:\n%s\nwant:\n%s", sub.Query(), want)
	}
}
