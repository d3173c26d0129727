package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// openShared opens n clients on the one shared operation (Sub), and waits
// until its upstream subscription runs. The fleet comes back even with an
// error, for the caller to record and close. seq says whether clients check
// the results' sequence numbers, as newFleet's does.
func (e *env) openShared(ctx context.Context, n int, seq bool) (*fleet, error) {
	shared, _ := e.cfg.operations()
	targets := make([]string, n)
	for i := range targets {
		targets[i] = opsPrefix + shared + "?wg_sse=true"
	}
	f := e.newFleet(ctx, seq)
	if err := e.openFleet(ctx, f, targets, nil); err != nil {
		return f, err
	}
	return f, e.waitSubscribed(ctx, 1)
}

// steady is fanout (every client on Sub) and distinct (each on Room with
// its own room), on either upstream: a fixed rate, one window.
func (e *env) steady(ctx context.Context, distinct bool) error {
	n := e.cfg.clients
	shared, room := e.cfg.operations()
	targets := make([]string, n)
	var rooms []int
	if distinct {
		rooms = make([]int, n)
	}
	for i := range targets {
		targets[i] = opsPrefix + shared + "?wg_sse=true"
		if distinct {
			targets[i] = opsPrefix + room + "?wg_sse=true&room=" + roomName(i)
			rooms[i] = i
		}
	}
	f := e.newFleet(ctx, e.pub != nil)
	defer f.close()
	defer e.recordClients(f)
	if err := e.openFleet(ctx, f, targets, rooms); err != nil {
		return err
	}
	subs := 1
	if distinct {
		subs = n
	}
	if err := e.waitSubscribed(ctx, subs); err != nil {
		return err
	}
	if e.pub != nil {
		if err := e.pub.set(ctx, e.cfg.rate); err != nil {
			return err
		}
	}
	if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
		return err
	}
	if _, err := e.measure(ctx, f, "measure", e.cfg.duration, float64(n)*e.cfg.rate, nil); err != nil {
		return err
	}
	e.rep.Upstream.Subscriptions = e.upstreamSubs()
	return e.finishLoss(ctx, f)
}

// live follows one live query with every client (Live, the chat's message
// count, with wg_live) while the chat gets posts at the rate: the gateway
// polls it upstream, one poller for all, and pushes each count that
// changed.
func (e *env) live(ctx context.Context) error {
	n := e.cfg.clients
	targets := make([]string, n)
	for i := range targets {
		targets[i] = opsPrefix + "Live?wg_live=true&wg_sse=true"
	}
	f := e.newFleet(ctx, false)
	if e.pub != nil {
		f.stamps = e.pub.stamps
	}
	defer f.close()
	defer e.recordClients(f)
	if err := e.openFleet(ctx, f, targets, nil); err != nil {
		return err
	}
	// Every client has the count before the first post once its poller
	// runs and it is the poller's: from then on, each change is one for
	// all of them.
	first := func() bool {
		for _, c := range f.clients {
			if c.delivered.Load() == 0 {
				return false
			}
		}
		return true
	}
	if err := waitUntil(ctx, e.cfg.settle, 20*time.Millisecond, first); err != nil {
		return fmt.Errorf("waiting for every client's first result: %w", err)
	}
	info := &liveInfo{Interval: e.cfg.liveInterval.String(), ExpectedQueriesPerSec: float64(time.Second) / float64(e.cfg.liveInterval)}
	e.rep.Live = info
	if e.pub != nil {
		if err := e.pub.set(ctx, e.cfg.rate); err != nil {
			return err
		}
	}
	if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
		return err
	}
	w, err := e.measure(ctx, f, "measure", e.cfg.duration, 0, nil)
	if err != nil {
		return err
	}
	if di, err := e.dbg.info(ctx); err == nil {
		info.Pollers = &di.Subscriptions
	}
	info.ResultsPerClient = w.DeliveredPerSec / float64(n)
	e.rep.Upstream.Subscriptions = e.upstreamSubs()
	return e.finishLoss(ctx, f)
}

// saturate steps the rate up until delivery falls behind.
func (e *env) saturate(ctx context.Context) error {
	if e.pub == nil {
		return errors.New("saturate steps the upstream's rate: it needs the in-process upstream")
	}
	n := e.cfg.clients
	f, err := e.openShared(ctx, n, true)
	defer f.close()
	defer e.recordClients(f)
	if err != nil {
		return err
	}
	info := &saturateInfo{StepSeconds: e.cfg.duration.Seconds()}
	e.rep.Saturate = info
	stepTime := e.cfg.warmup + e.cfg.duration
	rate := e.cfg.rate
	for step := 1; ; step++ {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < stepTime+30*time.Second {
			e.rep.note("stopped stepping before step %d: -timeout leaves too little time", step)
			break
		}
		if err := e.pub.set(ctx, rate); err != nil {
			return err
		}
		if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
			return err
		}
		offered := float64(n) * rate
		w, err := e.measure(ctx, f, fmt.Sprintf("step %d: upstream %.0f/s", step, rate), e.cfg.duration, offered, nil)
		if err != nil {
			return err
		}
		if why := fellBehind(w, rate); why != "" {
			info.FellBehind = fmt.Sprintf("step %d, %.0f offered/s: %s", step, offered, why)
			break
		}
		info.KeptUp = w
		if rate*e.cfg.factor > e.cfg.maxRate {
			e.rep.note("reached -max-rate %.0f/s without falling behind", e.cfg.maxRate)
			break
		}
		rate *= e.cfg.factor
	}
	e.rep.Upstream.Subscriptions = e.upstreamSubs()
	return e.finishLoss(ctx, f)
}

// fellBehind says why a saturate step did not keep up, or "".
func fellBehind(w *window, rate float64) string {
	var why []string
	if w.DeliveredPerSec < 0.95*w.Offered {
		s := fmt.Sprintf("delivered %.0f/s < 95%% of offered", w.DeliveredPerSec)
		if w.Posted != nil && *w.Posted < 0.95*rate {
			s += fmt.Sprintf(" (the upstream posted only %.0f/s of %.0f/s)", *w.Posted, rate)
		}
		why = append(why, s)
	}
	if w.Latency != nil && w.Latency.P99us > 100_000 {
		why = append(why, fmt.Sprintf("p99 %.0f ms > 100 ms", w.Latency.P99us/1000))
	}
	if w.Gaps > 0 || w.OOO > 0 {
		why = append(why, fmt.Sprintf("%d lost, %d out of order", w.Gaps, w.OOO))
	}
	if w.Ended > 0 {
		why = append(why, fmt.Sprintf("%d streams ended (dropped)", w.Ended))
	}
	return strings.Join(why, "; ")
}

// idle connects many clients that only get heartbeats and measures what
// each costs the gateway.
func (e *env) idle(ctx context.Context) error {
	info := &idleInfo{}
	e.rep.Idle = info
	n := e.cfg.clients
	// The gateway has just started, or is at rest: this is "before".
	if err := e.sleep(ctx, 500*time.Millisecond, nil); err != nil {
		return err
	}
	before := e.snap(nil)
	info.RSSBefore = before.gwRSS
	diBefore, dbgErr := e.dbg.info(ctx)
	if dbgErr == nil {
		info.GoroutinesBefore = &diBefore.Goroutines
	}
	f, err := e.openShared(ctx, n, false)
	defer f.close()
	defer e.recordClients(f)
	if err != nil {
		return err
	}
	if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
		return err
	}
	if di, err := e.dbg.info(ctx); err == nil && dbgErr == nil {
		info.GoroutinesAfter = &di.Goroutines
		per := func(a, b uint64) *float64 { return ptr((float64(b) - float64(a)) / float64(n) / 1024) }
		info.HeapLivePerClientKiB = per(diBefore.HeapLive, di.HeapLive)
		info.StacksPerClientKiB = per(diBefore.Stacks, di.Stacks)
		info.HeapGoalPerClientKiB = per(diBefore.HeapGoal, di.HeapGoal)
	}
	w, err := e.measure(ctx, f, "hold", e.cfg.duration, 0, nil)
	if err != nil {
		return err
	}
	info.RSSConnected, info.RSSEnd = w.GatewayRSSStart, w.GatewayRSSEnd
	if info.RSSBefore != nil && info.RSSConnected != nil && info.RSSEnd != nil {
		grown := max(*info.RSSConnected, *info.RSSEnd) - *info.RSSBefore
		info.PerClientKiB = ptr(float64(grown) / float64(n) / 1024)
	}
	beats := e.cfg.duration.Seconds() / e.cfg.heartbeat.Seconds()
	info.HeartbeatsMin, info.HeartbeatsMax = n*int(math.Floor(beats)), n*int(math.Ceil(beats))
	e.rep.Upstream.Subscriptions = e.upstreamSubs()
	return nil
}

// stall measures normal clients without, then with, clients that never
// read.
func (e *env) stall(ctx context.Context) error {
	if e.pub == nil {
		return errors.New("stall compares latencies: it needs the in-process upstream")
	}
	info := &stallInfo{}
	e.rep.Stall = info
	n := e.cfg.clients
	f, err := e.openShared(ctx, n, true)
	defer f.close()
	defer e.recordClients(f)
	if err != nil {
		return err
	}
	if err := e.pub.set(ctx, e.cfg.rate); err != nil {
		return err
	}
	if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
		return err
	}
	offered := float64(n) * e.cfg.rate
	without, err := e.measure(ctx, f, "without the stalled client", e.cfg.duration, offered, nil)
	if err != nil {
		return err
	}

	base, dbgErr := e.dbg.info(ctx)
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	d := &net.Dialer{Timeout: 10 * time.Second, Control: rcvbufControl(e.cfg.rcvbuf)}
	for range e.cfg.stalled {
		c, err := d.DialContext(ctx, "tcp", e.addr)
		if err != nil {
			return fmt.Errorf("stalled client: %w", err)
		}
		stalled = append(stalled, c)
		if _, err := io.WriteString(c, requestHead(e.addr, opsPrefix+"Sub?wg_sse=true")); err != nil {
			return fmt.Errorf("stalled client: %w", err)
		}
	}
	stalledAt := time.Now()
	e.logf("%d stalled client(s) connected, SO_RCVBUF %d", e.cfg.stalled, e.cfg.rcvbuf)
	endedBefore := f.ended.Load()
	poll := func() {
		if dbgErr != nil || info.Dropped != nil && *info.Dropped {
			return
		}
		di, err := e.dbg.info(ctx)
		if err != nil {
			return
		}
		// Drops of normal clients show as streams ended; what is
		// dropped beyond them is the stalled clients.
		normal := f.ended.Load() - endedBefore
		if slow := di.DroppedSlow - base.DroppedSlow; slow > normal {
			info.Dropped = ptr(true)
			info.DroppedAfter = ptr(time.Since(stalledAt).Seconds())
			info.DropReason = "slow_consumer"
		}
	}
	if err := e.sleep(ctx, e.cfg.warmup, poll); err != nil {
		return err
	}
	with, err := e.measure(ctx, f, "with the stalled client", e.cfg.duration, offered, poll)
	if err != nil {
		return err
	}
	poll()
	if dbgErr == nil && info.Dropped == nil {
		info.Dropped = ptr(false)
	}
	// What the kernel holds for the stalled clients: the gateway's send
	// queues and their own receive queues.
	_, gwPort, _ := net.SplitHostPort(e.addr)
	var held int64
	for _, c := range stalled {
		_, cp, _ := net.SplitHostPort(c.LocalAddr().String())
		g, _ := strconv.Atoi(gwPort)
		p, _ := strconv.Atoi(cp)
		tx, _, err1 := tcpQueue(g, p)
		_, rx, err2 := tcpQueue(p, g)
		if err1 != nil && err2 != nil {
			continue
		}
		held += tx + rx
		info.KernelBytes = &held
	}
	if without.Latency != nil && with.Latency != nil {
		info.P99Without, info.P99With = &without.Latency.P99us, &with.Latency.P99us
		if without.Latency.P99us > 0 {
			info.Ratio = ptr(with.Latency.P99us / without.Latency.P99us)
		}
	}
	e.rep.Upstream.Subscriptions = e.upstreamSubs()
	return e.finishLoss(ctx, f)
}

// churn runs subscribe/unsubscribe cycles and compares the gateway at rest
// before and after.
func (e *env) churn(ctx context.Context) error {
	info := &churnInfo{Cycles: e.cfg.cycles}
	e.rep.Churn = info
	target := func(i int) string {
		if e.cfg.churnVars == "shared" {
			return opsPrefix + "Sub?wg_sse=true"
		}
		return fmt.Sprintf("%sRoom?wg_sse=true&room=c%d", opsPrefix, i)
	}
	if w := max(e.cfg.warmupCycles, 0); w > 0 {
		e.logf("%d warm-up cycles", w)
		errs, _ := e.cycles(ctx, w, func(i int) string { return target(-1 - i) }, nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errs > 0 {
			e.rep.note("%d of the %d warm-up cycles failed", errs, w)
		}
	}
	e.logf("waiting for the gateway to settle (baseline)")
	if _, err := e.settled(ctx, &info.Baseline, nil); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	e.logf("%d cycles, %d at a time", e.cfg.cycles, e.cfg.concurrency)
	hs := newHistSet()
	subsBefore, completesBefore, _ := e.upstreamReceived()
	a := e.snap(nil)
	errs, kinds := e.cycles(ctx, e.cfg.cycles, target, hs)
	b := e.snap(nil)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	info.Errors, info.ErrorKinds = errs, kinds
	info.Seconds = b.at.Sub(a.at).Seconds()
	info.CyclesPerSec = float64(e.cfg.cycles) / info.Seconds
	info.Open = hs.summary()
	if a.gwCPU != nil && b.gwCPU != nil {
		cpu := (*b.gwCPU - *a.gwCPU).Seconds()
		info.GatewayCPU = &cpu
		info.CPUPerCycle = ptr(cpu * 1e6 / float64(e.cfg.cycles))
	}
	e.logf("%d cycles in %.1fs, %d errors; waiting for the gateway to settle", e.cfg.cycles, info.Seconds, errs)
	t0 := time.Now()
	_, err := e.settled(ctx, &info.Final, &info.Baseline)
	info.Settle = time.Since(t0).Seconds()
	e.rep.Upstream.Subscriptions = info.Final.Subscriptions
	if subs, completes, ok := e.upstreamReceived(); ok {
		info.UpstreamSubscribes, info.UpstreamCompletes = ptr(subs-subsBefore), ptr(completes-completesBefore)
	}
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		e.rep.note("the gateway did not settle within -settle %v: %v", e.cfg.settle, err)
	}
	return nil
}

// upstreamReceived counts the subscribe and complete messages the
// in-process GraphQL upstream has received; ok is false without one.
func (e *env) upstreamReceived() (subscribes, completes int, ok bool) {
	up, ok := e.up.(*inProcessUpstream)
	if !ok {
		return 0, 0, false
	}
	for _, m := range up.srv.Received() {
		switch m.Type {
		case "subscribe":
			subscribes++
		case "complete":
			completes++
		}
	}
	return subscribes, completes, true
}

// settled waits until the gateway is at rest — no stream, no upstream
// connection (its idle timeout passed), no upstream subscription, and its
// goroutines down to the baseline's (when one is given) or steady — then
// fills s. Every wait is bounded by -settle.
func (e *env) settled(ctx context.Context, s *settled, baseline *settled) (bool, error) {
	var last *debugInfo
	_, dbgErr := e.dbg.info(ctx)
	prevG := -1
	cond := func() bool {
		if e.up != nil && e.up.subscriptions() != 0 {
			return false
		}
		if dbgErr != nil {
			return true
		}
		di, err := e.dbg.info(ctx)
		if err != nil {
			return false
		}
		last = di
		if di.Streams != 0 || di.UpstreamConns != 0 {
			return false
		}
		if baseline != nil && baseline.Goroutines != nil {
			return di.Goroutines <= *baseline.Goroutines
		}
		steady := di.Goroutines == prevG
		prevG = di.Goroutines
		return steady
	}
	err := waitUntil(ctx, e.cfg.settle, 500*time.Millisecond, cond)
	if last != nil {
		s.Goroutines, s.Streams, s.UpstreamConns = &last.Goroutines, &last.Streams, &last.UpstreamConns
	}
	s.Subscriptions = e.upstreamSubs()
	if e.pid != 0 {
		if v, err := procRSS(e.pid); err == nil {
			s.RSS = &v
		}
		if dbgErr == nil && e.dbg.freeOSMemory(ctx) == nil {
			if v, err := procRSS(e.pid); err == nil {
				s.RSSAfterGC = &v
			}
		}
	}
	return err == nil, err
}

// cycles runs n connect → first frame → disconnect cycles, concurrency at
// once, and returns how many failed and why. hs, when not nil, gets the time
// from dial to the first frame.
func (e *env) cycles(ctx context.Context, n int, target func(int) string, hs *histSet) (int64, map[string]int) {
	var (
		next   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		kinds  = map[string]int{}
		wg     sync.WaitGroup
	)
	d := &net.Dialer{Timeout: 10 * time.Second}
	worker := func(w int) {
		defer wg.Done()
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			took, err := cycleOnce(ctx, d, e.addr, target(i))
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				failed.Add(1)
				mu.Lock()
				kinds[shortErr(err)]++
				mu.Unlock()
				continue
			}
			if hs != nil {
				hs.record(w, took.Nanoseconds())
			}
		}
	}
	for w := range e.cfg.concurrency {
		wg.Add(1)
		go worker(w)
	}
	wg.Wait()
	return failed.Load(), kinds
}

// cycleOnce opens a stream, reads its first frame and disconnects.
func cycleOnce(ctx context.Context, d *net.Dialer, addr, target string) (time.Duration, error) {
	start := time.Now()
	sc, err := dialSSE(ctx, d, addr, target, headTimeout)
	if err != nil {
		return 0, err
	}
	defer sc.close()
	stop := context.AfterFunc(ctx, sc.close)
	defer stop()
	sc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	got := false
	for !got {
		err := sc.read(func([]byte, int64) bool {
			got = true
			return false
		})
		if got {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
