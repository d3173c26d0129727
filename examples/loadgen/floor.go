package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The floor is what fan-out costs at the least on this machine: a server
// that does nothing but write one frame to every connection, at fanout's
// rate, to fanout's clients. It runs as a child process (loadgen floor), as
// the gateway does, so that its CPU is read from /proc alone. It answers any
// GET as gqlpush answers an SSE request over HTTP/1.1 (200,
// text/event-stream, the connection taken over with Hijack, chunks), with a
// comment first, and then each frame as one chunk in one write. A frame has
// the shape of a fanout result: an id line with a 16-character token, and
// data with the message's id, content (the frame's sequence number) and
// sentAt (Unix nanoseconds, stamped when the round starts), so loadgen's
// clients measure its latency as they do a gateway's.
//
// Two modes, switched at floorModePath:
//
//	turn  one goroutine writes the frame to each connection in turn
//	own   each connection's goroutine writes it when woken
//
// A round is one frame to every connection: its time, from the tick to the
// last write's return, is recorded and served (and reset) at latencyPath,
// as the gateway serves its own latency.

const (
	floorModePath = "/debug/floor-mode"
	floorTurn     = "turn"
	floorOwn      = "own"
	floorToken    = "floorfloorfloor0" // as long as gqlpush's tokens
)

// floorModes are the modes a floor phase measures, in order.
var floorModes = [...]string{floorTurn, floorOwn}

// A floorServer writes each round's frame to its connections.
type floorServer struct {
	mode   atomic.Pointer[string]
	rounds atomic.Pointer[histSet]

	mu    sync.Mutex
	conns map[*floorConn]struct{}

	wg sync.WaitGroup // the connections' goroutines
}

// A floorRound is one frame, chunked, for every connection.
type floorRound struct {
	chunk []byte
	start time.Time
	left  atomic.Int64 // own mode: writes not yet returned
}

// A floorConn is one client's connection; its goroutine waits on wake for
// the round to write.
type floorConn struct {
	conn net.Conn
	wake chan *floorRound // buffered 1
	dead atomic.Bool
}

func newFloorServer() *floorServer {
	s := &floorServer{conns: map[*floorConn]struct{}{}}
	m := floorTurn
	s.mode.Store(&m)
	s.rounds.Store(newHistSet())
	return s
}

// floorHead is the head of every response, as gqlpush's raw sink writes it,
// and the first frame, a comment, as one chunk.
func floorHead() []byte {
	return []byte("HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/event-stream\r\n" +
		"Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\nTransfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n\r\n" +
		"3\r\n:\n\n\r\n")
}

// ServeHTTP takes the connection over, and then writes its frames when
// woken until the server closes or a write fails.
func (s *floorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "HTTP/1.1 only", http.StatusHTTPVersionNotSupported)
		return
	}
	rw.Reader.Discard(rw.Reader.Buffered())
	if _, err := conn.Write(floorHead()); err != nil {
		conn.Close()
		return
	}
	c := &floorConn{conn: conn, wake: make(chan *floorRound, 1)}
	s.mu.Lock()
	if s.conns == nil { // closed
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	// The handler's goroutine is the connection's: net/http forgets a
	// hijacked connection, the floor server waits for it.
	s.writeWhenWoken(c)
}

// writeWhenWoken is a connection's goroutine: in own mode, it writes the
// frame of each round it is woken for.
func (s *floorServer) writeWhenWoken(c *floorConn) {
	defer s.wg.Done()
	defer c.conn.Close()
	for r := range c.wake {
		if !c.dead.Load() {
			if _, err := c.conn.Write(r.chunk); err != nil {
				s.drop(c)
			}
		}
		s.done(r)
	}
}

// done counts one connection of an own-mode round as done; the last one
// records the round's time.
func (s *floorServer) done(r *floorRound) {
	if r.left.Add(-1) == 0 {
		s.rounds.Load().record(0, time.Since(r.start).Nanoseconds())
	}
}

// drop forgets a connection whose write failed; its goroutine ends.
func (s *floorServer) drop(c *floorConn) {
	c.dead.Store(true)
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		close(c.wake)
	}
	s.mu.Unlock()
}

// snapshot returns the connections of this round.
func (s *floorServer) snapshot(buf []*floorConn) []*floorConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		buf = append(buf, c)
	}
	return buf
}

// run writes a round every interval until ctx ends.
func (s *floorServer) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		seq   uint64
		conns []*floorConn
		frame []byte
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		conns = s.snapshot(conns[:0])
		start := time.Now()
		frame = appendFloorFrame(frame[:0], seq, start)
		seq++
		// A new buffer each round: own-mode goroutines may still write
		// the last one.
		chunk := make([]byte, 0, len(frame)+12)
		chunk = strconv.AppendUint(chunk, uint64(len(frame)), 16)
		chunk = append(chunk, "\r\n"...)
		chunk = append(chunk, frame...)
		chunk = append(chunk, "\r\n"...)
		if len(conns) == 0 {
			continue
		}
		if *s.mode.Load() == floorTurn {
			for _, c := range conns {
				if _, err := c.conn.Write(chunk); err != nil {
					s.drop(c)
				}
			}
			s.rounds.Load().record(0, time.Since(start).Nanoseconds())
			continue
		}
		r := &floorRound{chunk: chunk, start: start}
		r.left.Store(int64(len(conns)))
		s.mu.Lock()
		for _, c := range conns {
			if _, ok := s.conns[c]; !ok {
				s.done(r) // dropped since the snapshot
				continue
			}
			select {
			case c.wake <- r:
			default:
				// An earlier round still waits for this connection:
				// it misses this one, which then counts it as done.
				s.done(r)
			}
		}
		s.mu.Unlock()
	}
}

// appendFloorFrame appends an SSE frame of the shape of a fanout result.
func appendFloorFrame(b []byte, seq uint64, sent time.Time) []byte {
	b = append(b, "id: "+floorToken+"."...)
	b = strconv.AppendUint(b, seq+1, 10)
	b = append(b, "\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\""...)
	b = strconv.AppendUint(b, seq+1, 10)
	b = append(b, `","content":"`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `","sentAt":"`...)
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	return append(b, "\"}}}\n\n"...)
}

// close ends every connection's goroutine and waits for them.
func (s *floorServer) close() {
	s.mu.Lock()
	for c := range s.conns {
		c.dead.Store(true)
		c.conn.Close()
		close(c.wake)
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// count is the connections being written to.
func (s *floorServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// runFloor serves the floor and its debug endpoints on one loopback
// listener, prints "LISTENING <addr>", and serves until ctx ends or stdin
// reaches EOF.
func runFloor(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen `address` (loopback)")
	rate := fs.Float64("rate", 10, "rounds per second: a frame to every connection each")
	mode := fs.String("mode", floorTurn, "turn (one goroutine writes to each connection in turn) or own (each connection's goroutine writes its frame when woken); "+floorModePath+"?mode= switches it")
	exitOnEOF := fs.Bool("exit-on-eof", true, "exit when stdin reaches EOF")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *rate <= 0 {
		return errors.New("-rate must be positive")
	}
	if *mode != floorTurn && *mode != floorOwn {
		return fmt.Errorf("-mode must be %s or %s", floorTurn, floorOwn)
	}
	if err := checkLoopbackAddr(ctx, *listen); err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	s := newFloorServer()
	s.mode.Store(mode)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(opsPrefix, s)
	mux.HandleFunc("GET "+debugPath, func(w http.ResponseWriter, r *http.Request) {
		n := s.count()
		di := debugInfo{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), Streams: n}
		di.readMemory()
		writeJSON(w, di)
	})
	mux.HandleFunc("POST "+latencyPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.rounds.Swap(newHistSet()).summary())
	})
	mux.HandleFunc("POST "+floorModePath, func(w http.ResponseWriter, r *http.Request) {
		m := r.URL.Query().Get("mode")
		if m != floorTurn && m != floorOwn {
			http.Error(w, "mode must be turn or own", http.StatusBadRequest)
			return
		}
		s.mode.Store(&m)
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	rctx, stopRounds := context.WithCancel(ctx)
	defer stopRounds()
	ran := make(chan struct{})
	go runRounds(rctx, s, time.Duration(float64(time.Second) / *rate), ran)
	return serveChild(ctx, srv, ln, stdin, *exitOnEOF, stdout, func(context.Context) {
		stopRounds()
		<-ran
		s.close()
	})
}

func runRounds(ctx context.Context, s *floorServer, interval time.Duration, done chan<- struct{}) {
	defer close(done)
	s.run(ctx, interval)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// floorInfo is the floor phase's: the floor server, its clients, and a
// window for each mode. With -floor, each mode also has the scenario's
// figures as ratios to its own.
type floorInfo struct {
	Server     gatewayInfo  `json:"server"`
	FrameBytes int          `json:"frame_bytes"` // of the first frame, its chunk's framing aside
	Clients    *clientsInfo `json:"clients"`
	Modes      []*floorMode `json:"modes"`
	Against    string       `json:"against,omitempty"` // the scenario's window the ratios are of
}

// floorMode is one mode's window. Its gateway CPU per event is the floor
// server's CPU per delivered frame.
type floorMode struct {
	Mode      string   `json:"mode"`
	Window    *window  `json:"window"`
	RoundTime *latency `json:"round_time"` // a frame to every connection, from the tick to the last write's return
	// The scenario's CPU per delivered event, p50 and p99 over this
	// mode's.
	CPURatio *float64 `json:"cpu_per_event_ratio,omitempty"`
	P50Ratio *float64 `json:"p50_ratio,omitempty"`
	P99Ratio *float64 `json:"p99_ratio,omitempty"`
}

// floorPhase starts the floor server, opens the scenario's clients on it,
// measures a window in each mode, and stops it. Its windows go in
// e.rep.Floor, not in e.rep.Windows: the scenario's checks read those.
func (e *env) floorPhase(ctx context.Context) (err error) {
	info := &floorInfo{FrameBytes: len(appendFloorFrame(nil, 0, time.Now()))}
	e.rep.Floor = info
	flags := []string{"-rate", strconv.FormatFloat(e.cfg.rate, 'g', -1, 64)}
	g, err := startChild(ctx, "floor", "floor", flags, e.log)
	if err != nil {
		return err
	}
	info.Server = gatewayInfo{URL: "http://" + g.addr, PID: g.pid, Child: true}
	defer func() {
		exit, crashed := stopChild(g, "the floor server")
		info.Server.Exit = exit
		err = errors.Join(err, crashed)
	}()
	e.logf("floor server (child, pid %d) at http://%s", g.pid, g.addr)
	// A run of its own: the floor's process and clients, the report's
	// scratch; only its windows and notes are kept.
	cfg := e.cfg
	cfg.gatewayLatency = false // the rounds are read at latencyPath here
	fe := &env{cfg: cfg, log: e.log, rep: &report{}, ticks: e.ticks, gw: g, addr: g.addr, pid: g.pid,
		dbg: newDebugClient("http://"+g.addr, nil)}
	defer func() { e.rep.Notes = append(e.rep.Notes, fe.rep.Notes...) }()
	if lim, err := procFileLimit(g.pid); err == nil {
		info.Server.FileLimit = &lim
	}
	n := e.cfg.clients
	targets := make([]string, n)
	for i := range targets {
		targets[i] = opsPrefix + "Sub?wg_sse=true"
	}
	f := fe.newFleet(ctx, false) // a client may join between two rounds: no sequence to check
	defer f.close()
	defer func() {
		fe.recordClients(f)
		info.Clients = fe.rep.Clients
	}()
	if err := fe.openFleet(ctx, f, targets, nil); err != nil {
		return err
	}
	for _, m := range floorModes {
		if err := fe.dbg.floorMode(ctx, m); err != nil {
			return fmt.Errorf("floor mode %s: %w", m, err)
		}
		if err := fe.sleep(ctx, e.cfg.warmup, nil); err != nil {
			return err
		}
		fe.dbg.latency(ctx) // starts a new record of round times
		w, err := fe.measure(ctx, f, "floor: "+m, e.cfg.duration, float64(n)*e.cfg.rate, nil)
		if err != nil {
			return err
		}
		rt, err := fe.dbg.latency(ctx)
		if err != nil {
			fe.rep.note("floor %s: no round times: %v", m, err)
		}
		info.Modes = append(info.Modes, &floorMode{Mode: m, Window: w, RoundTime: rt})
		e.logf("floor %s: round time p50 %s µs, p99 %s µs", m, ptrText(latP50(rt), "%.0f"), ptrText(latP99(rt), "%.0f"))
	}
	return nil
}

func latP50(l *latency) *float64 {
	if l == nil {
		return nil
	}
	return &l.P50us
}

// compare sets the ratios of the scenario's window w to each mode's.
func (info *floorInfo) compare(w *window) {
	info.Against = w.Name
	ratio := func(a, b *float64) *float64 {
		if a == nil || b == nil || *b == 0 {
			return nil
		}
		return ptr(*a / *b)
	}
	for _, m := range info.Modes {
		m.CPURatio = ratio(w.CPUPerEvent, m.Window.CPUPerEvent)
		if w.Latency != nil && m.Window.Latency != nil {
			m.P50Ratio = ratio(&w.Latency.P50us, &m.Window.Latency.P50us)
			m.P99Ratio = ratio(&w.Latency.P99us, &m.Window.Latency.P99us)
		}
	}
}

// writeFloor writes the floor's windows, round times and ratios.
func (r *report) writeFloor(w io.Writer, info *floorInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	p("floor: a bare loop writing a %d-byte frame to every connection; server %s, pid %s, open files limit %s, exit %s",
		info.FrameBytes, info.Server.URL, intText(info.Server.PID), ptrText(info.Server.FileLimit, "%d"), info.Server.Exit)
	if c := info.Clients; c != nil {
		p("  clients:  %d started, %d opened, %d failed, %d ended early, ramp %.1fs%s",
			c.Started, c.Opened, c.Failed, c.Ended, c.Ramp, reasonsText(c.Reasons))
	}
	for _, m := range info.Modes {
		fmt.Fprintln(w)
		r.writeWindow(w, m.Window)
		if l := m.RoundTime; l != nil {
			p("  round time: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d rounds; a frame to every connection)", l.P50us, l.P99us, l.MaxUs, l.Samples)
		} else {
			p("  round time: no rounds recorded")
		}
	}
}

// writeRatios writes the scenario's figures over the floor's, each mode's.
func (r *report) writeRatios(w io.Writer, info *floorInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	p("[%s] over the floor's:", info.Against)
	p("  %-16s %-18s %-10s %s", "mode", "CPU per event", "p50", "p99")
	for _, m := range info.Modes {
		p("  %-16s %-18s %-10s %s", m.Mode, ptrText(m.CPURatio, "×%.2f"), ptrText(m.P50Ratio, "×%.2f"), ptrText(m.P99Ratio, "×%.2f"))
	}
}
