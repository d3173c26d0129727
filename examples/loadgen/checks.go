package main

import (
	"fmt"
	"math"
	"time"
)

// The targets, compared by -check. They are for a person who runs
// loadgen on a quiet machine: tests never compare them.
const (
	fanoutCPUPerEventUS   = 4.0
	fanoutP50US           = 1000.0
	fanoutP99US           = 4000.0
	distinctCPUPerEventUS = 8.0
	saturateMinPerSec     = 250_000.0
	idleMaxKiBPerClient   = 20.0
	stallMaxP99Ratio      = 1.10
	churnMaxRSSRatio      = 1.10
	// A live query's poller asks once per interval, whatever its
	// clients: the upstream's query requests per second are within this
	// fraction of 1/interval.
	liveQueryTolerance = 0.10
)

// checksFor compares a report with the targets of its scenario. A figure
// that was not measured fails its check.
func checksFor(cfg config, r *report) []check {
	var cs []check
	add := func(name, target string, value *float64, format string, pass func(float64) bool) {
		c := check{Name: name, Target: target, Value: "not measured"}
		if value != nil {
			c.Value = fmt.Sprintf(format, *value)
			c.Pass = pass(*value)
		}
		cs = append(cs, c)
	}
	atMost := func(limit float64) func(float64) bool { return func(v float64) bool { return v <= limit } }
	var w *window
	if len(r.Windows) > 0 {
		w = r.Windows[0]
	}
	cpu := func() *float64 {
		if w == nil {
			return nil
		}
		return w.CPUPerEvent
	}
	lat := func(f func(*latency) float64) *float64 {
		if w == nil || w.Latency == nil {
			return nil
		}
		return ptr(f(w.Latency))
	}
	lostOf := func(prefix string, lost, ooo *int64, c *clientsInfo) {
		var v *float64
		if lost != nil && ooo != nil && c != nil {
			v = ptr(float64(*lost + *ooo + c.Ended + c.Failed))
		}
		add(prefix+"nothing lost (lost + out of order + dropped)", "= 0", v, "%.0f", func(v float64) bool { return v == 0 })
	}
	nothingLost := func() { lostOf("", r.Lost, r.OOO, r.Clients) }
	// A nats- scenario has the targets of the scenario it runs.
	switch cfg.base() {
	case "fanout":
		add("gateway CPU per delivered event", fmt.Sprintf("≤ %g µs", fanoutCPUPerEventUS), cpu(), "%.2f µs", atMost(fanoutCPUPerEventUS))
		add("latency p50", fmt.Sprintf("≤ %g ms", fanoutP50US/1000), lat(func(l *latency) float64 { return l.P50us }), "%.0f µs", atMost(fanoutP50US))
		add("latency p99", fmt.Sprintf("≤ %g ms", fanoutP99US/1000), lat(func(l *latency) float64 { return l.P99us }), "%.0f µs", atMost(fanoutP99US))
		nothingLost()
	case "distinct":
		add("gateway CPU per delivered event", fmt.Sprintf("≤ %g µs", distinctCPUPerEventUS), cpu(), "%.2f µs", atMost(distinctCPUPerEventUS))
		nothingLost()
	case "saturate":
		var v *float64
		if s := r.Saturate; s != nil {
			v = ptr(0.0)
			if s.KeptUp != nil {
				v = &s.KeptUp.DeliveredPerSec
			}
		}
		add("delivered/s before falling behind", fmt.Sprintf("≥ %.0f", saturateMinPerSec), v, "%.0f", func(v float64) bool { return v >= saturateMinPerSec })
	case "idle":
		var v *float64
		if r.Idle != nil {
			v = r.Idle.PerClientKiB
		}
		add("RSS growth per connected client", fmt.Sprintf("≤ %g KiB", idleMaxKiBPerClient), v, "%.2f KiB", atMost(idleMaxKiBPerClient))
	case "stall":
		var v *float64
		if r.Stall != nil {
			v = r.Stall.Ratio
		}
		add("normal p99 with / without the stalled client", fmt.Sprintf("≤ %.2f", stallMaxP99Ratio), v, "%.3f", atMost(stallMaxP99Ratio))
		nothingLost()
	case "churn":
		var g, s, rss *float64
		if c := r.Churn; c != nil {
			b, f := c.Baseline, c.Final
			if b.Goroutines != nil && f.Goroutines != nil {
				g = ptr(float64(*f.Goroutines - *b.Goroutines))
			}
			if b.Subscriptions != nil && f.Subscriptions != nil {
				s = ptr(float64(*f.Subscriptions - *b.Subscriptions))
			}
			// RSS after FreeOSMemory compares live memory; without it,
			// the runtime's lazy return of free pages would count too.
			bv, fv := b.RSSAfterGC, f.RSSAfterGC
			if bv == nil || fv == nil {
				bv, fv = b.RSS, f.RSS
			}
			if bv != nil && fv != nil && *bv > 0 {
				rss = ptr(float64(*fv) / float64(*bv))
			}
		}
		add("goroutines back to baseline (final − baseline)", "≤ 0", g, "%+.0f", atMost(0))
		add("upstream subscriptions back to baseline", "= 0", s, "%+.0f", func(v float64) bool { return v == 0 })
		add("RSS final / baseline", fmt.Sprintf("≤ %.2f", churnMaxRSSRatio), rss, "%.3f", atMost(churnMaxRSSRatio))
	case "cluster":
		// The cluster's point: one upstream subscription for all its
		// gateways, and every result to every client. Its CPU and
		// latency have no target: the report sets them against fanout's.
		var fanout, cl phaseInfo
		if c := r.Cluster; c != nil {
			if c.Fanout != nil {
				fanout = *c.Fanout
			}
			if c.Cluster != nil {
				cl = *c.Cluster
			}
		}
		count := func(v *int) *float64 {
			if v == nil {
				return nil
			}
			return ptr(float64(*v))
		}
		one := func(v float64) bool { return v == 1 }
		add("cluster: upstream subscriptions running", "= 1", count(cl.Subscriptions), "%.0f", one)
		add("cluster: upstream subscribes received", "= 1", count(cl.Subscribes), "%.0f", one)
		lostOf("cluster: ", cl.Lost, cl.OOO, cl.Clients)
		lostOf("fanout: ", fanout.Lost, fanout.OOO, fanout.Clients)
	case "live":
		// The point: one poller for every client, asking at its
		// interval. CPU per delivered result has no target: the report
		// sets it beside fanout's.
		want := float64(time.Second) / float64(cfg.liveInterval)
		var qps, pollers *float64
		if w != nil {
			qps = w.QueriesPerSec
		}
		if l := r.Live; l != nil && l.Pollers != nil {
			pollers = ptr(float64(*l.Pollers))
		}
		add("upstream query requests/s", fmt.Sprintf("%.4g ± %.0f%%", want, liveQueryTolerance*100), qps, "%.2f/s", func(v float64) bool {
			return math.Abs(v-want) <= liveQueryTolerance*want
		})
		add("pollers (keys in the gateway)", "= 1", pollers, "%.0f", func(v float64) bool { return v == 1 })
		nothingLost()
	case "idle-max", "idle-100k", "fanout-100k":
		cs = append(cs, scaleChecks(cfg, r, w)...)
	}
	if r.Error != "" {
		cs = append(cs, check{Name: "the run completed", Target: "no error", Value: r.Error})
	}
	return cs
}

// scaleChecks are the targets of the scenarios at scale: every stream held
// through the window; idle-max's at the open files limit, costing no more
// memory each than at 1,000; fanout-100k's results all delivered.
func scaleChecks(cfg config, r *report, w *window) []check {
	var cs []check
	add := func(name, target, value string, pass bool) {
		cs = append(cs, check{Name: name, Target: target, Value: value, Pass: pass})
	}
	// idle-max's count is known once its gateway runs: the report's.
	n := r.Params.Clients
	held := "not measured"
	heldOK := false
	if c := r.Clients; c != nil && w != nil {
		held = fmt.Sprintf("%d opened, %d failed, %d ended", c.Opened, c.Failed, c.Ended)
		heldOK = n > 0 && c.Opened == int64(n) && c.Failed == 0 && c.Ended == 0 && w.Ended == 0
	}
	add("streams held through the window", fmt.Sprintf("%d", n), held, heldOK)
	s := r.Scale
	switch cfg.scenario {
	case "idle-max":
		limit, limitOK := "not measured", false
		if s != nil && s.Probe != nil {
			limit = fmt.Sprintf("%d of %d more failed; %s of %s descriptors", s.Probe.Failed, s.Probe.Tried, ptrText(s.Probe.OpenFiles, "%d"), ptrText(s.Probe.FileLimit, "%d"))
			limitOK = s.Probe.Failed > 0 && s.Probe.OpenFiles != nil && s.Probe.FileLimit != nil && int64(*s.Probe.OpenFiles) >= *s.Probe.FileLimit-gatewayHeadroom
		}
		add("the gateway at its open files limit", "probe refused", limit, limitOK)
		var at1k, atMax *float64
		if s != nil {
			for _, st := range s.Steps {
				if st.Streams == 1000 {
					at1k = st.RSSPerStreamKiB
				}
			}
			if len(s.Steps) > 0 {
				atMax = s.Steps[len(s.Steps)-1].RSSPerStreamKiB
			}
		}
		v, ok := "not measured", false
		if at1k != nil && atMax != nil {
			v, ok = fmt.Sprintf("%.2f KiB at the maximum, %.2f at 1,000", *atMax, *at1k), *atMax <= *at1k
		}
		add("RSS per stream at the maximum", "≤ at 1,000", v, ok)
	case "fanout-100k":
		v, ok := "not measured", false
		if w != nil && w.Offered > 0 {
			v, ok = fmt.Sprintf("%.0f/s of %.0f/s", w.DeliveredPerSec, w.Offered), w.DeliveredPerSec >= 0.95*w.Offered
		}
		add("delivered/s", "≥ 95% of offered", v, ok)
		lost, lostOK := "not measured", false
		if r.Lost != nil && r.OOO != nil && w != nil {
			lost = fmt.Sprintf("%d lost, %d out of order, %d gaps in the window", *r.Lost, *r.OOO, w.Gaps)
			lostOK = *r.Lost == 0 && *r.OOO == 0 && w.Gaps == 0
		}
		add("nothing lost", "= 0", lost, lostOK)
	}
	return cs
}
