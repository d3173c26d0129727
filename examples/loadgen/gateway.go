package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// The operations the gateway serves. Sub is shared by every client; Room
// gives each room its own upstream subscription. Live is a query, the
// chat's message count: followed with wg_live, it is polled upstream at the
// gateway's -live-interval, one poller for all its clients. NatsSub and
// NatsRoom are Sub and Room on the NATS upstream: Sub's room is the chat's
// default one, and a room is a subject. A gateway started by hand and targeted with
// -gateway must serve the ones of the scenario.
const (
	subOperation      = `subscription Sub { gql_messageCreated { id content sentAt } }`
	roomOperation     = `subscription Room($room: String!) { gql_messageCreated(room: $room) { id content sentAt } }`
	liveOperation     = `query Live { gql_messageCount }`
	natsSubOperation  = `subscription NatsSub { nats_messageCreated(room: "` + gqlpushtest.DefaultRoom + `") { id content sentAt } }`
	natsRoomOperation = `subscription NatsRoom($room: String!) { nats_messageCreated(room: $room) { id content sentAt } }`
	opsPrefix         = "/operations/"
	debugPath         = "/debug/goroutines"
	freePath          = "/debug/freeosmemory"
	latencyPath       = "/debug/latency"
	heapPath          = "/debug/heapprofile"
)

// natsSchema is the NATS upstream's schema: the chat's Message, each room's
// from a subject of its own.
const natsSchema = `
type Query { x: Int }
type Message { id: ID! content: String! room: String! sentAt: String! }
type Subscription {
  messageCreated(room: String!): Message! @natsSubscribe(subjects: ["` + natsSubjectPrefix + `{{ args.room }}"])
}
`

// debugInfo is what the gateway reports at debugPath.
type debugInfo struct {
	PID           int   `json:"pid"`
	Goroutines    int   `json:"goroutines"`
	Streams       int   `json:"streams"`
	Subscriptions int   `json:"subscriptions"`
	UpstreamConns int   `json:"upstream_conns"`
	Frames        int   `json:"frames"`
	Opened        int64 `json:"streams_opened"`
	Closed        int64 `json:"streams_closed"`
	DroppedSlow   int64 `json:"dropped_slow_consumer"`
	// From runtime/metrics: what the RSS is made of.
	HeapLive uint64 `json:"heap_live"` // heap bytes marked live by the last GC
	HeapGoal uint64 `json:"heap_goal"` // heap size the next GC aims at
	Stacks   uint64 `json:"stacks"`    // bytes of goroutine stacks
	// The garbage collector's: its stop-the-world pauses since the process
	// started, as a histogram (the samples are the same as
	// /gc/pauses:seconds, which runtime/metrics now calls deprecated in
	// favour of this name), the cycles it completed, and the CPU it used.
	GCPauses *pauseHist `json:"gc_pauses,omitempty"`
	// GCStopping is the part of each pause spent stopping the world: from
	// the request to the last goroutine stopped
	// (/sched/pauses/stopping/gc:seconds). A thread the kernel has not
	// scheduled stops late, whatever the GC's own work.
	GCStopping *pauseHist `json:"gc_stopping,omitempty"`
	GCCycles   uint64     `json:"gc_cycles"`
	GCCPU      float64    `json:"gc_cpu_s"`
}

// A pauseHist is runtime/metrics' histogram of GC pauses: Counts[i] pauses
// took at most UpperNs[i] nanoseconds (and more than UpperNs[i-1]). An
// unbounded last bucket has math.MaxInt64 for its bound, which JSON can
// carry where +Inf cannot.
type pauseHist struct {
	Counts  []uint64 `json:"counts"`
	UpperNs []int64  `json:"upper_ns"`
}

// readMemory fills the runtime/metrics fields of di.
func (di *debugInfo) readMemory() {
	ms := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/sched/pauses/total/gc:seconds"},
		{Name: "/sched/pauses/stopping/gc:seconds"},
	}
	metrics.Read(ms)
	get := func(i int) uint64 {
		if ms[i].Value.Kind() == metrics.KindUint64 {
			return ms[i].Value.Uint64()
		}
		return 0
	}
	di.HeapLive, di.HeapGoal, di.Stacks, di.GCCycles = get(0), get(1), get(2), get(3)
	if ms[4].Value.Kind() == metrics.KindFloat64 {
		di.GCCPU = ms[4].Value.Float64()
	}
	di.GCPauses, di.GCStopping = pauseHistOf(ms[5].Value), pauseHistOf(ms[6].Value)
}

// pauseHistOf converts a runtime/metrics histogram of seconds; nil for a
// value of another kind.
func pauseHistOf(v metrics.Value) *pauseHist {
	if v.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	h := v.Float64Histogram()
	p := &pauseHist{Counts: h.Counts, UpperNs: make([]int64, len(h.Counts))}
	for i := range h.Counts {
		up := h.Buckets[i+1] * 1e9
		if math.IsInf(up, 1) || up >= math.MaxInt64 {
			p.UpperNs[i] = math.MaxInt64
		} else {
			p.UpperNs[i] = int64(math.Ceil(up))
		}
	}
	return p
}

// gatewayCounters count what the gateway's Observer hears. Nothing is
// counted per frame, unless latency is on: the hot path stays the library's
// own.
type gatewayCounters struct {
	opened, closed, slow atomic.Int64

	// latency, when not nil, gets the latency FramesDelivered reports: from
	// the upstream's message to the end of the write to the client, of the
	// newest frame of each write.
	latency atomic.Pointer[histSet]
}

func (c *gatewayCounters) observer(latency bool) *gqlpush.Observer {
	var delivered func(string, int, time.Duration)
	if latency {
		c.latency.Store(newHistSet())
		delivered = func(_ string, _ int, d time.Duration) {
			// The low bits of the latency pick the shard: free, and
			// spread enough.
			c.latency.Load().record(int(d&(histShards-1)), d.Nanoseconds())
		}
	}
	return &gqlpush.Observer{
		FramesDelivered: delivered,
		StreamOpened:    func(string) { c.opened.Add(1) },
		StreamClosed:    func(string, gqlpush.Reason) { c.closed.Add(1) },
		// Every drop is a slow consumer: one that fell a queue behind, or
		// whose write outlasted the write timeout.
		SubscriberDropped: func(string, gqlpush.Reason) { c.slow.Add(1) },
	}
}

// childMain runs run, a child process of loadgen (loadgen gateway …,
// loadgen floor …), until SIGINT or SIGTERM, and returns its exit status.
func childMain(name string, run func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, args, stdin, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen "+name+":", err)
		return 1
	}
	return 0
}

// runGateway serves the embedded operations at /operations/ and the debug
// endpoints on one loopback listener, prints "LISTENING <addr>", and serves
// until ctx ends or stdin reaches EOF (loadgen closes it, or dies).
func runGateway(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	upstream := fs.String("upstream", "", "the GraphQL upstream's `URL` (loopback): ws://… for graphql-transport-ws, http://… for graphql-sse; serve Sub, Room and Live (queries posted to it over HTTP)")
	natsURL := fs.String("nats", "", "the NATS server's `URL` nats://… (loopback): serve NatsSub and NatsRoom")
	listen := fs.String("listen", "127.0.0.1:0", "listen `address` (loopback)")
	heartbeat := fs.Duration("heartbeat", gqlpush.DefaultHeartbeat, "SSE heartbeat interval")
	queue := fs.Int("queue-size", 0, "gqlpush Config.QueueSize (0: the library's default)")
	writeTimeout := fs.Duration("write-timeout", 0, "gqlpush Config.WriteTimeout (0: the library's default)")
	idleTimeout := fs.Duration("idle-timeout", 0, "gqlpush Config.IdleTimeout (0: the library's default)")
	liveInterval := fs.Duration("live-interval", 0, "gqlpush Config.LivePollInterval: how often Live, followed with wg_live, is polled (0: the library's default)")
	verbose := fs.Bool("v", false, "log gqlpush's events to stderr")
	exitOnEOF := fs.Bool("exit-on-eof", true, "exit when stdin reaches EOF")
	sndbuf := fs.Int("sndbuf", 0, "SO_SNDBUF of accepted connections, in `bytes` (0: the kernel's autotuning)")
	cpuProfile := fs.String("cpuprofile", "", "write the gateway's CPU profile to `file`")
	heapProfile := fs.String("heapprofile", "", "write the gateway's heap profile to `file` when asked at "+heapPath+" (after a GC)")
	maxFiles := fs.Int("max-files", 0, "lower the gateway's open files limit (soft RLIMIT_NOFILE) to `n` (0: keep it): reaches the descriptor limit with fewer clients")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS, with HTTP/2, with the certificate in `file` (PEM; with -tls-key)")
	tlsKey := fs.String("tls-key", "", "the private key of -tls-cert, in `file` (PEM)")
	h2c := fs.Bool("h2c", false, "serve cleartext HTTP/2 (prior knowledge) besides HTTP/1.1")
	observeLatency := fs.Bool("observe-latency", false, "record the latency gqlpush's Observer reports, served (and reset) at "+latencyPath)
	// The cluster's flags are the gateway command's (examples/gateway).
	clusterURL := fs.String("cluster", "", "make this gateway an instance of a gqlpush cluster on the NATS server (with JetStream) at `URL` nats://… (loopback): Config.Cluster")
	clusterName := fs.String("cluster-name", "", "the cluster's `name`: its stream's and bucket's (Cluster.Name; empty: the library's default)")
	clusterInstance := fs.String("cluster-instance", "", "this instance's `name` in the cluster (Cluster.Instance; empty: a random one)")
	clusterLease := fs.Duration("cluster-lease", 0, "how long a key's owner holds it without renewing (Cluster.Lease; 0: the library's default)")
	resumeMaxAge := fs.Duration("resume-max-age", 0, "how long the cluster's stream keeps a result (Cluster.MaxAge; 0: the library's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *upstream == "" && *natsURL == "" {
		return errors.New("-upstream or -nats is required")
	}
	var tlsConfig *tls.Config
	switch {
	case (*tlsCert == "") != (*tlsKey == ""):
		return errors.New("-tls-cert and -tls-key go together")
	case *tlsCert != "" && *h2c:
		return errors.New("-h2c: only without -tls-cert: over TLS, HTTP/2 is offered already")
	case *tlsCert != "":
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var cluster *gqlpush.Cluster
	if *clusterURL != "" {
		if err := checkLoopbackURL(ctx, *clusterURL); err != nil {
			return fmt.Errorf("-cluster: %w", err)
		}
		cluster = &gqlpush.Cluster{URL: *clusterURL, Name: *clusterName, Instance: *clusterInstance, Lease: *clusterLease, MaxAge: *resumeMaxAge}
	} else if *clusterName != "" || *clusterInstance != "" || *clusterLease != 0 || *resumeMaxAge != 0 {
		return errors.New("-cluster-name, -cluster-instance, -cluster-lease and -resume-max-age need -cluster")
	}
	if *maxFiles > 0 {
		if err := lowerFileLimit(uint64(*maxFiles)); err != nil {
			return fmt.Errorf("-max-files: %w", err)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if err := checkLoopbackAddr(ctx, *listen); err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	var (
		ops       []*gqlpush.Operation
		upstreams []gqlpush.Upstream
	)
	for _, u := range []struct {
		flag, url string
		upstream  gqlpush.Upstream
		ops       [][2]string // name, text
	}{
		{"-upstream", *upstream, gqlpush.Upstream{Name: "gql", Schema: gqlpushtest.ChatSchema},
			[][2]string{{"Sub", subOperation}, {"Room", roomOperation}, {"Live", liveOperation}}},
		{"-nats", *natsURL, gqlpush.Upstream{Name: "nats", Schema: natsSchema},
			[][2]string{{"NatsSub", natsSubOperation}, {"NatsRoom", natsRoomOperation}}},
	} {
		if u.url == "" {
			continue
		}
		if err := checkLoopbackURL(ctx, u.url); err != nil {
			return fmt.Errorf("%s: %w", u.flag, err)
		}
		u.upstream.URL = u.url
		if strings.HasPrefix(u.url, "http://") {
			u.upstream.Protocol = gqlpush.ProtocolSSE
		}
		upstreams = append(upstreams, u.upstream)
		for _, o := range u.ops {
			op, err := gqlpush.ParseOperation(o[0], o[1])
			if err != nil {
				return err
			}
			ops = append(ops, op)
		}
	}
	var log *slog.Logger
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	var counters gatewayCounters
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations:       ops,
		Upstreams:        upstreams,
		Prefix:           opsPrefix,
		Heartbeat:        *heartbeat,
		QueueSize:        *queue,
		WriteTimeout:     *writeTimeout,
		IdleTimeout:      *idleTimeout,
		LivePollInterval: *liveInterval,
		DrainWindow:      -1, // loadgen has closed its clients by then
		Observer:         counters.observer(*observeLatency),
		Logger:           log,
		Cluster:          cluster,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		h.Close(context.Background())
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(opsPrefix, h)
	mux.HandleFunc("GET "+debugPath, func(w http.ResponseWriter, r *http.Request) {
		st := h.Stats()
		di := debugInfo{
			PID:           os.Getpid(),
			Goroutines:    runtime.NumGoroutine(),
			Streams:       st.Streams,
			Subscriptions: st.Subscriptions,
			UpstreamConns: st.UpstreamConns,
			Frames:        st.Frames,
			Opened:        counters.opened.Load(),
			Closed:        counters.closed.Load(),
			DroppedSlow:   counters.slow.Load(),
		}
		di.readMemory()
		writeJSON(w, di)
	})
	mux.HandleFunc("POST "+latencyPath, func(w http.ResponseWriter, r *http.Request) {
		var l *latency
		if *observeLatency {
			l = counters.latency.Swap(newHistSet()).summary()
		}
		writeJSON(w, l)
	})
	mux.HandleFunc("POST "+heapPath, func(w http.ResponseWriter, r *http.Request) {
		if *heapProfile == "" {
			http.Error(w, "no -heapprofile", http.StatusNotFound)
			return
		}
		if err := writeHeapProfile(*heapProfile); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+freePath, func(w http.ResponseWriter, r *http.Request) {
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})
	if *sndbuf > 0 {
		ln = sndbufListener{Listener: ln, size: *sndbuf}
	}
	// HTTP/2's settings are net/http's defaults, the server's that
	// gqlpush's users mount it in: 250 streams per connection at most.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         tlsConfig,
		Protocols:         serverProtocols(tlsConfig != nil, *h2c),
	}
	return serveChild(ctx, srv, ln, stdin, *exitOnEOF, stdout, func(sctx context.Context) { h.Close(sctx) })
}

// writeHeapProfile collects garbage, then writes the heap profile to file.
func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}

// serveChild serves srv on ln, over TLS when srv has a TLS configuration,
// prints "LISTENING <addr>", and serves until ctx ends, stdin reaches EOF
// (with exitOnEOF), or serving fails; then it calls stop, with a context
// that bounds the shutdown, and shuts srv down.
func serveChild(ctx context.Context, srv *http.Server, ln net.Listener, stdin io.Reader, exitOnEOF bool, stdout io.Writer, stop func(context.Context)) error {
	served := make(chan error, 1)
	go serveGateway(srv, ln, srv.TLSConfig != nil, served)
	fmt.Fprintf(stdout, "LISTENING %s\n", ln.Addr())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if exitOnEOF {
		// Not joined: it ends with the process, blocked in a read of
		// stdin that only EOF ends.
		go watchStdin(stdin, cancel)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	stop(sctx)
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if serveErr == nil {
		serveErr = <-served
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

func serveGateway(srv *http.Server, ln net.Listener, overTLS bool, served chan<- error) {
	if overTLS {
		served <- srv.ServeTLS(ln, "", "") // the certificate is srv.TLSConfig's
		return
	}
	served <- srv.Serve(ln)
}

// sndbufListener fixes the send buffer of accepted connections, which turns
// off the kernel's autotuning of it: a client that does not read then blocks
// the gateway's writes after that many bytes rather than after up to
// tcp_wmem's maximum (4 MiB by default).
type sndbufListener struct {
	net.Listener
	size int
}

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// watchStdin calls cancel when stdin reaches EOF: loadgen closed it, or
// died.
func watchStdin(stdin io.Reader, cancel context.CancelFunc) {
	io.Copy(io.Discard, stdin)
	cancel()
}

// A gatewayProc is the child process running the gateway.
type gatewayProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	pid   int
	done  chan struct{} // closed when the process has been waited for
	err   error         // of Wait, once done is closed
	once  sync.Once
}

// startGateway re-executes this program as `gateway` with flags (its
// upstream's, and others) and waits for it to listen. The child's stdout
// lines other than LISTENING, and its stderr, go to stderr, each after
// label and a colon.
func startGateway(ctx context.Context, label string, flags []string, stderr io.Writer) (*gatewayProc, error) {
	return startChild(ctx, "gateway", label, flags, stderr)
}

// startChild re-executes this program as command (gateway, floor) with
// flags, as startGateway does.
func startChild(ctx context.Context, command, label string, flags []string, stderr io.Writer) (*gatewayProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	args := append([]string{command, "-listen", "127.0.0.1:0"}, flags...)
	cmd := exec.Command(exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	cmd.Stdout = watchLines(stderr, label, addr)
	cmd.Stderr = prefixLines(stderr, label)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", command, err)
	}
	g := &gatewayProc{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, done: make(chan struct{})}
	go g.wait()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case g.addr = <-addr:
		return g, nil
	case <-g.done:
		return nil, fmt.Errorf("%s exited before listening: %v", command, g.err)
	case <-t.C:
		g.stop()
		return nil, fmt.Errorf("%s did not listen within 30s", command)
	case <-ctx.Done():
		g.stop()
		return nil, ctx.Err()
	}
}

func (g *gatewayProc) wait() {
	g.err = g.cmd.Wait()
	close(g.done)
}

// exited reports whether the child is gone.
func (g *gatewayProc) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// stop closes the child's stdin, which makes it shut down, and waits for it;
// after 10 s it is killed. It returns how the child exited.
func (g *gatewayProc) stop() error {
	g.once.Do(func() {
		g.stdin.Close()
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-g.done:
		case <-t.C:
			g.cmd.Process.Kill()
			<-g.done
		}
	})
	return g.err
}

// lines splits what is written into lines and hands each to line.
type lines struct {
	buf  []byte
	line func(string)
}

func (w *lines) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		w.line(line)
	}
}

// watchLines takes the child's stdout: the first "LISTENING <addr>" line
// goes to addr, every other line to out, after label.
func watchLines(out io.Writer, label string, addr chan<- string) *lines {
	seen := false
	return &lines{line: func(line string) {
		if a, ok := strings.CutPrefix(line, "LISTENING "); ok && !seen {
			seen = true
			addr <- a
			return
		}
		fmt.Fprintln(out, label+": "+line)
	}}
}

// prefixLines marks the child's stderr as its own.
func prefixLines(out io.Writer, label string) *lines {
	return &lines{line: func(line string) { fmt.Fprintln(out, label+": "+line) }}
}

// syncWriter serialises writes from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// debugClient asks the gateway's debug endpoints. It keeps no connection
// open between requests, so no transport goroutine outlives a run.
type debugClient struct {
	hc   *http.Client
	base string // http://host:port
}

// newDebugClient returns a client of the gateway at base (http:// or
// https://, whose certificate tc trusts).
func newDebugClient(base string, tc *tls.Config) *debugClient {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: tc}
	return &debugClient{hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}, base: base}
}

func (d *debugClient) info(ctx context.Context) (*debugInfo, error) {
	var di debugInfo
	if err := d.call(ctx, http.MethodGet, debugPath, http.StatusOK, &di); err != nil {
		return nil, err
	}
	return &di, nil
}

// latency returns the gateway's own latency since the last call, and
// starts a new record.
func (d *debugClient) latency(ctx context.Context) (*latency, error) {
	var l *latency
	err := d.call(ctx, http.MethodPost, latencyPath, http.StatusOK, &l)
	return l, err
}

// floorMode switches the floor server's mode (floor.go).
func (d *debugClient) floorMode(ctx context.Context, mode string) error {
	return d.call(ctx, http.MethodPost, floorModePath+"?mode="+mode, http.StatusNoContent, nil)
}

// floorStats returns the floor server's counts since it started.
func (d *debugClient) floorStats(ctx context.Context) (floorStats, error) {
	var st floorStats
	err := d.call(ctx, http.MethodGet, floorStatsPath, http.StatusOK, &st)
	return st, err
}

// heapProfile has the gateway write its heap profile to its -heapprofile
// file.
func (d *debugClient) heapProfile(ctx context.Context) error {
	return d.call(ctx, http.MethodPost, heapPath, http.StatusNoContent, nil)
}

func (d *debugClient) freeOSMemory(ctx context.Context) error {
	return d.call(ctx, http.MethodPost, freePath, http.StatusNoContent, nil)
}

// call makes one request to a debug endpoint and decodes its JSON answer
// into out, unless out is nil.
func (d *debugClient) call(ctx context.Context, method, path string, status int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		return fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	// A clients process's latency dump may hold a few thousand buckets.
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// checkLoopbackURL refuses a URL whose host is not a loopback address.
func checkLoopbackURL(ctx context.Context, raw string) error {
	i := strings.Index(raw, "://")
	if i < 0 {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	hostport := raw[i+3:]
	if j := strings.IndexAny(hostport, "/?#"); j >= 0 {
		hostport = hostport[:j]
	}
	if j := strings.LastIndexByte(hostport, '@'); j >= 0 {
		hostport = hostport[j+1:]
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return checkLoopbackHost(ctx, strings.Trim(host, "[]"))
}

// checkLoopbackAddr refuses a listen or dial address that is not loopback.
func checkLoopbackAddr(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q listens on every interface: name a loopback address", addr)
	}
	return checkLoopbackHost(ctx, host)
}

func checkLoopbackHost(ctx context.Context, host string) error {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address: loadgen runs on loopback only", host)
		}
		return nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("%s resolves to %s, not a loopback address: loadgen runs on loopback only", host, ip.IP)
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("%s resolves to nothing", host)
	}
	return nil
}
