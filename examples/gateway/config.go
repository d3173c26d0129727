package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
)

// A usageError is a mistake in the flags or in what they name: the gateway
// reports it and exits with status 2 before it listens.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// defaultListen is the default of -listen: the port after the one of
// examples/demo (127.0.0.1:9991), so that the gateway runs beside the demo
// in front of the demo's chat upstream, as the quick start in the package
// doc does.
const defaultListen = "127.0.0.1:9992"

// config is the command line, checked as far as the gateway's own rules go
// (gqlpush.NewHandler checks the rest: see handlerError), with everything it
// names loaded.
type config struct {
	listen         string
	metrics        string // "" when no metrics are served
	upstreams      []gqlpush.Upstream
	schemaFiles    map[string]string // -schema's FILE by upstream label, for messages
	operationsDir  string
	operations     []*gqlpush.Operation
	heartbeat      time.Duration
	queue          int
	writeTimeout   time.Duration
	reconnectLimit time.Duration
	resumeFrames   int
	resumeGrace    time.Duration
	onceTimeout    time.Duration
	drain          time.Duration
	liveInterval   time.Duration
	queryTimeout   time.Duration
	maxResponse    int
	cluster        *gqlpush.Cluster // nil without -cluster
	tls            *tls.Config      // nil: cleartext
	h2c            bool             // cleartext HTTP/2 besides HTTP/1.1

	jwt            *gqlpushjwt.Config // nil: every caller is anonymous
	keys           string             // where jwt's keys come from, for the log
	keysFlag       string             // the flag that gives them, for messages
	warnings       []string           // logged once the gateway is ready to listen
	forwardHeaders []string           // as given: gqlpush checks and canonicalises them
	corsOrigins    []string           // as given: gqlpush checks them
	clientIPHeader string             // canonical; "" without trustedProxies
	trustedProxies []netip.Prefix     // nil counts anonymous callers by remote address

	maxStreams, maxStreamsPerPrincipal, maxAnonymousStreams int
	maxSubscriptions, maxUpstreamConns                      int
	queueBytes                                              int
	maxConns                                                int // the gateway's own: see limitConns
}

// handlerConfig is the gqlpush configuration the flags ask for; run adds the
// logger, the metrics observer and the authenticator. Zero values keep their
// meaning in gqlpush.Config: the library's default, or no cap. It is not
// checked: gqlpush.NewHandler checks it, and handlerError names the flag of
// what it refuses.
func (c *config) handlerConfig() gqlpush.Config {
	hc := gqlpush.Config{
		Operations:     c.operations,
		Upstreams:      c.upstreams,
		Prefix:         prefix,
		Heartbeat:      c.heartbeat,
		QueueSize:      c.queue,
		QueueBytes:     c.queueBytes,
		WriteTimeout:   c.writeTimeout,
		ReconnectLimit: c.reconnectLimit,
		ResumeFrames:   c.resumeFrames,
		ResumeGrace:    c.resumeGrace,
		OnceTimeout:    c.onceTimeout,
		DrainWindow:    c.drain,

		LivePollInterval: c.liveInterval,
		QueryTimeout:     c.queryTimeout,
		MaxResponseBytes: c.maxResponse,

		MaxStreams:             c.maxStreams,
		MaxStreamsPerPrincipal: c.maxStreamsPerPrincipal,
		MaxAnonymousStreams:    c.maxAnonymousStreams,
		MaxSubscriptions:       c.maxSubscriptions,
		MaxUpstreamConns:       c.maxUpstreamConns,
		CORSOrigins:            c.corsOrigins,
	}
	if len(c.trustedProxies) > 0 {
		hc.ClientAddress = gqlpush.ForwardedAddress(c.clientIPHeader, c.trustedProxies)
	}
	if c.cluster != nil {
		cl := *c.cluster
		hc.Cluster = &cl
	}
	return hc
}

// fieldFlags is the table from the fields of gqlpush.Config, and of
// gqlpush.Upstream and of gqlpush.Cluster (as "Cluster.Field"), that flags
// set to the flag that sets each: a *gqlpush.ConfigError about a field is
// reported under its flag. The structs share no field name that a flag
// sets. A field missing here is one no flag sets (Prefix, the gateway's own
// constant; ClientAddress, which gqlpush never refuses; Cluster.NATS, a
// connection only a program can give).
func fieldFlags() map[string]string {
	return map[string]string{
		// gqlpush.Config
		"Operations":             "-operations",
		"Upstreams":              "-upstream",
		"Heartbeat":              "-heartbeat",
		"QueueSize":              "-queue",
		"QueueBytes":             "-queue-bytes",
		"WriteTimeout":           "-write-timeout",
		"ReconnectLimit":         "-reconnect-limit",
		"ResumeFrames":           "-resume-frames",
		"ResumeGrace":            "-resume-grace",
		"OnceTimeout":            "-once-timeout",
		"LivePollInterval":       "-live-interval",
		"QueryTimeout":           "-query-timeout",
		"MaxResponseBytes":       "-max-response-bytes",
		"DrainWindow":            "-drain",
		"MaxStreams":             "-max-streams",
		"MaxStreamsPerPrincipal": "-max-streams-per-principal",
		"MaxAnonymousStreams":    "-max-anonymous-streams",
		"MaxSubscriptions":       "-max-subscriptions",
		"MaxUpstreamConns":       "-max-upstream-conns",
		"CORSOrigins":            "-cors-origin",
		// gqlpush.Upstream
		"Name":           "-upstream",
		"URL":            "-upstream",
		"Schema":         "-schema",
		"Protocol":       "-protocol",
		"ForwardHeaders": "-forward-header",
		"NATSOptions":    "-nats-creds",
		// gqlpush.Cluster
		"Cluster.URL":         "-cluster",
		"Cluster.NATSOptions": "-cluster-creds",
		"Cluster.Name":        "-cluster-name",
		"Cluster.Instance":    "-cluster-instance",
		"Cluster.Lease":       "-cluster-lease",
		"Cluster.MaxAge":      "-resume-max-age",
	}
}

// handlerError is an error of gqlpush.NewHandler as the gateway reports it.
// A setting gqlpush refuses is a usage error under the name of the flag that
// gave it, with gqlpush's own words:
//
//	-queue: gqlpush: Config.QueueSize is negative
//
// Operation errors are usage errors too, with file names as the operator
// wrote -operations. haveAuth says whether -jwt-secret-file or -jwks was
// given, for the hint that operations needing a login need one of them.
func (c *config) handlerError(err error, haveAuth bool) error {
	var ce *gqlpush.ConfigError
	if errors.As(err, &ce) {
		name, ok := fieldFlags()[ce.Field]
		if !ok {
			// No flag sets the field: the gateway's mistake, not the
			// operator's.
			return fmt.Errorf("the gateway's handler configuration: %w", err)
		}
		if file, ok := c.schemaFiles[ce.Upstream]; ok && ce.Field == "Schema" {
			// gqlpush names the schema "schema" in its positions: the
			// operator knows it by its file.
			if rest, ok := strings.CutPrefix(ce.Detail, "schema:"); ok {
				named := *ce
				named.Detail = file + ":" + rest
				return usagef("%s: %w", name, &named)
			}
		}
		return usagef("%s: %w", name, err)
	}
	err = inDir(c.operationsDir, err)
	if !haveAuth && errors.Is(err, gqlpush.ErrNoAuthenticator) {
		err = fmt.Errorf("%w\n(operations with @auth, @rbac or @fromClaim need -jwt-secret-file or -jwks)", err)
	}
	return &usageError{err}
}

// schemaLabel is how a *gqlpush.ConfigError names upstreams[i]: its quoted
// name, or #N, counted from 1, for the unnamed one.
func schemaLabel(upstreams []gqlpush.Upstream, i int) string {
	if name := upstreams[i].Name; name != "" {
		return strconv.Quote(name)
	}
	return "#" + strconv.Itoa(i+1)
}

// shutdownTimeout bounds the graceful shutdown. gqlpush spreads the ends of
// the streams over the drain window, but over no more than half the time
// left before the deadline; twice the window lets it use all of it. The
// write timeout and a margin follow, so that the last end frames are written
// and a client that stopped reading is dropped by its write deadline before
// the shutdown gives up on it.
func (c *config) shutdownTimeout() time.Duration {
	drain := c.drain
	if drain == 0 {
		drain = gqlpush.DefaultDrainWindow
	}
	write := c.writeTimeout
	if write == 0 {
		write = gqlpush.DefaultWriteTimeout
	}
	return 2*max(drain, 0) + write + shutdownMargin
}

// listFlag collects the values of a repeatable flag; they are checked after
// parsing, so that messages can leave credentials out.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ", ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const usageHead = `usage: gateway -operations DIR -upstream [NAME=]URL [flags]

Serves the subscriptions in DIR/**/*.graphql at /operations/<path without
.graphql> as Server-Sent Events (?wg_sse=true) or JSON streams, subscribing
upstream over GraphQL-over-WebSocket or GraphQL over SSE, or to NATS subjects;
?wg_subscribe_once=true answers with the first result alone, or with 504
UPSTREAM_TIMEOUT after -once-timeout. /healthz answers "ok". With -metrics
ADDR, Prometheus metrics are served at http://ADDR/metrics.

An -upstream with a nats:// or tls:// URL (or a comma-separated list) is a
NATS upstream: its -schema says which subjects feed each subscription field,
with @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"]), and each
message is the field's JSON value. Its credentials go in the URL
(nats://user:password@host, nats://token@host) or in -nats-creds NAME=FILE.
-protocol and -forward-header are for GraphQL upstreams only.

With -cluster nats://HOST:4222, gateways in front of the same GraphQL
upstreams act as one, through a NATS server with JetStream: one instance
subscribes upstream for all (it holds a lease, for -cluster-lease), results
go through a JetStream stream whose sequences are the event ids, so that a
client resumes on any instance with Last-Event-ID, and when an instance
dies another one with clients takes its subscriptions over once the lease
has expired. Its credentials go in the URL or in -cluster-creds FILE.

With -jwt-secret-file or -jwks, callers may present a JSON Web Token, in an
Authorization: Bearer header or in the -auth-cookie cookie. Operations with
@auth, @rbac or @fromClaim require one; @fromClaim variables take their
values from its claims. A stream opened with a token ends when the token's
exp plus -jwt-leeway passes. Without either flag every caller is anonymous,
and such operations are refused at startup.

What a client can make the gateway hold is bounded: connections
(-max-conns), request heads (64 KiB), streams (-max-streams,
-max-streams-per-principal, -max-anonymous-streams), unread results (-queue,
-queue-bytes), and what streams open upstream (-max-subscriptions,
-max-upstream-conns). Behind proxies, -trusted-proxy names those whose
X-Forwarded-For is believed.

In front of the chat upstream of examples/demo (go run ./examples/demo), from
the root of the repository, with the sample operations and schema:

  go run ./examples/gateway -upstream gql=ws://127.0.0.1:9991/graphql -schema gql=examples/gateway/chat.graphql -operations examples/gateway/operations
  curl -N 'http://127.0.0.1:9992/operations/Messages?wg_sse=true'

Flags:
`

// parseConfig parses the command line and loads what it names: the schema
// files and the operations. -h and -help print the usage to stdout and
// return flag.ErrHelp. Every other error is a *usageError.
func parseConfig(args []string, stdout io.Writer) (*config, error) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	// Errors are reported once, by main; only -h prints the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	cfg := &config{}
	var upstreams, schemas, protocols, forward, origins, proxies, natsCreds listFlag
	var tf tlsFlags
	var af authFlags
	var cf clusterFlags
	fs.StringVar(&cfg.listen, "listen", defaultListen, "listen on `ADDR` (host:port)")
	fs.StringVar(&tf.cert, "tls-cert", "", "serve HTTPS with the certificate (chain) in PEM `FILE`, and HTTP/2 to the clients that offer it\n(browsers do: many streams of a page share one connection). Needs -tls-key")
	fs.StringVar(&tf.key, "tls-key", "", "the private key, in PEM `FILE`, of -tls-cert")
	fs.BoolVar(&tf.h2c, "h2c", false, "accept cleartext HTTP/2 (h2c, prior knowledge) besides HTTP/1.1, for a proxy in front that speaks it;\nnot with -tls-cert")
	fs.StringVar(&cfg.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (host:port), on a listener of its own; empty serves none")
	fs.Var(&upstreams, "upstream", "an upstream, `[NAME=]URL` (repeatable): a GraphQL server at a ws:// or wss:// URL (http:// or https:// with\n-protocol NAME=graphql-sse), or NATS at a nats:// or tls://\nURL or a comma-separated list of such URLs (a cluster), with credentials as nats://USER:PASSWORD@HOST or\nnats://TOKEN@HOST, or given by -nats-creds; a NATS upstream needs its -schema. Operations reach its root fields\nas NAME_field; at most one upstream has no NAME, and its fields keep their names.")
	fs.StringVar(&cfg.operationsDir, "operations", "", "serve the operation files (*.graphql) under `DIR`; required")
	fs.Var(&schemas, "schema", "the SDL of an upstream, `NAME=FILE` (=FILE for the unnamed one; repeatable; required for a NATS upstream,\nwhose subscription fields name their subjects with @natsSubscribe). Operations are checked against it at startup,\nand variables per request.")
	fs.Var(&natsCreds, "nats-creds", "the credentials file that NATS upstream NAME connects with, `NAME=FILE` (=FILE for the unnamed one; repeatable):\na user JWT and its nkey seed, as nsc generate creds writes them. Checked at startup, then read again at\nevery connect, so it can be replaced in place. Let the gateway's user alone read the file (a warning is logged otherwise)")
	fs.Var(&protocols, "protocol", "how GraphQL upstreams are subscribed to, `[NAME=]PROTOCOL`: NAME=PROTOCOL for upstream NAME\n(=PROTOCOL for the unnamed one; repeatable), a bare PROTOCOL for every GraphQL upstream not named in another -protocol.\nPROTOCOL is auto (offer graphql-transport-ws, then graphql-ws, and keep what the upstream takes),\ngraphql-transport-ws, graphql-ws (the legacy subscriptions-transport-ws), or graphql-sse (GraphQL over Server-Sent\nEvents, one HTTP request per upstream subscription, as GraphQL Yoga serves them; auto never picks it). Default auto.")
	fs.DurationVar(&cfg.heartbeat, "heartbeat", gqlpush.DefaultHeartbeat, "how long a stream stays silent before a heartbeat frame; 0 means the default, negative disables")
	fs.IntVar(&cfg.queue, "queue", gqlpush.DefaultQueueSize, "let a client have `N` results unread before it is dropped with SLOW_CONSUMER; 0 means the default")
	fs.IntVar(&cfg.queueBytes, "queue-bytes", gqlpush.DefaultQueueBytes, "let a client have `N` bytes of results unread, besides the newest result, before it is dropped with\nSLOW_CONSUMER; it bounds what -resume-frames keeps too. 0 means the default")
	fs.DurationVar(&cfg.writeTimeout, "write-timeout", gqlpush.DefaultWriteTimeout, "bound each write to a client or to an upstream to `D`: a client slower than that is dropped.\n0 means the default")
	fs.DurationVar(&cfg.reconnectLimit, "reconnect-limit", gqlpush.DefaultReconnectLimit, "redial a lost or unreachable upstream for `D`, with jittered backoff, before its streams end with\nUPSTREAM_UNAVAILABLE; clients stay connected meanwhile. 0 means the default, negative never redials")
	fs.IntVar(&cfg.resumeFrames, "resume-frames", gqlpush.DefaultResumeFrames, "keep the last `N` results of each shared subscription, so that an SSE client that reconnects with the\nLast-Event-ID of one of them gets what it missed; 0 means the default, negative sends no id lines")
	fs.DurationVar(&cfg.resumeGrace, "resume-grace", 0, "keep a shared subscription running for `D` after its last client left, so that a client back from a\nnetwork blip can resume; 0 (the default) stops it at once")
	fs.DurationVar(&cfg.onceTimeout, "once-timeout", gqlpush.DefaultOnceTimeout, "give a ?wg_subscribe_once=true request `D` to get its first result: then it gets 504 UPSTREAM_TIMEOUT\n(with ?wg_sse=true, that error frame and the end) and its upstream subscription stops. 0 means the default")
	fs.DurationVar(&cfg.liveInterval, "live-interval", gqlpush.DefaultLivePollInterval, "ask the upstream again every `D` for a query followed with ?wg_live=true, unless the operation says\n@live(pollingIntervalSeconds: N); a result is pushed only when it changed. 0 means the default")
	fs.DurationVar(&cfg.queryTimeout, "query-timeout", gqlpush.DefaultQueryTimeout, "give the upstream `D` to answer a query posted over HTTP: a query answered once then gets 504\nUPSTREAM_TIMEOUT, a live one is asked again at its next interval. 0 means the default")
	fs.IntVar(&cfg.maxResponse, "max-response-bytes", gqlpush.DefaultMaxResponseBytes, "refuse an upstream's answer to a query over `N` bytes: 502 RESULT_TOO_LARGE, or the end of a live stream.\n0 means the default")
	fs.DurationVar(&cfg.drain, "drain", gqlpush.DefaultDrainWindow, "on shutdown, spread the ends of the open streams over `D`, so that clients do not all reconnect at once;\n0 means the default, negative ends them all at once. Shutdown waits at most twice D, plus the write\ntimeout, plus "+shutdownMargin.String())

	fs.StringVar(&af.secretFile, "jwt-secret-file", "", "verify HS256 tokens with the secret in `FILE`: its content, less one trailing newline; 32 bytes or more.\nLet the gateway's user alone read the file (a warning is logged otherwise). Not with -jwks")
	fs.StringVar(&af.jwks, "jwks", "", "verify RS256, ES256 and EdDSA tokens with the JSON Web Key Set at `URL|FILE`. An http(s) URL is fetched\nat startup (the gateway does not start without it), then again hourly and when a token names an unknown key;\na FILE is read once. Not with -jwt-secret-file. Without either, every caller is anonymous")
	fs.StringVar(&af.issuer, "jwt-issuer", "", "require `ISS` in the \"iss\" claim of tokens; by default any issuer is accepted")
	fs.StringVar(&af.audience, "jwt-audience", "", "require `AUD` among the \"aud\" claim's values; by default any audience is accepted, so set it when\nthe issuer also signs tokens for other applications")
	fs.DurationVar(&af.leeway, "jwt-leeway", gqlpushjwt.DefaultLeeway, "allow `D` of clock skew between the issuer and the gateway on the \"exp\", \"nbf\" and \"iat\" claims; 0s allows none.\nA token is refused once its exp plus D has passed, and a stream opened with it ends then, with UNAUTHENTICATED")
	fs.StringVar(&af.cookie, "auth-cookie", gqlpushjwt.DefaultCookie, "read the token from the cookie `NAME` too, for browsers, whose EventSource cannot set an Authorization\nheader; - reads no cookie")
	fs.StringVar(&af.rolesClaim, "roles-claim", gqlpushjwt.DefaultRolesClaim, "the claim `NAME` that holds the roles @rbac checks: an array of strings, or one space-separated string;\na path such as realm_access.roles reaches into nested claims")
	fs.Var(&forward, "forward-header", "copy the client request header `NAME` onto the WebSocket handshake of every GraphQL upstream (repeatable).\nCallers whose values differ get upstream connections of their own. Headers of one connection (Connection,\nUpgrade, Sec-WebSocket-*, …) cannot be forwarded")
	fs.IntVar(&cfg.maxConns, "max-conns", defaultMaxConns, "hold at most `N` client connections open, streams included: one more is closed as soon as it is\naccepted, and such refusals are logged, with their count, at most every "+refusedLogEvery.String()+". 0 sets no cap")
	fs.IntVar(&cfg.maxStreams, "max-streams", 0, "refuse a new stream with 429 TOO_MANY_STREAMS while `N` streams are open; 0 sets no cap")
	fs.IntVar(&cfg.maxStreamsPerPrincipal, "max-streams-per-principal", 0, "refuse a new stream with 429 TOO_MANY_STREAMS while its caller holds `N` open: a caller with a token\ncounts by subject, an anonymous one by address (see -trusted-proxy); 0 sets no cap")
	fs.IntVar(&cfg.maxAnonymousStreams, "max-anonymous-streams", 0, "refuse a new stream of a caller without a token with 429 TOO_MANY_STREAMS while `N` such streams are\nopen, so that the rest of -max-streams stays for callers with one; at most -max-streams. 0 sets no cap")
	fs.IntVar(&cfg.maxSubscriptions, "max-subscriptions", 0, "refuse a stream that needs a new upstream subscription with 429 TOO_MANY_SUBSCRIPTIONS while `N` run;\nstreams that share a subscription count once, and one kept by -resume-grace ends to make room. 0 sets no cap")
	fs.IntVar(&cfg.maxUpstreamConns, "max-upstream-conns", 0, "refuse a stream that needs a new connection to an upstream with 429 TOO_MANY_UPSTREAM_CONNECTIONS while\n`N` are open to it. With -forward-header, callers whose values differ get connections of their own, and the\nvalues are theirs to choose: without a cap, each new value opens one more connection. 0 sets no cap")
	fs.Var(&proxies, "trusted-proxy", "believe the -client-ip-header of requests from the proxies in `CIDR` (a bare address is one host;\nrepeatable): an anonymous caller counts for -max-streams-per-principal by the rightmost address there that\nis not a trusted proxy's, as nginx's real_ip_recursive does, so what a client writes to the left of it is ignored.\nBy default callers count by remote address")
	fs.StringVar(&cfg.clientIPHeader, "client-ip-header", "", "the header `NAME` that the -trusted-proxy proxies append the client's address to; X-Forwarded-For by\ndefault. Only with -trusted-proxy: without trusted proxies, anyone can write any address in it")
	fs.StringVar(&cf.url, "cluster", "", "run as one instance of a cluster of gateways, through the NATS server with JetStream at `URL`\n(nats:// or tls://, or a comma-separated list), with credentials as for a NATS -upstream or in -cluster-creds:\none instance subscribes upstream for all (to GraphQL upstreams; NATS shares its own), event ids resume on any\ninstance, and another instance takes a subscription over when its owner dies. By default the gateway runs alone")
	fs.StringVar(&cf.name, "cluster-name", gqlpush.DefaultClusterName, "the cluster's `NAME`, letters, digits, '-' and '_': it names the JetStream stream and key-value bucket\nof the cluster, so gateways with the same -cluster and NAME are one cluster. Only with -cluster")
	fs.StringVar(&cf.instance, "cluster-instance", "", "this gateway's `NAME` in the cluster, letters, digits, '-' and '_', unique in it; by default a random\nname, logged at startup. Only with -cluster")
	fs.DurationVar(&cf.lease, "cluster-lease", gqlpush.DefaultClusterLease, "let the instance that holds a shared subscription keep it for `D` without renewing (it renews every D/3):\nwhen it dies, another instance with clients takes the subscription over once D has passed since the last\nrenewal. 100ms or more; 0 means the default. Only with -cluster")
	fs.DurationVar(&cf.maxAge, "resume-max-age", gqlpush.DefaultResumeMaxAge, "keep results in the cluster's JetStream stream for `D`, for clients to resume from with Last-Event-ID\non any instance (at most -resume-frames of each subscription). 100ms or more; 0 means the default.\nOnly with -cluster")
	fs.StringVar(&cf.creds, "cluster-creds", "", "the credentials `FILE` that the -cluster connection uses: a user JWT and its nkey seed, as for -nats-creds.\nChecked at startup, then read again at every connect, so it can be replaced in place. Let the gateway's\nuser alone read the file (a warning is logged otherwise). Only with -cluster")
	fs.Var(&origins, "cors-origin", "let the pages of `ORIGIN` (https://app.example.com) read streams from another origin, with cookies\n(repeatable; * is refused). By default only same-origin pages may")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, err
		}
		return nil, usagef("%v (see gateway -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q: every setting is a flag (see gateway -h)", fs.Arg(0))
	}
	if cfg.operationsDir == "" {
		return nil, usagef("-operations DIR is required")
	}
	if len(upstreams) == 0 {
		return nil, usagef("at least one -upstream [NAME=]URL is required")
	}
	if err := cfg.checkMetrics(); err != nil {
		return nil, err
	}
	if err := cfg.checkTLS(tf); err != nil {
		return nil, err
	}
	flagsSet := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { flagsSet[f.Name] = true })
	if err := cfg.checkLimits(flagsSet, proxies); err != nil {
		return nil, err
	}
	if err := cfg.checkAuth(af, flagsSet); err != nil {
		return nil, err
	}
	for _, o := range origins {
		// gqlpush refuses an origin with user info, and its message
		// quotes the origin, password and all: the gateway prints no
		// credential, so it refuses such an origin itself, unquoted.
		if strings.Contains(o, "@") {
			return nil, usagef("-cors-origin: an origin has no user info, like https://app.example.com")
		}
	}
	cfg.corsOrigins = origins
	cfg.forwardHeaders = forward

	for _, v := range upstreams {
		cfg.upstreams = append(cfg.upstreams, parseUpstream(v))
	}
	if err := cfg.applyForwardHeaders(cfg.forwardHeaders); err != nil {
		return nil, err
	}

	given := map[string]bool{}
	for _, v := range schemas {
		name, file, ok := strings.Cut(v, "=")
		if !ok {
			return nil, usagef("-schema %q: want NAME=FILE, or =FILE for the unnamed upstream", v)
		}
		what := "-schema " + v
		if given[name] {
			return nil, usagef("%s: a second schema for %s", what, upstreamLabel(name))
		}
		given[name] = true
		i := upstreamIndex(cfg.upstreams, name)
		if i < 0 {
			if name == "" {
				return nil, usagef("%s: no -upstream is unnamed", what)
			}
			return nil, usagef("%s: no -upstream is named %q", what, name)
		}
		sdl, err := os.ReadFile(file)
		if err != nil {
			return nil, usagef("%s: %v", what, err)
		}
		cfg.upstreams[i].Schema = string(sdl)
		if cfg.schemaFiles == nil {
			cfg.schemaFiles = map[string]string{}
		}
		cfg.schemaFiles[schemaLabel(cfg.upstreams, i)] = file
	}
	if err := cfg.applyNATSCreds(natsCreds); err != nil {
		return nil, err
	}
	if err := cfg.applyProtocols(protocols); err != nil {
		return nil, err
	}
	if err := cfg.checkCluster(cf, flagsSet); err != nil {
		return nil, err
	}

	fi, err := os.Stat(cfg.operationsDir)
	if err != nil {
		return nil, usagef("-operations: %v", err)
	}
	if !fi.IsDir() {
		return nil, usagef("-operations %s: not a directory", cfg.operationsDir)
	}
	cfg.operations, err = gqlpush.LoadOperations(os.DirFS(cfg.operationsDir))
	if err != nil {
		return nil, &usageError{inDir(cfg.operationsDir, err)}
	}
	return cfg, nil
}

// checkMetrics refuses a -metrics address that cannot work. The values
// gqlpush checks (negative sizes and timeouts, say) are left to it: see
// handlerError.
func (c *config) checkMetrics() error {
	if c.metrics == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.metrics)
	if err != nil {
		return usagef("-metrics %q: want HOST:PORT", c.metrics)
	}
	if c.metrics == c.listen && port != "0" {
		return usagef("-metrics %s: the same address as -listen; metrics need a listener of their own", c.metrics)
	}
	return nil
}

// applyProtocols sets the Protocol of every GraphQL upstream from the
// -protocol values: NAME=PROTOCOL and =PROTOCOL set one upstream, a bare
// PROTOCOL the others. A GraphQL upstream no value names speaks
// gqlpush.ProtocolAuto; a NATS upstream speaks none, and one named gets its
// value all the same, for gqlpush to refuse under -protocol. Which
// protocols exist is gqlpush's to say, when the handler is built; a bare
// PROTOCOL that no upstream takes is never checked, so it gets a warning,
// or, when every upstream is a NATS upstream, a refusal.
func (c *config) applyProtocols(values []string) error {
	all, allSet, allValue := gqlpush.ProtocolAuto, false, ""
	named := map[string]gqlpush.Protocol{}
	for _, v := range values {
		name, raw, hasName := strings.Cut(v, "=")
		if !hasName {
			name, raw = "", v
		}
		what := "-protocol " + v
		if raw == "" {
			// gqlpush reads an empty Protocol as auto; on the command
			// line it is a value left out.
			return usagef("%s: no PROTOCOL; leave the flag out for auto", what)
		}
		p := gqlpush.Protocol(raw)
		if !hasName {
			if allSet {
				return usagef("%s: a second -protocol for every upstream", what)
			}
			all, allSet, allValue = p, true, v
			continue
		}
		if _, dup := named[name]; dup {
			return usagef("%s: a second -protocol for %s", what, upstreamLabel(name))
		}
		if upstreamIndex(c.upstreams, name) < 0 {
			if name == "" {
				return usagef("%s: no -upstream is unnamed", what)
			}
			return usagef("%s: no -upstream is named %q", what, name)
		}
		named[name] = p
	}
	if allSet && !c.hasGraphQL() {
		return usagef("-protocol %s: every -upstream is a NATS upstream, and NATS speaks no GraphQL-over-WebSocket protocol", allValue)
	}
	left := 0 // GraphQL upstreams the bare value applies to
	for i := range c.upstreams {
		u := &c.upstreams[i]
		if p, ok := named[u.Name]; ok {
			u.Protocol = p
		} else if !isNATS(u.URL) {
			u.Protocol = all
			left++
		}
	}
	if allSet && left == 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("-protocol %s: every GraphQL upstream has a -protocol of its own, so this one applies to none", allValue))
	}
	return nil
}

// parseUpstream reads an -upstream value: NAME=URL, =URL or a bare URL. A
// '=' after "://" belongs to the URL (ws://host/graphql?token=t). The name
// and the URL are gqlpush's to check, when the handler is built; its
// messages never show the URL, which may hold credentials.
func parseUpstream(v string) gqlpush.Upstream {
	name, raw := "", v
	if i := strings.IndexByte(v, '='); i >= 0 && !strings.Contains(v[:i], "://") {
		name, raw = v[:i], v[i+1:]
	}
	return gqlpush.Upstream{Name: name, URL: raw}
}

func upstreamLabel(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return name
}

func upstreamIndex(ups []gqlpush.Upstream, name string) int {
	for i, u := range ups {
		if u.Name == name {
			return i
		}
	}
	return -1
}

// inDir puts dir in front of the file names of operation errors, so that each
// line of the message points at the file as the operator knows it:
// ops/chat/New.graphql:3:5 rather than chat/New.graphql:3:5. Joined errors
// (gqlpush reports every broken file, and every problem in a file) are
// flattened into one list.
func inDir(dir string, err error) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if oe, ok := e.(*gqlpush.OperationError); ok {
			c := *oe
			c.File = filepath.Join(dir, filepath.FromSlash(c.File))
			e = &c
		}
		out = append(out, e)
	}
	walk(err)
	if len(out) == 1 {
		return out[0]
	}
	return errors.Join(out...)
}
