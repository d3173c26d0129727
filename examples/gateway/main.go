// Gateway is a deployable gqlpush bridge: it serves the persisted GraphQL
// subscriptions of a directory of .graphql files as HTTP streams (Server-Sent
// Events or JSON), subscribing to one or more upstream GraphQL servers over
// GraphQL-over-WebSocket, or to NATS subjects. It is configured by flags
// alone:
//
//	gateway -operations ./operations -upstream gql=wss://api.example.com/graphql \
//	        -schema gql=./schema.graphql -listen :8080
//
// The operation file chat/New.graphql is served at /operations/chat/New, on
// 127.0.0.1:9992 unless -listen says otherwise. A request with
// ?wg_subscribe_once=true gets the first result alone, or 504
// UPSTREAM_TIMEOUT when none comes within -once-timeout (30 s by default).
// /healthz answers 200 "ok" while the gateway serves, 503 once it shuts
// down. With -metrics ADDR, Prometheus metrics (gqlpush's, the Go runtime's
// and the process's) are served at http://ADDR/metrics, on a listener of
// their own that is not exposed with the operations. Once it listens, the
// gateway prints "metrics on http://ADDR/metrics" (with -metrics), then
// "listening on http://ADDR/operations/", to standard output; it logs to
// standard error.
//
// With -jwt-secret-file (HS256) or -jwks (a JSON Web Key Set, by URL or
// file), callers authenticate with a JSON Web Token in an Authorization:
// Bearer header or a cookie: operations with @auth, @rbac or @fromClaim
// require one, and @fromClaim variables take their values from its claims.
// A token is refused once its exp plus -jwt-leeway (30 s by default, 0s for
// none) has passed, and a stream opened with it ends then, with an error
// frame of code UNAUTHENTICATED.
// -forward-header passes client headers upstream, -cors-origin lets pages of
// other origins read the streams. No secret, token or URL credential is
// ever printed or logged.
//
// What clients can make the gateway hold is bounded. -max-conns caps the
// client connections (10000 by default; one more is closed at once), and a
// request head is at most 64 KiB (431 beyond). -max-streams,
// -max-streams-per-principal and -max-anonymous-streams cap the open
// streams, -max-subscriptions and -max-upstream-conns what they open
// upstream, -queue and -queue-bytes what a client may leave unread. Behind
// proxies, -trusted-proxy names those whose X-Forwarded-For (or
// -client-ip-header) is believed when anonymous callers are counted by
// address: the rightmost address that is not a trusted proxy's.
//
// SIGINT or SIGTERM shuts it down gracefully: every open stream ends with an
// error frame of code SHUTTING_DOWN and, on SSE, the complete event, the ends
// spread over the -drain window so that clients do not all come back at
// once; then the HTTP servers close. The exit status is 0 after a clean
// shutdown, 2 when the flags or what they name (operations, schemas, the
// secret, the key set, a NATS credentials file, the cluster's settings) are
// invalid, and 1 on any other failure. Most values are checked by gqlpush
// itself, and reported under the flag that gave them:
//
//	gateway: -queue: gqlpush: Config.QueueSize is negative
//
// # NATS upstreams
//
// An -upstream whose URL is nats:// or tls:// (or a comma-separated list of
// such URLs, for a cluster) is a NATS upstream:
//
//	gateway -operations ./operations -upstream shop=nats://gw:secret@127.0.0.1:4222 \
//	        -schema shop=./shop.graphql
//
// Its -schema is required: each subscription field names the subjects that
// feed it, with templates of its arguments, and optionally the JetStream
// stream that holds them, whose sequences then serve as event ids:
//
//	type Subscription {
//	  orderUpdated(id: ID!): Order! @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"])
//	}
//
// Each message is the field's JSON value; an operation
// subscription ($id: ID!) { shop_orderUpdated(id: $id) { id status } }
// served at /operations/OrderUpdated?id=7 gets the messages of
// orders.7.updated. Credentials go in the URL's user info
// (nats://user:password@host or nats://token@host), or in a credentials
// file, a user JWT and its nkey seed, named with -nats-creds NAME=FILE and
// read again at every connect. -protocol and -forward-header are for
// GraphQL upstreams only: a -protocol that names a NATS upstream is a usage
// error, and so is either flag when every upstream is a NATS upstream.
// While NATS is unreachable, streams stay open for -reconnect-limit, then
// end with UPSTREAM_UNAVAILABLE, as they do on a GraphQL upstream.
//
// # Cluster
//
// With -cluster, several gateways in front of the same GraphQL upstreams
// act as one, through a NATS server with JetStream enabled:
//
//	gateway -operations ./operations -upstream gql=wss://api.example.com/graphql \
//	        -cluster nats://gw:secret@nats.internal:4222 -cluster-instance gw-1
//
// For each subscription (an operation, its variables, the forwarded
// headers), the first instance that needs it subscribes upstream, for the
// whole cluster, and holds a lease on it in a JetStream key-value bucket;
// results go through a JetStream stream, whose sequences are the event ids,
// so that a client resumes on any instance with Last-Event-ID, for
// -resume-max-age (5 min by default). When that instance dies, another one
// with clients of the subscription takes it over once the lease has expired,
// -cluster-lease (5 s by default) after its last renewal; the clients'
// streams go on.
// -cluster-name (gqlpush by default) names the stream and the bucket, and so
// the cluster; -cluster-instance names this gateway in it (a random name by
// default). The gateway logs both at startup. Credentials go in the URL or in
// a credentials file named with -cluster-creds FILE. NATS upstreams need no
// cluster: NATS shares them itself.
//
// # Quick start
//
// Beside this file are sample operations (operations/Messages.graphql,
// Room.graphql with a $room, Countdown.graphql with a $from) and the schema
// of the chat upstream that examples/demo serves (chat.graphql). From the
// root of the repository, run the demo, whose chat upstream listens at
// ws://127.0.0.1:9991/graphql:
//
//	go run ./examples/demo
//
// then, in another terminal, the gateway in front of it:
//
//	go run ./examples/gateway -upstream gql=ws://127.0.0.1:9991/graphql -schema gql=examples/gateway/chat.graphql -operations examples/gateway/operations
//
// and follow the demo's messages through the gateway:
//
//	curl -N 'http://127.0.0.1:9992/operations/Messages?wg_sse=true'
//	curl -N 'http://127.0.0.1:9992/operations/Room?wg_sse=true&room=general'
//	curl 'http://127.0.0.1:9992/operations/Countdown?wg_subscribe_once=true&from=3'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// prefix is where the bridge is mounted.
const prefix = "/operations/"

const (
	// shutdownMargin is what the graceful shutdown allows beyond the drain
	// window and the write timeout (see config.shutdownTimeout).
	shutdownMargin = 5 * time.Second

	// readHeaderTimeout bounds the request head, against slow clients that
	// hold connections open. There is no write timeout: responses are
	// streams, and gqlpush bounds each write itself.
	readHeaderTimeout = 10 * time.Second

	// idleTimeout closes kept-alive connections nobody uses.
	idleTimeout = 2 * time.Minute

	// metricsWriteTimeout bounds one scrape's response: unlike the
	// streams, it is short.
	metricsWriteTimeout = 30 * time.Second

	// maxHeaderBytes bounds the request head, request line included:
	// net/http answers 431 to a larger one. A query string of
	// gqlpush.DefaultMaxQueryBytes, a token and a browser's cookies fit.
	maxHeaderBytes = 64 << 10
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and returns the exit status for it: 0 for
// nil, 2 for a usage error, 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "gateway: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// run is the gateway: it checks the flags and everything they name, listens,
// and serves until ctx ends, then shuts down gracefully. Output goes to
// stdout (the listening addresses, the -h text) and stderr (logs). Mistakes
// in the flags or in what they name are *usageError, found before it listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	hcfg := cfg.handlerConfig()
	hcfg.Logger = log
	var metrics http.Handler
	if cfg.metrics != "" {
		var obs *gqlpush.Observer
		metrics, obs, err = newMetrics(log)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		hcfg.Observer = obs
	}
	auth, closeAuth, err := cfg.authenticator(log)
	if err != nil {
		return err
	}
	defer closeAuth()
	if auth != nil {
		hcfg.Authenticator = auth
		// A token that names an unknown key makes the authenticator fetch
		// the key set again, and its request wait for that: closing the
		// authenticator once shutdown begins ends the wait. The keys it
		// holds keep verifying the requests still served.
		defer afterDone(ctx, closeAuth)()
	}
	// gqlpush checks the values of most flags, and the operations: what it
	// refuses is a usage error too, found before the gateway listens.
	h, err := gqlpush.NewHandler(hcfg)
	if err != nil {
		return cfg.handlerError(err, auth != nil)
	}
	for _, w := range cfg.warnings {
		log.Warn(w)
	}
	cfg.logCluster(log)
	// The handler holds nothing yet: Close returns at once on the way out.
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		h.Close(context.Background())
		return err
	}
	ln = limitConns(ln, cfg.maxConns, log)
	var mln net.Listener
	if cfg.metrics != "" {
		mln, err = net.Listen("tcp", cfg.metrics)
		if err != nil {
			ln.Close()
			h.Close(context.Background())
			return fmt.Errorf("-metrics: %w", err)
		}
	}
	return serve(ctx, h, cfg, log, stdout, ln, mln, metrics)
}

// afterDone calls f once ctx is done, in a goroutine of its own. The
// function it returns cancels that call, or waits for it to return.
func afterDone(ctx context.Context, f func()) (stop func()) {
	done := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(done)
		f()
	})
	return func() {
		if !cancel() {
			<-done
		}
	}
}

// newMetrics returns the /metrics handler of a registry of its own, with
// gqlpush's metrics, the Go runtime's and the process's, and the observer
// that feeds gqlpush's.
func newMetrics(log *slog.Logger) (http.Handler, *gqlpush.Observer, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, nil, err
		}
	}
	m, err := gqlpushprom.New(reg)
	if err != nil {
		return nil, nil, err
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Counts failed scrapes in promhttp_metric_handler_errors_total.
		Registry: reg,
	})
	return h, m.Observer(), nil
}

// serve serves h on ln, and metrics on mln when it is not nil, until ctx
// ends or serving fails, then shuts down: first the handler, which ends
// every stream with its end frame, then the HTTP server, which waits for the
// responses to finish, then the metrics server, so that the drain can be
// watched.
func serve(ctx context.Context, h *gqlpush.Handler, cfg *config, log *slog.Logger, stdout io.Writer, ln, mln net.Listener, metrics http.Handler) error {
	var stopping atomic.Bool
	mux := http.NewServeMux()
	mux.Handle(prefix, h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if stopping.Load() {
			// Load balancers stop sending new clients.
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errorLog,
		TLSConfig:         cfg.tls,
		Protocols:         cfg.protocols(),
	}
	var msrv *http.Server
	var metricsServed chan error // nil, and never ready, without metrics
	if mln != nil {
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", metrics)
		msrv = &http.Server{
			Handler:           mmux,
			ReadHeaderTimeout: readHeaderTimeout,
			WriteTimeout:      metricsWriteTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          errorLog,
		}
		metricsServed = make(chan error, 1)
		go serveHTTP(msrv, mln, metricsServed)
		maddr := mln.Addr().String()
		log.Info("metrics listening", "addr", maddr)
		fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", maddr)
	}
	served := make(chan error, 1)
	go serveHTTP(srv, ln, served)

	addr := ln.Addr().String()
	log.Info("gateway listening", "addr", addr, "operations", len(cfg.operations), "upstreams", upstreamNames(cfg.upstreams), "auth", cfg.authLabel())
	fmt.Fprintf(stdout, "listening on %s://%s%s\n", cfg.scheme(), addr, prefix)

	var err error
	select {
	case serr := <-served:
		served = nil
		err = fmt.Errorf("serve: %w", serr)
	case serr := <-metricsServed:
		metricsServed = nil
		err = fmt.Errorf("serve metrics: %w", serr)
	case <-ctx.Done():
		log.Info("shutting down")
	}
	stopping.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout())
	defer cancel()
	if cerr := h.Close(sctx); cerr != nil && err == nil {
		err = fmt.Errorf("close streams: %w", cerr)
	}
	if serr := shutdown(sctx, srv, served); serr != nil && err == nil {
		err = fmt.Errorf("shut down HTTP server: %w", serr)
	}
	if msrv != nil {
		if serr := shutdown(sctx, msrv, metricsServed); serr != nil && err == nil {
			err = fmt.Errorf("shut down metrics server: %w", serr)
		}
	}
	if err == nil {
		log.Info("gateway stopped")
	}
	return err
}

// shutdown shuts srv down gracefully, or closes it when ctx ends first, and
// waits for its Serve to return on served (nil when it has returned already).
func shutdown(ctx context.Context, srv *http.Server, served <-chan error) error {
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	if served != nil {
		<-served // http.ErrServerClosed
	}
	return err
}

// serveHTTP runs srv.Serve, or ServeTLS when srv has a TLS
// configuration, and reports how it ended.
func serveHTTP(srv *http.Server, ln net.Listener, done chan<- error) {
	if srv.TLSConfig != nil {
		done <- srv.ServeTLS(ln, "", "")
		return
	}
	done <- srv.Serve(ln)
}

// upstreamNames lists the upstreams for logs: names only, never URLs, which
// may hold credentials.
func upstreamNames(ups []gqlpush.Upstream) []string {
	names := make([]string, len(ups))
	for i, u := range ups {
		names[i] = u.Name
		if u.Name == "" {
			names[i] = "(unnamed)"
		}
	}
	return names
}
