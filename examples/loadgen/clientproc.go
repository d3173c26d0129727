package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A clients process (loadgen clients) holds a share of a run's clients, so
// that a run is not bound by one process's open files limit: each client is
// a connection, and a process may hold at most RLIMIT_NOFILE of them. Its
// connections leave from a loopback source address of its own (127.0.0.2,
// 127.0.0.3, …), so that each process has the whole ephemeral port range
// to itself towards each gateway.
//
// Client i of the run (the process holds -first to -first+-count-1)
// connects to gateway i mod len(-gateways) and, with -rooms N, follows room
// r((i / len(-gateways)) mod N) on Room: every gateway then has clients of
// every room. Without -rooms, every client is on Sub.
//
// It opens nothing by itself: its parent asks it to hold n clients at
// clientsOpenPath, and it starts them at the ramp (-ramp per -ramp-every),
// with at most -inflight between their dial and their response head. The
// parent reads its counters at clientsStatePath, takes its latency
// histogram at clientsLatencyPath, and asks what was lost at
// clientsLossPath.
const (
	clientsOpenPath    = "/clients/open"
	clientsStatePath   = "/clients/state"
	clientsLatencyPath = "/clients/latency"
	clientsLossPath    = "/clients/loss"
)

// filesSpare is what a process needs besides its clients' connections: its
// standard streams, the poller, its listener, debug connections.
const filesSpare = 64

// clientsState is what a clients process reports at clientsStatePath.
type clientsState struct {
	PID     int            `json:"pid"`
	Count   int            `json:"count"`   // clients it may open
	Started int            `json:"started"` // clients whose goroutine started
	Opened  int64          `json:"opened"`
	Failed  int64          `json:"failed"`
	Ended   int64          `json:"ended"`
	Reasons map[string]int `json:"reasons,omitempty"`
	// Totals sums the counters of all its clients; ByGateway, those of
	// its clients of each gateway, in -gateways' order.
	Totals    totalsJSON   `json:"totals"`
	ByGateway []totalsJSON `json:"by_gateway"`
}

// totalsJSON is totals, for the wire.
type totalsJSON struct {
	Delivered  int64 `json:"delivered"`
	Heartbeats int64 `json:"heartbeats"`
	Gaps       int64 `json:"gaps"`
	OOO        int64 `json:"out_of_order"`
}

func (t totals) json() totalsJSON {
	return totalsJSON{Delivered: t.delivered, Heartbeats: t.heartbeats, Gaps: t.gaps, OOO: t.ooo}
}

func (t totalsJSON) totals() totals {
	return totals{delivered: t.Delivered, heartbeats: t.Heartbeats, gaps: t.Gaps, ooo: t.OOO}
}

// lossState is what a clients process answers at clientsLossPath, given
// each room's final sequence number: whether every open client has
// received its room's last result, and what its clients missed so far.
type lossState struct {
	Drained bool  `json:"drained"`
	Lost    int64 `json:"lost"`
	OOO     int64 `json:"out_of_order"`
}

// clientTarget returns the request target and room index of client i of a
// run on gateways gateways and rooms rooms (0: Sub).
func clientTarget(i, gateways, rooms int) (string, int) {
	if rooms == 0 {
		return opsPrefix + "Sub?wg_sse=true", 0
	}
	r := (i / gateways) % rooms
	return opsPrefix + "Room?wg_sse=true&room=" + roomName(r), r
}

// A clientsServer is the clients process's fleet and the goroutine that
// opens its clients.
type clientsServer struct {
	f         *fleet
	ramp      int
	rampEvery time.Duration
	want      chan int
	started   atomic.Int64
	opener    sync.WaitGroup
}

// runClients runs the clients process until ctx ends or stdin reaches EOF.
func runClients(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen clients", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen `address` of the control endpoints (loopback)")
	gateways := fs.String("gateways", "", "the gateways' `host:port`s, comma-separated (loopback); client i connects to the (i mod n)th")
	source := fs.String("source", "", "loopback source `address` of every client connection: 127.0.0.2, 127.0.0.3, …")
	first := fs.Int("first", 0, "index of this process's first client among the run's")
	count := fs.Int("count", 0, "clients this process may hold")
	rooms := fs.Int("rooms", 0, "0: every client on Sub; N: client i on Room, room r((i / gateways) mod N)")
	seq := fs.Bool("seq", false, "results carry the publisher's sequence numbers: count gaps and results out of order")
	ramp := fs.Int("ramp", 200, "clients started per ramp step")
	rampEvery := fs.Duration("ramp-every", 100*time.Millisecond, "ramp step interval")
	inflight := fs.Int("inflight", 100, "clients between their dial and their response head, at most")
	openTimeout := fs.Duration("open-timeout", headTimeout, "bound on a client's dial, and on its response head")
	exitOnEOF := fs.Bool("exit-on-eof", true, "exit when stdin reaches EOF")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	if *count < 1 || *first < 0 || *rooms < 0 || *ramp < 1 || *rampEvery <= 0 || *inflight < 1 || *openTimeout <= 0 {
		errs = append(errs, errors.New("-count, -ramp, -ramp-every, -inflight and -open-timeout must be positive; -first and -rooms not negative"))
	}
	addrs := strings.Split(*gateways, ",")
	if *gateways == "" {
		addrs = nil
		errs = append(errs, errors.New("-gateways is required"))
	}
	for _, a := range addrs {
		if err := checkLoopbackAddr(ctx, a); err != nil {
			errs = append(errs, fmt.Errorf("-gateways: %w", err))
		}
	}
	src := net.ParseIP(*source)
	if src == nil || !src.IsLoopback() {
		errs = append(errs, fmt.Errorf("-source %q: want a loopback IP address", *source))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Every client is a descriptor: refuse a count the limit cannot hold
	// rather than fail at the limit.
	if soft, hard, err := fileLimit(); err == nil {
		if need := uint64(*count + filesSpare); soft < need {
			return fmt.Errorf("%d clients need about %d open files and this process may hold %d (hard limit %d): lower the clients per process", *count, need, soft, hard)
		}
	}
	// The source address must be this machine's: all of 127.0.0.0/8 is
	// on Linux, without setup.
	if ln, err := net.Listen("tcp", net.JoinHostPort(*source, "0")); err != nil {
		return fmt.Errorf("-source %s is not usable as a local address: %w", *source, err)
	} else {
		ln.Close()
	}

	fctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFleetOver(fctx, addrs, *seq)
	f.offset = *first
	f.dialer.LocalAddr = &net.TCPAddr{IP: src}
	f.dialer.Control = bindNoPort
	f.dialer.Timeout = *openTimeout
	f.headTimeout = *openTimeout
	f.inflight = make(chan struct{}, *inflight)
	f.clients = make([]*client, *count)
	for j := range f.clients {
		i := *first + j
		target, room := clientTarget(i, len(addrs), *rooms)
		f.clients[j] = &client{id: j, gw: i % len(addrs), room: room, target: target}
	}
	s := &clientsServer{f: f, ramp: *ramp, rampEvery: *rampEvery, want: make(chan int)}
	s.opener.Add(1)
	go s.openLoop(fctx)

	if err := checkLoopbackAddr(ctx, *listen); err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+clientsOpenPath, func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > len(f.clients) {
			http.Error(w, fmt.Sprintf("n must be 0 to %d", len(f.clients)), http.StatusBadRequest)
			return
		}
		select {
		case s.want <- n:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET "+clientsStatePath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.state())
	})
	mux.HandleFunc("POST "+clientsLatencyPath, func(w http.ResponseWriter, r *http.Request) {
		// ?record=1 starts a new record; without it, recording stops.
		// Either way the answer is what was recorded since the last call.
		var next *histSet
		if r.URL.Query().Get("record") == "1" {
			next = newHistSet()
		}
		var d histDump
		if old := f.hist.Swap(next); old != nil {
			d = old.dump()
		}
		writeJSON(w, d)
	})
	mux.HandleFunc("GET "+clientsLossPath, func(w http.ResponseWriter, r *http.Request) {
		final, err := parseFinal(r.URL.Query().Get("final"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, lossOf(f, final))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return serveChild(ctx, srv, ln, stdin, *exitOnEOF, stdout, func(context.Context) {
		cancel()
		s.opener.Wait()
		f.close()
	})
}

// openLoop starts clients, at the ramp, until as many have started as the
// last request asked for (never fewer than have started), until ctx ends.
func (s *clientsServer) openLoop(ctx context.Context) {
	defer s.opener.Done()
	t := time.NewTicker(s.rampEvery)
	defer t.Stop()
	target, next := 0, 0
	for {
		if next < target {
			for i := 0; i < s.ramp && next < target; i++ {
				s.f.start(s.f.clients[next])
				next++
			}
			s.started.Store(int64(next))
		}
		var tick <-chan time.Time
		if next < target {
			tick = t.C
		}
		select {
		case n := <-s.want:
			target = max(target, n)
		case <-tick:
		case <-ctx.Done():
			return
		}
	}
}

func (s *clientsServer) state() clientsState {
	f := s.f
	st := clientsState{
		PID:     os.Getpid(),
		Count:   len(f.clients),
		Started: int(s.started.Load()),
		Opened:  f.opened.Load(),
		Failed:  f.failed.Load(),
		Ended:   f.ended.Load(),
		Reasons: f.reasonList(),
	}
	all, byGW := f.totals()
	st.Totals = all.json()
	for _, t := range byGW {
		st.ByGateway = append(st.ByGateway, t.json())
	}
	return st
}

// parseFinal reads "12,13,…": each room's next sequence number once the
// publisher has stopped.
func parseFinal(s string) ([]int64, error) {
	if s == "" {
		return nil, errors.New("final: each room's final sequence number, comma-separated")
	}
	var out []int64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("final: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

// lossOf counts, as finishLoss does for a fleet of loadgen's own, what
// the fleet's clients lost given each room's final sequence number.
func lossOf(f *fleet, final []int64) lossState {
	ls := lossState{Drained: true}
	for _, c := range f.clients {
		if c.room >= len(final) {
			continue
		}
		st := c.state.Load()
		if st == stateOpen && c.next.Load() < final[c.room] {
			ls.Drained = false
		}
		if st != stateOpen && st != stateEnded {
			continue
		}
		ls.Lost += c.gaps.Load() + max(final[c.room]-c.next.Load(), 0)
		ls.OOO += c.ooo.Load()
	}
	return ls
}

// A clientProc is the parent's handle on a clients process.
type clientProc struct {
	proc   *gatewayProc
	dbg    *debugClient
	source string
	first  int
	count  int
}

// open asks the process to hold n of its clients.
func (p *clientProc) open(ctx context.Context, n int) error {
	return p.dbg.call(ctx, http.MethodPost, clientsOpenPath+"?n="+strconv.Itoa(n), http.StatusNoContent, nil)
}

func (p *clientProc) state(ctx context.Context) (*clientsState, error) {
	var st clientsState
	if err := p.dbg.call(ctx, http.MethodGet, clientsStatePath, http.StatusOK, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// latency returns the latencies recorded since the last call, and starts a
// new record (record) or stops recording.
func (p *clientProc) latency(ctx context.Context, record bool) (histDump, error) {
	path := clientsLatencyPath
	if record {
		path += "?record=1"
	}
	var d histDump
	err := p.dbg.call(ctx, http.MethodPost, path, http.StatusOK, &d)
	return d, err
}

func (p *clientProc) loss(ctx context.Context, final []int64) (*lossState, error) {
	parts := make([]string, len(final))
	for i, v := range final {
		parts[i] = strconv.FormatInt(v, 10)
	}
	var ls lossState
	if err := p.dbg.call(ctx, http.MethodGet, clientsLossPath+"?final="+strings.Join(parts, ","), http.StatusOK, &ls); err != nil {
		return nil, err
	}
	return &ls, nil
}

// childCommand runs a child process's command (loadgen gateway, floor or
// clients) when args name one, and returns its exit status; ok is false
// for the parent's command line.
func childCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) < 2 {
		return 0, false
	}
	var run func(context.Context, []string, io.Reader, io.Writer, io.Writer) error
	switch args[1] {
	case "gateway":
		run = runGateway
	case "floor":
		run = runFloor
	case "clients":
		run = runClients
	default:
		return 0, false
	}
	return childMain(args[1], run, args[2:], stdin, stdout, stderr), true
}
