package gqlpush

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults of the [Config] fields left zero.
const (
	DefaultHeartbeat        = 15 * time.Second
	DefaultAckTimeout       = 10 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultKeepAliveTimeout = 30 * time.Second
	DefaultIdleTimeout      = 3 * time.Second
	DefaultReconnectLimit   = 30 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultQueueSize        = 256
	DefaultQueueBytes       = 1 << 20
	DefaultMaxQueryBytes    = 16 << 10
	DefaultResumeFrames     = 64
	DefaultDrainWindow      = time.Second
	DefaultOnceTimeout      = 30 * time.Second
	DefaultLivePollInterval = time.Second
	DefaultQueryTimeout     = 10 * time.Second
	DefaultMaxResponseBytes = 1 << 20
)

// Config configures a [Handler]. Only Operations and Upstreams are required;
// every other field has a working default when left zero.
type Config struct {
	// Operations are the subscriptions served, by name. Required.
	Operations []*Operation

	// Upstreams are the GraphQL servers the operations subscribe to.
	// At least one is required, and at most one may have no name.
	Upstreams []Upstream

	// Prefix is the part of the request path before the operation name,
	// such as "/operations/"; it starts with a slash, as request paths do.
	// Empty means the handler sees the name alone: mount it with
	// http.StripPrefix, or at the root.
	Prefix string

	// Heartbeat is how long a stream may stay silent before a comment
	// frame is sent, so proxies keep it open and the client can tell it
	// is alive. Zero means DefaultHeartbeat; negative disables heartbeats.
	Heartbeat time.Duration

	// AckTimeout bounds the upstream handshake: the WebSocket dial and
	// connection_ack. Zero means DefaultAckTimeout.
	AckTimeout time.Duration

	// PingInterval is how often gqlpush pings a graphql-transport-ws
	// upstream; a pong later than PongTimeout drops the connection (it is
	// then redialled). Zero means DefaultPingInterval; negative disables
	// pings.
	PingInterval time.Duration

	// PongTimeout: see PingInterval. Zero means DefaultPongTimeout.
	PongTimeout time.Duration

	// KeepAliveTimeout drops a graphql-ws (legacy) upstream connection
	// that has sent "ka" and then stays silent this long. Zero means
	// DefaultKeepAliveTimeout.
	KeepAliveTimeout time.Duration

	// IdleTimeout is how long an upstream connection stays open after its
	// last subscription ends. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration

	// ReconnectLimit is how long a lost or unreachable upstream is
	// redialled, with jittered exponential backoff, before its streams end
	// with UPSTREAM_UNAVAILABLE. Clients stay connected meanwhile. The
	// clock and the backoff start again only once a connection has stayed
	// up for 10 s: an upstream that accepts and then drops every connection
	// is given up on like one that refuses them. An upstream that closes
	// with a code the graphql-ws reference client never retries (4400,
	// 4401, 4406, 4409, 4429, 4500, 4004, 4005), or that speaks none of the
	// protocols tried, is not redialled: its streams end at once. Zero
	// means DefaultReconnectLimit; negative means no redial at all.
	ReconnectLimit time.Duration

	// WriteTimeout bounds one write to a client or to an upstream. A
	// client that takes longer is dropped (to spare a timer update per
	// write, a client write gets between half of it and all of it). Over
	// HTTP/2 with heartbeats, a write gets a heartbeat interval more:
	// net/http resets a stream whose deadline passes even while it is
	// quiet, and the next heartbeat must come first. Zero means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration

	// QueueSize is how many results a client may have unread before it is
	// dropped with SLOW_CONSUMER. Zero means DefaultQueueSize.
	QueueSize int

	// QueueBytes bounds the same backlog in bytes: a client with more
	// than this unread, besides the newest result, is dropped with
	// SLOW_CONSUMER too. So a burst of results up to QueueBytes, and then
	// one more of any size, reaches a client whose writer has not yet run.
	// It also bounds the resume window (see ResumeFrames). Zero means
	// DefaultQueueBytes. With the upstream's read limit
	// (DefaultReadLimit), it bounds what a client that stops reading can
	// hold: about QueueBytes plus one result.
	QueueBytes int

	// MaxQueryBytes bounds the query string of a request; a longer one is
	// refused with 414. Zero means DefaultMaxQueryBytes.
	MaxQueryBytes int

	// ResumeFrames is how many recent results each shared subscription
	// keeps, so that an SSE client that reconnects with the Last-Event-ID
	// of a result still kept gets what it missed, then the live results.
	// The window holds at most QueueBytes of results too (and always the
	// last one). Zero means DefaultResumeFrames; negative sends no ids and
	// keeps nothing.
	ResumeFrames int

	// ResumeGrace keeps a shared subscription whose last client left
	// running this long, so that a client that reconnects after a network
	// blip can resume. Zero means none: the upstream subscription ends the
	// moment the last client leaves. A few seconds suits mobile clients.
	//
	// A subscription kept this way still counts: against
	// MaxSubscriptions, and against MaxStreamsPerPrincipal of the caller
	// whose stream left it last. A caller at that cap who opens another
	// stream ends its oldest kept subscription to make room (or takes the
	// place of the one it resumes); one kept subscription ends, oldest
	// first, when MaxSubscriptions is reached.
	ResumeGrace time.Duration

	// Cluster, when set, makes this Handler one instance of a cluster on
	// NATS JetStream (see [Cluster]): one upstream subscription per key
	// for the whole cluster, and streams that resume on any instance.
	Cluster *Cluster

	// OnceTimeout bounds how long a wg_subscribe_once request waits for
	// its first result; then it gets 504 UPSTREAM_TIMEOUT (or, with
	// wg_sse, that error frame and the end) and its upstream subscription
	// stops. Zero means DefaultOnceTimeout.
	OnceTimeout time.Duration

	// LivePollInterval is how often a live query (wg_live) asks its
	// upstream again, for an operation without @live(pollingIntervalSeconds:).
	// Zero means DefaultLivePollInterval.
	LivePollInterval time.Duration

	// QueryTimeout bounds one query to an upstream over HTTP, answer
	// included: a query answered once then gets 504 UPSTREAM_TIMEOUT; a
	// live query asks again at its next interval. Zero means
	// DefaultQueryTimeout.
	QueryTimeout time.Duration

	// MaxResponseBytes bounds an upstream's answer to a query over HTTP: a
	// query answered once then gets 502 RESULT_TOO_LARGE, a live query
	// ends with it. It bounds one event of a ProtocolSSE upstream's
	// subscription alike (the read limit of such an upstream): its data,
	// and the event as sent at most 4 KiB over it (field names, line
	// ends); a larger one ends the subscription with RESULT_TOO_LARGE.
	// Zero means DefaultMaxResponseBytes.
	MaxResponseBytes int

	// DrainWindow spreads the ends of open streams over this long when
	// Close is called, so that clients do not all reconnect at once; it
	// never runs past Close's context deadline. Zero means
	// DefaultDrainWindow; negative ends every stream at once.
	DrainWindow time.Duration

	// Observer is told of streams, subscriptions, upstream connections and
	// deliveries, for metrics. Nil means none.
	Observer *Observer

	// UseResponseWriter keeps every stream on the ResponseWriter.
	//
	// False, the default: over HTTP/1.x a stream takes its connection over
	// from net/http (http.Hijacker), and ServeHTTP returns as soon as the
	// stream has started; the stream goes on in a goroutine the Handler
	// owns, until it ends or Close ends it. That saves a stream net/http's
	// goroutine, buffers and chunk writer: about 12 KiB and a few
	// microseconds per result. But to the http.Server and to middleware
	// the request is over: http.Server.Shutdown neither waits for such
	// streams nor closes them (call Close for that), and middleware that
	// times requests, logs their size or bounds how many run sees a short
	// request.
	//
	// True: ServeHTTP blocks for the life of the stream and writes through
	// the ResponseWriter, as HTTP/2 always does.
	UseResponseWriter bool

	// Authenticator verifies credentials (see JWTAuthenticator). Nil
	// means every caller is anonymous; operations with @auth, @rbac or
	// @fromClaim then make NewHandler fail rather than serve them
	// unguarded.
	Authenticator Authenticator

	// MaxStreams caps the streams open at once; one more is refused with
	// 429 TOO_MANY_STREAMS. Zero means no cap.
	MaxStreams int

	// MaxStreamsPerPrincipal caps the streams one caller may hold open: an
	// authenticated caller by subject, an anonymous one by address (an
	// IPv6 address by its /64, which one host often holds whole). Zero
	// means no cap.
	MaxStreamsPerPrincipal int

	// MaxAnonymousStreams caps the streams of callers without credentials,
	// in all, so that part of MaxStreams stays for authenticated callers:
	// anonymous ones cannot lock them out. It must not exceed MaxStreams
	// when that is set. Zero means no cap of its own.
	MaxAnonymousStreams int

	// MaxSubscriptions caps the shared upstream subscriptions, in all,
	// those kept by ResumeGrace included; a request that would start one
	// more is refused with 429 TOO_MANY_SUBSCRIPTIONS, once no kept
	// subscription is left to end instead. Zero means no cap.
	MaxSubscriptions int

	// MaxUpstreamConns caps the connections to each upstream. Callers
	// whose forwarded headers or init payloads differ get connections of
	// their own, and those values are the caller's to choose: without a
	// cap, each new value opens one more. A request that needs one more
	// is refused with 429 TOO_MANY_UPSTREAM_CONNECTIONS. A ProtocolSSE
	// upstream makes one request per upstream subscription, and the cap
	// counts those requests. Zero means no cap.
	MaxUpstreamConns int

	// ClientAddress names an anonymous caller for MaxStreamsPerPrincipal.
	// Nil means the host of the request's RemoteAddr. Behind a proxy or a
	// load balancer, derive it from the header the proxy sets, and only
	// from a header a client cannot forge past that proxy:
	// [ForwardedAddress] does so.
	ClientAddress func(r *http.Request) string

	// CORSOrigins lists the origins (https://app.example.com) whose pages
	// may read streams from another origin, cookies included. Empty means
	// none: browsers allow same-origin pages only.
	CORSOrigins []string

	// Logger receives operational events (upstream connects, losses). Nil
	// means silent. Nothing secret is logged.
	Logger *slog.Logger
}

// An Upstream is one GraphQL server that operations subscribe to.
type Upstream struct {
	// Name namespaces the upstream's root fields in operations: with Name
	// "gql", an operation writes gql_messageCreated to reach the field
	// messageCreated. Empty means no prefix; at most one upstream may
	// have an empty name. Letters, digits and underscores, starting with a
	// letter.
	Name string

	// URL is the upstream's ws:// or wss:// address; for a ProtocolSSE
	// upstream, its http:// or https:// address; for a NATS upstream, its
	// nats:// or tls:// address, credentials in its user info if any.
	// Required unless NATS is set.
	URL string

	// NATS is a NATS connection the upstream uses, instead of one of its
	// own dialled to URL: the upstream is then a NATS upstream whatever
	// URL says. gqlpush subscribes on it and never closes it; it chains
	// its own to the connection's error handler, to hear of slow
	// consumers and permission errors. Nil means none.
	NATS *nats.Conn

	// NATSOptions are used when gqlpush dials a NATS upstream's URL, after
	// its own (a name, retrying the first connect, reconnecting without
	// end): credentials (nats.UserCredentials), TLS settings, and so on.
	NATSOptions []nats.Option

	// Schema is the upstream's schema in SDL. Optional for a GraphQL
	// upstream: when given, operations are validated against it when the
	// handler is built, and enum and input-object variables are checked per
	// request. Required for a NATS upstream, whose subscription fields name
	// their subjects with @natsSubscribe(subjects: [...], stream: ...) (see
	// the README's section on NATS), and whose results gqlpush completes
	// through each operation's selection set by the schema's types.
	Schema string

	// Protocol is how gqlpush subscribes: a GraphQL-over-WebSocket
	// subprotocol, or ProtocolSSE. Zero means ProtocolAuto, which tries
	// the WebSocket protocols only.
	Protocol Protocol

	// Header is sent with the WebSocket handshake, or with each request
	// to a ProtocolSSE upstream. Nil means none.
	Header http.Header

	// InitPayload is the payload of connection_init, a JSON object. Nil
	// means none is sent. A ProtocolSSE upstream has no connection_init:
	// setting it there is an error.
	InitPayload json.RawMessage

	// ForwardHeaders names client request headers copied onto the
	// upstream's WebSocket handshake, or onto each request to a
	// ProtocolSSE upstream, such as "Authorization". Nil means
	// none. Callers whose forwarded values differ never share an upstream
	// connection or a subscription. Cookie is forwarded only when named;
	// headers of one connection (Connection, Upgrade, Sec-WebSocket-*, …)
	// never are.
	ForwardHeaders []string

	// InitPayloadFunc builds the connection_init payload for a caller, from
	// the request and its principal (nil when anonymous); it replaces
	// InitPayload. Nil means InitPayload for everyone. As with
	// ForwardHeaders, callers with different payloads are kept apart.
	InitPayloadFunc func(r *http.Request, p *Principal) (json.RawMessage, error)

	// Dialer opens connections. Nil means a zero WebSocketDialer. Not
	// for a ProtocolSSE upstream, whose requests go through HTTPClient.
	Dialer Dialer

	// HTTPURL is where query operations are posted (GraphQL over HTTP):
	// an http:// or https:// URL. Zero means URL, with http for ws and
	// https for wss.
	HTTPURL string

	// HTTPClient posts query operations and, for a ProtocolSSE upstream,
	// makes its subscription requests. Nil means a client of gqlpush's
	// own, which follows no redirect (forwarded credentials never reach
	// another host), keeps connections to the upstream open between
	// polls, speaks HTTP/2 to an https upstream that offers it, and holds
	// as many connections as there are subscription requests over
	// HTTP/1.1. A client of the application's own sets other limits
	// through its Transport (MaxConnsPerHost, say). Its Timeout, if any,
	// applies besides Config.QueryTimeout, and to a whole subscription
	// request too: leave it zero for a ProtocolSSE upstream.
	HTTPClient *http.Client
}

// withDefaults returns a copy of c in which every field left zero that has
// a default has it, or the first setting that is not valid. The Handler
// keeps the copy: what the caller does with c afterwards changes nothing.
func (c *Config) withDefaults() (Config, error) {
	d := *c
	for _, f := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"Heartbeat", &d.Heartbeat, DefaultHeartbeat},
		{"AckTimeout", &d.AckTimeout, DefaultAckTimeout},
		{"PingInterval", &d.PingInterval, DefaultPingInterval},
		{"PongTimeout", &d.PongTimeout, DefaultPongTimeout},
		{"KeepAliveTimeout", &d.KeepAliveTimeout, DefaultKeepAliveTimeout},
		{"IdleTimeout", &d.IdleTimeout, DefaultIdleTimeout},
		{"ReconnectLimit", &d.ReconnectLimit, DefaultReconnectLimit},
		{"WriteTimeout", &d.WriteTimeout, DefaultWriteTimeout},
		{"OnceTimeout", &d.OnceTimeout, DefaultOnceTimeout},
		{"ResumeGrace", &d.ResumeGrace, 0},
		{"DrainWindow", &d.DrainWindow, DefaultDrainWindow},
		{"LivePollInterval", &d.LivePollInterval, DefaultLivePollInterval},
		{"QueryTimeout", &d.QueryTimeout, DefaultQueryTimeout},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		// Negative means "off" for these; for the others it means nothing.
		switch f.field {
		case "Heartbeat", "PingInterval", "ReconnectLimit", "DrainWindow":
			continue
		}
		if *f.v < 0 {
			return d, &ConfigError{Field: f.field, Err: ErrNegative}
		}
	}
	for _, f := range []struct {
		field string
		v     *int
		def   int
	}{
		{"QueueSize", &d.QueueSize, DefaultQueueSize},
		{"QueueBytes", &d.QueueBytes, DefaultQueueBytes},
		{"MaxQueryBytes", &d.MaxQueryBytes, DefaultMaxQueryBytes},
		{"ResumeFrames", &d.ResumeFrames, DefaultResumeFrames},
		{"MaxStreams", &d.MaxStreams, 0},
		{"MaxStreamsPerPrincipal", &d.MaxStreamsPerPrincipal, 0},
		{"MaxAnonymousStreams", &d.MaxAnonymousStreams, 0},
		{"MaxSubscriptions", &d.MaxSubscriptions, 0},
		{"MaxUpstreamConns", &d.MaxUpstreamConns, 0},
		{"MaxResponseBytes", &d.MaxResponseBytes, DefaultMaxResponseBytes},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 && f.field != "ResumeFrames" { // negative: no resumption
			return d, &ConfigError{Field: f.field, Err: ErrNegative}
		}
	}
	if d.MaxStreams > 0 && d.MaxAnonymousStreams > d.MaxStreams {
		return d, &ConfigError{Field: "MaxAnonymousStreams", Err: ErrConflict, Detail: "is more than MaxStreams"}
	}
	if d.Prefix != "" && !strings.HasPrefix(d.Prefix, "/") {
		// Request paths start with a slash: such a prefix matches none.
		return d, &ConfigError{Field: "Prefix", Err: ErrInvalid, Detail: "does not start with /"}
	}
	if len(d.Operations) == 0 {
		return d, &ConfigError{Field: "Operations", Err: ErrRequired}
	}
	if len(d.Upstreams) == 0 {
		return d, &ConfigError{Field: "Upstreams", Err: ErrRequired}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Cluster != nil {
		cl, err := d.Cluster.withDefaults()
		if err != nil {
			return d, err
		}
		d.Cluster = &cl
	}
	return d, nil
}

// Kinds of configuration problems: every error of [NewHandler] about its
// Config is a [*ConfigError] or an [*OperationError] that wraps one of
// them, for errors.Is.
var (
	ErrRequired        = errors.New("gqlpush: a required setting is missing")
	ErrNegative        = errors.New("gqlpush: a setting is negative")
	ErrInvalid         = errors.New("gqlpush: a setting is not valid")
	ErrConflict        = errors.New("gqlpush: settings conflict")
	ErrNoAuthenticator = errors.New("gqlpush: an operation requires authentication, and Config.Authenticator is nil")
)

// A ConfigError is a setting of a [Config], or of one of its [Upstream]s,
// that [NewHandler] refuses.
type ConfigError struct {
	// Field is the name of the field: of Config ("QueueSize"), or, when
	// Upstream is set, of that Upstream ("ForwardHeaders").
	Field string
	// Upstream names the upstream whose field it is, as "gql", or as
	// "#2" for an upstream without a name (counted from 1); "" for a
	// field of Config.
	Upstream string
	// Err is the kind of problem: ErrRequired, ErrNegative, ErrInvalid or
	// ErrConflict.
	Err error
	// Detail says more, for people; it never holds a URL's credentials.
	Detail string
}

func (e *ConfigError) Error() string {
	where := "Config." + e.Field
	if e.Upstream != "" {
		where = "upstream " + e.Upstream + ": " + e.Field
	}
	detail := e.Detail
	if detail == "" {
		switch e.Err {
		case ErrRequired:
			detail = "is required"
		case ErrNegative:
			detail = "is negative"
		default:
			detail = "is not valid"
		}
	}
	return "gqlpush: " + where + " " + detail
}

func (e *ConfigError) Unwrap() error { return e.Err }
