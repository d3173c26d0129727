package gqlpush

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// upstream is an Upstream checked and resolved.
type upstream struct {
	name     string
	label    string // for logs: never the URL, which may hold credentials
	url      string
	header   http.Header
	init     json.RawMessage
	protocol Protocol
	dialer   Dialer
	schema   *upstreamSchema
	forward  []string // canonical header names, sorted
	initFunc func(*http.Request, *Principal) (json.RawMessage, error)
	learned  atomic.Value // string: the protocol that worked, for ProtocolAuto
	src      source       // what serves its subscriptions
	httpURL  string       // where its queries are posted
	client   *http.Client // that posts them
	// ownClient: client is gqlpush's, whose idle connections Close
	// closes; not the application's.
	ownClient bool
	// clustered: its subscriptions are a cluster's (cluster.go), with the
	// positions of the cluster's stream.
	clustered bool
	nats      *natsUpstream // set for a NATS upstream
}

func (u *upstream) protocolsToTry() []Protocol {
	switch u.protocol {
	case ProtocolTransportWS, ProtocolLegacyWS:
		return []Protocol{u.protocol}
	}
	if l, _ := u.learned.Load().(string); l == string(ProtocolLegacyWS) {
		return []Protocol{ProtocolLegacyWS, ProtocolTransportWS}
	}
	return []Protocol{ProtocolTransportWS, ProtocolLegacyWS}
}

// An endpoint is an operation bound to its upstream.
type endpoint struct {
	op        *Operation
	up        *upstream
	query     string         // sent upstream
	defaults  map[string]any // coerced default values
	coerce    coercer
	vars      []*variableDef
	byName    map[string]*variableDef
	needsAuth bool         // @auth, @rbac or a @fromClaim variable
	nats      *natsBinding // for an operation on a NATS upstream: its subjects
	src       source       // what serves its subscriptions, or its live queries
	// clustered: its subscriptions are a cluster's (cluster.go), with the
	// positions of the cluster's stream.
	clustered bool
}

// positional reports whether the results of the operation's subscriptions
// have positions in their source that outlive a process: a JetStream
// stream's sequences.
func (e *endpoint) positional() bool {
	return e.nats != nil && e.nats.field.stream != "" || e.clustered
}

// declares reports whether the operation declares a variable of that name.
func (e *endpoint) declares(name string) bool {
	_, ok := e.byName[name]
	return ok
}

func (e *endpoint) variablesJSON(vars string) json.RawMessage {
	if vars == "" || vars == "{}" {
		return nil
	}
	return json.RawMessage(vars)
}

var upstreamName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

func resolveUpstreams(in []Upstream) ([]*upstream, error) {
	var out []*upstream
	seen := map[string]bool{}
	for i, u := range in {
		what := strconv.Quote(u.Name)
		if u.Name == "" {
			what = "#" + strconv.Itoa(i+1)
		}
		bad := func(field string, kind error, detail string) error {
			return &ConfigError{Field: field, Upstream: what, Err: kind, Detail: detail}
		}
		if seen[u.Name] {
			if u.Name == "" {
				return nil, bad("Name", ErrConflict, "is empty, as another upstream's is: one at most may have no name")
			}
			return nil, bad("Name", ErrConflict, "is another upstream's too")
		}
		seen[u.Name] = true
		if u.Name != "" && (!upstreamName.MatchString(u.Name) || strings.HasSuffix(u.Name, "_")) {
			return nil, bad("Name", ErrInvalid, "is not letters, digits and underscores, starting with a letter and not ending with _")
		}
		if isNATSUpstream(u) {
			r, err := resolveNATSUpstream(u, bad)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
			continue
		}
		if !u.Protocol.valid() {
			return nil, bad("Protocol", ErrInvalid, fmt.Sprintf("%q is not %s, %s, %s or %s", clip(string(u.Protocol)), ProtocolAuto, ProtocolTransportWS, ProtocolLegacyWS, ProtocolSSE))
		}
		sse := u.Protocol == ProtocolSSE
		if u.NATSOptions != nil {
			return nil, bad("NATSOptions", ErrConflict, "is for NATS upstreams; this one's URL is not nats:// or tls://")
		}
		if u.URL == "" {
			return nil, bad("URL", ErrRequired, "")
		}
		pu, err := url.Parse(u.URL)
		if err != nil || pu.Host == "" {
			return nil, bad("URL", ErrInvalid, "is not an absolute URL")
		}
		switch {
		case sse && pu.Scheme != "http" && pu.Scheme != "https":
			return nil, bad("URL", ErrInvalid, fmt.Sprintf("has the scheme %q, not http or https, as a %s upstream's must", clip(pu.Scheme), ProtocolSSE))
		case sse && u.Dialer != nil:
			return nil, bad("Dialer", ErrConflict, "opens WebSockets; a "+string(ProtocolSSE)+" upstream's requests go through HTTPClient")
		case sse && (u.InitPayload != nil || u.InitPayloadFunc != nil):
			what := "InitPayload"
			if u.InitPayload == nil {
				what = "InitPayloadFunc"
			}
			return nil, bad(what, ErrConflict, "is sent over WebSocket only; a "+string(ProtocolSSE)+" upstream gets credentials in headers (Header, ForwardHeaders)")
		case !sse && u.Dialer == nil && pu.Scheme != "ws" && pu.Scheme != "wss":
			return nil, bad("URL", ErrInvalid, fmt.Sprintf("has the scheme %q, not ws or wss", clip(pu.Scheme)))
		}
		if u.InitPayload != nil && !isJSONObject(u.InitPayload) {
			return nil, bad("InitPayload", ErrInvalid, "is not a JSON object")
		}
		forward, err := checkForwardHeaders(u.ForwardHeaders)
		if err != nil {
			return nil, bad("ForwardHeaders", ErrInvalid, err.Error())
		}
		httpURL, err := queryURL(u.HTTPURL, pu)
		if err != nil {
			return nil, bad("HTTPURL", ErrInvalid, err.Error())
		}
		client, own := u.HTTPClient, false
		if client == nil {
			client, own = newQueryClient(), true
		}
		r := &upstream{
			name:     u.Name,
			label:    u.Name,
			url:      u.URL,
			header:   u.Header.Clone(),
			init:     u.InitPayload,
			protocol: u.Protocol,
			dialer:   u.Dialer,
			forward:  forward,
			initFunc: u.InitPayloadFunc,
			httpURL:  httpURL,
			client:   client, ownClient: own,
		}
		if r.label == "" {
			r.label = pu.Host // host only: the URL may hold credentials
		}
		if r.header == nil {
			r.header = http.Header{}
		}
		if r.dialer == nil && !sse {
			r.dialer = &WebSocketDialer{}
		}
		if u.Schema != "" {
			if pos := usesNATSDirective(u.Schema); pos != nil {
				return nil, bad("Schema", ErrInvalid, fmt.Sprintf("schema:%d:%d: @%s is for the fields of NATS upstreams; this one is a GraphQL server", pos.Line, pos.Column, directiveNATSSubscribe))
			}
			if r.schema, err = parseUpstreamSchema(u.Name, u.Schema); err != nil {
				return nil, bad("Schema", ErrInvalid, err.Error())
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// bind resolves an operation's upstream from its root field, validates it
// against that upstream's schema, and prepares the query sent upstream.
func bind(op *Operation, ups []*upstream, haveAuth bool) (*endpoint, error) {
	fail := func(format string, args ...any) error {
		return &OperationError{File: op.file, Line: op.rootField.Position.Line, Column: op.rootField.Position.Column, Message: fmt.Sprintf(format, args...)}
	}
	up, field := routeField(op.rootField.Name, ups)
	if up == nil {
		var names []string
		for _, u := range ups {
			names = append(names, u.name+"_")
		}
		return nil, fail("field %s names no configured upstream (fields start with one of: %s)", op.rootField.Name, strings.Join(names, ", "))
	}
	for _, f := range op.rootFields[1:] {
		if u, _ := routeField(f.Name, ups); u != up {
			return nil, &OperationError{File: op.file, Line: f.Position.Line, Column: f.Position.Column,
				Message: fmt.Sprintf("field %s is not of the upstream of %s: a query's root fields all come from one upstream", f.Name, op.rootField.Name)}
		}
	}
	switch {
	case op.query && up.nats != nil:
		return nil, fail("upstream %s is a NATS server: it serves subscriptions only", up.label)
	case op.query && up.httpURL == "":
		return nil, fail("upstream %s has no HTTPURL to post queries to", up.label)
	}
	needs := op.rules.requireAuth
	for _, v := range op.vars {
		needs = needs || v.claim != ""
	}
	if needs && !haveAuth {
		return nil, &OperationError{File: op.file, Message: "the operation requires authentication (@auth, @rbac or @fromClaim) but Config.Authenticator is nil", Err: ErrNoAuthenticator}
	}
	ep := &endpoint{op: op, up: up, vars: op.vars, byName: map[string]*variableDef{}, defaults: map[string]any{}, needsAuth: needs}
	for _, v := range op.vars {
		ep.byName[v.name] = v
	}
	if up.schema != nil {
		if err := up.schema.validate(op); err != nil {
			return nil, err
		}
		ep.coerce = coercer{schema: up.schema.types}
	}
	for _, v := range op.vars {
		if v.defaultLit == nil {
			continue
		}
		d, err := ep.coerce.fromJSON(v.typ, literalJSON(v.defaultLit), v.name)
		if err != nil {
			return nil, &OperationError{File: op.file, Line: v.pos.Line, Column: v.pos.Column, Message: "default value: " + err.Error()}
		}
		ep.defaults[v.name] = d
	}
	if up.nats != nil {
		def := up.schema.types.Subscription.Fields.ForName(field)
		b, err := bindNATS(op, up.nats.fields[field], field, def)
		if err != nil {
			return nil, err
		}
		if b.complete, err = newCompleter(up.schema.types, def.Type, op.rootField, op.fragments); err != nil {
			e := &OperationError{File: op.file, Message: err.Error()}
			if ce, ok := err.(*completionError); ok && ce.pos != nil {
				e.Line, e.Column, e.Message = ce.pos.Line, ce.pos.Column, ce.msg
			}
			return nil, e
		}
		ep.nats = b
		return ep, nil
	}
	prefix := ""
	if up.name != "" {
		prefix = up.name + "_"
	}
	q, err := op.upstreamQuery(prefix)
	if err != nil {
		return nil, err
	}
	ep.query = q
	return ep, nil
}

// routeField finds the upstream a root field belongs to: the named upstream
// whose name and an underscore start it (the longest such name), else the
// unnamed upstream.
func routeField(field string, ups []*upstream) (*upstream, string) {
	var best, unnamed *upstream
	for _, u := range ups {
		if u.name == "" {
			unnamed = u
			continue
		}
		if strings.HasPrefix(field, u.name+"_") && len(field) > len(u.name)+1 && (best == nil || len(u.name) > len(best.name)) {
			best = u
		}
	}
	if best != nil {
		return best, field[len(best.name)+1:]
	}
	if unnamed != nil {
		return unnamed, field
	}
	return nil, ""
}

// queryURL is where an upstream's queries are posted: set, an http(s) URL
// with a host; else its WebSocket URL pu with http for ws, https for wss.
func queryURL(set string, pu *url.URL) (string, error) {
	if set != "" {
		hu, err := url.Parse(set)
		if err != nil || hu.Host == "" || (hu.Scheme != "http" && hu.Scheme != "https") {
			return "", errors.New("is not an http:// or https:// URL with a host")
		}
		return set, nil
	}
	hu := *pu
	switch pu.Scheme {
	case "http", "https": // a graphql-sse upstream's
	case "ws":
		hu.Scheme = "http"
	case "wss":
		hu.Scheme = "https"
	default:
		return "", nil // a Dialer of its own: queries need HTTPURL
	}
	return hu.String(), nil
}

// newQueryClient is the client an upstream's queries are posted with, and
// a graphql-sse upstream's subscriptions asked for, when it has none of its
// own: it follows no redirect, keeps enough connections idle for the
// pollers of many keys, and reads no more than DefaultReadLimit of an
// answer's header (net/http's default is 10 MiB, for each request).
func newQueryClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.MaxResponseHeaderBytes = DefaultReadLimit
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
