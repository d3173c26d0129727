package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// A report is what a run found. Figures that could not be measured are nil
// (null in JSON) rather than zero.
//
// The cluster scenario runs two phases, fanout on one gateway and then the
// cluster: each has its window, and Cluster has each one's clients, losses
// and upstream subscriptions. Gateway is the fanout phase's; Clients, Lost,
// OOO and Upstream.Subscriptions are the cluster phase's.
type report struct {
	Scenario string        `json:"scenario"`
	Command  string        `json:"command"`
	Started  time.Time     `json:"started"`
	Machine  machine       `json:"machine"`
	Params   params        `json:"params"`
	Protocol protocolInfo  `json:"protocol"`
	Gateway  gatewayInfo   `json:"gateway"`
	Upstream upstreamInfo  `json:"upstream"`
	Clients  *clientsInfo  `json:"clients,omitempty"`
	Windows  []*window     `json:"windows,omitempty"`
	Lost     *int64        `json:"lost"`         // results never delivered to a client that was subscribed
	OOO      *int64        `json:"out_of_order"` // results that came after a later one
	Saturate *saturateInfo `json:"saturate,omitempty"`
	Idle     *idleInfo     `json:"idle,omitempty"`
	Stall    *stallInfo    `json:"stall,omitempty"`
	Churn    *churnInfo    `json:"churn,omitempty"`
	Cluster  *clusterInfo  `json:"cluster,omitempty"`
	Live     *liveInfo     `json:"live,omitempty"`
	Floor    *floorInfo    `json:"floor,omitempty"` // the floor scenario's, or -floor's
	Scale    *scaleInfo    `json:"scale,omitempty"` // idle-max, idle-100k, fanout-100k
	Checks   []check       `json:"checks,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	Error    string        `json:"error,omitempty"`
}

type params struct {
	Clients      int     `json:"clients,omitempty"`
	Rate         float64 `json:"rate_per_s,omitempty"` // upstream events per second, per operation or room
	Warmup       string  `json:"warmup,omitempty"`
	Duration     string  `json:"duration,omitempty"`
	Ramp         string  `json:"ramp,omitempty"`
	Heartbeat    string  `json:"heartbeat,omitempty"`
	Operation    string  `json:"operation,omitempty"`
	Factor       float64 `json:"factor,omitempty"`
	MaxRate      float64 `json:"max_rate_per_s,omitempty"`
	Stalled      int     `json:"stalled,omitempty"`
	RcvBuf       int     `json:"rcvbuf,omitempty"`
	Cycles       int     `json:"cycles,omitempty"`
	WarmupCycles int     `json:"warmup_cycles,omitempty"`
	Concurrency  int     `json:"concurrency,omitempty"`
	ClusterSize  int     `json:"cluster_size,omitempty"`
	LiveInterval string  `json:"live_interval,omitempty"`
	Proto        string  `json:"proto"`
	H2Streams    int     `json:"h2_streams,omitempty"`
	Floor        bool    `json:"floor,omitempty"` // -floor
	// At scale: gateway processes, clients processes (0: as few as
	// ClientsPerProc allows), opens in flight per clients process, rooms,
	// the steps on the way up, and idle-max's probe.
	Gateways       int    `json:"gateways,omitempty"`
	ClientProcs    int    `json:"client_procs,omitempty"`
	ClientsPerProc int    `json:"clients_per_proc,omitempty"`
	Inflight       int    `json:"ramp_inflight,omitempty"`
	Rooms          int    `json:"rooms,omitempty"`
	Steps          []int  `json:"steps,omitempty"`
	Probe          int    `json:"probe,omitempty"`
	Timeout        string `json:"timeout"`
}

// protocolInfo is how the clients reached the gateway (-proto).
type protocolInfo struct {
	Name string `json:"name"` // HTTP/1.1, HTTP/2 over TLS (h2), HTTP/2 cleartext (h2c)
	// Over HTTP/2: the streams each client connection carries
	// (-h2-streams), and how many streams the gateway lets one connection
	// carry at once, as its SETTINGS told the client
	// (SETTINGS_MAX_CONCURRENT_STREAMS).
	StreamsPerConn   int  `json:"streams_per_conn,omitempty"`
	ServerMaxStreams *int `json:"server_max_streams,omitempty"`
}

type gatewayInfo struct {
	Instance  string `json:"instance,omitempty"` // its name in the cluster
	URL       string `json:"url"`
	PID       int    `json:"pid,omitempty"`
	Child     bool   `json:"child"`      // started by loadgen
	FileLimit *int64 `json:"file_limit"` // its soft RLIMIT_NOFILE
	Exit      string `json:"exit,omitempty"`
}

type upstreamInfo struct {
	URL        string `json:"url"`
	InProcess  bool   `json:"in_process"`
	Publishing bool   `json:"publishing"`
	// Subscriptions running on the upstream at the end of the
	// measurement (in-process upstream only; on the NATS server, those
	// made since it started).
	Subscriptions *int `json:"subscriptions"`
}

type clientsInfo struct {
	Started int            `json:"started"`
	Opened  int64          `json:"opened"`
	Failed  int64          `json:"failed"`
	Ended   int64          `json:"ended_early"` // streams that ended while loadgen still read them
	Reasons map[string]int `json:"reasons,omitempty"`
	Ramp    float64        `json:"ramp_s"` // from the first dial to the last client open
	// Connections dialed over HTTP/2; over HTTP/1.1, each client is one.
	Connections *int `json:"connections,omitempty"`
}

// A window is one measurement interval.
type window struct {
	Name            string   `json:"name"`
	Seconds         float64  `json:"seconds"`
	Clients         int      `json:"clients"`
	Offered         float64  `json:"offered_per_s,omitempty"` // clients × rate: what full delivery is
	Posted          *float64 `json:"posted_per_s"`            // upstream events posted per second
	Delivered       int64    `json:"delivered"`
	DeliveredPerSec float64  `json:"delivered_per_s"`
	Heartbeats      int64    `json:"heartbeats"`
	Latency         *latency `json:"latency"`                   // receive time − sentAt
	GatewayLatency  *latency `json:"gateway_latency,omitempty"` // -gateway-latency: upstream message to written
	// With several gateways (cluster), the gateway figures are their sums,
	// and Gateways has each one's.
	GatewayCPU      *float64        `json:"gateway_cpu_s"`
	CPUPerEvent     *float64        `json:"gateway_cpu_per_event_us"`
	GatewayRSSStart *int64          `json:"gateway_rss_start"`
	GatewayRSSEnd   *int64          `json:"gateway_rss_end"`
	Gateways        []*gatewayShare `json:"gateways,omitempty"`
	LoadgenCPU      *float64        `json:"loadgen_cpu_s"`
	ClientProcsCPU  *float64        `json:"client_procs_cpu_s,omitempty"` // at scale: the clients processes', summed
	GC              *gcWindow       `json:"gateway_gc,omitempty"`         // at scale: the gateways' garbage collection, summed
	MachineBusy     *float64        `json:"machine_busy_cores"`           // every process, from /proc/stat
	OtherBusy       *float64        `json:"other_busy_cores"`             // machine − gateway − loadgen: noise
	Gaps            int64           `json:"gaps"`                         // results skipped, seen in the window
	OOO             int64           `json:"out_of_order"`
	Ended           int64           `json:"ended"` // streams that ended in the window

	// The live scenario's: the query requests the in-process upstream
	// was posted in the window, and per second.
	UpstreamQueries *int     `json:"upstream_queries,omitempty"`
	QueriesPerSec   *float64 `json:"upstream_queries_per_s,omitempty"`
}

// A gatewayShare is one gateway's part of a window over several: its CPU
// per event is per event its own clients received.
type gatewayShare struct {
	Instance    string   `json:"instance"`
	PID         int      `json:"pid"`
	Owner       bool     `json:"owner"` // it held the key's lease at the end of the window
	Clients     int      `json:"clients"`
	Delivered   int64    `json:"delivered"`
	CPU         *float64 `json:"cpu_s"`
	CPUPerEvent *float64 `json:"cpu_per_event_us"`
	RSSStart    *int64   `json:"rss_start"`
	RSSEnd      *int64   `json:"rss_end"`
}

// clusterInfo is the cluster scenario's: the cluster, and its two phases.
type clusterInfo struct {
	NATS     string        `json:"nats"` // the in-process NATS server, with JetStream
	Name     string        `json:"name"` // the cluster's, its stream's and its bucket's
	Gateways []gatewayInfo `json:"gateways"`
	// At the end of the cluster's window: the instance holding the key's
	// lease, and the consumers of the stream (a reader per gateway).
	Owner     string     `json:"owner"`
	Consumers *int       `json:"stream_consumers"`
	Fanout    *phaseInfo `json:"fanout"`
	Cluster   *phaseInfo `json:"cluster"`
	// The cluster's gateway CPU per delivered event, summed over its
	// gateways, over fanout's single gateway's.
	CPURatio *float64 `json:"cpu_per_event_ratio"`
}

// phaseInfo is one phase of the cluster scenario.
type phaseInfo struct {
	Window   string       `json:"window"` // its window's name
	Gateways int          `json:"gateways"`
	Clients  *clientsInfo `json:"clients"`
	Lost     *int64       `json:"lost"`
	OOO      *int64       `json:"out_of_order"`
	// Subscriptions running on the upstream at the end of the window, and
	// the subscribe messages it received during the phase.
	Subscriptions *int `json:"upstream_subscriptions"`
	Subscribes    *int `json:"upstream_subscribes"`
}

// liveInfo is the live scenario's: one live query, polled by the gateway.
type liveInfo struct {
	Interval string `json:"poll_interval"` // -live-interval
	// What one poller asking every Interval makes: the window's
	// upstream_queries_per_s should be this, whatever the clients.
	ExpectedQueriesPerSec float64 `json:"expected_queries_per_s"`
	// Keys the gateway held at the end of the window (its debug
	// endpoint): a key has one poller.
	Pollers *int `json:"pollers"`
	// Results each client received per second in the window: at most one
	// per poll, and one per post.
	ResultsPerClient float64 `json:"results_per_client_per_s"`
}

type saturateInfo struct {
	KeptUp      *window `json:"kept_up"` // the last step that kept up
	FellBehind  string  `json:"fell_behind,omitempty"`
	StepSeconds float64 `json:"step_s"`
}

type idleInfo struct {
	RSSBefore        *int64   `json:"rss_before"`
	RSSConnected     *int64   `json:"rss_connected"`
	RSSEnd           *int64   `json:"rss_end"`
	PerClientKiB     *float64 `json:"rss_per_client_kib"` // (max(connected, end) − before) / clients
	GoroutinesBefore *int     `json:"goroutines_before"`
	GoroutinesAfter  *int     `json:"goroutines_connected"`
	// What one client adds, from the gateway's runtime/metrics (needs its
	// debug endpoint): live heap, goroutine stacks, and the heap goal,
	// which with GOGC=100 is about twice the live heap: the GC's headroom
	// is part of the RSS.
	HeapLivePerClientKiB *float64 `json:"heap_live_per_client_kib"`
	StacksPerClientKiB   *float64 `json:"stacks_per_client_kib"`
	HeapGoalPerClientKiB *float64 `json:"heap_goal_per_client_kib"`
	// Each client gets a heartbeat every -heartbeat after it opened: in
	// the hold, between floor and ceil of hold/heartbeat each.
	HeartbeatsMin int `json:"heartbeats_expected_min"`
	HeartbeatsMax int `json:"heartbeats_expected_max"`
}

type stallInfo struct {
	P99Without   *float64 `json:"p99_without_us"`
	P99With      *float64 `json:"p99_with_us"`
	Ratio        *float64 `json:"ratio"`
	Dropped      *bool    `json:"stalled_dropped"`
	DropReason   string   `json:"stalled_drop_reason,omitempty"`
	DroppedAfter *float64 `json:"stalled_dropped_after_s"` // polled every 250 ms
	// KernelBytes is what the kernel held for the stalled clients at the
	// end: the gateway's send queues plus their receive queues. A stalled
	// client is dropped only once this is full and a write then times out.
	KernelBytes *int64 `json:"stalled_kernel_bytes"`
}

type churnInfo struct {
	Cycles       int            `json:"cycles"`
	Errors       int64          `json:"errors"`
	ErrorKinds   map[string]int `json:"error_kinds,omitempty"`
	Seconds      float64        `json:"seconds"`
	CyclesPerSec float64        `json:"cycles_per_s"`
	Open         *latency       `json:"open_latency"` // dial to the first frame
	// What the upstream received during the cycles (in-process upstream).
	UpstreamSubscribes *int     `json:"upstream_subscribes"`
	UpstreamCompletes  *int     `json:"upstream_completes"`
	GatewayCPU         *float64 `json:"gateway_cpu_s"`
	CPUPerCycle        *float64 `json:"gateway_cpu_per_cycle_us"`
	Baseline           settled  `json:"baseline"`
	Final              settled  `json:"final"`
	Settle             float64  `json:"settle_s"` // how long the final figures took to settle
}

// settled is the gateway at rest.
type settled struct {
	Goroutines    *int   `json:"goroutines"`
	RSS           *int64 `json:"rss"`
	RSSAfterGC    *int64 `json:"rss_after_free_os_memory"`
	Streams       *int   `json:"streams"`
	UpstreamConns *int   `json:"upstream_conns"`
	Subscriptions *int   `json:"upstream_subscriptions"` // on the upstream itself
}

type check struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Value  string `json:"value"`
	Pass   bool   `json:"pass"`
}

func (r *report) passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return true
}

func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText writes the report for a person.
func (r *report) writeText(w io.Writer, withChecks bool) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("loadgen %s — %s", r.Scenario, r.Started.Format(time.RFC3339))
	p("  command:  %s", r.Command)
	m := r.Machine
	p("  machine:  %s, %d cores (GOMAXPROCS %d), %s, kernel %s, loadavg %s, %d ticks/s",
		m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.Kernel, m.LoadAvg, m.ClockTicks)
	p("  params:   %s", r.paramText())
	p("  protocol: %s", r.protocolText())
	if r.Scenario == "floor" {
		if r.Floor != nil {
			p("")
			r.writeFloor(w, r.Floor)
		}
		r.writeEnd(w, withChecks)
		return
	}
	gw := "external"
	if r.Gateway.Child {
		gw = "child process"
	}
	if r.Cluster != nil {
		gw += " (the fanout phase's)"
	}
	if r.Scale == nil {
		p("  gateway:  %s %s, pid %s, open files limit %s", gw, r.Gateway.URL, intText(r.Gateway.PID), ptrText(r.Gateway.FileLimit, "%d"))
	} else {
		p("  gateways: %d child processes, independent instances (below)", len(r.Scale.Gateways))
	}
	up := "external (loadgen does not publish)"
	switch {
	case r.Upstream.InProcess && strings.HasPrefix(r.Upstream.URL, "nats://"):
		up = "in-process nats-server"
	case r.Upstream.InProcess:
		up = "in-process gqlpushtest"
	}
	p("  upstream: %s %s", up, r.Upstream.URL)
	if c := r.Clients; c != nil {
		p("  clients:  %d started, %d opened, %d failed, %d ended early, ramp %.1fs%s",
			c.Started, c.Opened, c.Failed, c.Ended, c.Ramp, reasonsText(c.Reasons))
	}
	if r.Floor != nil {
		p("")
		r.writeFloor(w, r.Floor)
	}
	if r.Scale != nil {
		p("")
		r.writeScale(w, r.Scale)
	}
	for _, wd := range r.Windows {
		p("")
		r.writeWindow(w, wd)
	}
	if r.Floor != nil && r.Floor.Against != "" {
		p("")
		r.writeRatios(w, r.Floor)
	}
	if s := r.Saturate; s != nil {
		p("")
		if s.KeptUp != nil {
			p("  kept up to:  %.0f delivered/s (%s)", s.KeptUp.DeliveredPerSec, s.KeptUp.Name)
		} else {
			p("  kept up to:  no step kept up")
		}
		if s.FellBehind != "" {
			p("  fell behind: %s", s.FellBehind)
		}
	}
	if i := r.Idle; i != nil {
		p("")
		p("  RSS before clients:     %s", bytesText(i.RSSBefore))
		p("  RSS all connected:      %s", bytesText(i.RSSConnected))
		p("  RSS end of hold:        %s", bytesText(i.RSSEnd))
		p("  RSS per client:         %s KiB", ptrText(i.PerClientKiB, "%.2f"))
		p("  per client, from runtime/metrics: heap live %s KiB, stacks %s KiB, heap goal %s KiB",
			ptrText(i.HeapLivePerClientKiB, "%.2f"), ptrText(i.StacksPerClientKiB, "%.2f"), ptrText(i.HeapGoalPerClientKiB, "%.2f"))
		p("  goroutines before/after: %s / %s", ptrText(i.GoroutinesBefore, "%d"), ptrText(i.GoroutinesAfter, "%d"))
		p("  heartbeats expected:    %d to %d", i.HeartbeatsMin, i.HeartbeatsMax)
	}
	if s := r.Stall; s != nil {
		p("")
		p("  normal clients' p99 without the stalled client: %s µs", ptrText(s.P99Without, "%.0f"))
		p("  normal clients' p99 with the stalled client:    %s µs (ratio %s)", ptrText(s.P99With, "%.0f"), ptrText(s.Ratio, "%.3f"))
		p("  stalled client dropped: %s %s after %s s; kernel buffers held %s KiB for it at the end",
			ptrText(s.Dropped, "%v"), s.DropReason, ptrText(s.DroppedAfter, "%.2f"), ptrText(kib(s.KernelBytes), "%.0f"))
	}
	if c := r.Churn; c != nil {
		p("")
		p("  cycles:      %d in %.1fs (%.0f/s), %d errors%s", c.Cycles, c.Seconds, c.CyclesPerSec, c.Errors, reasonsText(c.ErrorKinds))
		if c.Open != nil {
			p("  open (dial → first frame): p50 %.0f µs, p99 %.0f µs, max %.0f µs", c.Open.P50us, c.Open.P99us, c.Open.MaxUs)
		}
		p("  gateway CPU: %s s, %s µs per cycle", ptrText(c.GatewayCPU, "%.2f"), ptrText(c.CPUPerCycle, "%.1f"))
		p("  upstream received %s subscribe and %s complete messages during the cycles",
			ptrText(c.UpstreamSubscribes, "%d"), ptrText(c.UpstreamCompletes, "%d"))
		p("  %-24s %12s %12s", "", "baseline", "final")
		row := func(name string, a, b string) { p("  %-24s %12s %12s", name, a, b) }
		row("goroutines", ptrText(c.Baseline.Goroutines, "%d"), ptrText(c.Final.Goroutines, "%d"))
		row("RSS", bytesText(c.Baseline.RSS), bytesText(c.Final.RSS))
		row("RSS after FreeOSMemory", bytesText(c.Baseline.RSSAfterGC), bytesText(c.Final.RSSAfterGC))
		row("streams", ptrText(c.Baseline.Streams, "%d"), ptrText(c.Final.Streams, "%d"))
		row("upstream connections", ptrText(c.Baseline.UpstreamConns, "%d"), ptrText(c.Final.UpstreamConns, "%d"))
		row("upstream subscriptions", ptrText(c.Baseline.Subscriptions, "%d"), ptrText(c.Final.Subscriptions, "%d"))
		p("  settled in:  %.1fs", c.Settle)
	}
	if c := r.Cluster; c != nil {
		p("")
		r.writeCluster(w, c)
	}
	if l := r.Live; l != nil {
		p("")
		p("  live query: polled every %s, one poller asks %.2f times/s; the gateway held %s key(s) (a poller each)",
			l.Interval, l.ExpectedQueriesPerSec, ptrText(l.Pollers, "%d"))
		p("  results:    %.2f per client per second; latency is from a post to the read of the first result that counts it,", l.ResultsPerClient)
		p("              the wait for the next poll included")
	}
	if r.Lost != nil || r.OOO != nil {
		p("")
		p("  lost: %s, out of order: %s", ptrText(r.Lost, "%d"), ptrText(r.OOO, "%d"))
	}
	if r.Upstream.Subscriptions != nil {
		p("  upstream subscriptions: %d", *r.Upstream.Subscriptions)
	}
	if r.Gateway.Exit != "" {
		p("  gateway exit: %s", r.Gateway.Exit)
	}
	r.writeEnd(w, withChecks)
}

// writeEnd writes the notes, the error and the checks.
func (r *report) writeEnd(w io.Writer, withChecks bool) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	for _, n := range r.Notes {
		p("  note: %s", n)
	}
	if r.Error != "" {
		p("  ERROR: %s", r.Error)
	}
	if withChecks {
		p("")
		for _, c := range r.Checks {
			v := "PASS"
			if !c.Pass {
				v = "FAIL"
			}
			p("  %s  %-40s %-14s got %s", v, c.Name, c.Target, c.Value)
		}
	}
}

func (r *report) writeWindow(w io.Writer, wd *window) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	p("[%s] %.2fs, %d clients", wd.Name, wd.Seconds, wd.Clients)
	if wd.Offered > 0 {
		p("  offered:    %.0f events/s (clients × rate); upstream posted %s", wd.Offered, ptrText(wd.Posted, "%.1f/s"))
	}
	if wd.QueriesPerSec != nil {
		p("  upstream:   %d query requests (%.2f/s); posted %s", *wd.UpstreamQueries, *wd.QueriesPerSec, ptrText(wd.Posted, "%.1f/s"))
	}
	p("  delivered:  %d (%.0f/s), heartbeats %d, gaps %d, out of order %d, streams ended %d",
		wd.Delivered, wd.DeliveredPerSec, wd.Heartbeats, wd.Gaps, wd.OOO, wd.Ended)
	if l := wd.Latency; l != nil {
		p("  latency:    p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d samples)", l.P50us, l.P99us, l.MaxUs, l.Samples)
	} else {
		p("  latency:    no samples")
	}
	if l := wd.GatewayLatency; l != nil {
		p("  in gateway: p50 %.0f µs, p99 %.0f µs, max %.0f µs (%d writes; upstream message → written to the client)", l.P50us, l.P99us, l.MaxUs, l.Samples)
	}
	if len(wd.Gateways) == 0 {
		p("  gateway:    CPU %s s, %s µs per delivered event, RSS %s → %s",
			ptrText(wd.GatewayCPU, "%.2f"), ptrText(wd.CPUPerEvent, "%.2f"), bytesText(wd.GatewayRSSStart), bytesText(wd.GatewayRSSEnd))
	} else {
		p("  gateways:   CPU %s s, %s µs per delivered event, RSS %s → %s (summed over %d)",
			ptrText(wd.GatewayCPU, "%.2f"), ptrText(wd.CPUPerEvent, "%.2f"), bytesText(wd.GatewayRSSStart), bytesText(wd.GatewayRSSEnd), len(wd.Gateways))
		for _, g := range wd.Gateways {
			owner := ""
			if g.Owner {
				owner = ", owner"
			}
			p("    %-8s  pid %d%s: %d clients, %d delivered, CPU %s s, %s µs per event, RSS %s → %s",
				g.Instance, g.PID, owner, g.Clients, g.Delivered, ptrText(g.CPU, "%.2f"), ptrText(g.CPUPerEvent, "%.2f"),
				bytesText(g.RSSStart), bytesText(g.RSSEnd))
		}
	}
	if g := wd.GC; g != nil {
		p("  gateways' GC: %d cycles, %.2f s CPU, %d pauses: p50 ≤ %s µs, p99 ≤ %s µs, max ≤ %s µs; stopping the world p99 ≤ %s µs, max ≤ %s µs",
			g.Cycles, g.CPU, g.Pauses, ptrText(g.P50us, "%.0f"), ptrText(g.P99us, "%.0f"), ptrText(g.MaxUs, "%.0f"),
			ptrText(g.StopP99us, "%.0f"), ptrText(g.StopMaxUs, "%.0f"))
	}
	if wd.ClientProcsCPU != nil {
		p("  machine:    %s cores busy (loadgen %s s CPU, its clients processes %.2f s, other processes %s cores)",
			ptrText(wd.MachineBusy, "%.2f"), ptrText(wd.LoadgenCPU, "%.2f"), *wd.ClientProcsCPU, ptrText(wd.OtherBusy, "%.2f"))
		return
	}
	p("  machine:    %s cores busy (loadgen %s s CPU, other processes %s cores)",
		ptrText(wd.MachineBusy, "%.2f"), ptrText(wd.LoadgenCPU, "%.2f"), ptrText(wd.OtherBusy, "%.2f"))
}

// writeScale writes a scenario at scale's processes, steps and limit.
func (r *report) writeScale(w io.Writer, s *scaleInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	l := s.Limits
	p("limits: open files %d (hard, inherited), ephemeral ports %d-%d, somaxconn %d, tcp_max_syn_backlog %d",
		l.FilesHard, l.PortLow, l.PortHigh, l.Somaxconn, l.SynBacklog)
	for _, g := range s.Gateways {
		p("  gateway %-4s %s, pid %s, open files limit %s, exit %s", g.Instance, g.URL, intText(g.PID), ptrText(g.FileLimit, "%d"), cmp.Or(g.Exit, "n/a"))
	}
	for i, c := range s.ClientProcs {
		p("  clients%-3d %d clients (%d…%d) from %s, pid %d, open files limit %s, CPU %s s, RSS %s, exit %s",
			i+1, c.Count, c.First, c.First+c.Count-1, c.Source, c.PID, ptrText(c.FileLimit, "%d"), ptrText(c.CPU, "%.2f"), bytesText(c.RSS), cmp.Or(c.Exit, "n/a"))
	}
	if b := s.Before; b != nil {
		p("gateways at rest: RSS %s, goroutines %d, heap live %.1f MiB, stacks %.1f MiB, open files %s",
			bytesText(b.RSS), b.Goroutines, float64(b.HeapLive)/(1<<20), float64(b.Stacks)/(1<<20), ptrText(b.OpenFiles, "%d"))
	}
	p("%-9s %9s %12s %10s %10s %10s %10s %11s %11s", "streams", "open (s)", "RSS", "RSS/KiB", "heap/KiB", "stacks/KiB", "goal/KiB", "goroutines", "open files")
	for _, st := range s.Steps {
		p("%-9d %9.1f %12s %10s %10s %10s %10s %11d %11s", st.Streams, st.OpenSeconds, bytesText(st.RSS),
			ptrText(st.RSSPerStreamKiB, "%.2f"), ptrText(st.HeapLivePerStreamKiB, "%.2f"), ptrText(st.StacksPerStreamKiB, "%.2f"),
			ptrText(st.HeapGoalPerStreamKiB, "%.2f"), st.Goroutines, ptrText(st.OpenFiles, "%d"))
	}
	p("connect: %s s for the last step, %s streams/s", ptrText(s.ConnectSeconds, "%.1f"), ptrText(s.ConnectPerSec, "%.0f"))
	if pr := s.Probe; pr != nil {
		p("probe: %d clients past the maximum: %d opened, %d failed%s", pr.Tried, pr.Opened, pr.Failed, reasonsText(pr.Reasons))
	}
	if s.LimitHit != "" {
		p("limit hit: %s", s.LimitHit)
	}
	if s.Drained != nil {
		p("every open client got its room's last result: %v", *s.Drained)
	}
}

// writeCluster writes the cluster scenario's two phases side by side.
func (r *report) writeCluster(w io.Writer, c *clusterInfo) {
	p := func(format string, args ...any) { fmt.Fprintf(w, "  "+format+"\n", args...) }
	p("cluster %q of %d gateways on %s (JetStream), key owned by %s, %s stream consumers",
		c.Name, len(c.Gateways), c.NATS, cmp.Or(c.Owner, "n/a"), ptrText(c.Consumers, "%d"))
	for _, g := range c.Gateways {
		p("  %-8s  %s, pid %s, open files limit %s, exit %s", g.Instance, g.URL, intText(g.PID), ptrText(g.FileLimit, "%d"), cmp.Or(g.Exit, "n/a"))
	}
	win := func(ph *phaseInfo) *window {
		if ph == nil {
			return nil
		}
		for _, wd := range r.Windows {
			if wd.Name == ph.Window {
				return wd
			}
		}
		return nil
	}
	phases := []*phaseInfo{c.Fanout, c.Cluster}
	row := func(name string, f func(*phaseInfo, *window) string) {
		cells := make([]any, 0, 3)
		cells = append(cells, name)
		for _, ph := range phases {
			v := "n/a"
			if ph != nil {
				v = f(ph, win(ph))
			}
			cells = append(cells, v)
		}
		p("%-36s %16s %16s", cells...)
	}
	row("", func(ph *phaseInfo, _ *window) string {
		if ph == c.Fanout {
			return "fanout"
		}
		return "cluster"
	})
	row("gateways", func(ph *phaseInfo, _ *window) string { return fmt.Sprint(ph.Gateways) })
	row("gateway CPU per delivered event", func(_ *phaseInfo, wd *window) string {
		if wd == nil {
			return "n/a"
		}
		return ptrText(wd.CPUPerEvent, "%.2f µs")
	})
	lat := func(q func(*latency) float64) func(*phaseInfo, *window) string {
		return func(_ *phaseInfo, wd *window) string {
			if wd == nil || wd.Latency == nil {
				return "n/a"
			}
			return fmt.Sprintf("%.0f µs", q(wd.Latency))
		}
	}
	row("latency p50", lat(func(l *latency) float64 { return l.P50us }))
	row("latency p99", lat(func(l *latency) float64 { return l.P99us }))
	row("lost / out of order", func(ph *phaseInfo, _ *window) string {
		return ptrText(ph.Lost, "%d") + " / " + ptrText(ph.OOO, "%d")
	})
	row("upstream subscriptions / subscribes", func(ph *phaseInfo, _ *window) string {
		return ptrText(ph.Subscriptions, "%d") + " / " + ptrText(ph.Subscribes, "%d")
	})
	p("cluster / fanout CPU per event: %s", ptrText(c.CPURatio, "×%.2f"))
}

// protocolText tells the protocol and, over HTTP/2, the streams per
// connection.
func (r *report) protocolText() string {
	pr := r.Protocol
	if pr.StreamsPerConn == 0 {
		return pr.Name + ", a connection per client"
	}
	conns := "n/a"
	if c := r.Clients; c != nil && c.Connections != nil {
		conns = fmt.Sprint(*c.Connections)
	}
	return fmt.Sprintf("%s, %d streams per client connection, %s connections; the gateway allows %s streams per connection",
		pr.Name, pr.StreamsPerConn, conns, ptrText(pr.ServerMaxStreams, "%d"))
}

func (r *report) paramText() string {
	b, _ := json.Marshal(r.Params)
	var m map[string]any
	json.Unmarshal(b, &m)
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func ptrText[T any](v *T, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func intText(v int) string {
	if v == 0 {
		return "n/a"
	}
	return fmt.Sprint(v)
}

func bytesText(v *int64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(*v)/(1<<20))
}

func reasonsText(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func ptr[T any](v T) *T { return &v }

func kib(v *int64) *float64 {
	if v == nil {
		return nil
	}
	return ptr(float64(*v) / 1024)
}
