// Command demo runs gqlpush end to end on one port, with nothing to configure
// and no network beyond loopback:
//
//	go run ./examples/demo
//
// It serves, on 127.0.0.1:9991:
//
//   - /graphql: an embedded chat upstream (package gqlpushtest) speaking
//     graphql-transport-ws over a real WebSocket; a goroutine posts a message
//     to it every second;
//   - /operations/Sub: the persisted subscription operations/Sub.graphql,
//     served by a gqlpush Handler that subscribes to /graphql;
//   - /operations/Orders: the persisted subscription
//     operations/Orders.graphql, whose results come from NATS, not from a
//     GraphQL server: the demo runs an embedded NATS server (on a random
//     loopback port, JetStream stored in a temporary directory), and a
//     goroutine publishes an order's change, as JSON, to the subject
//     orders.<id>.updated every second, kept in the JetStream stream ORDERS.
//     The same Handler subscribes to those subjects, completes each message
//     through the operation's selection set, and gives each result the
//     stream sequence as its event id, so a client that reconnects with
//     Last-Event-ID gets what it missed;
//   - /operations/Count: the persisted query operations/Count.graphql, the
//     number of messages posted: answered once, or followed live with
//     ?wg_live=true, polled from /graphql over HTTP once a second for every
//     viewer at once and pushed only when it changed;
//   - /: a web page that shows the streams live, side by side, and posts
//     messages to /post.
//
// Ctrl-C shuts it down: open streams get their end frame, then the server,
// the publishers, the chat upstream and the NATS server stop, and the
// JetStream store is removed.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

//go:embed operations
var operationFiles embed.FS

const (
	defaultListen = "127.0.0.1:9991"

	// tickEvery is how often the demo posts a message of its own.
	tickEvery = time.Second

	// shutdownTimeout bounds the whole shutdown; streams end at once, so it
	// is only reached when something is stuck.
	shutdownTimeout = 10 * time.Second
)

func main() {
	listen := flag.String("listen", defaultListen, "serve on this `address`")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once shutdown has begun, a second Ctrl-C kills the process as usual.
	context.AfterFunc(ctx, stop)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if err := run(ctx, ln, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run serves the demo on ln, which it closes, until ctx ends; it then shuts
// down and returns nil, unless the shutdown failed. Its instructions go to
// stdout, its log to stderr.
func run(ctx context.Context, ln net.Listener, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	host := loopbackHost(ln.Addr())

	ops, err := loadOperations()
	if err != nil {
		ln.Close()
		return err
	}
	natsFeed, err := startFeed(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	upstream := gqlpushtest.NewUnstartedServer(nil)
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: ops,
		Upstreams: []gqlpush.Upstream{{
			Name: "gql",
			// The upstream is this very server: the demo goes through a
			// real WebSocket, as it would to a remote GraphQL server.
			URL:    "ws://" + host + "/graphql",
			Schema: gqlpushtest.ChatSchema,
		}, {
			// A NATS upstream: the schema's @natsSubscribe names the
			// subjects of each subscription field; nothing else is
			// needed.
			Name:   "feed",
			URL:    natsFeed.url(),
			Schema: feedSchema,
		}},
		Prefix: "/operations/",
		Logger: logger,
	})
	if err != nil {
		upstream.Close()
		natsFeed.close()
		ln.Close()
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/graphql", upstream)
	mux.Handle("/operations/", h)
	mux.Handle("/post", postHandler(upstream.Chat))
	mux.Handle("GET /{$}", newPageHandler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	var serving sync.WaitGroup
	served := make(chan error, 1)
	serving.Go(func() { served <- srv.Serve(ln) })
	// The chat's ticker and the order publisher run until the server has
	// stopped, not merely until ctx ends, so that streams see results
	// until their end frame.
	produce, stopProducing := context.WithCancel(context.Background())
	defer stopProducing()
	var producers sync.WaitGroup
	producers.Go(func() { tick(produce, upstream.Chat, tickEvery) })
	producers.Go(func() {
		shop := newShop(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
		natsFeed.publish(produce, shop, publishEvery, logger)
	})

	base := "http://" + host
	fmt.Fprintf(stdout, `gqlpush demo
  open      %[1]s/
  stream    curl -N '%[1]s/operations/Sub?wg_sse=true'
  post      curl -H 'Content-Type: application/json' -d '{"content":"hello"}' %[1]s/post
  count     curl '%[1]s/operations/Count'   (once; add ?wg_live=true to follow it)
  orders    curl -N '%[1]s/operations/Orders?wg_sse=true'
  resume    curl -N -H 'Last-Event-ID: <an id: line of the orders>' '%[1]s/operations/Orders?wg_sse=true'
  nats      %[2]s (subjects orders.<id>.updated, JetStream stream %[3]s)
  tail      go run ./examples/tail '%[1]s/operations/Sub?wg_sse=true'
Ctrl-C stops.
`, base, natsFeed.url(), ordersStream)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		// Serve only returns early on a listener failure; shut down the
		// rest all the same.
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	// The handler first, while the server still runs: every open stream
	// gets its end frame (an error frame with SHUTTING_DOWN, then the
	// complete event), its upstream WebSocket closes through this very
	// server, and its NATS connection closes. Then nothing holds a request
	// open, and Shutdown returns at once; in the other order, Shutdown
	// would wait for the streams until sctx ends.
	errs := []error{serveErr}
	if err := h.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("close handler: %w", err))
	}
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down server: %w", err))
		srv.Close()
	}
	serving.Wait()
	if serveErr == nil {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	// Then what produces results.
	stopProducing()
	producers.Wait()
	// The chat upstream after the server, as its WebSockets are hijacked
	// connections that Shutdown neither waits for nor closes; Close ends
	// them and waits for their goroutines. The NATS server last, once
	// nothing uses it.
	upstream.Close()
	natsFeed.close()
	return errors.Join(errs...)
}

// loadOperations loads operations/*.graphql, embedded in the binary.
func loadOperations() ([]*gqlpush.Operation, error) {
	dir, err := fs.Sub(operationFiles, "operations")
	if err != nil {
		return nil, err
	}
	return gqlpush.LoadOperations(dir)
}

// loopbackHost returns the host:port by which this machine reaches addr: a
// wildcard listener (":9991") is reached on loopback.
func loopbackHost(addr net.Addr) string {
	a, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := a.IP
	switch {
	case ip == nil, ip.IsUnspecified() && ip.To4() != nil:
		ip = net.IPv4(127, 0, 0, 1)
	case ip.IsUnspecified():
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// tick posts "tick 1", "tick 2", ... to the chat every interval until ctx
// ends.
func tick(ctx context.Context, chat *gqlpushtest.Chat, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			chat.Post("", "tick "+strconv.Itoa(n))
		}
	}
}
