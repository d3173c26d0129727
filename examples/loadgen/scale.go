package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The scenarios at scale — idle-max, idle-100k, fanout-100k — run more
// clients than one process may hold connections: a process may have at
// most RLIMIT_NOFILE descriptors open, and each client is one, as each
// stream is one for the gateway. So the clients run in several clients
// processes (clientproc.go), each from a loopback source address of its
// own, and the streams land on several gateway processes, independent
// instances in front of the one in-process upstream, each with its own
// /proc figures and their sum.
//
// Each scenario opens its clients in steps (-steps, then -clients), reading
// the gateways' memory at each step once the clients are open and
// -warmup has passed; then it measures one window of -duration: heartbeats
// only (idle-max, idle-100k), or one result every 1/-rate seconds in each
// of -rooms rooms (fanout-100k). idle-max then opens -probe clients more,
// past what the gateway's open files limit leaves room for, and reports
// what became of them.

const (
	defaultClientsPerProc = 18_000
	// firstSource is the last byte of the first clients process's source
	// address, 127.0.0.2; the last is 127.0.0.254.
	firstSource = 2
	maxSources  = 253
	// gatewayHeadroom is what idle-max leaves under a gateway's open
	// files limit besides what it holds at rest: its upstream connection,
	// loadgen's debug requests, and a few to spare.
	gatewayHeadroom = 8
	// portsSpare is left of the ephemeral port range for what else uses
	// it.
	portsSpare = 1000
)

// scale reports whether the scenario runs on several processes.
func (c *config) scale() bool {
	switch c.scenario {
	case "idle-max", "idle-100k", "fanout-100k":
		return true
	}
	return false
}

// parseSteps reads -steps: stream counts, ascending.
func parseSteps(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("-steps %q: positive stream counts, comma-separated", s)
		}
		if len(out) > 0 && v <= out[len(out)-1] {
			return nil, fmt.Errorf("-steps %q: ascending", s)
		}
		out = append(out, v)
	}
	return out, nil
}

// validateScale checks the command line of a scenario at scale.
func (c *config) validateScale() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.scenario == "idle-max" && c.clients < 0 {
		bad("-clients must not be negative (0: up to the gateway's open files limit)")
	}
	if c.gateways < 1 {
		bad("-gateways must be at least 1")
	}
	if c.clientsPerProc < 1 || c.inflight < 1 || c.openTimeout <= 0 || c.clientProcs < 0 || c.probe < 0 || c.gatewayFiles < 0 {
		bad("-clients-per-proc, -ramp-inflight and -open-timeout must be positive; -client-procs, -probe and -gateway-max-files not negative")
	}
	if c.clientProcs > maxSources {
		bad("-client-procs %d: at most %d, one source address each (127.0.0.%d to 127.0.0.%d)", c.clientProcs, maxSources, firstSource, firstSource+maxSources-1)
	}
	if c.scenario == "fanout-100k" && c.rooms < 1 {
		bad("-rooms must be at least 1")
	}
	if c.scenario != "fanout-100k" && c.rooms != 0 {
		bad("-rooms is for fanout-100k")
	}
	if c.scenario != "idle-max" && c.probe != 0 {
		bad("-probe is for idle-max")
	}
	if c.proto != protoH1 || c.gatewayURL != "" || c.upstreamURL != "" || c.upstreamListen != "" || c.upstreamSSE || c.floor {
		bad("%s starts its own gateways and upstream, over HTTP/1.1: no -proto, -gateway, -upstream, -upstream-listen, -upstream-protocol or -floor", c.scenario)
	}
	if c.gatewayLatency {
		bad("-gateway-latency is not read from several gateways")
	}
	return errs
}

// sysLimits are the machine's limits a run at scale must fit in.
type sysLimits struct {
	FilesHard  uint64 `json:"open_files_hard_limit"` // RLIMIT_NOFILE, which every child inherits
	PortLow    int    `json:"port_low"`              // net.ipv4.ip_local_port_range
	PortHigh   int    `json:"port_high"`
	Somaxconn  int    `json:"somaxconn"`           // net.core.somaxconn: a listener's accept queue
	SynBacklog int    `json:"tcp_max_syn_backlog"` // half-open connections per listener
}

func readSysLimits() (sysLimits, error) {
	var l sysLimits
	_, hard, err := fileLimit()
	if err != nil {
		return l, err
	}
	l.FilesHard = hard
	ports, err := sysInts("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return l, err
	}
	if len(ports) != 2 {
		return l, errors.New("ip_local_port_range: want two numbers")
	}
	l.PortLow, l.PortHigh = ports[0], ports[1]
	for _, v := range []struct {
		file string
		to   *int
	}{{"/proc/sys/net/core/somaxconn", &l.Somaxconn}, {"/proc/sys/net/ipv4/tcp_max_syn_backlog", &l.SynBacklog}} {
		vs, err := sysInts(v.file)
		if err != nil {
			return l, err
		}
		*v.to = vs[0]
	}
	return l, nil
}

// A clientsPlan is how a run's clients are spread: counts[p] clients in
// clients process p, from global index firsts[p].
type clientsPlan struct {
	firsts, counts []int
}

// planClients spreads n clients (and probe more) over processes, as few as
// perProc allows unless procs is set, and checks the plan against the
// machine's limits, with a message that says what to change when it does
// not fit. gatewayFiles is each gateway's open files limit.
func planClients(cfg config, n int, gatewayFiles uint64, lim sysLimits) (clientsPlan, error) {
	var plan clientsPlan
	total := n + cfg.probe
	procs := cfg.clientProcs
	if procs == 0 {
		procs = (total + cfg.clientsPerProc - 1) / cfg.clientsPerProc
	}
	procs = max(min(procs, total), 1)
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if procs > maxSources {
		bad("%d clients need %d clients processes of at most %d, and there are %d source addresses: raise -clients-per-proc", total, procs, cfg.clientsPerProc, maxSources)
	}
	per := (total + procs - 1) / procs
	if per > cfg.clientsPerProc {
		bad("%d clients on %d clients processes is %d each, over -clients-per-proc %d: raise -client-procs", total, procs, per, cfg.clientsPerProc)
	}
	if need := uint64(per + filesSpare); lim.FilesHard > 0 && need > lim.FilesHard {
		bad("a clients process with %d clients needs about %d open files and the hard limit is %d (ulimit -Hn): lower -clients-per-proc to %d or less",
			per, need, lim.FilesHard, max(int(lim.FilesHard)-filesSpare, 0))
	}
	perGW := (n + cfg.gateways - 1) / cfg.gateways
	if need := uint64(perGW + gatewayHeadroom); gatewayFiles > 0 && need > gatewayFiles {
		bad("a gateway with %d streams needs about %d open files and its limit is %d: raise -gateways", perGW, need, gatewayFiles)
	}
	// Each clients process has a source address of its own; its
	// connections to one gateway need a port each, distinct.
	if ports := lim.PortHigh - lim.PortLow + 1; lim.PortHigh > 0 {
		if toOne := (per + cfg.gateways - 1) / cfg.gateways; toOne > ports-portsSpare {
			bad("a clients process would hold %d connections to one gateway from one source address, and the ephemeral port range %d-%d has %d ports: raise -client-procs",
				toOne, lim.PortLow, lim.PortHigh, ports)
		}
	}
	// In the worst case every open in flight is towards one gateway: its
	// accept queue must hold them all.
	if queue := min(lim.Somaxconn, lim.SynBacklog); queue > 0 && procs*cfg.inflight > queue {
		bad("%d clients processes × -ramp-inflight %d = %d opens in flight, more than a gateway's accept queue holds (somaxconn %d, tcp_max_syn_backlog %d): lower -ramp-inflight",
			procs, cfg.inflight, procs*cfg.inflight, lim.Somaxconn, lim.SynBacklog)
	}
	if err := errors.Join(errs...); err != nil {
		return plan, err
	}
	first := 0
	for p := range procs {
		c := total / procs
		if p < total%procs {
			c++
		}
		plan.firsts = append(plan.firsts, first)
		plan.counts = append(plan.counts, c)
		first += c
	}
	return plan, nil
}

// sourceAddr is clients process p's source address.
func sourceAddr(p int) string { return "127.0.0." + strconv.Itoa(firstSource+p) }

// scaleInfo is what a scenario at scale reports besides its window.
type scaleInfo struct {
	Gateways    []gatewayInfo    `json:"gateways"`
	ClientProcs []clientProcInfo `json:"client_procs"`
	Limits      sysLimits        `json:"limits"`
	Rooms       int              `json:"rooms,omitempty"`
	// Before is the gateways at rest, before any client; Steps, each
	// count of streams on the way up.
	Before *memPoint    `json:"before"`
	Steps  []*scaleStep `json:"steps"`
	// Connect is the time from asking for the last step's clients to
	// every one open (for one step: all of them).
	ConnectSeconds *float64   `json:"connect_s"`
	ConnectPerSec  *float64   `json:"connect_per_s"`
	Probe          *probeInfo `json:"probe,omitempty"`
	// LimitHit says what stopped more streams (idle-max).
	LimitHit string `json:"limit_hit,omitempty"`
	// Loss is from the clients processes (fanout-100k).
	Drained *bool `json:"drained,omitempty"`
}

type clientProcInfo struct {
	PID       int      `json:"pid"`
	Source    string   `json:"source"`
	First     int      `json:"first"`
	Count     int      `json:"count"`
	FileLimit *int64   `json:"file_limit"`
	CPU       *float64 `json:"cpu_s"` // over the whole run
	RSS       *int64   `json:"rss_end"`
	Exit      string   `json:"exit,omitempty"`
}

// A memPoint is the gateways' memory at one instant, summed over them.
type memPoint struct {
	Streams    int    `json:"streams"` // clients open
	RSS        *int64 `json:"rss"`
	HeapLive   uint64 `json:"heap_live"`
	HeapGoal   uint64 `json:"heap_goal"`
	Stacks     uint64 `json:"stacks"`
	Goroutines int    `json:"goroutines"`
	// The most descriptors one gateway holds open, and its limit.
	OpenFiles *int   `json:"open_files_max"`
	FileLimit *int64 `json:"file_limit"`
}

// A scaleStep is the gateways holding a count of streams.
type scaleStep struct {
	memPoint
	OpenSeconds float64 `json:"open_s"` // from asking for this step's clients to every one open
	Failed      int64   `json:"failed"`
	// Per stream, over the gateways at rest: RSS, live heap, stacks,
	// heap goal, in KiB.
	RSSPerStreamKiB      *float64 `json:"rss_per_stream_kib"`
	HeapLivePerStreamKiB *float64 `json:"heap_live_per_stream_kib"`
	StacksPerStreamKiB   *float64 `json:"stacks_per_stream_kib"`
	HeapGoalPerStreamKiB *float64 `json:"heap_goal_per_stream_kib"`
}

// probeInfo is what became of idle-max's clients past the maximum.
type probeInfo struct {
	Tried   int            `json:"tried"`
	Opened  int64          `json:"opened"`
	Failed  int64          `json:"failed"`
	Reasons map[string]int `json:"reasons,omitempty"`
	// The gateway's descriptors once they had been tried, and its limit.
	OpenFiles *int   `json:"gateway_open_files"`
	FileLimit *int64 `json:"gateway_file_limit"`
}

// gcWindow is the gateways' garbage collection in a window, summed over
// them: cycles, the CPU they took, and their stop-the-world pauses, whose
// quantiles are the upper bounds of runtime/metrics' buckets.
type gcWindow struct {
	Cycles uint64   `json:"cycles"`
	CPU    float64  `json:"cpu_s"`
	Pauses uint64   `json:"pauses"`
	P50us  *float64 `json:"pause_p50_us"`
	P99us  *float64 `json:"pause_p99_us"`
	MaxUs  *float64 `json:"pause_max_us"`
	// Of those pauses, the time it took to stop the world.
	StopP99us *float64 `json:"stopping_p99_us"`
	StopMaxUs *float64 `json:"stopping_max_us"`
}

// setupScale starts the upstream, the gateways and the clients processes
// of a scenario at scale, having checked that the machine's limits hold
// them.
func (e *env) setupScale(ctx context.Context) error {
	cfg := e.cfg
	info := &scaleInfo{Rooms: cfg.rooms}
	e.rep.Scale = info
	lim, err := readSysLimits()
	if err != nil {
		return fmt.Errorf("read the machine's limits: %w", err)
	}
	info.Limits = lim
	gwFiles := lim.FilesHard
	if cfg.gatewayFiles > 0 {
		gwFiles = min(gwFiles, uint64(cfg.gatewayFiles))
	}
	if cfg.clients > 0 {
		// Up front, before anything starts.
		if _, err := planClients(cfg, cfg.clients, gwFiles, lim); err != nil {
			return err
		}
	}
	if err := e.fileLimit(); err != nil {
		return err
	}

	up, err := startUpstream("")
	if err != nil {
		return fmt.Errorf("start the upstream: %w", err)
	}
	e.up = up
	e.rep.Upstream = upstreamInfo{URL: up.url, InProcess: true}
	e.logf("in-process upstream at %s", up.url)

	var addrs []string
	for i := range cfg.gateways {
		inst := fmt.Sprintf("g%d", i+1)
		profile := ""
		if cfg.gatewayProfile != "" {
			profile = cfg.gatewayProfile
			if cfg.gateways > 1 {
				profile += "." + inst
			}
		}
		flags := cfg.gatewayFlags("-upstream", up.url, profile)
		if cfg.gatewayFiles > 0 {
			flags = append(flags, "-max-files", strconv.Itoa(cfg.gatewayFiles))
		}
		if cfg.gatewayHeapProf != "" {
			heap := cfg.gatewayHeapProf
			if cfg.gateways > 1 {
				heap += "." + inst
			}
			flags = append(flags, "-heapprofile", heap)
		}
		gw, err := startGateway(ctx, inst, flags, e.log)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", inst, err)
		}
		e.members = append(e.members, &member{gw: gw, instance: inst})
		gi := gatewayInfo{Instance: inst, URL: "http://" + gw.addr, PID: gw.pid, Child: true}
		if l, err := procFileLimit(gw.pid); err == nil {
			gi.FileLimit = &l
			gwFiles = min(gwFiles, uint64(l))
		}
		info.Gateways = append(info.Gateways, gi)
		addrs = append(addrs, gw.addr)
	}
	e.logf("%d gateways (child processes) at %s", len(addrs), strings.Join(addrs, ", "))
	e.gwDbg = make([]*debugClient, len(addrs))
	for i, a := range addrs {
		e.gwDbg[i] = newDebugClient("http://"+a, nil)
	}

	if cfg.scenario == "idle-max" && cfg.clients == 0 {
		// As many as the gateway's limit leaves room for, besides what
		// it holds at rest.
		open, err := procOpenFiles(e.members[0].gw.pid)
		if err != nil {
			return fmt.Errorf("count the gateway's open files: %w", err)
		}
		e.cfg.clients = int(gwFiles) - open - gatewayHeadroom
		e.rep.Params.Clients = e.cfg.clients
		e.logf("the gateway may hold %d open files and holds %d at rest: %d streams", gwFiles, open, e.cfg.clients)
		if e.cfg.clients < 1 {
			return fmt.Errorf("the gateway's open files limit %d leaves no room for a stream", gwFiles)
		}
	}
	cfg = e.cfg
	plan, err := planClients(cfg, cfg.clients, gwFiles, lim)
	if err != nil {
		return err
	}

	if cfg.publishes() {
		rooms := make([]string, cfg.rooms)
		for i := range rooms {
			rooms[i] = roomName(i)
		}
		e.pub = newPublisher(e.up, rooms)
		var pctx context.Context
		pctx, e.pubCancel = context.WithCancel(context.Background())
		go e.pub.run(pctx)
		e.rep.Upstream.Publishing = true
	}

	for p := range plan.counts {
		flags := []string{
			"-gateways", strings.Join(addrs, ","),
			"-source", sourceAddr(p),
			"-first", strconv.Itoa(plan.firsts[p]),
			"-count", strconv.Itoa(plan.counts[p]),
			"-ramp", strconv.Itoa(cfg.ramp),
			"-ramp-every", cfg.rampEvery.String(),
			"-inflight", strconv.Itoa(cfg.inflight),
			"-open-timeout", cfg.openTimeout.String(),
		}
		if cfg.rooms > 0 {
			flags = append(flags, "-rooms", strconv.Itoa(cfg.rooms), "-seq")
		}
		label := fmt.Sprintf("clients%d", p+1)
		g, err := startChild(ctx, "clients", label, flags, e.log)
		if err != nil {
			return fmt.Errorf("clients process %d: %w", p+1, err)
		}
		cp := &clientProc{proc: g, dbg: newDebugClient("http://"+g.addr, nil), source: sourceAddr(p), first: plan.firsts[p], count: plan.counts[p]}
		e.procs = append(e.procs, cp)
		ci := clientProcInfo{PID: g.pid, Source: cp.source, First: cp.first, Count: cp.count}
		if l, err := procFileLimit(g.pid); err == nil {
			ci.FileLimit = &l
		}
		info.ClientProcs = append(info.ClientProcs, ci)
	}
	e.logf("%d clients processes, from %s to %s, %v clients", len(e.procs), sourceAddr(0), sourceAddr(len(e.procs)-1), plan.counts)
	return nil
}

// exitedProc returns a clients process that is gone, or nil.
func (e *env) exitedProc() *clientProc {
	for _, p := range e.procs {
		if p.proc.exited() {
			return p
		}
	}
	return nil
}

// stopProcs stops the clients processes, all at once, and records how each
// exited and what it used.
func (e *env) stopProcs() error {
	errs := make([]error, len(e.procs))
	var wg sync.WaitGroup
	for i, p := range e.procs {
		if s := e.rep.Scale; s != nil && i < len(s.ClientProcs) {
			if v, err := procCPU(p.proc.pid, e.ticks); err == nil {
				s.ClientProcs[i].CPU = ptr(v.Seconds())
			}
			if v, err := procRSS(p.proc.pid); err == nil {
				s.ClientProcs[i].RSS = &v
			}
		}
		wg.Go(func() {
			var exit string
			exit, errs[i] = stopChild(p.proc, fmt.Sprintf("clients process %d", i+1))
			if s := e.rep.Scale; s != nil && i < len(s.ClientProcs) {
				s.ClientProcs[i].Exit = exit
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// each calls fn for every clients process at once, and returns the first
// error.
func (e *env) each(fn func(i int, p *clientProc) error) error {
	errs := make([]error, len(e.procs))
	var wg sync.WaitGroup
	for i, p := range e.procs {
		wg.Go(func() { errs[i] = fn(i, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clientsTotals is the clients processes' counters, summed.
type clientsTotals struct {
	opened, failed, ended int64
	reasons               map[string]int
	t                     totals
	byGW                  []totals
}

func (e *env) clientsTotals(ctx context.Context) (clientsTotals, error) {
	states := make([]*clientsState, len(e.procs))
	err := e.each(func(i int, p *clientProc) error {
		st, err := p.state(ctx)
		states[i] = st
		return err
	})
	ct := clientsTotals{reasons: map[string]int{}, byGW: make([]totals, e.cfg.gateways)}
	if err != nil {
		return ct, err
	}
	for _, st := range states {
		ct.opened += st.Opened
		ct.failed += st.Failed
		ct.ended += st.Ended
		for k, v := range st.Reasons {
			ct.reasons[k] += v
		}
		ct.t.add(st.Totals.totals())
		for g, bt := range st.ByGateway {
			if g < len(ct.byGW) {
				ct.byGW[g].add(bt.totals())
			}
		}
	}
	return ct, nil
}

// openTo has the clients processes hold the run's first n clients, and
// waits until each is open or failed. It fails when none opens or fails
// for -settle.
func (e *env) openTo(ctx context.Context, n int) (clientsTotals, error) {
	start := time.Now()
	err := e.each(func(_ int, p *clientProc) error {
		return p.open(ctx, min(max(n-p.first, 0), p.count))
	})
	if err != nil {
		return clientsTotals{}, err
	}
	var (
		ct       clientsTotals
		last     = int64(-1)
		progress = time.Now()
		logged   = time.Now()
	)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if err := e.alive(); err != nil {
			return ct, err
		}
		ct, err = e.clientsTotals(ctx)
		if err != nil {
			return ct, err
		}
		done := ct.opened + ct.failed
		if done >= int64(n) {
			e.logf("%d clients open, %d failed, in %.1fs", ct.opened, ct.failed, time.Since(start).Seconds())
			return ct, nil
		}
		if done != last {
			last, progress = done, time.Now()
		} else if time.Since(progress) > e.cfg.settle+e.cfg.openTimeout {
			return ct, fmt.Errorf("%d of %d clients open, %d failed, none more for %v", ct.opened, n, ct.failed, e.cfg.settle+e.cfg.openTimeout)
		}
		if time.Since(logged) > 5*time.Second {
			logged = time.Now()
			e.logf("%d of %d clients open (%d failed), %.0fs", ct.opened, n, ct.failed, time.Since(start).Seconds())
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ct, ctx.Err()
		}
	}
}

// alive fails when a gateway or a clients process has exited.
func (e *env) alive() error {
	if m := e.exitedMember(); m != nil {
		return fmt.Errorf("gateway %s exited: %v", m.instance, m.gw.err)
	}
	if p := e.exitedProc(); p != nil {
		return fmt.Errorf("the clients process from %s exited: %v", p.source, p.proc.err)
	}
	return nil
}

// memPoint reads the gateways' memory, summed.
func (e *env) memPoint(ctx context.Context, streams int) *memPoint {
	m := &memPoint{Streams: streams}
	var rss int64
	rssOK := true
	for i, mb := range e.members {
		if v, err := procRSS(mb.gw.pid); err == nil {
			rss += v
		} else {
			rssOK = false
		}
		if n, err := procOpenFiles(mb.gw.pid); err == nil && (m.OpenFiles == nil || n > *m.OpenFiles) {
			m.OpenFiles = &n
			if l, err := procFileLimit(mb.gw.pid); err == nil {
				m.FileLimit = &l
			}
		}
		if di, err := e.gwDbg[i].info(ctx); err == nil {
			m.HeapLive += di.HeapLive
			m.HeapGoal += di.HeapGoal
			m.Stacks += di.Stacks
			m.Goroutines += di.Goroutines
		}
	}
	if rssOK {
		m.RSS = &rss
	}
	return m
}

// perStream fills a step's figures per stream over before.
func (s *scaleStep) perStream(before *memPoint) {
	n := float64(s.Streams)
	if n == 0 || before == nil {
		return
	}
	per := func(a, b uint64) *float64 { return ptr((float64(b) - float64(a)) / n / 1024) }
	if s.RSS != nil && before.RSS != nil {
		s.RSSPerStreamKiB = ptr(float64(*s.RSS-*before.RSS) / n / 1024)
	}
	s.HeapLivePerStreamKiB = per(before.HeapLive, s.HeapLive)
	s.StacksPerStreamKiB = per(before.Stacks, s.Stacks)
	s.HeapGoalPerStreamKiB = per(before.HeapGoal, s.HeapGoal)
}

// scaleSnap is snap with the clients processes' counters and the
// gateways' GC figures.
//
// Under load each answer over HTTP may take a while: the gateways' (their
// GC counters) are asked first, all at once, then the clients processes',
// and the /proc figures are read last, at once after the clients' counts,
// so that a window's CPU and its deliveries cover about the same time.
func (e *env) scaleSnap(ctx context.Context) (snap, error) {
	gcs := make([]*debugInfo, len(e.gwDbg))
	var wg sync.WaitGroup
	for i, d := range e.gwDbg {
		wg.Go(func() {
			if di, err := d.info(ctx); err == nil {
				gcs[i] = di
			}
		})
	}
	wg.Wait()
	ct, err := e.clientsTotals(ctx)
	if err != nil {
		return snap{}, err
	}
	s := e.snap(nil)
	s.gcs = gcs
	s.t, s.byGW, s.ended = ct.t, ct.byGW, ct.ended
	return s, nil
}

// gcBetween sums the gateways' GC figures between two snaps; nil when a
// gateway's are missing.
func gcBetween(a, b snap) *gcWindow {
	if len(a.gcs) == 0 || len(a.gcs) != len(b.gcs) {
		return nil
	}
	g := &gcWindow{}
	var pauses, stopping pauseDiff
	for i := range a.gcs {
		x, y := a.gcs[i], b.gcs[i]
		if x == nil || y == nil || !pauses.add(x.GCPauses, y.GCPauses) {
			return nil
		}
		stopping.add(x.GCStopping, y.GCStopping)
		g.Cycles += y.GCCycles - x.GCCycles
		g.CPU += y.GCCPU - x.GCCPU
	}
	g.Pauses = pauses.total()
	g.P50us, g.P99us, g.MaxUs = pauses.quantile(0.50), pauses.quantile(0.99), pauses.max()
	g.StopP99us, g.StopMaxUs = stopping.quantile(0.99), stopping.max()
	return g
}

// A pauseDiff adds up pause histograms between two readings, bucket by
// bucket; quantiles are bucket bounds, in µs.
type pauseDiff struct {
	counts []uint64
	upper  []int64
	bad    bool
}

// add adds y − x; it reports false when they cannot be added.
func (d *pauseDiff) add(x, y *pauseHist) bool {
	if x == nil || y == nil || len(x.Counts) != len(y.Counts) || len(y.UpperNs) != len(y.Counts) {
		d.bad = true
		return false
	}
	if d.counts == nil {
		d.counts, d.upper = make([]uint64, len(y.Counts)), y.UpperNs
	}
	if len(d.counts) != len(y.Counts) {
		d.bad = true
		return false
	}
	for j := range d.counts {
		d.counts[j] += y.Counts[j] - x.Counts[j]
	}
	return true
}

func (d *pauseDiff) total() uint64 {
	var n uint64
	for _, c := range d.counts {
		n += c
	}
	return n
}

func (d *pauseDiff) bound(j int) *float64 {
	if d.upper[j] == math.MaxInt64 {
		return ptr(math.Inf(1))
	}
	return ptr(float64(d.upper[j]) / 1e3)
}

func (d *pauseDiff) quantile(p float64) *float64 {
	n := d.total()
	if d.bad || n == 0 {
		return nil
	}
	rank := max(uint64(math.Ceil(p*float64(n))), 1)
	var seen uint64
	for j, c := range d.counts {
		seen += c
		if seen >= rank {
			return d.bound(j)
		}
	}
	return nil
}

func (d *pauseDiff) max() *float64 {
	if d.bad {
		return nil
	}
	for j := len(d.counts) - 1; j >= 0; j-- {
		if d.counts[j] > 0 {
			return d.bound(j)
		}
	}
	return nil
}

// measureScale records one window of d over the clients processes.
func (e *env) measureScale(ctx context.Context, name string, d time.Duration, offered float64) (*window, error) {
	err := e.each(func(_ int, p *clientProc) error {
		_, err := p.latency(ctx, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	a, err := e.scaleSnap(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.sleep(ctx, d, nil); err != nil {
		return nil, err
	}
	b, err := e.scaleSnap(ctx)
	if err != nil {
		return nil, err
	}
	hs := newHistSet()
	var mu sync.Mutex
	err = e.each(func(_ int, p *clientProc) error {
		dump, err := p.latency(ctx, false)
		mu.Lock()
		hs.add(dump)
		mu.Unlock()
		return err
	})
	if err != nil {
		return nil, err
	}
	w := e.window(name, a, b, hs, e.cfg.clients, offered)
	w.GC = gcBetween(a, b)
	for i, g := range w.Gateways {
		g.Clients = clientsOfGateway(e.cfg.clients, len(w.Gateways), i)
	}
	e.rep.Windows = append(e.rep.Windows, w)
	e.logWindow(w, "gateways")
	return w, nil
}

// clientsOfGateway counts the clients among the first n that connect to
// gateway g of gateways: client i connects to gateway i mod gateways.
func clientsOfGateway(n, gateways, g int) int {
	c := n / gateways
	if g < n%gateways {
		c++
	}
	return c
}

// scaleRun runs a scenario at scale, once setupScale has.
func (e *env) scaleRun(ctx context.Context) error {
	cfg := e.cfg
	info := e.rep.Scale
	n := cfg.clients
	if err := e.sleep(ctx, 500*time.Millisecond, nil); err != nil {
		return err
	}
	info.Before = e.memPoint(ctx, 0)
	e.rep.Clients = &clientsInfo{Started: n}
	record := func(ct clientsTotals) {
		c := e.rep.Clients
		c.Opened, c.Failed, c.Ended, c.Reasons = ct.opened, ct.failed, ct.ended, ct.reasons
	}
	steps := slices.DeleteFunc(slices.Clone(cfg.steps), func(s int) bool { return s >= n })
	steps = append(steps, n)
	var opening float64
	prev := 0 // the step before
	for _, s := range steps {
		e.logf("step: %d streams over %d gateways", s, len(e.members))
		t0 := time.Now()
		ct, err := e.openTo(ctx, s)
		record(ct)
		if err != nil {
			return err
		}
		took := time.Since(t0).Seconds()
		opening += took
		if ct.failed > 0 {
			return fmt.Errorf("%d of %d clients failed to open: %v", ct.failed, s, ct.reasons)
		}
		if err := e.sleep(ctx, cfg.warmup, nil); err != nil {
			return err
		}
		st := &scaleStep{memPoint: *e.memPoint(ctx, s), OpenSeconds: took, Failed: ct.failed}
		st.perStream(info.Before)
		info.Steps = append(info.Steps, st)
		info.ConnectSeconds, info.ConnectPerSec = ptr(took), ptr(float64(s-prev)/took)
		e.logf("%d streams: RSS %s, %s KiB per stream", s, bytesText(st.RSS), ptrText(st.RSSPerStreamKiB, "%.2f"))
		prev = s
	}
	e.rep.Clients.Ramp = opening

	switch cfg.scenario {
	case "fanout-100k":
		if err := e.waitSubscribed(ctx, cfg.gateways*cfg.rooms); err != nil {
			return err
		}
		if err := e.pub.set(ctx, cfg.rate); err != nil {
			return err
		}
		if err := e.sleep(ctx, cfg.warmup, nil); err != nil {
			return err
		}
		if _, err := e.measureScale(ctx, "measure", cfg.duration, float64(n)*cfg.rate); err != nil {
			return err
		}
		e.rep.Upstream.Subscriptions = e.upstreamSubs()
		if err := e.scaleLoss(ctx); err != nil {
			return err
		}
	default:
		if _, err := e.measureScale(ctx, "hold", cfg.duration, 0); err != nil {
			return err
		}
		e.rep.Upstream.Subscriptions = e.upstreamSubs()
	}
	ct, err := e.clientsTotals(ctx)
	if err == nil {
		record(ct)
	}
	if cfg.gatewayHeapProf != "" {
		// Now, while the streams are open.
		for i, d := range e.gwDbg {
			if err := d.heapProfile(ctx); err != nil {
				e.rep.note("gateway %s: no heap profile: %v", e.members[i].instance, err)
			}
		}
	}
	if cfg.scenario == "idle-max" {
		return e.probeLimit(ctx)
	}
	return nil
}

// scaleLoss stops publishing, lets every client receive its room's last
// result, and counts what never came, over the clients processes.
func (e *env) scaleLoss(ctx context.Context) error {
	if err := e.pub.set(ctx, 0); err != nil {
		return err
	}
	final := e.pub.finalSeq()
	if n, err := e.pub.failures(); err != nil {
		e.rep.note("the upstream refused %d posts (not counted as lost); the first error: %v", n, err)
	}
	var (
		lost, ooo int64
		drained   bool
		mu        sync.Mutex
	)
	ask := func() bool {
		lost, ooo, drained = 0, 0, true
		err := e.each(func(_ int, p *clientProc) error {
			ls, err := p.loss(ctx, final)
			if err != nil {
				return err
			}
			mu.Lock()
			lost += ls.Lost
			ooo += ls.OOO
			drained = drained && ls.Drained
			mu.Unlock()
			return nil
		})
		return err == nil && drained
	}
	if err := waitUntil(ctx, 10*time.Second, 250*time.Millisecond, ask); err != nil && ctx.Err() != nil {
		return err
	}
	e.rep.Lost, e.rep.OOO = &lost, &ooo
	e.rep.Scale.Drained = &drained
	return nil
}

// probeLimit opens -probe clients past the maximum and reports what became
// of them, and the gateway's descriptors: the limit that stops more streams.
func (e *env) probeLimit(ctx context.Context) error {
	info := e.rep.Scale
	n, k := e.cfg.clients, e.cfg.probe
	gw := e.members[0].gw
	lim, _ := procFileLimit(gw.pid)
	if k == 0 {
		if m := info.Steps[len(info.Steps)-1]; m.OpenFiles != nil {
			info.LimitHit = fmt.Sprintf("none tried (-probe 0); the gateway held %d descriptors of its limit of %d", *m.OpenFiles, lim)
		}
		return nil
	}
	e.logf("probe: %d clients more, past the gateway's open files limit", k)
	p := &probeInfo{Tried: k}
	info.Probe = p
	before, err := e.clientsTotals(ctx)
	if err != nil {
		return err
	}
	// The gateway answers no debug request while it cannot accept: only
	// the clients processes and /proc are asked from here on.
	ct, err := e.openTo(ctx, n+k)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	p.Opened, p.Failed = ct.opened-before.opened, ct.failed-before.failed
	p.Reasons = map[string]int{}
	for r, v := range ct.reasons {
		if d := v - before.reasons[r]; d > 0 {
			p.Reasons[r] = d
		}
	}
	if v, err := procOpenFiles(gw.pid); err == nil {
		p.OpenFiles = &v
	}
	if lim > 0 {
		p.FileLimit = &lim
	}
	switch {
	case p.Failed > 0 && p.OpenFiles != nil && p.FileLimit != nil && int64(*p.OpenFiles) >= *p.FileLimit-1:
		info.LimitHit = fmt.Sprintf("the gateway's open files limit (RLIMIT_NOFILE %d): it held %d descriptors, and %d of %d clients more did not open %v",
			*p.FileLimit, *p.OpenFiles, p.Failed, k, p.Reasons)
	case p.Failed > 0:
		info.LimitHit = fmt.Sprintf("%d of %d clients more did not open %v; the gateway held %s descriptors of %s",
			p.Failed, k, p.Reasons, ptrText(p.OpenFiles, "%d"), ptrText(p.FileLimit, "%d"))
	default:
		info.LimitHit = fmt.Sprintf("none: all %d clients more opened; the gateway holds %s descriptors of %s", k, ptrText(p.OpenFiles, "%d"), ptrText(p.FileLimit, "%d"))
	}
	e.logf("limit: %s", info.LimitHit)
	return nil
}
