package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// An env is what a scenario runs against: the upstream, the gateway, the
// publisher, and the report being filled in.
type env struct {
	cfg   config
	log   io.Writer
	rep   *report
	ticks int64

	up   source       // nil when external
	gw   *gatewayProc // nil when external, or once stopped (cluster)
	addr string       // the gateway's host:port
	pid  int          // the gateway's pid; 0 when unknown, or once stopped
	dbg  *debugClient

	// The cluster scenario's: its NATS server, and its gateways, which the
	// snaps read instead of pid.
	js      *jetStreamServer
	members []*member

	pub       *publisher // nil when loadgen does not publish
	pubCancel context.CancelFunc

	cert *selfSigned // -proto h2's; nil otherwise

	// The scenarios at scale (scale.go): their gateways are members too,
	// each with its debug client, and their clients run in these
	// processes.
	gwDbg []*debugClient
	procs []*clientProc
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "loadgen: "+format+"\n", args...)
}

// execute runs cfg's scenario. The report is never nil, even on error.
func execute(ctx context.Context, cfg config, command string, log io.Writer) (rep *report, err error) {
	ticks := clockTicks()
	rep = &report{
		Scenario: cfg.scenario,
		Command:  command,
		Started:  time.Now(),
		Machine:  describeMachine(ticks),
		Params:   paramsOf(cfg),
		Protocol: protocolInfo{Name: protoName(cfg.proto)},
	}
	if cfg.h2() {
		rep.Protocol.StreamsPerConn = cfg.h2Streams
	}
	e := &env{cfg: cfg, log: log, rep: rep, ticks: ticks}
	defer func() {
		if terr := e.teardown(); err == nil {
			err = terr
		}
	}()
	if cfg.scenario == "floor" {
		if err := e.fileLimit(); err != nil {
			return rep, err
		}
		err = e.floorPhase(ctx)
		return rep, err
	}
	if cfg.scale() {
		if err = e.setupScale(ctx); err == nil {
			err = e.scaleRun(ctx)
		}
		if m := e.exitedMember(); err == nil && m != nil {
			err = fmt.Errorf("gateway %s exited during the run: %v", m.instance, m.gw.err)
		}
		return rep, err
	}
	if err := e.setup(ctx); err != nil {
		return rep, err
	}
	if cfg.floor {
		if err := e.floorPhase(ctx); err != nil {
			return rep, fmt.Errorf("floor: %w", err)
		}
	}
	switch cfg.base() {
	case "fanout", "distinct":
		err = e.steady(ctx, cfg.base() == "distinct")
		if e.rep.Floor != nil && len(e.rep.Windows) > 0 {
			e.rep.Floor.compare(e.rep.Windows[0])
		}
	case "saturate":
		err = e.saturate(ctx)
	case "idle":
		err = e.idle(ctx)
	case "stall":
		err = e.stall(ctx)
	case "churn":
		err = e.churn(ctx)
	case "cluster":
		err = e.cluster(ctx)
		// Both phases over the floor: fanout on one gateway, and the
		// cluster, whose CPU per event is its gateways' summed.
		if e.rep.Floor != nil && len(e.rep.Windows) > 0 {
			e.rep.Floor.compare(e.rep.Windows...)
		}
	case "live":
		err = e.live(ctx)
	}
	if err == nil && e.gw != nil && e.gw.exited() {
		err = fmt.Errorf("the gateway exited during the run: %v", e.gw.err)
	}
	if m := e.exitedMember(); err == nil && m != nil {
		err = fmt.Errorf("gateway %s exited during the run: %v", m.instance, m.gw.err)
	}
	return rep, err
}

func paramsOf(c config) params {
	p := params{Timeout: c.timeout.String(), Proto: c.proto}
	if c.h2() {
		p.H2Streams = c.h2Streams
	}
	shared, room := c.operations()
	p.Floor = c.floor
	switch c.base() {
	case "floor":
		p.Operation = "none: the floor server writes every frame"
	case "churn":
		p.Cycles, p.WarmupCycles, p.Concurrency = c.cycles, max(c.warmupCycles, 0), c.concurrency
		p.Operation = "Room (a room per cycle)"
		if c.churnVars == "shared" {
			p.Operation = "Sub"
		}
		return p
	case "distinct":
		p.Operation = room + " (a room per client)"
		if c.nats() {
			p.Operation = room + " (a subject per client)"
		}
	case "live":
		p.Operation = "Live (wg_live)"
		p.LiveInterval = c.liveInterval.String()
	case "fanout-100k":
		p.Operation = fmt.Sprintf("Room (%d rooms)", c.rooms)
	default:
		p.Operation = shared
	}
	p.Clients, p.Warmup, p.Duration = c.clients, c.warmup.String(), c.duration.String()
	p.Ramp = fmt.Sprintf("%d per %v", c.ramp, c.rampEvery)
	if c.gatewayURL == "" {
		p.Heartbeat = c.heartbeat.String()
	}
	switch c.base() {
	case "fanout", "distinct", "stall", "saturate", "cluster", "live", "floor", "fanout-100k":
		p.Rate = c.rate
	}
	if c.scale() {
		p.Gateways, p.ClientProcs, p.ClientsPerProc, p.Inflight = c.gateways, c.clientProcs, c.clientsPerProc, c.inflight
		p.Rooms, p.Steps, p.Probe = c.rooms, c.steps, c.probe
		p.Ramp += fmt.Sprintf(" per clients process, at most %d in flight each", c.inflight)
	}
	if c.scenario == "cluster" {
		p.ClusterSize = c.clusterSize
	}
	if c.scenario == "saturate" {
		p.Factor, p.MaxRate = c.factor, c.maxRate
	}
	if c.scenario == "stall" {
		p.Stalled, p.RcvBuf = c.stalled, c.rcvbuf
	}
	return p
}

// publishes reports whether the scenario posts events.
func (c *config) publishes() bool {
	switch c.base() {
	case "fanout", "distinct", "saturate", "stall", "cluster", "live", "fanout-100k":
		return true
	}
	return false
}

// filesNeeded is how many descriptors each process needs: one per client
// and some to spare.
func (c *config) filesNeeded() uint64 {
	switch c.scenario {
	case "churn":
		return uint64(c.concurrency) + 256
	case "idle-max", "idle-100k", "fanout-100k":
		return 256 // the clients are in processes of their own
	case "stall":
		return uint64(c.clients+c.stalled) + 256
	}
	return uint64(c.clients) + 256
}

// fileLimit raises loadgen's open files limit to what the scenario needs,
// or says it cannot.
func (e *env) fileLimit() error {
	need := e.cfg.filesNeeded()
	soft, hard, err := fileLimit()
	if err == nil && soft < need {
		raiseFileLimit()
		soft, hard, err = fileLimit()
	}
	if err == nil && soft < need {
		return fmt.Errorf("loadgen needs about %d open files and its limit is %d (hard %d): raise the hard limit (ulimit -Hn, LimitNOFILE) or lower -clients", need, soft, hard)
	}
	return nil
}

func (e *env) setup(ctx context.Context) error {
	cfg := e.cfg
	need := cfg.filesNeeded()
	if err := e.fileLimit(); err != nil {
		return err
	}

	// The upstream, and the gateway's flag that names it.
	upURL, upFlag := cfg.upstreamURL, "-upstream"
	if upURL == "" {
		if cfg.upstreamListen != "" {
			if err := checkLoopbackAddr(ctx, cfg.upstreamListen); err != nil {
				return fmt.Errorf("-upstream-listen: %w", err)
			}
		}
		if cfg.nats() {
			up, err := startNATS(cfg.upstreamListen)
			if err != nil {
				return fmt.Errorf("start the NATS server: %w", err)
			}
			e.up, upURL, upFlag = up, up.url, "-nats"
		} else {
			up, err := startUpstream(cfg.upstreamListen)
			if err != nil {
				return fmt.Errorf("start the upstream: %w", err)
			}
			e.up, upURL = up, up.url
			if cfg.upstreamSSE {
				// The same server, at the same path, over GraphQL
				// over SSE: the child gateway tells by the scheme.
				upURL = "http" + strings.TrimPrefix(upURL, "ws")
			}
		}
		e.logf("in-process upstream at %s", upURL)
	} else if err := checkLoopbackURL(ctx, upURL); err != nil {
		return fmt.Errorf("-upstream: %w", err)
	}
	e.rep.Upstream = upstreamInfo{URL: upURL, InProcess: e.up != nil}

	// The gateway.
	if cfg.proto == protoH2 {
		cert, err := makeCert()
		if err != nil {
			return fmt.Errorf("make the gateway's certificate: %w", err)
		}
		e.cert = cert
	}
	if cfg.gatewayURL == "" {
		flags := cfg.gatewayFlags(upFlag, upURL, cfg.gatewayProfile)
		flags = append(flags, cfg.gatewayTLSFlags(e.cert)...)
		if cfg.gatewayLatency {
			flags = append(flags, "-observe-latency")
		}
		gw, err := startGateway(ctx, "gateway", flags, e.log)
		if err != nil {
			return err
		}
		e.gw, e.addr, e.pid = gw, gw.addr, gw.pid
		e.logf("gateway (child, pid %d) at %s://%s, clients over %s", e.pid, cfg.scheme(), e.addr, protoName(cfg.proto))
	} else {
		e.addr = strings.TrimPrefix(cfg.gatewayURL, "http://")
		if i := strings.IndexByte(e.addr, '/'); i >= 0 {
			e.addr = e.addr[:i]
		}
		if err := checkLoopbackAddr(ctx, e.addr); err != nil {
			return fmt.Errorf("-gateway: %w", err)
		}
	}
	e.dbg = newDebugClient(cfg.scheme()+"://"+e.addr, e.clientTLS())
	e.pid = cmp.Or(cfg.gatewayPID, e.pid)
	if e.pid == 0 {
		if di, err := e.dbg.info(ctx); err == nil {
			e.pid = di.PID
		} else {
			e.rep.note("the gateway's pid is unknown (no -gateway-pid, no %s): no CPU or RSS figures", debugPath)
		}
	}
	e.rep.Gateway = gatewayInfo{URL: cfg.scheme() + "://" + e.addr, PID: e.pid, Child: e.gw != nil}
	if e.pid != 0 {
		if _, err := procCPU(e.pid, e.ticks); err != nil {
			e.rep.note("cannot read /proc/%d: %v: no CPU or RSS figures", e.pid, err)
			e.pid = 0
		} else if lim, err := procFileLimit(e.pid); err == nil {
			e.rep.Gateway.FileLimit = &lim
			if uint64(lim) < need {
				return fmt.Errorf("the gateway needs about %d open files and its limit is %d: raise it", need, lim)
			}
		}
	}

	// The publisher.
	if cfg.publishes() {
		if e.up == nil {
			e.rep.note("the upstream is external: loadgen does not publish, and cannot count lost events")
		} else {
			rooms := []string{""}
			if cfg.base() == "distinct" {
				rooms = make([]string, cfg.clients)
				for i := range rooms {
					rooms[i] = roomName(i)
				}
			}
			e.pub = newPublisher(e.up, rooms)
			if cfg.scenario == "live" {
				e.pub.stamps = make([]atomic.Int64, gqlpushtest.MaxHistory)
			}
			var pctx context.Context
			pctx, e.pubCancel = context.WithCancel(context.Background())
			go e.pub.run(pctx)
			e.rep.Upstream.Publishing = true
		}
	}
	return nil
}

// gatewayFlags are a child gateway's flags: its upstream's, and those of
// loadgen's command line that apply to every gateway; profile is where it
// writes its CPU profile ("": none).
func (c *config) gatewayFlags(upFlag, upURL, profile string) []string {
	flags := []string{upFlag, upURL, "-heartbeat", c.heartbeat.String()}
	if c.verbose {
		flags = append(flags, "-v")
	}
	if c.gatewaySndbuf > 0 {
		flags = append(flags, "-sndbuf", fmt.Sprint(c.gatewaySndbuf))
	}
	if c.liveInterval > 0 {
		flags = append(flags, "-live-interval", c.liveInterval.String())
	}
	if profile != "" {
		flags = append(flags, "-cpuprofile", profile)
	}
	return flags
}

// clientTLS is a TLS configuration for a client of the gateway: nil but
// over h2, where it trusts the certificate loadgen made. Each transport
// gets a copy of its own: net/http's adds "h2" to the NextProtos of the
// one it is given, which a transport that speaks HTTP/1.1 only must not
// offer.
func (e *env) clientTLS() *tls.Config {
	if e.cert == nil {
		return nil
	}
	return e.cert.client.Clone()
}

// newFleet returns a fleet of clients of the gateway over the run's
// protocol; seq is newFleet's.
func (e *env) newFleet(ctx context.Context, seq bool) *fleet {
	f := newFleet(ctx, e.addr, seq)
	if e.cfg.h2() {
		f.h2 = newH2Conns(e.cfg.proto, e.clientTLS(), e.cfg.h2Streams)
	}
	return f
}

// stopChild stops a child gateway, and returns how it exited ("0", or the
// error of its wait) and, when it had exited before it was asked to, an
// error that says so.
func stopChild(g *gatewayProc, name string) (exit string, crashed error) {
	gone := g.exited()
	werr := g.stop()
	if werr == nil {
		return "0", nil
	}
	if gone {
		crashed = fmt.Errorf("%s exited: %w", name, werr)
	}
	return werr.Error(), crashed
}

// teardown stops the publisher, the gateways, the cluster's NATS server and
// the upstream, in an order that cannot deadlock: a post blocked on a full
// subscription, or a flush waiting for the NATS server, is released when the
// upstream's connections close. The cluster's gateways stop before its NATS
// server, on which they give their keys up.
func (e *env) teardown() error {
	if e.pubCancel != nil {
		e.pubCancel()
	}
	var errs []error
	// The clients first: their gateways then see them leave.
	errs = append(errs, e.stopProcs())
	if e.gw != nil {
		exit, crashed := stopChild(e.gw, "the gateway")
		e.rep.Gateway.Exit = exit
		errs = append(errs, crashed)
	}
	errs = append(errs, e.stopMembers())
	if e.cert != nil {
		e.cert.remove() // the gateway has read it, and is gone
	}
	if e.js != nil {
		e.js.close()
	}
	if e.up != nil {
		e.up.close()
	}
	if e.pub != nil {
		<-e.pub.done
	}
	return errors.Join(errs...)
}

func roomName(i int) string { return fmt.Sprintf("r%d", i) }

// sleep waits d, calling tick (when not nil) every 250 ms; it fails early
// when ctx ends or the child gateway exits.
func (e *env) sleep(ctx context.Context, d time.Duration, tick func()) error {
	end := time.NewTimer(d)
	defer end.Stop()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var gone <-chan struct{}
	if e.gw != nil {
		gone = e.gw.done
	}
	for {
		select {
		case <-end.C:
			return nil
		case <-t.C:
			if err := e.alive(); err != nil {
				return err
			}
			if tick != nil {
				tick()
			}
		case <-gone:
			return fmt.Errorf("the gateway exited: %v", e.gw.err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitUntil polls cond every `every` until it holds, ctx ends or timeout
// passes.
func waitUntil(ctx context.Context, timeout, every time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// A snap is every counter at one instant; a window is the difference of two.
type snap struct {
	at          time.Time
	gwCPU       *time.Duration
	gwRSS       *int64
	self        *time.Duration
	busy, total int64
	machOK      bool
	t           totals
	ended       int64
	posted      int64
	queries     *int // the in-process upstream's query requests (live only)

	// With several gateways (cluster): each one's, and its clients'
	// totals; gwCPU and gwRSS are then their sums.
	members []procSnap
	byGW    []totals

	// At scale: the clients processes' CPU, summed, and each gateway's
	// debug figures (nil where it did not answer).
	procsCPU *time.Duration
	gcs      []*debugInfo
}

// A procSnap is one gateway process's counters.
type procSnap struct {
	cpu *time.Duration
	rss *int64
}

func (e *env) snap(f *fleet) snap {
	s := snap{at: time.Now()}
	if f != nil {
		s.t, s.byGW = f.totals()
		s.ended = f.ended.Load()
	}
	if e.pub != nil {
		s.posted = e.pub.posted.Load()
	}
	if up, ok := e.up.(*inProcessUpstream); ok && e.cfg.base() == "live" {
		s.queries = ptr(up.srv.Queries())
	}
	if e.pid != 0 {
		if v, err := procCPU(e.pid, e.ticks); err == nil {
			s.gwCPU = &v
		}
		if v, err := procRSS(e.pid); err == nil {
			s.gwRSS = &v
		}
	}
	if len(e.members) > 0 {
		var (
			cpu        time.Duration
			rss        int64
			cpuOK, rOK = true, true
		)
		s.members = make([]procSnap, len(e.members))
		for i, m := range e.members {
			if v, err := procCPU(m.gw.pid, e.ticks); err == nil {
				s.members[i].cpu = &v
				cpu += v
			} else {
				cpuOK = false
			}
			if v, err := procRSS(m.gw.pid); err == nil {
				s.members[i].rss = &v
				rss += v
			} else {
				rOK = false
			}
		}
		if cpuOK {
			s.gwCPU = &cpu
		}
		if rOK {
			s.gwRSS = &rss
		}
	}
	if len(e.procs) > 0 {
		var cpu time.Duration
		ok := true
		for _, p := range e.procs {
			v, err := procCPU(p.proc.pid, e.ticks)
			ok = ok && err == nil
			cpu += v
		}
		if ok {
			s.procsCPU = &cpu
		}
	}
	if v, err := procCPU(os.Getpid(), e.ticks); err == nil {
		s.self = &v
	}
	if b, t, err := machineTicks(); err == nil {
		s.busy, s.total, s.machOK = b, t, true
	}
	return s
}

func (e *env) window(name string, a, b snap, hs *histSet, clients int, offered float64) *window {
	secs := b.at.Sub(a.at).Seconds()
	w := &window{
		Name:            name,
		Seconds:         secs,
		Clients:         clients,
		Offered:         offered,
		Delivered:       b.t.delivered - a.t.delivered,
		Heartbeats:      b.t.heartbeats - a.t.heartbeats,
		Gaps:            b.t.gaps - a.t.gaps,
		OOO:             b.t.ooo - a.t.ooo,
		Ended:           b.ended - a.ended,
		GatewayRSSStart: a.gwRSS,
		GatewayRSSEnd:   b.gwRSS,
	}
	w.DeliveredPerSec = float64(w.Delivered) / secs
	if hs != nil {
		w.Latency = hs.summary()
	}
	if e.pub != nil {
		w.Posted = ptr(float64(b.posted-a.posted) / secs)
	}
	if a.queries != nil && b.queries != nil {
		w.UpstreamQueries = ptr(*b.queries - *a.queries)
		w.QueriesPerSec = ptr(float64(*w.UpstreamQueries) / secs)
	}
	var gw, self, procs float64
	if a.procsCPU != nil && b.procsCPU != nil {
		procs = (*b.procsCPU - *a.procsCPU).Seconds()
		w.ClientProcsCPU = &procs
	}
	if a.gwCPU != nil && b.gwCPU != nil {
		gw = (*b.gwCPU - *a.gwCPU).Seconds()
		w.GatewayCPU = &gw
		if w.Delivered > 0 {
			w.CPUPerEvent = ptr(gw * 1e6 / float64(w.Delivered))
		}
	}
	if a.self != nil && b.self != nil {
		self = (*b.self - *a.self).Seconds()
		w.LoadgenCPU = &self
	}
	if a.machOK && b.machOK {
		busy := float64(b.busy-a.busy) / float64(e.ticks) / secs
		w.MachineBusy = &busy
		if w.GatewayCPU != nil && w.LoadgenCPU != nil {
			w.OtherBusy = ptr(max(busy-(gw+self+procs)/secs, 0))
		}
	}
	if n := len(e.members); n > 0 && len(a.members) == n && len(b.members) == n {
		for i, m := range e.members {
			g := &gatewayShare{Instance: m.instance, PID: m.gw.pid, RSSStart: a.members[i].rss, RSSEnd: b.members[i].rss}
			if len(a.byGW) == n && len(b.byGW) == n {
				g.Delivered = b.byGW[i].delivered - a.byGW[i].delivered
			}
			if ac, bc := a.members[i].cpu, b.members[i].cpu; ac != nil && bc != nil {
				cpu := (*bc - *ac).Seconds()
				g.CPU = &cpu
				if g.Delivered > 0 {
					g.CPUPerEvent = ptr(cpu * 1e6 / float64(g.Delivered))
				}
			}
			w.Gateways = append(w.Gateways, g)
		}
	}
	return w
}

// measure records one window of d.
func (e *env) measure(ctx context.Context, f *fleet, name string, d time.Duration, offered float64, tick func()) (*window, error) {
	gwLatency := e.cfg.gatewayLatency && e.gw != nil
	if gwLatency {
		e.dbg.latency(ctx) // starts a new record
	}
	hs := newHistSet()
	f.hist.Store(hs)
	a := e.snap(f)
	err := e.sleep(ctx, d, tick)
	b := e.snap(f)
	f.hist.Store(nil)
	if err != nil {
		return nil, err
	}
	w := e.window(name, a, b, hs, len(f.clients), offered)
	for i, n := range f.clientsByGateway() {
		if i < len(w.Gateways) {
			w.Gateways[i].Clients = n
		}
	}
	if gwLatency {
		w.GatewayLatency, _ = e.dbg.latency(ctx)
	}
	e.rep.Windows = append(e.rep.Windows, w)
	e.logWindow(w, "gateway")
	return w, nil
}

// logWindow logs a window's deliveries, their p99 and the CPU per event of
// gw (the gateway, or the gateways summed); with nothing delivered, its
// heartbeats and gw's CPU.
func (e *env) logWindow(w *window, gw string) {
	if w.Delivered > 0 {
		e.logf("%s: %.0f delivered/s, p99 %s µs, %s %s µs CPU per event", w.Name, w.DeliveredPerSec,
			ptrText(latP99(w.Latency), "%.0f"), gw, ptrText(w.CPUPerEvent, "%.2f"))
	} else {
		e.logf("%s: %d heartbeats, %s %s s CPU", w.Name, w.Heartbeats, gw, ptrText(w.GatewayCPU, "%.2f"))
	}
}

func latP99(l *latency) *float64 {
	if l == nil {
		return nil
	}
	return &l.P99us
}

// openFleet starts the clients, ramped, and waits until every one is open.
func (e *env) openFleet(ctx context.Context, f *fleet, targets []string, rooms []int) error {
	start := time.Now()
	// Before the first client: the caller's deferred recordClients(f) is
	// this fleet's, however the ramp ends.
	e.rep.Clients = &clientsInfo{Started: len(targets)}
	e.logf("opening %d clients, %d every %v", len(targets), e.cfg.ramp, e.cfg.rampEvery)
	if err := f.add(ctx, targets, rooms, e.cfg.ramp, e.cfg.rampEvery); err != nil {
		return err
	}
	err := f.waitOpen(ctx, e.cfg.settle+time.Minute)
	e.rep.Clients.Ramp = time.Since(start).Seconds()
	e.recordClients(f)
	if err != nil {
		return err
	}
	e.logf("%d clients open in %.1fs", len(targets), time.Since(start).Seconds())
	return nil
}

func (e *env) recordClients(f *fleet) {
	c := e.rep.Clients
	c.Opened, c.Failed, c.Ended = f.opened.Load(), f.failed.Load(), f.ended.Load()
	c.Reasons = f.reasonList()
	if f.h2 != nil {
		conns, maxStreams := f.h2.count()
		c.Connections = &conns
		if maxStreams != nil {
			e.rep.Protocol.ServerMaxStreams = maxStreams
		}
	}
}

// waitSubscribed waits until the upstream runs n subscriptions (in-process
// upstream), or the gateway holds n (its debug endpoint), so that no event
// is posted before every client can receive it.
func (e *env) waitSubscribed(ctx context.Context, n int) error {
	var cond func() bool
	switch {
	case e.up != nil:
		cond = func() bool { return e.up.subscriptions() >= n }
	default:
		if _, err := e.dbg.info(ctx); err != nil {
			return nil // nothing to ask: the warmup has to do
		}
		cond = func() bool {
			di, err := e.dbg.info(ctx)
			return err == nil && di.Subscriptions >= n
		}
	}
	if err := waitUntil(ctx, e.cfg.settle, 20*time.Millisecond, cond); err != nil {
		return fmt.Errorf("waiting for %d upstream subscriptions: %w", n, err)
	}
	return nil
}

// finishLoss stops publishing, lets every open client receive the last
// event of its room, and counts what never came.
func (e *env) finishLoss(ctx context.Context, f *fleet) error {
	if e.pub == nil {
		return nil
	}
	if err := e.pub.set(ctx, 0); err != nil {
		return err
	}
	final := e.pub.finalSeq()
	if n, err := e.pub.failures(); err != nil {
		e.rep.note("the upstream refused %d posts (not counted as lost); the first error of a post or a flush: %v", n, err)
	}
	drained := func() bool {
		for _, c := range f.clients {
			if c.state.Load() == stateOpen && c.next.Load() < final[c.room] {
				return false
			}
		}
		return true
	}
	if err := waitUntil(ctx, 10*time.Second, 20*time.Millisecond, drained); err != nil && ctx.Err() != nil {
		return err
	}
	var lost, ooo int64
	for _, c := range f.clients {
		if st := c.state.Load(); st != stateOpen && st != stateEnded {
			continue
		}
		lost += c.gaps.Load() + max(final[c.room]-c.next.Load(), 0)
		ooo += c.ooo.Load()
	}
	e.rep.Lost, e.rep.OOO = &lost, &ooo
	return nil
}

func (e *env) upstreamSubs() *int {
	if e.up == nil {
		return nil
	}
	return ptr(e.up.subscriptions())
}
