package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// loadgen starts its gateway by running its own executable with the
	// argument "gateway" (and "floor", "clients" for its other child
	// processes); under go test that executable is the test binary.
	if code, ok := childCommand(os.Args, os.Stdin, os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

// TestSteadyEndToEnd runs tiny fanout and distinct scenarios, on either
// upstream: a child gateway, the in-process upstream, five clients. It
// asserts what the report says, never how fast: the machine may be loaded
// and the binary built with -race.
func TestSteadyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes and runs for seconds")
	}
	for _, tc := range []struct {
		name      string // the scenario, and -upstream-protocol if not the default
		operation string
		upstream  string // the report's upstream URL starts so
		subs      int    // upstream subscriptions during the window
	}{
		{"fanout", "Sub", "ws://", 1},
		{"distinct", "Room (a room per client)", "ws://", 5},
		{"nats-fanout", "NatsSub", "nats://", 1},
		{"nats-distinct", "NatsRoom (a subject per client)", "nats://", 5},
		{"fanout graphql-sse", "Sub", "http://", 1},
		{"distinct graphql-sse", "Room (a room per client)", "http://", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario, protocol, _ := strings.Cut(tc.name, " ")
			args := []string{"-scenario", scenario, "-clients", "5", "-rate", "20", "-warmup", "500ms", "-duration", "1s", "-json"}
			if protocol != "" {
				args = append(args, "-upstream-protocol", protocol)
			}
			rep, stderr := runReport(t, args...)
			if rep.Scenario != scenario || rep.Params.Operation != tc.operation {
				t.Errorf("scenario %q on %q, want %q on %q", rep.Scenario, rep.Params.Operation, scenario, tc.operation)
			}
			if !rep.Upstream.InProcess || !rep.Upstream.Publishing || !strings.HasPrefix(rep.Upstream.URL, tc.upstream) {
				t.Errorf("upstream %+v, want an in-process %s… that loadgen publishes into", rep.Upstream, tc.upstream)
			}
			if s := rep.Upstream.Subscriptions; s == nil || *s != tc.subs {
				t.Errorf("upstream subscriptions %s, want %d", ptrText(s, "%d"), tc.subs)
			}
			if len(rep.Windows) != 1 {
				t.Fatalf("%d windows, want 1:\n%+v", len(rep.Windows), rep)
			}
			w := rep.Windows[0]
			if w.Delivered == 0 {
				t.Errorf("nothing delivered in the window:\n%+v", rep)
			}
			if rep.Lost == nil || *rep.Lost != 0 || rep.OOO == nil || *rep.OOO != 0 {
				t.Errorf("lost %s, out of order %s; want 0 and 0", ptrText(rep.Lost, "%d"), ptrText(rep.OOO, "%d"))
			}
			if rep.Clients == nil || rep.Clients.Opened != 5 || rep.Clients.Ended != 0 {
				t.Errorf("clients: %+v, want 5 opened, none ended", rep.Clients)
			}
			if w.GatewayCPU == nil || w.CPUPerEvent == nil {
				t.Errorf("no gateway CPU figure: cpu %v, per event %v", w.GatewayCPU, w.CPUPerEvent)
			}
			if w.Latency == nil || w.Latency.Samples == 0 {
				t.Errorf("no latency samples")
			}
			if len(rep.Notes) > 0 {
				t.Errorf("notes: %q", rep.Notes)
			}
			if rep.Gateway.Exit != "0" {
				t.Errorf("the gateway exited with %q, want 0", rep.Gateway.Exit)
			}
			if !strings.Contains(stderr, "gateway (child, pid") {
				t.Errorf("stderr does not tell of the child gateway:\n%s", stderr)
			}
		})
	}
}

// TestHTTP2EndToEnd runs tiny scenarios over HTTP/2, over TLS with the
// certificate loadgen makes (h2) and in cleartext (h2c): five clients, two
// streams per connection, so three connections. As TestSteadyEndToEnd, it
// asserts what the report says, never how fast.
func TestHTTP2EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes and runs for seconds")
	}
	for _, tc := range []struct {
		scenario, proto, name, scheme string
	}{
		{"fanout", "h2", "HTTP/2 over TLS (h2)", "https://"},
		{"fanout", "h2c", "HTTP/2 cleartext (h2c)", "http://"},
		{"idle", "h2", "HTTP/2 over TLS (h2)", "https://"},
	} {
		t.Run(tc.scenario+"/"+tc.proto, func(t *testing.T) {
			// The certificate goes in a temporary directory, removed at
			// the end.
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			args := []string{"-scenario", tc.scenario, "-proto", tc.proto, "-h2-streams", "2", "-clients", "5", "-warmup", "500ms", "-duration", "1s", "-json"}
			if tc.scenario == "fanout" {
				args = append(args, "-rate", "20")
			}
			rep, stderr := runReport(t, args...)
			if rep.Params.Proto != tc.proto || rep.Params.H2Streams != 2 || rep.Protocol.Name != tc.name || rep.Protocol.StreamsPerConn != 2 {
				t.Errorf("params %+v, protocol %+v; want %s, 2 streams per connection", rep.Params, rep.Protocol, tc.name)
			}
			if m := rep.Protocol.ServerMaxStreams; m == nil || *m != maxH2Streams {
				t.Errorf("the gateway allows %s streams per connection, want net/http's %d", ptrText(m, "%d"), maxH2Streams)
			}
			if !strings.HasPrefix(rep.Gateway.URL, tc.scheme) {
				t.Errorf("gateway at %s, want %s…", rep.Gateway.URL, tc.scheme)
			}
			c := rep.Clients
			if c == nil || c.Opened != 5 || c.Ended != 0 || c.Connections == nil || *c.Connections != 3 {
				t.Fatalf("clients: %+v, want 5 opened on 3 connections, none ended", c)
			}
			if len(rep.Windows) != 1 {
				t.Fatalf("%d windows, want 1:\n%+v", len(rep.Windows), rep)
			}
			w := rep.Windows[0]
			if w.GatewayCPU == nil || w.GatewayRSSEnd == nil {
				t.Errorf("no gateway CPU or RSS figure")
			}
			switch tc.scenario {
			case "fanout":
				if w.Delivered == 0 || w.Latency == nil || w.Latency.Samples == 0 {
					t.Errorf("nothing delivered in the window, or no latency samples:\n%+v", rep)
				}
				if rep.Lost == nil || *rep.Lost != 0 || rep.OOO == nil || *rep.OOO != 0 {
					t.Errorf("lost %s, out of order %s; want 0 and 0", ptrText(rep.Lost, "%d"), ptrText(rep.OOO, "%d"))
				}
			case "idle":
				if i := rep.Idle; i == nil || i.PerClientKiB == nil || i.GoroutinesAfter == nil {
					t.Errorf("idle: %+v, want the figures per client", rep.Idle)
				}
			}
			if len(rep.Notes) > 0 {
				t.Errorf("notes: %q", rep.Notes)
			}
			if rep.Gateway.Exit != "0" {
				t.Errorf("the gateway exited with %q, want 0", rep.Gateway.Exit)
			}
			if !strings.Contains(stderr, "clients over "+tc.name) {
				t.Errorf("stderr does not tell the protocol:\n%s", stderr)
			}
			if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
				t.Errorf("left in the temporary directory: %v %v", left, err)
			}
		})
	}
}

// -proto takes h1, h2 or h2c, for the scenarios whose clients a fleet runs,
// on a gateway loadgen starts.
func TestProtoConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" when the command line is good
	}{
		{"default", []string{"-scenario", "fanout"}, ""},
		{"h2", []string{"-scenario", "idle", "-proto", "h2"}, ""},
		{"h2c", []string{"-scenario", "distinct", "-proto", "h2c", "-h2-streams", "250"}, ""},
		{"unknown", []string{"-scenario", "fanout", "-proto", "h3"}, `-proto must be h1, h2 or h2c, not "h3"`},
		{"stall", []string{"-scenario", "stall", "-proto", "h2"}, "stall runs HTTP/1.1 clients only"},
		{"churn", []string{"-scenario", "churn", "-proto", "h2c"}, "churn runs HTTP/1.1 clients only"},
		{"cluster", []string{"-scenario", "cluster", "-proto", "h2"}, "cluster runs HTTP/1.1 clients only"},
		{"gateway", []string{"-scenario", "fanout", "-proto", "h2", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "no -gateway"},
		{"too many streams", []string{"-scenario", "fanout", "-proto", "h2", "-h2-streams", "251"}, "-h2-streams must be 1 to 250"},
		{"graphql-sse", []string{"-scenario", "distinct", "-upstream-protocol", "graphql-sse"}, ""},
		{"graphql-sse on NATS", []string{"-scenario", "nats-fanout", "-upstream-protocol", "graphql-sse"}, "-upstream-protocol graphql-sse is for the in-process GraphQL upstream"},
		{"unknown upstream protocol", []string{"-scenario", "fanout", "-upstream-protocol", "graphql-ws"}, `-upstream-protocol "graphql-ws": graphql-transport-ws or graphql-sse`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if !ok {
				return
			}
			flags := strings.Join(c.gatewayTLSFlags(&selfSigned{certFile: "c.pem", keyFile: "k.pem"}), " ")
			want := map[string]string{"h1": "", "h2": "-tls-cert c.pem -tls-key k.pem", "h2c": "-h2c"}[c.proto]
			if flags != want {
				t.Errorf("-proto %s: the child gateway's flags %q, want %q", c.proto, flags, want)
			}
		})
	}
}

// A nats- scenario takes the sizes and checks of the scenario it runs on
// NATS, and only fanout and distinct have one.
func TestNATSScenarios(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" when the command line is good
	}{
		{"nats-fanout", []string{"-scenario", "nats-fanout"}, ""},
		{"nats-distinct", []string{"-scenario", "nats-distinct"}, ""},
		{"nats-idle", []string{"-scenario", "nats-idle"}, "nats-fanout or nats-distinct, not \"nats-idle\""},
		{"upstream", []string{"-scenario", "nats-fanout", "-upstream", "ws://127.0.0.1:1/graphql"}, "-upstream is for a GraphQL upstream"},
		{"gateway", []string{"-scenario", "nats-distinct", "-gateway", "http://127.0.0.1:1"}, "nats://ADDRESS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if !ok {
				return
			}
			want, _ := scenarioDefaults(c.base())
			if c.clients != want.clients || c.rate != want.rate || c.warmup != want.warmup || c.duration != want.duration {
				t.Errorf("%s: %d clients, %v/s, warmup %v, duration %v; want %s's", tc.name, c.clients, c.rate, c.warmup, c.duration, c.base())
			}
			got, wantChecks := checksFor(c, &report{}), checksFor(config{scenario: c.base()}, &report{})
			if len(got) != len(wantChecks) {
				t.Fatalf("%d checks, want %s's %d", len(got), c.base(), len(wantChecks))
			}
			for i := range got {
				if got[i].Name != wantChecks[i].Name || got[i].Target != wantChecks[i].Target {
					t.Errorf("check %d: %s %s, want %s %s", i, got[i].Name, got[i].Target, wantChecks[i].Name, wantChecks[i].Target)
				}
			}
		})
	}
}

// TestClusterEndToEnd runs a tiny cluster scenario: fanout on a child
// gateway, then three child gateways in a cluster on an in-process NATS
// JetStream, six clients spread over them. As TestSteadyEndToEnd, it
// asserts what the report says, never how fast.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes and runs for seconds")
	}
	// JetStream's store goes in a temporary directory, removed at the end.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	rep, _ := runReport(t, "-scenario", "cluster", "-clients", "6", "-rate", "20", "-warmup", "500ms", "-duration", "1s", "-check", "-json")
	if rep.Scenario != "cluster" || rep.Params.Operation != "Sub" || rep.Params.ClusterSize != 3 {
		t.Errorf("scenario %q on %q, cluster of %d; want cluster on Sub, of 3", rep.Scenario, rep.Params.Operation, rep.Params.ClusterSize)
	}
	if len(rep.Windows) != 2 || rep.Windows[0].Name != "fanout: 1 gateway" || rep.Windows[1].Name != "cluster: 3 gateways" {
		t.Fatalf("windows, want fanout's then the cluster's:\n%+v", rep)
	}
	for _, w := range rep.Windows {
		if w.Delivered == 0 || w.Latency == nil || w.Latency.Samples == 0 {
			t.Errorf("%s: nothing delivered, or no latency samples", w.Name)
		}
		if w.GatewayCPU == nil || w.CPUPerEvent == nil || w.GatewayRSSEnd == nil {
			t.Errorf("%s: no gateway CPU or RSS figure", w.Name)
		}
	}
	if g := rep.Windows[0].Gateways; g != nil {
		t.Errorf("fanout's window has gateways %+v, want none: it has one", g)
	}
	c := rep.Cluster
	if c == nil {
		t.Fatalf("no cluster in the report:\n%+v", rep)
	}
	cw := rep.Windows[1]
	if len(cw.Gateways) != 3 {
		t.Fatalf("the cluster's window has %d gateways, want 3", len(cw.Gateways))
	}
	var owners, delivered int64
	for i, g := range cw.Gateways {
		if g.Instance != c.Gateways[i].Instance || g.PID != c.Gateways[i].PID || g.PID == 0 {
			t.Errorf("window's gateway %d is %s pid %d, the cluster's %s pid %d", i, g.Instance, g.PID, c.Gateways[i].Instance, c.Gateways[i].PID)
		}
		if g.Clients != 2 || g.Delivered == 0 || g.CPU == nil || g.RSSEnd == nil {
			t.Errorf("gateway %s: %d clients, %d delivered, CPU %s, RSS %s; want 2, some, measured", g.Instance, g.Clients, g.Delivered, ptrText(g.CPU, "%.2f"), bytesText(g.RSSEnd))
		}
		if g.Owner {
			owners++
		}
		delivered += g.Delivered
	}
	if owners != 1 {
		t.Errorf("%d owners among the gateways, want 1 (the bucket says %q)", owners, c.Owner)
	}
	if delivered != cw.Delivered {
		t.Errorf("the gateways' clients got %d, the window says %d", delivered, cw.Delivered)
	}
	if len(c.Gateways) != 3 || !strings.HasPrefix(c.NATS, "nats://") || c.Consumers == nil || *c.Consumers != 3 {
		t.Errorf("cluster %+v: want 3 gateways on nats://, 3 stream consumers", c)
	}
	for _, g := range c.Gateways {
		if g.Exit != "0" || !g.Child {
			t.Errorf("gateway %s: child %v, exit %q; want a child that exited 0", g.Instance, g.Child, g.Exit)
		}
	}
	for _, ph := range []*phaseInfo{c.Fanout, c.Cluster} {
		if ph == nil {
			t.Fatal("a phase is missing")
		}
		if s := ph.Subscriptions; s == nil || *s != 1 {
			t.Errorf("%s: upstream subscriptions %s, want 1", ph.Window, ptrText(s, "%d"))
		}
		if s := ph.Subscribes; s == nil || *s != 1 {
			t.Errorf("%s: upstream subscribes %s, want 1", ph.Window, ptrText(s, "%d"))
		}
		if ph.Lost == nil || *ph.Lost != 0 || ph.OOO == nil || *ph.OOO != 0 {
			t.Errorf("%s: lost %s, out of order %s; want 0 and 0", ph.Window, ptrText(ph.Lost, "%d"), ptrText(ph.OOO, "%d"))
		}
		if ph.Clients == nil || ph.Clients.Opened != 6 || ph.Clients.Ended != 0 {
			t.Errorf("%s: clients %+v, want 6 opened, none ended", ph.Window, ph.Clients)
		}
	}
	if rc, cc := rep.Clients, c.Cluster.Clients; rc == nil || cc == nil || rc.Opened != cc.Opened || rc.Ramp != cc.Ramp {
		t.Errorf("the report's clients %+v are not the cluster's %+v", rep.Clients, c.Cluster.Clients)
	}
	if c.CPURatio == nil {
		t.Error("no CPU ratio of the cluster to fanout")
	}
	names := map[string]bool{}
	for _, ch := range rep.Checks {
		names[ch.Name] = true
	}
	for _, want := range []string{"cluster: upstream subscriptions running", "cluster: upstream subscribes received"} {
		if !names[want] {
			t.Errorf("no check %q in %+v", want, rep.Checks)
		}
	}
	if len(rep.Notes) > 0 {
		t.Errorf("notes: %q", rep.Notes)
	}
	if rep.Gateway.Exit != "0" {
		t.Errorf("the fanout gateway exited with %q, want 0", rep.Gateway.Exit)
	}
	if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
		t.Errorf("left in the temporary directory: %v %v", left, err)
	}
}

// The cluster scenario has fanout's sizes, runs its own gateways, and
// needs a gateway per client at least.
func TestClusterConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" when the command line is good
	}{
		{"defaults", []string{"-scenario", "cluster"}, ""},
		{"one gateway", []string{"-scenario", "cluster", "-cluster-size", "1"}, "-cluster-size must be at least 2"},
		{"too few clients", []string{"-scenario", "cluster", "-clients", "2"}, "-clients at least -cluster-size"},
		{"gateway", []string{"-scenario", "cluster", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "no -gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if !ok {
				return
			}
			want, _ := scenarioDefaults("fanout")
			if c.clients != want.clients || c.rate != want.rate || c.warmup != want.warmup || c.duration != want.duration || c.clusterSize != 3 {
				t.Errorf("%d clients, %v/s, warmup %v, duration %v, %d gateways; want fanout's, and 3", c.clients, c.rate, c.warmup, c.duration, c.clusterSize)
			}
			if !c.publishes() || paramsOf(c).Rate != c.rate {
				t.Error("the cluster scenario does not publish at its rate")
			}
		})
	}
	var stderr bytes.Buffer
	if !strings.Contains(usageHead, "\n  cluster ") {
		t.Errorf("the usage does not list cluster:\n%s", usageHead)
	}
	if _, err := parseConfig([]string{"-scenario", "nope"}, &stderr); err == nil || !strings.Contains(err.Error(), "cluster") {
		t.Errorf("the scenario names in %v do not list cluster", err)
	}
}

// TestLiveEndToEnd runs a tiny live scenario: a child gateway polling the
// live query Live every 100 ms for five clients while loadgen posts into the
// chat. As TestSteadyEndToEnd, it asserts what the report says, never how
// fast: one poller, so never more than one query per interval and one
// result per poll, and every client at the last count.
func TestLiveEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway process and runs for seconds")
	}
	rep, _ := runReport(t, "-scenario", "live", "-clients", "5", "-warmup", "500ms", "-duration", "1s", "-json")
	if rep.Scenario != "live" || rep.Params.Operation != "Live (wg_live)" || rep.Params.LiveInterval != "100ms" || rep.Params.Rate != 20 {
		t.Errorf("params %+v, want Live (wg_live) every 100ms, 20 posts/s", rep.Params)
	}
	if !rep.Upstream.InProcess || !rep.Upstream.Publishing {
		t.Errorf("upstream %+v, want an in-process one that loadgen publishes into", rep.Upstream)
	}
	if s := rep.Upstream.Subscriptions; s == nil || *s != 0 {
		t.Errorf("upstream subscriptions %s, want 0: a live query is polled", ptrText(s, "%d"))
	}
	if len(rep.Windows) != 1 {
		t.Fatalf("%d windows, want 1:\n%+v", len(rep.Windows), rep)
	}
	w := rep.Windows[0]
	if w.UpstreamQueries == nil || w.QueriesPerSec == nil {
		t.Fatalf("no upstream query count in the window %+v", w)
	}
	polls := w.Seconds / 0.1
	if q := float64(*w.UpstreamQueries); q < 1 || q > polls+2 {
		t.Errorf("%.0f upstream queries in %.2fs, want 1 to %.0f: one poller every 100ms", q, w.Seconds, polls+2)
	}
	// A result is pushed only when the count changed, which a poll finds
	// at most once.
	if w.Delivered == 0 || w.Delivered > 5*int64(*w.UpstreamQueries+1) {
		t.Errorf("%d results delivered to 5 clients for %d polls, want some, at most one per client per poll", w.Delivered, *w.UpstreamQueries)
	}
	if w.Latency == nil || w.Latency.Samples == 0 {
		t.Errorf("no latency samples")
	}
	if w.GatewayCPU == nil || w.CPUPerEvent == nil {
		t.Errorf("no gateway CPU figure: cpu %v, per result %v", w.GatewayCPU, w.CPUPerEvent)
	}
	if l := rep.Live; l == nil || l.Pollers == nil || *l.Pollers != 1 || l.ExpectedQueriesPerSec != 10 {
		t.Errorf("live %+v, want 1 poller, 10 queries/s expected", rep.Live)
	}
	if rep.Lost == nil || *rep.Lost != 0 || rep.OOO == nil || *rep.OOO != 0 {
		t.Errorf("lost %s, out of order %s; want 0 and 0", ptrText(rep.Lost, "%d"), ptrText(rep.OOO, "%d"))
	}
	if rep.Clients == nil || rep.Clients.Opened != 5 || rep.Clients.Ended != 0 {
		t.Errorf("clients: %+v, want 5 opened, none ended", rep.Clients)
	}
	if len(rep.Notes) > 0 {
		t.Errorf("notes: %q", rep.Notes)
	}
	if rep.Gateway.Exit != "0" {
		t.Errorf("the gateway exited with %q, want 0", rep.Gateway.Exit)
	}
}

// The live scenario polls every 100 ms by default, tells the child gateway
// so, and posts no more than the chat counts.
func TestLiveConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" when the command line is good
	}{
		{"defaults", []string{"-scenario", "live"}, ""},
		{"interval", []string{"-scenario", "live", "-live-interval", "-1s"}, "-live-interval must be positive"},
		{"too many posts", []string{"-scenario", "live", "-rate", "100", "-duration", "20s"}, "counts its last 1000 messages only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if !ok {
				return
			}
			if c.clients != 1000 || c.rate != 20 || c.liveInterval != 100*time.Millisecond || c.warmup != 3*time.Second || c.duration != 10*time.Second {
				t.Errorf("%d clients, %v/s, every %v, warmup %v, duration %v; want 1000, 20/s, 100ms, 3s, 10s", c.clients, c.rate, c.liveInterval, c.warmup, c.duration)
			}
			if !c.publishes() || paramsOf(c).Rate != c.rate {
				t.Error("the live scenario does not publish at its rate")
			}
			if flags := strings.Join(c.gatewayFlags("-upstream", "ws://127.0.0.1:1/graphql", ""), " "); !strings.Contains(flags, "-live-interval 100ms") {
				t.Errorf("the child gateway's flags %q do not set its interval", flags)
			}
		})
	}
	if !strings.Contains(usageHead, "\n  live ") {
		t.Errorf("the usage does not list live:\n%s", usageHead)
	}
}

// The live checks: the upstream's query requests within 10% of one per
// interval, and one poller.
func TestLiveChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		qps     *float64
		pollers *int
		pass    [2]bool // queries/s, pollers
	}{
		{"exact", ptr(10.0), ptr(1), [2]bool{true, true}},
		{"a late timer", ptr(9.1), ptr(1), [2]bool{true, true}},
		{"too few", ptr(8.9), ptr(1), [2]bool{false, true}},
		{"too many", ptr(11.2), ptr(1), [2]bool{false, true}},
		{"a poller per client", ptr(10.0), ptr(2), [2]bool{true, false}},
		{"not measured", nil, nil, [2]bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := parseOrRefuse(t, []string{"-scenario", "live"}, "")
			rep := &report{Windows: []*window{{QueriesPerSec: tc.qps}}, Live: &liveInfo{Pollers: tc.pollers}}
			cs := checksFor(c, rep)
			if len(cs) < 2 || cs[0].Name != "upstream query requests/s" || cs[0].Target != "10 ± 10%" || cs[1].Name != "pollers (keys in the gateway)" {
				t.Fatalf("checks %+v, want the queries' then the pollers'", cs)
			}
			if cs[0].Pass != tc.pass[0] || cs[1].Pass != tc.pass[1] {
				t.Errorf("queries/s %s, pollers %s: pass %v %v, want %v", cs[0].Value, cs[1].Value, cs[0].Pass, cs[1].Pass, tc.pass)
			}
		})
	}
}

func TestHistogramQuantiles(t *testing.T) {
	hs := newHistSet()
	for v := int64(1); v <= 100_000; v++ {
		hs.record(int(v), v*1000) // 1 µs … 100 ms
	}
	l := hs.summary()
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", l.P50us, 50_000},
		{"p99", l.P99us, 99_000},
		{"max", l.MaxUs, 100_000},
	} {
		if d := c.got/c.want - 1; d > 0.01 || d < -0.01 {
			t.Errorf("%s = %.1f µs, want %.0f within 1%%", c.name, c.got, c.want)
		}
	}
	if l.Samples != 100_000 {
		t.Errorf("%d samples, want 100000", l.Samples)
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 1 << 20, 1<<40 + 12345, 1<<62 + 1} {
		b := bucketOf(v)
		if b < prev {
			t.Errorf("bucketOf(%d) = %d, below the bucket of a smaller value (%d)", v, b, prev)
		}
		if b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, b)
		}
		mid := bucketMid(b)
		if d := float64(mid-v) / float64(max(v, 1)); d > 1.0/128 || d < -1.0/128 {
			t.Errorf("bucketMid(bucketOf(%d)) = %d: off by more than 1/128", v, mid)
		}
		prev = b
	}
}

func TestFrameParsing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame string
		kind  int
		data  string
	}{
		{"comment", ":", frameComment, ""},
		{"data with id", "id: abc.3\ndata: {\"data\":{\"gql_messageCreated\":{\"id\":\"4\",\"content\":\"17\",\"sentAt\":\"1700000000123456789\"}}}", frameData, `{"data":{"gql_messageCreated":{"id":"4","content":"17","sentAt":"1700000000123456789"}}}`},
		{"error", "data: {\"errors\":[{\"message\":\"x\",\"extensions\":{\"code\":\"SLOW_CONSUMER\"}}]}", frameError, `{"errors":[{"message":"x","extensions":{"code":"SLOW_CONSUMER"}}]}`},
		{"complete", "event: complete\ndata: ", frameComplete, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, data := classify([]byte(tc.frame))
			if kind != tc.kind || string(data) != tc.data {
				t.Errorf("classify = %d %q, want %d %q", kind, data, tc.kind, tc.data)
			}
		})
	}
	data := []byte(`{"data":{"gql_messageCreated":{"id":"4","content":"17","sentAt":"1700000000123456789"}}}`)
	if v, ok := stringField(data, contentKey); !ok || v != 17 {
		t.Errorf("content = %d %v, want 17", v, ok)
	}
	if v, ok := stringField(data, sentAtKey); !ok || v != 1700000000123456789 {
		t.Errorf("sentAt = %d %v", v, ok)
	}
	if _, ok := stringField([]byte(`{"content":"hello"}`), contentKey); ok {
		t.Error("a non-numeric content parsed as a sequence number")
	}
	for _, tc := range []struct {
		data string
		n    int64
		ok   bool
	}{
		{`{"data":{"gql_messageCount":17}}`, 17, true},
		{`{"data":{"gql_messageCount":0,"x":1}}`, 0, true},
		{`{"data":{"gql_messageCount":null}}`, 0, false},
		{`{"data":{"gql_messageCount":17.5}}`, 0, false},
		{`{"data":{"gql_messageCount":17`, 0, false},
	} {
		if n, ok := intField([]byte(tc.data), countKey); n != tc.n || ok != tc.ok {
			t.Errorf("intField(%s) = %d %v, want %d %v", tc.data, n, ok, tc.n, tc.ok)
		}
	}
	if got := codeSuffix([]byte(`{"errors":[{"extensions":{"code":"SLOW_CONSUMER"}}]}`)); got != " SLOW_CONSUMER" {
		t.Errorf("codeSuffix = %q", got)
	}
}

// parseOrRefuse parses args as loadgen's command line and returns the
// configuration; when wantErr is not "", it checks instead that args are
// refused with an error holding it, and reports false.
func parseOrRefuse(t *testing.T, args []string, wantErr string) (config, bool) {
	t.Helper()
	var stderr bytes.Buffer
	c, err := parseConfig(args, &stderr)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want one containing %q", err, wantErr)
		}
		return c, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// runReport runs loadgen with args, which must succeed, and returns its
// JSON report and what it wrote on stderr.
func runReport(t *testing.T, args ...string) (report, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, &stdout)
	}
	return rep, stderr.String()
}

// TestFloorEndToEnd runs the floor scenario, and fanout, distinct,
// nats-distinct, cluster and fanout over HTTP/2 with -floor, at a tiny size: the floor server as a
// child process, five clients, a window in each mode. As
// TestSteadyEndToEnd, it asserts what the report says, never how fast.
func TestFloorEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes and runs for seconds")
	}
	for _, tc := range []struct {
		name     string
		scenario string
		args     []string // beyond the sizes and -floor
		windows  []string // the scenario's windows, all compared with the floor's; nil: its one window
		proto    string   // the scenario's clients' protocol
	}{
		{name: "floor", scenario: "floor"},
		{name: "fanout", scenario: "fanout"},
		{name: "distinct", scenario: "distinct"},
		{name: "nats-distinct", scenario: "nats-distinct"},
		// Both phases, each over the floor; five clients over three
		// gateways.
		{name: "cluster", scenario: "cluster", windows: []string{"fanout: 1 gateway", "cluster: 3 gateways"}},
		// The floor's clients over HTTP/1.1, the scenario's over HTTP/2:
		// five on three connections.
		{name: "fanout h2", scenario: "fanout", args: []string{"-proto", "h2", "-h2-streams", "2"}, proto: "HTTP/2 over TLS (h2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scenario := tc.scenario
			// The certificate (h2) and JetStream's store (cluster) go in a
			// temporary directory, removed at the end.
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			args := []string{"-scenario", scenario, "-clients", "5", "-rate", "20", "-warmup", "500ms", "-duration", "1s", "-json"}
			if scenario != "floor" {
				args = append(args, "-floor")
			}
			args = append(args, tc.args...)
			distinct := scenario == "distinct" || scenario == "nats-distinct"
			rep, stderr := runReport(t, args...)
			fl := rep.Floor
			if fl == nil {
				t.Fatalf("no floor in the report:\n%+v", rep)
			}
			if fl.Server.Exit != "0" || !fl.Server.Child || fl.Server.PID == 0 || fl.FrameBytes == 0 {
				t.Errorf("floor server %+v, frame %d bytes; want a child that exited with 0, and a frame", fl.Server, fl.FrameBytes)
			}
			if c := fl.Clients; c == nil || c.Opened != 5 || c.Ended != 0 || c.Failed != 0 || c.Connections != nil {
				t.Errorf("floor clients: %+v, want 5 opened over HTTP/1.1 (no HTTP/2 connections), none ended", fl.Clients)
			}
			if fl.Protocol.Name != "HTTP/1.1" || fl.Protocol.StreamsPerConn != 0 {
				t.Errorf("the floor's clients over %+v, want HTTP/1.1", fl.Protocol)
			}
			if want := cmp.Or(tc.proto, "HTTP/1.1"); rep.Protocol.Name != want {
				t.Errorf("the scenario's clients over %q, want %q", rep.Protocol.Name, want)
			}
			if len(fl.Modes) != 2 || fl.Modes[0].Mode != floorTurn || fl.Modes[1].Mode != floorOwn {
				t.Fatalf("floor modes %+v, want turn then own", fl.Modes)
			}
			for _, m := range fl.Modes {
				w := m.Window
				if w == nil || w.Name != "floor: "+m.Mode || w.Delivered == 0 || w.Latency == nil || w.Latency.Samples == 0 {
					t.Errorf("%s: window %+v, want frames delivered and their latency", m.Mode, w)
					continue
				}
				if w.GatewayCPU == nil || w.CPUPerEvent == nil {
					t.Errorf("%s: no CPU figure for the floor server", m.Mode)
				}
				if m.Reached == nil || *m.Reached != 5 {
					t.Errorf("%s: %s clients reached in the window, want all 5", m.Mode, ptrText(m.Reached, "%d"))
				}
				if m.Dropped == nil {
					t.Errorf("%s: no drop count", m.Mode)
				}
				if !distinct {
					if m.RoundTime == nil || m.RoundTime.Samples == 0 || m.WriteTime != nil {
						t.Errorf("%s: round times %+v, write times %+v; want round times only", m.Mode, m.RoundTime, m.WriteTime)
					}
					continue
				}
				// Every client's room, at 20 events/s for a second.
				if w.Posted == nil || *w.Posted == 0 {
					t.Errorf("%s: the publisher posted nothing in the floor's window", m.Mode)
				}
				if m.WriteTime == nil || m.WriteTime.Samples == 0 || m.RoundTime != nil {
					t.Errorf("%s: write times %+v, round times %+v; want write times only", m.Mode, m.WriteTime, m.RoundTime)
				}
				if m.Skipped == nil || *m.Skipped != 0 {
					t.Errorf("%s: %s upstream messages skipped, want 0: every message is a next (on NATS: none dropped as a slow consumer)", m.Mode, ptrText(m.Skipped, "%d"))
				}
			}
			if distinct {
				scheme := "ws://"
				if scenario == "nats-distinct" {
					scheme = "nats://"
				}
				if !strings.HasPrefix(fl.Upstream, scheme) || fl.Upstream != rep.Upstream.URL {
					t.Errorf("the floor's upstream %q, want the in-process one %q", fl.Upstream, rep.Upstream.URL)
				}
				if s := fl.Subscriptions; s == nil || *s != 5 {
					t.Errorf("the floor ran %s upstream subscriptions, want 5: one per client", ptrText(s, "%d"))
				}
				if s := fl.SubscriptionsAfter; s == nil || *s != 0 {
					t.Errorf("%s upstream subscriptions left after the floor, want 0", ptrText(s, "%d"))
				}
				// The gateway's own, during distinct's window: none of the
				// floor's is left.
				if s := rep.Upstream.Subscriptions; s == nil || *s != 5 {
					t.Errorf("upstream subscriptions %s at distinct's window, want the gateway's 5", ptrText(s, "%d"))
				}
			}
			if len(rep.Notes) > 0 {
				t.Errorf("notes: %q", rep.Notes)
			}
			if !strings.Contains(stderr, "floor server (child, pid") || !strings.Contains(stderr, "clients over HTTP/1.1") {
				t.Errorf("stderr does not tell of the floor server and its clients' protocol:\n%s", stderr)
			}
			if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
				t.Errorf("left in the temporary directory: %v %v", left, err)
			}
			if scenario == "floor" {
				if len(rep.Windows) != 0 || fl.Against != "" || fl.Also != nil {
					t.Errorf("floor: windows %+v, ratios against %q and %+v; want the floor's windows only", rep.Windows, fl.Against, fl.Also)
				}
				return
			}
			// -floor: the scenario's windows, then their figures over the
			// floor's, each. Nothing is lost: the scenario's rooms start
			// from 0 after the floor's posts.
			names := tc.windows
			if names == nil {
				names = []string{"measure"}
			}
			if len(rep.Windows) != len(names) {
				t.Fatalf("windows %+v, want %q", rep.Windows, names)
			}
			comps := fl.comparisons()
			if len(comps) != len(names) || len(fl.Also) != len(names)-1 {
				t.Fatalf("ratios against %q, also %+v; want %q, each once", fl.Against, fl.Also, names)
			}
			for i, w := range rep.Windows {
				c := comps[i]
				if w.Name != names[i] || c.Against != w.Name {
					t.Errorf("window %d %q, ratios against %q; want %q", i, w.Name, c.Against, names[i])
				}
				if w.Delivered == 0 || w.Latency == nil {
					t.Fatalf("%s: nothing delivered, or no latency:\n%+v", w.Name, rep)
				}
				if len(c.Modes) != len(fl.Modes) {
					t.Fatalf("%s: ratios to %d modes, want %d", w.Name, len(c.Modes), len(fl.Modes))
				}
				for j, m := range c.Modes {
					if m.Mode != fl.Modes[j].Mode {
						t.Errorf("%s: ratios to mode %q, want %q", w.Name, m.Mode, fl.Modes[j].Mode)
					}
					checkFloorRatios(t, w.Name+" over "+m.Mode, w, fl.Modes[j].Window, m.floorRatios)
				}
			}
			if rep.Lost == nil || *rep.Lost != 0 || rep.OOO == nil || *rep.OOO != 0 {
				t.Errorf("lost %s, out of order %s; want 0 and 0", ptrText(rep.Lost, "%d"), ptrText(rep.OOO, "%d"))
			}
			if tc.proto != "" {
				if c := rep.Clients; c == nil || c.Connections == nil || *c.Connections != 3 {
					t.Errorf("the scenario's clients %+v, want 5 on 3 HTTP/2 connections", rep.Clients)
				}
			}
			// The text report: a block of ratios per window, and the
			// protocols when they differ.
			var text bytes.Buffer
			rep.writeText(&text, false)
			for _, n := range names {
				if !strings.Contains(text.String(), "["+n+"] over the floor's") {
					t.Errorf("the text report has no ratios of %q:\n%s", n, &text)
				}
			}
			switch over := strings.Contains(text.String(), "the scenario's over "); {
			case tc.proto != "" && !strings.Contains(text.String(), "the scenario's over "+tc.proto):
				t.Errorf("the text report does not tell that the scenario's clients ran over %s, the floor's over HTTP/1.1:\n%s", tc.proto, &text)
			case tc.proto == "" && over:
				t.Errorf("the text report tells of another protocol than the floor's:\n%s", &text)
			}
		})
	}
}

// checkFloorRatios checks a window's ratios r to a floor mode's window fw.
func checkFloorRatios(t *testing.T, what string, w, fw *window, r floorRatios) {
	t.Helper()
	if want := w.Latency.P50us / fw.Latency.P50us; r.P50Ratio == nil || *r.P50Ratio != want {
		t.Errorf("%s: p50 ratio %s, want %.3f", what, ptrText(r.P50Ratio, "%.3f"), want)
	}
	if want := w.Latency.P99us / fw.Latency.P99us; r.P99Ratio == nil || *r.P99Ratio != want {
		t.Errorf("%s: p99 ratio %s, want %.3f", what, ptrText(r.P99Ratio, "%.3f"), want)
	}
	// CPU is read in clock ticks: a tiny window may have none, and then
	// no ratio.
	if w.CPUPerEvent != nil && fw.CPUPerEvent != nil && *fw.CPUPerEvent > 0 {
		if want := *w.CPUPerEvent / *fw.CPUPerEvent; r.CPURatio == nil || *r.CPURatio != want {
			t.Errorf("%s: CPU ratio %s, want %.3f", what, ptrText(r.CPURatio, "%.3f"), want)
		}
	}
}

// The ratios of -floor in JSON: the first window's in the modes, as they
// were before there could be more, each further window's in also.
func TestFloorRatiosJSON(t *testing.T) {
	win := func(name string, cpu, p50, p99 float64) *window {
		return &window{Name: name, CPUPerEvent: &cpu, Latency: &latency{P50us: p50, P99us: p99}}
	}
	info := &floorInfo{Modes: []*floorMode{
		{Mode: floorTurn, Window: win("floor: turn", 2, 100, 200)},
		{Mode: floorOwn, Window: win("floor: own", 4, 200, 400)},
	}}
	for _, ws := range [][]*window{
		{win("measure", 8, 400, 800)},
		{win("fanout: 1 gateway", 8, 400, 800), win("cluster: 3 gateways", 16, 800, 1600)},
	} {
		info.compare(ws...)
		b, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Against string
			Modes   []map[string]any
			Also    []struct {
				Against string
				Modes   []map[string]any
			}
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Against != ws[0].Name || len(got.Also) != len(ws)-1 {
			t.Fatalf("against %q, also %+v; want %q, then the rest of %d windows\n%s", got.Against, got.Also, ws[0].Name, len(ws), b)
		}
		// Every figure of the scenario's is 4× turn's and 2× own's; the
		// cluster's twice fanout's.
		check := func(where string, modes []map[string]any, k float64) {
			t.Helper()
			if len(modes) != 2 {
				t.Fatalf("%s: %d modes, want 2\n%s", where, len(modes), b)
			}
			for i, want := range []float64{4 * k, 2 * k} {
				m := modes[i]
				if m["mode"] != floorModes[i] {
					t.Errorf("%s: mode %v, want %s", where, m["mode"], floorModes[i])
				}
				for _, key := range []string{"cpu_per_event_ratio", "p50_ratio", "p99_ratio"} {
					if v, ok := m[key].(float64); !ok || v != want {
						t.Errorf("%s %s: %s %v, want %v\n%s", where, floorModes[i], key, m[key], want, b)
					}
				}
			}
		}
		check("modes", got.Modes, 1)
		for i, a := range got.Also {
			if a.Against != ws[i+1].Name {
				t.Errorf("also[%d] against %q, want %q", i, a.Against, ws[i+1].Name)
			}
			check("also", a.Modes, 2)
		}
		if len(ws) == 1 && bytes.Contains(b, []byte(`"also"`)) {
			t.Errorf("one window compared, and also in the JSON:\n%s", b)
		}
	}
}

// The floor takes fanout's sizes; -floor is for the fanout scenarios, for
// cluster, for distinct on the in-process graphql-transport-ws upstream and
// for nats-distinct.
// The floor speaks HTTP/1.1 only, to clients of its own: fanout over
// HTTP/2 compares with it, distinct and the floor scenario do not run over
// HTTP/2 with it.
func TestFloorConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" when the command line is good
	}{
		{"floor", []string{"-scenario", "floor"}, ""},
		{"fanout", []string{"-scenario", "fanout", "-floor"}, ""},
		{"nats-fanout", []string{"-scenario", "nats-fanout", "-floor"}, ""},
		{"distinct", []string{"-scenario", "distinct", "-floor"}, ""},
		{"distinct on a gateway", []string{"-scenario", "distinct", "-floor", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, ""},
		{"nats-distinct", []string{"-scenario", "nats-distinct", "-floor"}, ""},
		{"nats-distinct on a gateway", []string{"-scenario", "nats-distinct", "-floor", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, ""},
		{"nats-distinct h2", []string{"-scenario", "nats-distinct", "-floor", "-proto", "h2c"}, "-floor with -proto h2c is for fanout and nats-fanout (their floor's clients run over HTTP/1.1): not for nats-distinct"},
		{"distinct external upstream", []string{"-scenario", "distinct", "-floor", "-upstream", "ws://127.0.0.1:1/graphql"}, "not with -upstream (an external upstream)"},
		{"distinct graphql-sse", []string{"-scenario", "distinct", "-floor", "-upstream-protocol", "graphql-sse"}, "not with -upstream-protocol graphql-sse"},
		{"cluster", []string{"-scenario", "cluster", "-floor"}, ""},
		{"cluster h2", []string{"-scenario", "cluster", "-floor", "-proto", "h2"}, "cluster runs HTTP/1.1 clients only"},
		{"cluster gateway", []string{"-scenario", "cluster", "-floor", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "cluster starts its own gateways"},
		{"saturate", []string{"-scenario", "saturate", "-floor"}, "-floor is for fanout, nats-fanout, distinct, nats-distinct and cluster, not saturate"},
		{"live", []string{"-scenario", "live", "-floor"}, "-floor is for fanout, nats-fanout, distinct, nats-distinct and cluster, not live"},
		{"h2", []string{"-scenario", "floor", "-proto", "h2"}, "the floor speaks HTTP/1.1 only: no -proto h2 with -scenario floor"},
		{"fanout h2", []string{"-scenario", "fanout", "-floor", "-proto", "h2"}, ""},
		{"fanout h2c", []string{"-scenario", "fanout", "-floor", "-proto", "h2c", "-h2-streams", "250"}, ""},
		{"nats-fanout h2", []string{"-scenario", "nats-fanout", "-floor", "-proto", "h2"}, ""},
		{"fanout h2 streams", []string{"-scenario", "fanout", "-floor", "-proto", "h2", "-h2-streams", "0"}, "-h2-streams must be 1 to 250"},
		{"fanout h2 gateway", []string{"-scenario", "fanout", "-floor", "-proto", "h2", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "-proto h2 starts its own gateway"},
		{"distinct h2", []string{"-scenario", "distinct", "-floor", "-proto", "h2"}, "-floor with -proto h2 is for fanout and nats-fanout"},
		{"gateway", []string{"-scenario", "floor", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "floor runs no gateway"},
		{"rate", []string{"-scenario", "floor", "-rate", "-1"}, "-rate must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if !ok {
				return
			}
			want, _ := scenarioDefaults("fanout")
			if c.clients != want.clients || c.rate != want.rate || c.warmup != want.warmup || c.duration != want.duration {
				t.Errorf("%d clients, %v/s, warmup %v, duration %v; want fanout's", c.clients, c.rate, c.warmup, c.duration)
			}
			if c.scenario == "floor" && len(checksFor(c, &report{})) != 0 {
				t.Errorf("floor has checks; it has no target")
			}
		})
	}
	usage := strings.Join(strings.Fields(usageHead), " ")
	if !strings.Contains(usage, "-floor (fanout, nats-fanout, distinct, nats-distinct, cluster)") || !strings.Contains(usage, "with fanout -proto h2 or h2c, its clients run over HTTP/1.1") {
		t.Errorf("the usage does not name every scenario -floor is for, and HTTP/2 for fanout:\n%s", usageHead)
	}
}

// A floor frame is a result to loadgen's clients: its content is the
// round's sequence number and its sentAt the round's start, as a fanout
// result's are the upstream's.
func TestFloorFrame(t *testing.T) {
	sent := time.Unix(1_800_000_000, 123456789)
	frame := appendFloorFrame(nil, 41, sent)
	if !bytes.HasSuffix(frame, framesEnd) {
		t.Fatalf("frame %q does not end with a blank line", frame)
	}
	kind, data := classify(frame[:len(frame)-1])
	if kind != frameData {
		t.Fatalf("frame %q is of kind %d, want data", frame, kind)
	}
	if seq, ok := stringField(data, contentKey); !ok || seq != 41 {
		t.Errorf("content %d (%v), want 41", seq, ok)
	}
	if at, ok := stringField(data, sentAtKey); !ok || at != sent.UnixNano() {
		t.Errorf("sentAt %d (%v), want %d", at, ok, sent.UnixNano())
	}
	var v struct {
		Data struct {
			M struct{ ID, Content, SentAt string } `json:"gql_messageCreated"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &v); err != nil || v.Data.M.ID != "42" {
		t.Errorf("data %s: %v, id %q; want JSON with id 42", data, err, v.Data.M.ID)
	}
	if !bytes.HasPrefix(frame, []byte("id: "+floorToken+".42\n")) {
		t.Errorf("frame %q, want an id line first", frame)
	}
}

// The scenarios at scale have the sizes, and refuse what they
// cannot run: they start their own gateways and upstream, over HTTP/1.1.
func TestScaleConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
		want func(config) bool
	}{
		{"idle-max", []string{"-scenario", "idle-max"}, "", func(c config) bool {
			return c.clients == 0 && c.gateways == 1 && c.probe == 50 && slices.Equal(c.steps, []int{1000, 10000}) && c.timeout == 15*time.Minute
		}},
		{"idle-100k", []string{"-scenario", "idle-100k"}, "", func(c config) bool {
			return c.clients == 100_000 && c.gateways == 6 && c.rooms == 0 && c.probe == 0 && c.steps == nil && c.clientsPerProc == defaultClientsPerProc
		}},
		{"fanout-100k", []string{"-scenario", "fanout-100k"}, "", func(c config) bool {
			return c.clients == 100_000 && c.gateways == 6 && c.rooms == 100 && c.rate == 0.5 && c.publishes()
		}},
		{"timeout kept", []string{"-scenario", "idle-100k", "-timeout", "1m", "-steps", "10, 20"}, "", func(c config) bool {
			return c.timeout == time.Minute && slices.Equal(c.steps, []int{10, 20})
		}},
		{"h2", []string{"-scenario", "idle-100k", "-proto", "h2"}, "idle-100k starts its own gateways and upstream, over HTTP/1.1", nil},
		{"external gateway", []string{"-scenario", "fanout-100k", "-gateway", "http://127.0.0.1:1", "-upstream-listen", "127.0.0.1:0"}, "no -proto, -gateway", nil},
		{"rooms on idle", []string{"-scenario", "idle-100k", "-rooms", "3"}, "-rooms is for fanout-100k", nil},
		{"probe on fanout", []string{"-scenario", "fanout-100k", "-probe", "3"}, "-probe is for idle-max", nil},
		{"steps descending", []string{"-scenario", "idle-max", "-steps", "10,5"}, "ascending", nil},
		{"steps not numbers", []string{"-scenario", "idle-max", "-steps", "10,x"}, "positive stream counts", nil},
		{"too many processes", []string{"-scenario", "idle-100k", "-client-procs", "254"}, "at most 253, one source address each", nil},
		{"no gateways", []string{"-scenario", "idle-100k", "-gateways", "-1"}, "-gateways must be at least 1", nil},
		{"no rate", []string{"-scenario", "fanout-100k", "-rate", "-1"}, "-rate must be positive", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := parseOrRefuse(t, tc.args, tc.err)
			if ok && !tc.want(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

// planClients spreads the clients over as few processes as the limits
// allow, and says what to change when a limit is too low.
func TestPlanClients(t *testing.T) {
	machine := sysLimits{FilesHard: 20000, PortLow: 32768, PortHigh: 60999, Somaxconn: 4096, SynBacklog: 2048}
	base := func(scenario string) config {
		c, _ := scenarioDefaults(scenario)
		c.scenario, c.clientsPerProc, c.inflight, c.proto = scenario, defaultClientsPerProc, 100, protoH1
		return c
	}
	for _, tc := range []struct {
		name    string
		cfg     func() config
		n       int
		gwFiles uint64
		lim     sysLimits
		counts  []int
		err     string
	}{
		{"100k on six", func() config { return base("idle-100k") }, 100_000, 20000, machine,
			[]int{16667, 16667, 16667, 16667, 16666, 16666}, ""},
		{"probe counted", func() config { c := base("idle-max"); c.probe = 50; return c }, 19982, 20000, machine,
			[]int{10016, 10016}, ""},
		{"two asked for", func() config { c := base("idle-100k"); c.clientProcs = 2; c.gateways = 2; return c }, 100, 20000, machine,
			[]int{50, 50}, ""},
		{"hard limit too low", func() config { return base("idle-100k") }, 100_000, 20000, sysLimits{FilesHard: 4096},
			nil, "needs about 16731 open files and the hard limit is 4096 (ulimit -Hn): lower -clients-per-proc to 4032 or less"},
		{"gateway limit too low", func() config { return base("idle-100k") }, 100_000, 10000, machine,
			nil, "a gateway with 16667 streams needs about 16675 open files and its limit is 10000: raise -gateways"},
		{"per process over the cap", func() config { c := base("idle-100k"); c.clientProcs = 2; return c }, 100_000, 20000, machine,
			nil, "50000 each, over -clients-per-proc 18000: raise -client-procs"},
		{"ports", func() config { c := base("idle-100k"); c.gateways = 1; return c }, 18_000, 20000, sysLimits{FilesHard: 20000, PortLow: 60000, PortHigh: 60999},
			nil, "the ephemeral port range 60000-60999 has 1000 ports: raise -client-procs"},
		{"accept queue", func() config { c := base("idle-100k"); c.inflight = 400; return c }, 100_000, 20000, machine,
			nil, "6 clients processes × -ramp-inflight 400 = 2400 opens in flight, more than a gateway's accept queue holds (somaxconn 4096, tcp_max_syn_backlog 2048): lower -ramp-inflight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := planClients(tc.cfg(), tc.n, tc.gwFiles, tc.lim)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(plan.counts, tc.counts) {
				t.Errorf("counts %v, want %v", plan.counts, tc.counts)
			}
			next := 0
			for p, first := range plan.firsts {
				if first != next {
					t.Errorf("process %d starts at client %d, want %d", p, first, next)
				}
				next += plan.counts[p]
			}
		})
	}
}

// Client i goes to gateway i mod gateways and, with rooms, each gateway
// gets clients of every room, as many of each.
func TestClientTarget(t *testing.T) {
	const gateways, rooms, n = 6, 100, 6000
	perGWRoom := map[[2]int]int{}
	for i := range n {
		target, room := clientTarget(i, gateways, rooms)
		if want := opsPrefix + "Room?wg_sse=true&room=" + roomName(room); target != want {
			t.Fatalf("client %d: %q, want %q", i, target, want)
		}
		perGWRoom[[2]int{i % gateways, room}]++
	}
	if len(perGWRoom) != gateways*rooms {
		t.Errorf("%d gateway-room pairs, want %d", len(perGWRoom), gateways*rooms)
	}
	for k, v := range perGWRoom {
		if v != n/gateways/rooms {
			t.Errorf("gateway %d, room %d: %d clients, want %d", k[0], k[1], v, n/gateways/rooms)
		}
	}
	if target, room := clientTarget(7, gateways, 0); target != opsPrefix+"Sub?wg_sse=true" || room != 0 {
		t.Errorf("without rooms: %q room %d, want Sub", target, room)
	}
	if got := clientsOfGateway(100, 6, 0) + clientsOfGateway(100, 6, 5); got != 17+16 {
		t.Errorf("clients of gateways 0 and 5 of 100 over 6: %d, want 33", got)
	}
}

// Histograms of several processes add up to the histogram of all their
// values.
func TestHistDumpAdds(t *testing.T) {
	all, a, b := newHistSet(), newHistSet(), newHistSet()
	for i := range int64(10_000) {
		v := i*i%7_919 + i*1_000
		all.record(int(i), v)
		if i%3 == 0 {
			a.record(int(i), v)
		} else {
			b.record(int(i), v)
		}
	}
	var da, db histDump
	for _, d := range []struct {
		h  *histSet
		to *histDump
	}{{a, &da}, {b, &db}} {
		// Through JSON, as a clients process sends it.
		raw, err := json.Marshal(d.h.dump())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, d.to); err != nil {
			t.Fatal(err)
		}
	}
	merged := newHistSet()
	merged.add(da)
	merged.add(db)
	if got, want := *merged.summary(), *all.summary(); got != want {
		t.Errorf("merged %+v, want %+v", got, want)
	}
}

// gcBetween sums the gateways' pauses of a window, bucket by bucket, and
// reads quantiles as bucket bounds.
func TestGCBetween(t *testing.T) {
	hist := func(counts ...uint64) *debugInfo {
		return &debugInfo{GCCycles: counts[0], GCPauses: &pauseHist{Counts: counts, UpperNs: []int64{1_000, 10_000, 100_000, math.MaxInt64}}}
	}
	a := snap{gcs: []*debugInfo{hist(1, 0, 0, 0), hist(0, 0, 0, 0)}}
	b := snap{gcs: []*debugInfo{hist(51, 40, 0, 0), hist(50, 9, 1, 0)}}
	g := gcBetween(a, b)
	if g == nil || g.Pauses != 150 || g.Cycles != 100 {
		t.Fatalf("gc %+v, want 150 pauses in 100 cycles", g)
	}
	// 100 pauses up to 1 µs, 49 up to 10 µs, one up to 100 µs.
	if *g.P50us != 1 || *g.P99us != 10 || *g.MaxUs != 100 {
		t.Errorf("p50 %v µs, p99 %v µs, max %v µs; want 1, 10, 100", *g.P50us, *g.P99us, *g.MaxUs)
	}
	if gcBetween(a, snap{gcs: []*debugInfo{hist(1, 0, 0, 0), nil}}) != nil {
		t.Error("a gateway's figures missing: want no GC figures")
	}
}

// TestScaleEndToEnd runs the scenarios at scale at a tiny size: two
// gateway processes and two clients processes of 50 clients each (idle-max:
// one gateway whose open files limit is lowered to 120). It asserts what
// the report says, never how fast.
func TestScaleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway and clients processes and runs for seconds")
	}
	t.Run("idle-100k", func(t *testing.T) {
		rep, stderr := runReport(t, "-scenario", "idle-100k", "-clients", "100", "-gateways", "2", "-client-procs", "2",
			"-steps", "40", "-heartbeat", "300ms", "-warmup", "500ms", "-duration", "1s", "-check", "-json")
		s := checkScaleReport(t, rep, 100, 2, 2)
		if len(s.Steps) != 2 || s.Steps[0].Streams != 40 || s.Steps[1].Streams != 100 {
			t.Errorf("steps %+v, want 40 then 100", s.Steps)
		}
		if w := rep.Windows[0]; w.Heartbeats == 0 || w.Delivered != 0 {
			t.Errorf("hold: %d heartbeats, %d delivered; want some heartbeats, nothing else", w.Heartbeats, w.Delivered)
		}
		if s := rep.Upstream.Subscriptions; s == nil || *s != 2 {
			t.Errorf("upstream subscriptions %s, want 2: one Sub per gateway", ptrText(s, "%d"))
		}
		if !strings.Contains(stderr, "2 clients processes, from 127.0.0.2 to 127.0.0.3, [50 50] clients") {
			t.Errorf("stderr does not tell the clients processes:\n%s", stderr)
		}
	})
	t.Run("fanout-100k", func(t *testing.T) {
		rep, _ := runReport(t, "-scenario", "fanout-100k", "-clients", "100", "-gateways", "2", "-client-procs", "2",
			"-rooms", "5", "-rate", "4", "-warmup", "500ms", "-duration", "1s", "-json")
		checkScaleReport(t, rep, 100, 2, 2)
		w := rep.Windows[0]
		if w.Delivered == 0 || w.Latency == nil || w.Latency.Samples == 0 || w.Offered != 400 {
			t.Errorf("window %+v: want deliveries with latencies, 400 offered/s", w)
		}
		var byGW int64
		for _, g := range w.Gateways {
			byGW += g.Delivered
		}
		if byGW != w.Delivered {
			t.Errorf("the gateways' clients got %d, the window says %d", byGW, w.Delivered)
		}
		if rep.Lost == nil || *rep.Lost != 0 || rep.OOO == nil || *rep.OOO != 0 || rep.Scale.Drained == nil || !*rep.Scale.Drained {
			t.Errorf("lost %s, out of order %s, drained %s; want 0, 0, true", ptrText(rep.Lost, "%d"), ptrText(rep.OOO, "%d"), ptrText(rep.Scale.Drained, "%v"))
		}
		if s := rep.Upstream.Subscriptions; s == nil || *s != 10 {
			t.Errorf("upstream subscriptions %s, want 10: five rooms on each gateway", ptrText(s, "%d"))
		}
		if rep.Params.Operation != "Room (5 rooms)" || rep.Params.Rooms != 5 {
			t.Errorf("params %+v, want Room on 5 rooms", rep.Params)
		}
	})
	t.Run("idle-max", func(t *testing.T) {
		rep, _ := runReport(t, "-scenario", "idle-max", "-gateway-max-files", "120", "-steps", "30", "-probe", "20",
			"-open-timeout", "2s", "-warmup", "300ms", "-duration", "500ms", "-json")
		n := rep.Params.Clients
		if n < 50 || n > 120-gatewayHeadroom {
			t.Fatalf("idle-max chose %d clients for a gateway limited to 120 open files", n)
		}
		s := checkScaleReport(t, rep, n, 1, 1)
		p := s.Probe
		if p == nil || p.Tried != 20 || p.Failed == 0 || p.Opened+p.Failed != 20 || p.FileLimit == nil || *p.FileLimit != 120 {
			t.Fatalf("probe %+v: want 20 tried, some failed, the gateway's limit 120", p)
		}
		if !strings.Contains(s.LimitHit, "the gateway's open files limit (RLIMIT_NOFILE 120)") {
			t.Errorf("limit hit %q, want the gateway's open files limit", s.LimitHit)
		}
		// Not -check: at this size memory per stream is the gateway's
		// fixed part, whatever the step.
		found := false
		for _, c := range scaleChecks(config{scenario: "idle-max"}, &rep, rep.Windows[0]) {
			if c.Name == "the gateway at its open files limit" || c.Name == "streams held through the window" {
				found = true
				if !c.Pass {
					t.Errorf("check %+v failed", c)
				}
			}
		}
		if !found {
			t.Error("no check of the open files limit")
		}
	})
}

// checkScaleReport checks what every report at scale holds: n clients
// opened and held on gateways gateway processes from procs clients
// processes, each process's figures, and each exited 0.
func checkScaleReport(t *testing.T, rep report, n, gateways, procs int) *scaleInfo {
	t.Helper()
	if rep.Clients == nil || rep.Clients.Opened != int64(n) || rep.Clients.Failed != 0 || rep.Clients.Ended != 0 {
		t.Errorf("clients %+v, want %d opened, none failed or ended", rep.Clients, n)
	}
	s := rep.Scale
	if s == nil {
		t.Fatalf("no scale section:\n%+v", rep)
	}
	if len(s.Gateways) != gateways || len(s.ClientProcs) != procs {
		t.Fatalf("%d gateways, %d clients processes; want %d, %d", len(s.Gateways), len(s.ClientProcs), gateways, procs)
	}
	for _, g := range s.Gateways {
		if g.PID == 0 || g.FileLimit == nil || g.Exit != "0" {
			t.Errorf("gateway %+v: want its pid, its open files limit, exit 0", g)
		}
	}
	total := 0
	for i, c := range s.ClientProcs {
		if c.Source != sourceAddr(i) || c.PID == 0 || c.CPU == nil || c.RSS == nil || c.Exit != "0" {
			t.Errorf("clients process %d: %+v, want source %s, its figures, exit 0", i, c, sourceAddr(i))
		}
		total += c.Count
	}
	if total != n+rep.Params.Probe {
		t.Errorf("the clients processes hold %d clients, want %d", total, n+rep.Params.Probe)
	}
	if s.Limits.FilesHard == 0 || s.Limits.PortHigh == 0 || s.Limits.Somaxconn == 0 {
		t.Errorf("limits %+v: want them read", s.Limits)
	}
	if s.Before == nil || s.Before.RSS == nil || len(s.Steps) == 0 || s.ConnectSeconds == nil {
		t.Fatalf("memory before %+v, steps %+v, connect %v: want them measured", s.Before, s.Steps, s.ConnectSeconds)
	}
	last := s.Steps[len(s.Steps)-1]
	if last.Streams != n || last.RSSPerStreamKiB == nil || last.OpenFiles == nil || *last.OpenFiles < n/gateways {
		t.Errorf("last step %+v: want %d streams, RSS per stream, open files at least %d", last, n, n/gateways)
	}
	if len(rep.Windows) != 1 {
		t.Fatalf("%d windows, want 1", len(rep.Windows))
	}
	w := rep.Windows[0]
	if len(w.Gateways) != gateways || w.GatewayCPU == nil || w.ClientProcsCPU == nil || w.GC == nil {
		t.Errorf("window: %d gateways, CPU %v, clients processes' CPU %v, GC %+v; want each measured", len(w.Gateways), w.GatewayCPU, w.ClientProcsCPU, w.GC)
	}
	for i, g := range w.Gateways {
		if g.Clients != clientsOfGateway(n, gateways, i) || g.CPU == nil || g.RSSEnd == nil {
			t.Errorf("gateway %s: %d clients, CPU %v, RSS %v; want %d and both", g.Instance, g.Clients, g.CPU, g.RSSEnd, clientsOfGateway(n, gateways, i))
		}
	}
	if len(rep.Notes) > 0 || rep.Error != "" {
		t.Errorf("notes %q, error %q", rep.Notes, rep.Error)
	}
	return s
}

// The distinct floor's subscribe is the one gqlpush sends upstream for
// Room: the same query (the root field aliased back to gql_messageCreated),
// variables and operation name, byte for byte, so the upstream's results
// are the gateway's.
func TestFloorSubscribeIsTheGateways(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	defer up.Close()
	op, err := gqlpush.ParseOperation("Room", roomOperation)
	if err != nil {
		t.Fatal(err)
	}
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: []*gqlpush.Operation{op},
		Upstreams:  []gqlpush.Upstream{{Name: "gql", Schema: gqlpushtest.ChatSchema, URL: up.URL}},
		Prefix:     opsPrefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, srv.URL+opsPrefix+"Room?wg_sse=true&room=r7", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := tr.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	defer func() { stop(); <-done }()
	m, err := up.WaitFor(ctx, func(m gqlpushtest.Message) bool { return m.Type == "subscribe" })
	if err != nil {
		t.Fatal(err)
	}
	var floor struct{ Payload json.RawMessage }
	if err := json.Unmarshal(floorSubscribe(m.ID, "r7"), &floor); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(floor.Payload, m.Payload) {
		t.Errorf("the floor subscribes with\n%s\nthe gateway with\n%s", floor.Payload, m.Payload)
	}
}

// scanNext takes id and payload from a next message as gqlpushtest sends
// it, read off a subscription of the floor's own; any other shape is no
// event, and no panic.
func TestFloorScanNext(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	defer up.Close()
	fu, err := dialFloorUpstream(t.Context(), up.URL, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer fu.close()
	if err := fu.subscribe("12", "r3"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sent := up.Chat.Post("r3", "41")
	_, msg, err := fu.ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, payload, ok := scanNext(msg)
	if !ok || string(id) != "12" {
		t.Fatalf("scanNext(%s) = %q, %v; want id 12", msg, id, ok)
	}
	want := `{"data":{"gql_messageCreated":{"id":"` + sent.ID + `","content":"41","sentAt":"` + strconv.FormatInt(sent.SentAt.UnixNano(), 10) + `"}}}`
	if string(payload) != want {
		t.Errorf("payload %s, want %s", payload, want)
	}
	// The chunk carries it as a frame clients parse.
	chunk := appendFloorChunk(nil, 3, payload)
	body, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(append(chunk, "0\r\n\r\n"...))))
	if err != nil {
		t.Fatalf("chunk %q: %v", chunk, err)
	}
	if wantBody := "id: " + floorToken + ".3\ndata: " + want + "\n\n"; string(body) != wantBody {
		t.Errorf("chunk's body %q, want %q", body, wantBody)
	}
	if kind, data := classify(body[:len(body)-1]); kind != frameData || string(data) != want {
		t.Errorf("the frame is of kind %d with data %s", kind, data)
	}
	if seq, ok := stringField(payload, contentKey); !ok || seq != 41 {
		t.Errorf("content %d (%v), want 41", seq, ok)
	}
	if err := fu.complete("12"); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitSubscriptions(ctx, 0); err != nil {
		t.Errorf("the floor's complete did not end its subscription: %v", err)
	}
	for _, other := range []string{
		`{"type":"ping"}`,
		`{"type":"connection_ack"}`,
		`{"id":"12","type":"complete"}`,
		`{"id":"12","type":"error","payload":[{"message":"x"}]}`,
		`{"type":"next","id":"12","payload":{"data":{}}}`, // keys in another order
		`{"id":"12","type":"next","payload":}`,
		`{"id":"12","type":"next"}`,
		`{"id":"","type":"next","payload":{"data":{}}}`,
		`{"id":"12`,
		`{"id":"`,
		``,
		`null`,
	} {
		if id, payload, ok := scanNext([]byte(other)); ok {
			t.Errorf("scanNext(%s) = %q, %q: want no event", other, id, payload)
		}
	}
	for msg, typ := range map[string]string{`{"type":"ping"}`: "ping", `{"id":"1","type":"complete"}`: "complete", `{"id":"1"}`: "", `{"type":"pi`: ""} {
		if got := messageType([]byte(msg)); got != typ {
			t.Errorf("messageType(%s) = %q, want %q", msg, got, typ)
		}
	}
}
