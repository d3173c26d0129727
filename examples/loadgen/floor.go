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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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
// as the gateway serves its own latency. An own-mode connection whose
// goroutine still writes an earlier round misses the round: a drop, counted
// at floorStatsPath.
//
// With -upstream, the floor is the distinct scenario's instead: see
// floorup.go; with -nats, nats-distinct's: see floornats.go.

const (
	floorModePath  = "/debug/floor-mode"
	floorStatsPath = "/debug/floor-stats"
	floorTurn      = "turn"
	floorOwn       = "own"
	floorToken     = "floorfloorfloor0" // as long as gqlpush's tokens
)

// floorModes are the modes a floor phase measures, in order.
var floorModes = [...]string{floorTurn, floorOwn}

// A floorServer writes each round's frame to its connections or, with an
// upstream (the distinct floor), each upstream event to its subscription's
// connection.
type floorServer struct {
	mode   atomic.Pointer[string]
	rounds atomic.Pointer[histSet] // round times; the distinct floor's write times

	up   *floorUpstream // the distinct floor's; nil for the others
	nats *floorNATS     // nats-distinct's floor's; nil for the others

	mu    sync.Mutex
	conns map[*floorConn]struct{}
	subs  map[string]*floorConn             // the distinct floor's connections, by subscription id
	nsubs map[*nats.Subscription]*floorConn // the NATS floor's, by subscription
	// Messages nats.go dropped (the NATS floor's channel full) on the
	// subscriptions that ended.
	natsDroppedEnded int64

	wg sync.WaitGroup // the connections' goroutines (and watchers), the upstream's reader

	dropped atomic.Int64 // own mode: frames a connection missed, its slot still full
	skipped atomic.Int64 // upstream messages of another shape than next
	late    atomic.Int64 // next messages (NATS messages) of a subscription already ended
}

// floorStats are a floor server's counts since it started, served at
// floorStatsPath.
type floorStats struct {
	Dropped int64 `json:"dropped"`
	Skipped int64 `json:"skipped"`
	Late    int64 `json:"late"`
}

// A floorRound is one frame, chunked, for every connection.
type floorRound struct {
	chunk []byte
	start time.Time
	left  atomic.Int64 // own mode: writes not yet returned
}

// A floorConn is one client's connection; its goroutine waits on wake for
// the round (the distinct floor: the event) to write.
type floorConn struct {
	conn net.Conn
	wake chan *floorRound // buffered 1
	dead atomic.Bool

	sub    string             // the distinct floor: its subscription's id
	nsub   *nats.Subscription // the NATS floor: its subscription, nil if it failed
	events uint64             // the distinct floors: events so far, under the server's mu
}

func newFloorServer() *floorServer {
	s := &floorServer{conns: map[*floorConn]struct{}{}, subs: map[string]*floorConn{}, nsubs: map[*nats.Subscription]*floorConn{}}
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
// woken until the server closes or a write fails. On the distinct floors,
// it first subscribes to the request's room upstream, and a goroutine of
// the connection's watches for its client to go.
func (s *floorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	upstream := s.up != nil || s.nats != nil
	if upstream && room == "" {
		http.Error(w, "the distinct floor needs a room query parameter", http.StatusBadRequest)
		return
	}
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
	switch {
	case s.up != nil:
		c.sub = strconv.FormatUint(s.up.nextID.Add(1), 10)
		s.subs[c.sub] = c
	case s.nats != nil:
		// Under the lock, which the reader takes to find a message's
		// connection: no message of this subscription is looked up
		// before it is known. nats.go only buffers the SUB here.
		if sub, err := s.nats.subscribe(room); err != nil {
			fmt.Fprintf(s.nats.log, "subscribe to room %q: %v\n", room, err)
		} else {
			c.nsub = sub
			s.nsubs[sub] = c
		}
	}
	if upstream {
		s.wg.Add(1) // the watcher's
	}
	s.wg.Add(1)
	s.mu.Unlock()
	if s.up != nil {
		// Subscribed before the watcher starts: a complete never goes
		// out before its subscribe.
		if err := s.up.subscribe(c.sub, room); err != nil && s.up.ctx.Err() == nil {
			fmt.Fprintf(s.up.log, "subscribe %s: %v\n", c.sub, err)
		}
	}
	if upstream {
		go s.watch(c)
	}
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
				s.end(c)
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

// drop forgets a connection whose write failed, or whose client went; its
// goroutine ends. It reports whether the connection was still known: false
// once the server has closed.
func (s *floorServer) drop(c *floorConn) bool {
	c.dead.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return false
	}
	delete(s.conns, c)
	if c.sub != "" {
		delete(s.subs, c.sub)
	}
	if c.nsub != nil {
		if d, err := c.nsub.Dropped(); err == nil {
			s.natsDroppedEnded += int64(d)
		}
		delete(s.nsubs, c.nsub)
	}
	close(c.wake)
	return true
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
				s.dropped.Add(1)
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

// close ends every connection's goroutine and, on the distinct floors, the
// upstream's WebSocket or the NATS connection (which ends the
// subscriptions), and waits for every goroutine of the server's.
func (s *floorServer) close() {
	s.mu.Lock()
	for c := range s.conns {
		c.dead.Store(true)
		c.conn.Close()
		close(c.wake)
	}
	s.conns, s.subs, s.nsubs = nil, nil, nil
	s.mu.Unlock()
	if s.up != nil {
		s.up.close()
	}
	if s.nats != nil {
		s.nats.close()
	}
	s.wg.Wait()
}

// count is the connections being written to, and the distinct floors'
// subscriptions.
func (s *floorServer) count() (conns, subs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), len(s.subs) + len(s.nsubs)
}

// stats are the floor's counts; the NATS floor's skipped messages are
// those nats.go dropped, its channel full (a slow consumer).
func (s *floorServer) stats() floorStats {
	st := floorStats{Dropped: s.dropped.Load(), Skipped: s.skipped.Load(), Late: s.late.Load()}
	if s.nats != nil {
		st.Skipped += s.natsDropped()
	}
	return st
}

// checkFloorUpstream checks the floor's -name upstream: a URL of scheme, on
// loopback, and not with -rate, since the upstream's own messages (what)
// set the pace.
func checkFloorUpstream(ctx context.Context, name, url, scheme, what string, rateSet bool) error {
	if rateSet {
		return fmt.Errorf("-rate and -%s exclude each other: with -%[1]s, the upstream's %s set the pace", name, what)
	}
	if !strings.HasPrefix(url, scheme) {
		return fmt.Errorf("-%s must be a %s URL", name, scheme)
	}
	if err := checkLoopbackURL(ctx, url); err != nil {
		return fmt.Errorf("-%s: %w", name, err)
	}
	return nil
}

// runFloor serves the floor and its debug endpoints on one loopback
// listener, prints "LISTENING <addr>", and serves until ctx ends or stdin
// reaches EOF.
func runFloor(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen `address` (loopback)")
	rate := fs.Float64("rate", 10, "rounds per second: a frame to every connection each (not with -upstream)")
	mode := fs.String("mode", floorTurn, "turn (one goroutine writes to each connection in turn; with -upstream or -nats, the upstream's reader writes each event) or own (each connection's goroutine writes its frame when woken); "+floorModePath+"?mode= switches it")
	upstream := fs.String("upstream", "", "the distinct scenario's floor: no rounds; for each SSE request, subscribe to Room with its room query parameter on this graphql-transport-ws `URL` (ws://…, loopback), one WebSocket for all, and write each event to its connection")
	natsURL := fs.String("nats", "", "the nats-distinct scenario's floor: no rounds; for each SSE request, subscribe to the subject of its room query parameter ("+natsSubjectPrefix+"<room>) on the NATS server at this `URL` (nats://…, loopback), one connection for all, and write each message, wrapped as NatsRoom's result, to its connection")
	exitOnEOF := fs.Bool("exit-on-eof", true, "exit when stdin reaches EOF")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	rateSet := false
	fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
	if *upstream != "" && *natsURL != "" {
		return errors.New("-upstream and -nats exclude each other")
	}
	if *natsURL != "" {
		if err := checkFloorUpstream(ctx, "nats", *natsURL, "nats://", "messages", rateSet); err != nil {
			return err
		}
	}
	if *upstream != "" {
		if err := checkFloorUpstream(ctx, "upstream", *upstream, "ws://", "events", rateSet); err != nil {
			return err
		}
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
	if *upstream != "" {
		up, err := dialFloorUpstream(ctx, *upstream, stderr)
		if err != nil {
			return fmt.Errorf("-upstream: %w", err)
		}
		s.up = up
	}
	if *natsURL != "" {
		u, err := dialFloorNATS(*natsURL, stderr)
		if err != nil {
			return fmt.Errorf("-nats: %w", err)
		}
		s.nats = u
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		if s.up != nil {
			s.up.close()
		}
		if s.nats != nil {
			s.nats.close()
		}
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(opsPrefix, s)
	mux.HandleFunc("GET "+debugPath, func(w http.ResponseWriter, r *http.Request) {
		n, subs := s.count()
		di := debugInfo{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), Streams: n, Subscriptions: subs, DroppedSlow: s.dropped.Load()}
		if s.up != nil || s.nats != nil {
			di.UpstreamConns = 1
		}
		di.readMemory()
		writeJSON(w, di)
	})
	mux.HandleFunc("GET "+floorStatsPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.stats())
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
	if s.up != nil || s.nats != nil {
		s.wg.Add(1)
		if s.up != nil {
			go s.readUpstream()
		} else {
			go s.readNATS()
		}
		return serveChild(ctx, srv, ln, stdin, *exitOnEOF, stdout, func(context.Context) { s.close() })
	}
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
// figures as ratios to its own: those of the scenario's first window
// (Against) in Modes, those of its other windows (the cluster scenario's
// second) in Also, one entry each.
type floorInfo struct {
	Server     gatewayInfo  `json:"server"`
	FrameBytes int          `json:"frame_bytes"` // of the first frame, its chunk's framing aside
	Clients    *clientsInfo `json:"clients"`
	// How the floor's clients reached it: HTTP/1.1, whatever the
	// scenario's -proto, since the floor speaks nothing else.
	Protocol protocolInfo       `json:"protocol"`
	Modes    []*floorMode       `json:"modes"`
	Against  string             `json:"against,omitempty"` // the scenario's window the ratios in Modes are of
	Also     []*floorComparison `json:"also,omitempty"`    // the scenario's further windows' ratios
	// The distinct floors': the upstream it subscribed to (ws://… or,
	// nats-distinct's, nats://…), its subscriptions there after its
	// windows, and what was left of them once its clients had gone
	// (before the scenario's clients open).
	Upstream           string `json:"upstream,omitempty"`
	Subscriptions      *int   `json:"upstream_subscriptions,omitempty"`
	SubscriptionsAfter *int   `json:"upstream_subscriptions_after,omitempty"`
}

// floorMode is one mode's window. Its gateway CPU per event is the floor
// server's CPU per delivered frame.
type floorMode struct {
	Mode   string  `json:"mode"`
	Window *window `json:"window"`
	// The fanout floor's: a frame to every connection, from the tick to
	// the last write's return.
	RoundTime *latency `json:"round_time,omitempty"`
	// The distinct floors': an event, from the upstream message read to
	// its write's return.
	WriteTime *latency `json:"write_time,omitempty"`
	// Clients that received a frame in the window; frames a connection
	// missed because its goroutine still wrote an earlier one (own mode);
	// upstream messages skipped as not of a next's shape (on the NATS
	// floor: dropped by nats.go, its channel full), and messages of a
	// subscription already ended (the distinct floors).
	Reached *int   `json:"clients_reached"`
	Dropped *int64 `json:"dropped"`
	Skipped *int64 `json:"skipped,omitempty"`
	Late    *int64 `json:"late,omitempty"`
	// The ratios of the scenario's first window (floorInfo.Against) to
	// this mode's.
	floorRatios
}

// floorRatios are a scenario window's CPU per delivered event, p50 and p99
// over a floor mode's.
type floorRatios struct {
	CPURatio *float64 `json:"cpu_per_event_ratio,omitempty"`
	P50Ratio *float64 `json:"p50_ratio,omitempty"`
	P99Ratio *float64 `json:"p99_ratio,omitempty"`
}

// A floorComparison is one of the scenario's windows over each floor mode.
type floorComparison struct {
	Against string            `json:"against"` // the scenario's window
	Modes   []*floorModeRatio `json:"modes"`   // in floorInfo.Modes' order
}

// A floorModeRatio is a window's ratios to one floor mode's.
type floorModeRatio struct {
	Mode string `json:"mode"`
	floorRatios
}

// floorPhase starts the floor server, opens the scenario's clients on it,
// measures a window in each mode, and stops it. Its windows go in
// e.rep.Floor, not in e.rep.Windows: the scenario's checks read those.
// fanout's, nats-fanout's and cluster's floor is the same: their clients
// and rate, all on one operation. Its clients speak HTTP/1.1 whatever the
// scenario's -proto.
//
// The distinct floor's clients are distinct's, each on Room with its own
// room, and the floor subscribes to each room on the in-process upstream;
// nats-distinct's are on NatsRoom, and its floor subscribes to each room's
// subject on the in-process NATS server. Once the upstream runs every
// subscription (the NATS server counts them as it counts the gateway's),
// the publisher posts at the scenario's rate; after the windows it pauses,
// its rooms' sequence numbers start again from 0, the clients close, and
// the phase waits until the upstream runs no subscription: the scenario
// then starts as it would have without the floor.
func (e *env) floorPhase(ctx context.Context) (err error) {
	distinct := e.cfg.base() == "distinct"
	info := &floorInfo{FrameBytes: len(appendFloorFrame(nil, 0, time.Now())), Protocol: protocolInfo{Name: protoName(protoH1)}}
	e.rep.Floor = info
	flags := []string{"-rate", strconv.FormatFloat(e.cfg.rate, 'g', -1, 64)}
	if distinct {
		switch up := e.up.(type) {
		case *inProcessUpstream:
			info.Upstream = up.url
			flags = []string{"-upstream", up.url}
		case *natsUpstream:
			info.Upstream = up.url
			flags = []string{"-nats", up.url}
		}
		if info.Upstream == "" || e.pub == nil {
			return errors.New("the distinct floors subscribe to the in-process upstream (GraphQL or NATS) that loadgen publishes into")
		}
	}
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
	e.logf("floor server (child, pid %d) at http://%s, clients over %s", g.pid, g.addr, info.Protocol.Name)
	// A run of its own: the floor's process and clients, the report's
	// scratch; only its windows and notes are kept. The distinct floor's
	// shares the upstream and the publisher. Its clients speak HTTP/1.1,
	// the floor's one protocol, whatever the scenario's: with -proto h2 or
	// h2c, the ratios then include what HTTP/2 costs over HTTP/1.1.
	cfg := e.cfg
	cfg.proto = protoH1
	cfg.gatewayLatency = false // the rounds are read at latencyPath here
	fe := &env{cfg: cfg, log: e.log, rep: &report{}, ticks: e.ticks, gw: g, addr: g.addr, pid: g.pid,
		dbg: newDebugClient("http://"+g.addr, nil)}
	if distinct {
		fe.up, fe.pub = e.up, e.pub
	}
	defer func() { e.rep.Notes = append(e.rep.Notes, fe.rep.Notes...) }()
	if lim, err := procFileLimit(g.pid); err == nil {
		info.Server.FileLimit = &lim
	}
	n := e.cfg.clients
	targets := make([]string, n)
	var rooms []int
	if distinct {
		rooms = make([]int, n)
	}
	_, roomOp := e.cfg.operations()
	for i := range targets {
		targets[i] = opsPrefix + "Sub?wg_sse=true"
		if distinct {
			targets[i] = opsPrefix + roomOp + "?wg_sse=true&room=" + roomName(i)
			rooms[i] = i
		}
	}
	f := fe.newFleet(ctx, false) // a client may join between two rounds: no sequence to check
	defer f.close()
	defer func() {
		fe.recordClients(f)
		info.Clients = fe.rep.Clients
	}()
	if err := fe.openFleet(ctx, f, targets, rooms); err != nil {
		return err
	}
	if distinct {
		if err := fe.waitSubscribed(ctx, n); err != nil {
			return err
		}
		if err := e.pub.set(ctx, e.cfg.rate); err != nil {
			return err
		}
		// Deferred after the fleet's close and record: it runs first.
		defer func() {
			if err == nil {
				err = e.floorUnsubscribe(ctx, f, info)
			}
		}()
	}
	for _, m := range floorModes {
		if err := fe.dbg.floorMode(ctx, m); err != nil {
			return fmt.Errorf("floor mode %s: %w", m, err)
		}
		if err := fe.sleep(ctx, e.cfg.warmup, nil); err != nil {
			return err
		}
		fe.dbg.latency(ctx) // starts a new record of round (write) times
		st0, serr := fe.dbg.floorStats(ctx)
		before := deliveredEach(f)
		w, err := fe.measure(ctx, f, "floor: "+m, e.cfg.duration, float64(n)*e.cfg.rate, nil)
		if err != nil {
			return err
		}
		fm := &floorMode{Mode: m, Window: w, Reached: ptr(reachedSince(f, before))}
		if st1, err := fe.dbg.floorStats(ctx); err == nil && serr == nil {
			fm.Dropped = ptr(st1.Dropped - st0.Dropped)
			if distinct {
				fm.Skipped, fm.Late = ptr(st1.Skipped-st0.Skipped), ptr(st1.Late-st0.Late)
			}
		} else {
			fe.rep.note("floor %s: no drop counts: %v", m, errors.Join(serr, err))
		}
		lt, err := fe.dbg.latency(ctx)
		if err != nil {
			fe.rep.note("floor %s: no round or write times: %v", m, err)
		}
		what := "round time"
		if distinct {
			fm.WriteTime, what = lt, "write time"
		} else {
			fm.RoundTime = lt
		}
		info.Modes = append(info.Modes, fm)
		e.logf("floor %s: %s p50 %s µs, p99 %s µs; %d of %d clients reached", m, what, ptrText(latP50(lt), "%.0f"), ptrText(latP99(lt), "%.0f"), *fm.Reached, n)
	}
	if distinct {
		info.Subscriptions = e.upstreamSubs()
	}
	return nil
}

// floorUnsubscribe ends the distinct floor's part: the publisher paused,
// its rooms' sequence numbers back at 0, the floor's clients closed, and
// no subscription left on the upstream.
func (e *env) floorUnsubscribe(ctx context.Context, f *fleet, info *floorInfo) error {
	if err := e.pub.set(ctx, 0); err != nil {
		return err
	}
	e.pub.rewind()
	f.close()
	err := waitUntil(ctx, e.cfg.settle, 20*time.Millisecond, func() bool { return e.up.subscriptions() == 0 })
	info.SubscriptionsAfter = e.upstreamSubs()
	if err != nil {
		return fmt.Errorf("waiting for the floor's upstream subscriptions to end (%d left): %w", *info.SubscriptionsAfter, err)
	}
	return nil
}

// deliveredEach returns each client's deliveries so far.
func deliveredEach(f *fleet) []int64 {
	d := make([]int64, len(f.clients))
	for i, c := range f.clients {
		d[i] = c.delivered.Load()
	}
	return d
}

// reachedSince counts the clients that received a frame since before.
func reachedSince(f *fleet, before []int64) int {
	n := 0
	for i, c := range f.clients {
		if i < len(before) && c.delivered.Load() > before[i] {
			n++
		}
	}
	return n
}

func latP50(l *latency) *float64 {
	if l == nil {
		return nil
	}
	return &l.P50us
}

// compare sets the ratios of the scenario's windows ws to each mode's: the
// first's in Against and Modes, the others' in Also. A call replaces the
// ratios of an earlier one.
func (info *floorInfo) compare(ws ...*window) {
	info.Against, info.Also = "", nil
	for _, m := range info.Modes {
		m.floorRatios = floorRatios{}
	}
	for i, w := range ws {
		if i == 0 {
			info.Against = w.Name
			for _, m := range info.Modes {
				m.floorRatios = ratiosOf(w, m.Window)
			}
			continue
		}
		c := &floorComparison{Against: w.Name}
		for _, m := range info.Modes {
			c.Modes = append(c.Modes, &floorModeRatio{Mode: m.Mode, floorRatios: ratiosOf(w, m.Window)})
		}
		info.Also = append(info.Also, c)
	}
}

// ratiosOf returns the ratios of the scenario's window w to a floor mode's
// window fw; a ratio whose figures are missing, or whose floor figure is 0,
// is nil.
func ratiosOf(w, fw *window) floorRatios {
	ratio := func(a, b *float64) *float64 {
		if a == nil || b == nil || *b == 0 {
			return nil
		}
		return ptr(*a / *b)
	}
	var r floorRatios
	if fw == nil {
		return r
	}
	r.CPURatio = ratio(w.CPUPerEvent, fw.CPUPerEvent)
	if w.Latency != nil && fw.Latency != nil {
		r.P50Ratio = ratio(&w.Latency.P50us, &fw.Latency.P50us)
		r.P99Ratio = ratio(&w.Latency.P99us, &fw.Latency.P99us)
	}
	return r
}

// comparisons returns every compared window's ratios, the first
// (Against's) first; none before compare.
func (info *floorInfo) comparisons() []*floorComparison {
	if info.Against == "" {
		return nil
	}
	first := &floorComparison{Against: info.Against}
	for _, m := range info.Modes {
		first.Modes = append(first.Modes, &floorModeRatio{Mode: m.Mode, floorRatios: m.floorRatios})
	}
	return append([]*floorComparison{first}, info.Also...)
}

// writeFloor writes the floor's windows, round (or write) times and
// ratios.
func (r *report) writeFloor(w io.Writer, info *floorInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	natsFloor := strings.HasPrefix(info.Upstream, "nats://")
	switch {
	case natsFloor:
		p("floor: a bare loop reading one NATS connection (%s), a core subscription per connection, and writing each message's payload, wrapped as NatsRoom's result but not completed, to its connection; server %s, pid %s, open files limit %s, exit %s",
			info.Upstream, info.Server.URL, intText(info.Server.PID), ptrText(info.Server.FileLimit, "%d"), info.Server.Exit)
		p("  upstream subscriptions: %s after the windows, %s once its clients closed", ptrText(info.Subscriptions, "%d"), ptrText(info.SubscriptionsAfter, "%d"))
	case info.Upstream != "":
		p("floor: a bare loop reading one upstream WebSocket (%s), a subscription per connection, and writing each event to its connection (first frame %d bytes); server %s, pid %s, open files limit %s, exit %s",
			info.Upstream, info.FrameBytes, info.Server.URL, intText(info.Server.PID), ptrText(info.Server.FileLimit, "%d"), info.Server.Exit)
		p("  upstream subscriptions: %s after the windows, %s once its clients closed", ptrText(info.Subscriptions, "%d"), ptrText(info.SubscriptionsAfter, "%d"))
	default:
		p("floor: a bare loop writing a %d-byte frame to every connection; server %s, pid %s, open files limit %s, exit %s",
			info.FrameBytes, info.Server.URL, intText(info.Server.PID), ptrText(info.Server.FileLimit, "%d"), info.Server.Exit)
	}
	if c := info.Clients; c != nil {
		p("  clients:  %d started, %d opened, %d failed, %d ended early, ramp %.1fs%s",
			c.Started, c.Opened, c.Failed, c.Ended, c.Ramp, reasonsText(c.Reasons))
	}
	if fp, sp := info.Protocol.Name, r.Protocol.Name; fp != sp {
		p("  protocol: clients over %s (the floor speaks nothing else); the scenario's over %s", fp, sp)
	}
	for _, m := range info.Modes {
		fmt.Fprintln(w)
		r.writeWindow(w, m.Window)
		switch l := m.WriteTime; {
		case info.Upstream != "" && l != nil:
			p("  write time: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d events; from the upstream message read to its write's return)", l.P50us, l.P99us, l.MaxUs, l.Samples)
		case info.Upstream != "":
			p("  write time: no events recorded")
		case m.RoundTime != nil:
			l = m.RoundTime
			p("  round time: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d rounds; a frame to every connection)", l.P50us, l.P99us, l.MaxUs, l.Samples)
		default:
			p("  round time: no rounds recorded")
		}
		line := fmt.Sprintf("reached:    %s of %d clients; %s frames dropped (a connection's goroutine still writing)",
			ptrText(m.Reached, "%d"), m.Window.Clients, ptrText(m.Dropped, "%d"))
		switch {
		case natsFloor:
			line += fmt.Sprintf("; NATS messages dropped by nats.go (slow consumer) %s, late %s", ptrText(m.Skipped, "%d"), ptrText(m.Late, "%d"))
		case info.Upstream != "":
			line += fmt.Sprintf("; upstream messages skipped %s, late %s", ptrText(m.Skipped, "%d"), ptrText(m.Late, "%d"))
		}
		p("  %s", line)
	}
}

// writeRatios writes the scenario's figures over the floor's, each mode's:
// a block for each window compared.
func (r *report) writeRatios(w io.Writer, info *floorInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	over := ""
	if fp, sp := info.Protocol.Name, r.Protocol.Name; fp != sp {
		over = fmt.Sprintf(" (the scenario's clients over %s, the floor's over %s: the ratios include what %s costs over %s)", sp, fp, sp, fp)
	}
	for i, c := range info.comparisons() {
		if i > 0 {
			fmt.Fprintln(w)
		}
		p("[%s] over the floor's%s:", c.Against, over)
		p("  %-16s %-18s %-10s %s", "mode", "CPU per event", "p50", "p99")
		for _, m := range c.Modes {
			p("  %-16s %-18s %-10s %s", m.Mode, ptrText(m.CPURatio, "×%.2f"), ptrText(m.P50Ratio, "×%.2f"), ptrText(m.P99Ratio, "×%.2f"))
		}
		for _, wd := range r.Windows {
			if wd.Name == c.Against && len(wd.Gateways) > 0 {
				p("  (its CPU per event is its %d gateways' summed; the cluster's NATS server runs in loadgen's process, not counted)", len(wd.Gateways))
				break
			}
		}
	}
}
