// Command loadgen measures a gqlpush gateway under load: many SSE clients on
// persisted subscription operations (or a live query), an upstream that
// stamps each event, and the gateway's own CPU and memory read from /proc.
// It runs on loopback only, on Linux.
//
//	go run ./examples/loadgen -scenario fanout [-clients N] [-rate R] [-duration D] [-warmup D] [-check] [-json]
//
// Scenarios, each one command, with defaults that match the performance
// issue (every flag overrides; go run ./examples/loadgen -h lists them):
//
//	fanout         1,000 clients on one operation, upstream 10 events/s (10,000 delivered/s)
//	saturate       1,000 clients on one operation, the upstream rate ×1.5 per step until delivery falls behind
//	distinct       1,000 clients each with its own variables, 10 events/s each
//	idle           10,000 clients, heartbeats only
//	stall          100 clients, 100 events/s, measured without and then with 1 client that never reads
//	churn          20,000 connect → first frame → disconnect cycles, 50 at a time; then the
//	               gateway's goroutines, RSS and the upstream's subscriptions against their baseline
//	nats-fanout    fanout with a NATS upstream: one subject feeds the operation
//	nats-distinct  distinct with a NATS upstream: a subject per client
//	cluster        fanout, then the same clients and rate spread over 3 gateways
//	               that act as one gqlpush cluster on NATS JetStream
//	live           1,000 clients on one live query polled every 100 ms, the
//	               chat posted into 20 times a second: one poller upstream
//	               at 10 queries/s whatever the clients, 10 results/s each
//	floor          fanout's clients and rate on no gateway: a bare loop that
//	               writes each frame to every connection, in two modes
//	idle-max       heartbeat-only streams on one gateway process, as many as
//	               its open files limit leaves room for; then 50 more, to
//	               show the limit that stops them
//	idle-100k      100,000 heartbeat-only streams over 6 gateway processes
//	fanout-100k    100,000 clients over 6 gateway processes, on Room with
//	               100 rooms, a result every 2 s in each (50,000 delivered/s)
//
// -floor (fanout, nats-fanout, distinct, nats-distinct, cluster) runs a
// floor first in the same invocation: floor's, or for distinct and
// nats-distinct the distinct floors (below).
//
// # What runs where
//
// By default loadgen starts both ends itself. The upstream is an in-process
// gqlpushtest server that loadgen publishes into. The gateway is this
// program run again as a child process (loadgen gateway -upstream URL), so
// that the CPU and memory read from /proc are the gateway's alone; it serves
// the operations Sub, Room and Live (see gateway.go) at /operations/, and its pid,
// goroutines, stream counts, drops and memory at /debug/goroutines. It exits
// when loadgen closes its stdin, so it never outlives loadgen.
//
// The nats- scenarios are the same scenarios with a NATS upstream: loadgen
// starts a NATS server in process instead (core NATS, no JetStream) and
// publishes the same chat messages on it, a subject per room, flushed once
// per tick; the child gateway (loadgen gateway -nats URL) serves NatsSub and
// NatsRoom, which select the same fields as Sub and Room. Subscriptions on
// the upstream are counted on the NATS server.
//
// The cluster scenario first runs fanout as above, then stops that gateway
// and starts a NATS server with JetStream in process (its store in a
// temporary directory, removed at the end) and -cluster-size child gateways
// (loadgen gateway -upstream URL -cluster nats://… -cluster-name loadgen
// -cluster-instance gN), on the same in-process upstream. The clients are
// spread round robin over the gateways, all on Sub: one gateway, the key's
// owner, subscribes upstream and publishes each result into the cluster's
// stream, and every gateway reads the stream for its own clients. The
// report has a window for each phase: the cluster's CPU and RSS are summed
// over its gateways, and each gateway's own figures follow. The upstream
// must have run one subscription, and received one subscribe, in the
// cluster phase (a check). The NATS server runs in loadgen's process: its
// CPU counts in loadgen's, not in the gateways'.
//
// The live scenario follows the query operation Live, the chat's message
// count, with wg_live: the child gateway (loadgen gateway -upstream URL
// -live-interval D) polls it over GraphQL over HTTP, one poller for every
// client, and pushes a result each time the count changed. loadgen posts
// into the chat as for fanout, by default twice per interval, so that every
// poll finds a new message whatever the phase between the two clocks: each
// client then gets one result per poll. (With one post per interval, a poll
// that comes just before a post finds nothing new, and the next finds two.)
// The upstream's query requests are counted on the in-process upstream
// (gqlpushtest's Server.Queries) over the window, and the gateway's keys at
// its /debug/goroutines: one key is one poller. The chat counts its last
// gqlpushtest.MaxHistory messages only: a run posts fewer than that.
//
// -gateway URL targets a gateway already running, which must serve Sub,
// Room and Live (NatsSub and NatsRoom for the nats- scenarios) as the child
// does; its CPU and RSS are read for -gateway-pid, or for the pid its
// /debug/goroutines reports (loadgen gateway -listen ADDR -exit-on-eof=false
// runs one by hand). Point it at the in-process upstream with
// -upstream-listen. -upstream URL targets a GraphQL upstream already
// running: loadgen then does not publish, and reports what it can.
//
// # At scale: several gateways, several clients processes
//
// A process may hold at most RLIMIT_NOFILE descriptors, and each stream is
// one for the gateway and one for its client. idle-max, idle-100k and
// fanout-100k therefore run -gateways gateway processes (loadgen gateway,
// as above: independent instances on the one in-process upstream, each its
// own /proc figures, and their sum) and clients processes (loadgen
// clients, clientproc.go) of at most -clients-per-proc clients each. Each
// clients process connects from a loopback address of its own (127.0.0.2,
// 127.0.0.3, …), with IP_BIND_ADDRESS_NO_PORT so that its ports are
// picked per destination; client i of the run connects to gateway
// i mod -gateways and, in fanout-100k, follows room
// r((i / -gateways) mod -rooms), so that every gateway holds every room.
// Before anything starts, loadgen checks the plan against the machine:
// the open files limit (hard, which the children inherit) against the
// clients per process and the streams per gateway, the ephemeral port range
// against one process's connections to one gateway, and the accept queue
// (somaxconn, tcp_max_syn_backlog) against the opens in flight, and
// refuses with what to change. The gateways set no stream caps.
//
// The clients open in steps (-steps, then -clients): each clients process
// starts -ramp clients per -ramp-every, with at most -ramp-inflight between
// their dial and their response head, which keeps the gateways' accept
// queues from overflowing. At each step, once every client is open and
// -warmup has passed, loadgen reads the gateways' RSS, live heap, stacks,
// goroutines and descriptors: memory per stream is the growth over the
// gateways at rest, per stream. Then one window: heartbeats only, or
// fanout-100k's results, whose latencies each clients process records in
// its own histogram and loadgen adds up bucket by bucket. The window has
// the gateways' CPU, summed and each one's, the clients processes' CPU,
// and the gateways' garbage collection over it: cycles, CPU, and the
// stop-the-world pauses from runtime/metrics (/sched/pauses/total/gc:seconds,
// the same samples as /gc/pauses:seconds) served at /debug/goroutines,
// their quantiles read as bucket bounds. idle-max takes its count from its
// gateway's limit (minus what it holds at rest, minus a headroom for its
// upstream connection and debug requests), then opens -probe clients more
// and reports how many failed and why, and the descriptors the gateway
// held: the limit hit. -gateway-max-files lowers the gateways' limit, to
// reach it with fewer clients. -gateway-heapprofile has each gateway write
// its heap profile after the window, its streams still open.
//
// # The floor
//
// The floor scenario tells what fan-out costs at the least on this
// machine, so that figures from machines of all kinds and loads compare:
// fanout's clients, connection count and rate, on a child process (loadgen
// floor, floor.go) that answers each SSE request as gqlpush does over
// HTTP/1.1 (200, text/event-stream, the connection taken over, chunks) and
// then, at the rate, writes one frame of the shape and size of a fanout
// result to every connection, one write each. It has two modes, a window
// each: turn, one goroutine writing to each connection in turn, and own,
// each connection's goroutine writing when woken. Each window has the
// server's CPU per delivered frame, the clients' latency as for fanout, and
// the round time: from the tick to the last write of the frame to every
// connection. With -floor, fanout (or nats-fanout) runs the floor first,
// with its own clients, then its own window, and reports its CPU per
// delivered event, p50 and p99 also as ratios to each mode's: the gateway's
// cost over the machine's floor, measured minutes apart.
//
// cluster -floor runs the same floor (fanout's clients and rate) first, and
// reports the ratios of both its windows: fanout on one gateway, and the
// cluster, whose CPU per delivered event is its gateways' summed over every
// client's events (the NATS server's CPU, in loadgen's process, is not in
// it). In JSON the first window's ratios are in the floor's modes, as for
// fanout (against names the window), and the cluster's in also: one entry
// per further window, {against, modes: [{mode, cpu_per_event_ratio,
// p50_ratio, p99_ratio}]}.
//
// fanout -proto h2 (or h2c) -floor runs the floor with HTTP/1.1 clients, its
// one protocol, and the scenario with HTTP/2 ones: the ratios then tell what
// HTTP/2 fan-out costs over the machine's HTTP/1.1 floor. The report's floor
// records its clients' protocol (protocol.name, HTTP/1.1) beside the
// scenario's.
//
// distinct -floor runs the distinct floor first: the same child process
// (loadgen floor -upstream URL) that also reads one upstream WebSocket
// message per event, the least any gateway must do per event. It ticks no
// rounds: for each SSE request it subscribes to the request's room on the
// in-process upstream, over graphql-transport-ws, on one WebSocket for all
// (as the gateway has), with the very subscribe gqlpush sends for Room, and
// writes each next message's payload to its connection as one chunk. In
// turn mode the WebSocket's reader writes each event itself; in own mode it
// hands it to the connection's goroutine, and a connection whose goroutine
// still writes the last one drops it (counted). Its clients are distinct's,
// each on its own room; once the upstream runs their subscriptions, the
// publisher posts at distinct's rate. Each window has the write time, from
// the upstream message read to its write's return, in place of the round
// time. Then the publisher pauses, its rooms' sequence numbers start again
// from 0, the floor's clients close and the floor completes their
// subscriptions, and distinct starts once the upstream runs none: as it
// would have without the floor. It needs the in-process upstream over
// graphql-transport-ws: no -upstream, no -upstream-protocol graphql-sse.
//
// nats-distinct -floor runs its NATS twin first (loadgen floor -nats URL,
// on the in-process NATS server the gateway is given): for each SSE request
// it subscribes to the room's subject (rooms.<room>, as the gateway does
// for NatsRoom), a core subscription on one NATS connection for all, every
// subscription delivering into one channel that one goroutine reads, and
// writes each message as one chunk whose data is
// {"data":{"nats_messageCreated":<the message's payload>}}. The payload
// goes out as it came: the floor does not complete it through NatsRoom's
// selection set as the gateway does, and loadgen's payloads carry room
// besides id, content and sentAt, which the floor's frames keep and the
// gateway's drop. Its modes, windows, write times and the wait for its
// subscriptions to end (counted on the NATS server) are the distinct
// floor's; messages nats.go drops, its channel full (a slow consumer), are
// counted as skipped.
//
// # A graphql-sse upstream
//
// -upstream-protocol graphql-sse has the child gateway subscribe to the
// same in-process upstream over GraphQL over SSE (gqlpushtest serves both
// at one path): loadgen gateway -upstream http://…, one HTTP request per
// upstream subscription instead of one WebSocket for all. fanout then
// holds one such request, distinct one per client.
//
// # HTTP/2
//
// -proto h2 runs a scenario over HTTP/2 over TLS: loadgen makes a
// self-signed ECDSA certificate at start (in a temporary directory, removed
// at the end), the child gateway serves it (loadgen gateway -tls-cert FILE
// -tls-key FILE) and the clients trust it. -proto h2c runs it over
// cleartext HTTP/2 with prior knowledge (loadgen gateway -h2c). The child
// still speaks HTTP/1.1 besides, for its debug endpoints. HTTP/2 carries
// many streams on one connection: client i runs on connection
// i / -h2-streams (100 by default, as browsers and most servers allow), so
// 10,000 idle clients are 100 connections and fanout's 1,000 are 10. At
// most 250 streams share one, net/http's server's MaxConcurrentStreams,
// which the child keeps: more would wait for a slot. The report's header
// says which protocol ran, over how many connections, and the limit the
// gateway's SETTINGS announced. Over HTTP/1.x gqlpush takes each
// connection over from net/http; over HTTP/2 its streams run through the
// ResponseWriter, which is what these runs measure. stall, churn and
// cluster run over HTTP/1.1 only. With -floor (fanout, nats-fanout), the
// floor's clients still run over HTTP/1.1 (see The floor).
//
// # What is measured
//
// Clients are raw HTTP/1.1 connections, one goroutine each, ramped (over
// HTTP/2, streams of net/http's client connections, one goroutine each). Each
// event's content is its room's sequence number, so a client counts what
// was lost and what came out of order; latency is the client's read time
// minus the upstream's sentAt stamp, on the same clock. A live query's
// result is a count, not a message: its latency is the client's read time
// minus the time the newest message it counts was posted, so it includes
// the wait for the next poll, up to the interval; -gateway-latency tells
// the gateway's own part, from the poll's answer to the write. Events and
// latencies count inside the measurement window only, after the warmup;
// loss counts the whole run, after a drain (for live: the posts each client's
// last count falls short of the final one; counts skipped between two polls
// are not lost, and a count not above the last is out of order). CPU is utime + stime of
// /proc/<pid>/stat (one clock tick, 10 ms, of resolution: windows of
// seconds), per delivered event; RSS is VmRSS.
//
// loadgen's clients and upstream share the machine with the gateway: on a
// small machine their CPU competes with the gateway's and adds to latency.
// Each window reports loadgen's own CPU, and the machine's busy cores from
// /proc/stat; what is left is other processes, a sign of a noisy run. That
// figure comes from the kernel's tick sampling, which misses short bursts
// woken by timers: it is indicative, and often low under light load.
//
// With -check, the figures are compared with the targets (checks.go):
// PASS or FAIL each, and exit status 1 on any FAIL. The report goes to
// stdout (JSON with -json); progress goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

func main() {
	if code, ok := childCommand(os.Args, os.Stdin, os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the command line, with the scenario's defaults filled in.
type config struct {
	scenario  string
	clients   int
	rate      float64
	duration  time.Duration
	warmup    time.Duration
	check     bool
	json      bool
	timeout   time.Duration
	ramp      int
	rampEvery time.Duration
	settle    time.Duration

	proto     string // h1, h2 or h2c
	h2Streams int    // streams per HTTP/2 client connection

	gatewayURL     string
	gatewayPID     int
	upstreamURL    string
	upstreamListen string
	upstreamSSE    bool // the gateway subscribes to the in-process upstream over graphql-sse
	heartbeat      time.Duration
	verbose        bool
	cpuProfile     string
	gatewayLatency bool
	gatewaySndbuf  int
	gatewayProfile string

	factor  float64 // saturate
	maxRate float64

	stalled int // stall
	rcvbuf  int

	cycles       int // churn
	warmupCycles int
	concurrency  int
	churnVars    string

	clusterSize int // cluster

	liveInterval time.Duration // live

	floor bool // fanout, nats-fanout, distinct, nats-distinct, cluster: run the floor first, and compare

	// idle-max, idle-100k, fanout-100k: several gateway processes and
	// several clients processes (scale.go).
	gateways        int
	clientProcs     int // 0: as few as clientsPerProc allows
	clientsPerProc  int
	inflight        int // per clients process
	rooms           int
	steps           []int
	probe           int
	openTimeout     time.Duration
	gatewayFiles    int
	gatewayHeapProf string
}

// scenarioDefaults are the sizes. A nats- scenario's are those of
// the scenario it runs on a NATS upstream.
func scenarioDefaults(name string) (config, bool) {
	switch name {
	case "fanout", "nats-fanout", "floor":
		return config{clients: 1000, rate: 10, warmup: 3 * time.Second, duration: 10 * time.Second}, true
	case "cluster":
		return config{clients: 1000, rate: 10, warmup: 3 * time.Second, duration: 10 * time.Second, clusterSize: 3}, true
	case "saturate":
		return config{clients: 1000, rate: 20, warmup: time.Second, duration: 5 * time.Second, factor: 1.5, maxRate: 5000}, true
	case "distinct", "nats-distinct":
		return config{clients: 1000, rate: 10, warmup: 3 * time.Second, duration: 10 * time.Second}, true
	case "idle":
		return config{clients: 10000, warmup: 2 * time.Second, duration: 20 * time.Second}, true
	case "stall":
		return config{clients: 100, rate: 100, warmup: 2 * time.Second, duration: 15 * time.Second, stalled: 1, rcvbuf: 4096}, true
	case "churn":
		return config{cycles: 20000, warmupCycles: 1000, concurrency: 50, churnVars: "distinct"}, true
	case "live":
		return config{clients: 1000, rate: 20, warmup: 3 * time.Second, duration: 10 * time.Second, liveInterval: 100 * time.Millisecond}, true
	case "idle-max":
		// No clients: as many as the gateway's open files limit allows.
		return config{gateways: 1, steps: []int{1000, 10000}, probe: 50, warmup: 3 * time.Second, duration: 20 * time.Second, timeout: 15 * time.Minute}, true
	case "idle-100k":
		return config{clients: 100_000, gateways: 6, warmup: 3 * time.Second, duration: 20 * time.Second, timeout: 15 * time.Minute}, true
	case "fanout-100k":
		return config{clients: 100_000, gateways: 6, rooms: 100, rate: 0.5, warmup: 6 * time.Second, duration: 20 * time.Second, timeout: 15 * time.Minute}, true
	}
	return config{}, false
}

// maxLivePosts bounds the posts of a live run, with room for those made
// before and after the window.
const maxLivePosts = gqlpushtest.MaxHistory * 9 / 10

// natsPrefix marks a scenario run on a NATS upstream.
const natsPrefix = "nats-"

// base is the scenario whatever its upstream: fanout for nats-fanout.
func (c *config) base() string { return strings.TrimPrefix(c.scenario, natsPrefix) }

// nats reports a scenario on a NATS upstream.
func (c *config) nats() bool { return strings.HasPrefix(c.scenario, natsPrefix) }

// operations names the scenario's shared operation and its per-room one.
func (c *config) operations() (shared, room string) {
	if c.nats() {
		return "NatsSub", "NatsRoom"
	}
	return "Sub", "Room"
}

const scenarioNames = "fanout, saturate, distinct, idle, stall, churn, cluster, live, floor, idle-max, idle-100k, fanout-100k, nats-fanout or nats-distinct"

const usageHead = `usage: loadgen -scenario NAME [flags]

Scenarios (defaults in brackets; 0 for a flag means the scenario's default):
  fanout         [-clients 1000 -rate 10 -warmup 3s -duration 10s]
  saturate       [-clients 1000 -rate 20 -factor 1.5 -max-rate 5000 -warmup 1s -duration 5s]
                 -rate is the first step, -warmup the settling time and -duration
                 the window of each step
  distinct       [-clients 1000 -rate 10 -warmup 3s -duration 10s]  -rate per client
  idle           [-clients 10000 -warmup 2s -duration 20s]  -duration is the hold
  stall          [-clients 100 -rate 100 -stalled 1 -rcvbuf 4096 -warmup 2s -duration 15s]
                 each of the two phases
  churn          [-cycles 20000 -warmup-cycles 1000 -concurrency 50 -churn-vars distinct]
  nats-fanout    as fanout, on a NATS upstream (an in-process NATS server)
  nats-distinct  as distinct, on a NATS upstream: a subject per client
  cluster        [-clients 1000 -rate 10 -warmup 3s -duration 10s -cluster-size 3]
                 fanout on one gateway, then the same clients spread over
                 -cluster-size gateways in one cluster (in-process NATS JetStream)
  live           [-clients 1000 -rate 20 -live-interval 100ms -warmup 3s -duration 10s]
                 the live query Live (the chat's message count), polled by the
                 gateway every -live-interval while the chat gets -rate posts/s
  floor          [-clients 1000 -rate 10 -warmup 3s -duration 10s]
                 fanout's clients and rate on a bare loop that writes each frame
                 to every connection (no gateway), a window in each of its modes:
                 turn (one goroutine writes to each connection in turn) and own
                 (each connection's goroutine writes when woken)

  idle-max       [-gateways 1 -steps 1000,10000 -probe 50 -warmup 3s -duration 20s]
                 heartbeat-only streams on one gateway up to its open files
                 limit (-clients 0), memory per stream at each step, a hold,
                 then -probe clients more to show the limit
  idle-100k      [-clients 100000 -gateways 6 -warmup 3s -duration 20s]
                 heartbeat-only streams over -gateways gateway processes
  fanout-100k    [-clients 100000 -gateways 6 -rooms 100 -rate 0.5 -warmup 6s -duration 20s]
                 clients on Room, -rooms rooms, -rate results/s each room:
                 50,000 delivered/s
  The last three spread the clients over clients processes of at most
  -clients-per-proc each [18000], each from a loopback address of its own
  (127.0.0.2, …), opening at -ramp per -ramp-every each, with at most
  -ramp-inflight opens in flight each [100]. Their -timeout is 15m.

-floor (fanout, nats-fanout, distinct, nats-distinct, cluster) runs the
floor first, and reports the scenario's CPU per event, p50 and p99 also as
ratios to the floor's; cluster's both windows, fanout's and the cluster's.
distinct's floor also reads the upstream: one WebSocket to the in-process
upstream (not with -upstream or -upstream-protocol graphql-sse), a
subscription per client, each event written to its client; nats-distinct's,
one connection to the in-process NATS server, a subject's subscription per
client, each message written to its client, wrapped but not completed. The
floor speaks HTTP/1.1 only: with fanout -proto h2 or h2c, its clients run
over HTTP/1.1 and the scenario's over HTTP/2 (not for distinct or
nats-distinct, nor for -scenario floor itself).

-proto h2 or h2c runs a scenario over HTTP/2 (not stall, churn, cluster):
-h2-streams clients share each connection [100].

Flags:
`

// parseConfig reads the command line.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	var upstreamProtocol string
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.scenario, "scenario", "", scenarioNames+" (required)")
	fs.IntVar(&c.clients, "clients", 0, "SSE clients")
	fs.Float64Var(&c.rate, "rate", 0, "upstream events per second, per operation (per room for distinct)")
	fs.DurationVar(&c.duration, "duration", 0, "measurement window")
	fs.DurationVar(&c.warmup, "warmup", 0, "time between the clients being subscribed (or a rate change) and the window")
	fs.BoolVar(&c.check, "check", false, "compare the figures with the targets; exit 1 on any FAIL")
	fs.BoolVar(&c.json, "json", false, "write the report as JSON")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	fs.StringVar(&c.proto, "proto", protoH1, "how clients reach the child gateway: h1 (HTTP/1.1, a connection per client), h2 (HTTP/2 over TLS, with a self-signed certificate loadgen makes) or h2c (HTTP/2 in cleartext); not for stall, churn and cluster")
	fs.IntVar(&c.h2Streams, "h2-streams", defaultH2Streams, fmt.Sprintf("with -proto h2 or h2c: client streams per HTTP/2 connection (at most %d, net/http's server's MaxConcurrentStreams)", maxH2Streams))
	fs.IntVar(&c.ramp, "ramp", 200, "clients started per ramp step")
	fs.DurationVar(&c.rampEvery, "ramp-every", 100*time.Millisecond, "ramp step interval")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "bound on each wait for the gateway to settle (subscriptions, goroutines)")
	fs.StringVar(&c.gatewayURL, "gateway", "", "target this running gateway (`URL` http://127.0.0.1:PORT) instead of starting one")
	fs.IntVar(&c.gatewayPID, "gateway-pid", 0, "`PID` of the -gateway process, for its CPU and RSS (default: asked at its /debug/goroutines)")
	fs.StringVar(&c.upstreamURL, "upstream", "", "target this running GraphQL upstream (`URL` ws://…) instead of the in-process one; loadgen then does not publish (not for the nats- scenarios)")
	fs.StringVar(&c.upstreamListen, "upstream-listen", "", "listen `address` of the in-process upstream (needed with -gateway: point the gateway at ws://ADDRESS/graphql, or at nats://ADDRESS for the nats- scenarios)")
	fs.StringVar(&upstreamProtocol, "upstream-protocol", "graphql-transport-ws", "how the child gateway subscribes to the in-process upstream: graphql-transport-ws, or graphql-sse (GraphQL over SSE, one HTTP request per upstream subscription); not for the nats- scenarios")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "the child gateway's SSE heartbeat")
	fs.BoolVar(&c.verbose, "v", false, "the child gateway logs gqlpush's events to stderr")
	fs.BoolVar(&c.gatewayLatency, "gateway-latency", false, "the child gateway also records the latency gqlpush's Observer reports (upstream message to the end of the write to the client): it tells the gateway's share of the end-to-end latency, at the price of a histogram update per write")
	fs.StringVar(&c.gatewayProfile, "gateway-cpuprofile", "", "the child gateway writes its CPU profile to `file` (where the gateway's time goes); the cluster's gateways to file.g1, file.g2, …")
	fs.IntVar(&c.gatewaySndbuf, "gateway-sndbuf", 0, "the child gateway fixes SO_SNDBUF of its client connections to `bytes` (0: the kernel autotunes it, up to tcp_wmem's maximum)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write loadgen's own CPU profile to `file` (clients, upstream, publisher: what loadgen costs the machine)")
	fs.Float64Var(&c.factor, "factor", 0, "saturate: rate factor per step")
	fs.Float64Var(&c.maxRate, "max-rate", 0, "saturate: stop stepping above this upstream rate")
	fs.IntVar(&c.stalled, "stalled", 0, "stall: clients that never read")
	fs.IntVar(&c.rcvbuf, "rcvbuf", 0, "stall: SO_RCVBUF of a stalled client, in bytes")
	fs.IntVar(&c.cycles, "cycles", 0, "churn: subscribe/unsubscribe cycles measured")
	fs.IntVar(&c.warmupCycles, "warmup-cycles", 0, "churn: cycles before the baseline is taken (-1: none)")
	fs.IntVar(&c.concurrency, "concurrency", 0, "churn: cycles at once")
	fs.StringVar(&c.churnVars, "churn-vars", "", "churn: distinct (a room per cycle: an upstream subscribe and complete each) or shared (one operation)")
	fs.IntVar(&c.clusterSize, "cluster-size", 0, "cluster: gateways in the cluster")
	fs.BoolVar(&c.floor, "floor", false, "fanout, nats-fanout, distinct, nats-distinct, cluster: first run a floor's two windows, with the same clients and rate, and report the scenario's CPU per event, p50 and p99 also as ratios to each (cluster: both its windows; distinct's floor also reads each event from one upstream WebSocket, as the gateway does, and nats-distinct's each message from one NATS connection; with -proto h2 or h2c, fanout's floor still runs its clients over HTTP/1.1)")
	fs.DurationVar(&c.liveInterval, "live-interval", 0, "live: the child gateway's Config.LivePollInterval (with -gateway: the interval that gateway polls at, for -check)")
	fs.IntVar(&c.gateways, "gateways", 0, "idle-max, idle-100k, fanout-100k: gateway processes, independent instances; client i connects to gateway i mod n")
	fs.IntVar(&c.clientProcs, "client-procs", 0, "idle-max, idle-100k, fanout-100k: clients processes (0: as few as -clients-per-proc allows)")
	fs.IntVar(&c.clientsPerProc, "clients-per-proc", defaultClientsPerProc, "idle-max, idle-100k, fanout-100k: clients per clients process, at most (each a descriptor: under the open files limit)")
	fs.IntVar(&c.inflight, "ramp-inflight", 100, "idle-max, idle-100k, fanout-100k: clients of each clients process between their dial and their response head, at most")
	fs.IntVar(&c.rooms, "rooms", 0, "fanout-100k: rooms (operations' keys: Room with room r0, r1, …), the clients spread evenly")
	var steps string
	fs.StringVar(&steps, "steps", "", "idle-max, idle-100k, fanout-100k: stream counts below -clients at which memory is read on the way up, comma-separated (idle-max: 1000,10000)")
	fs.IntVar(&c.probe, "probe", 0, "idle-max: clients opened past the maximum, to show the limit that stops them")
	fs.DurationVar(&c.openTimeout, "open-timeout", headTimeout, "idle-max, idle-100k, fanout-100k: bound on a client's dial and on its response head")
	fs.IntVar(&c.gatewayFiles, "gateway-max-files", 0, "the child gateways lower their open files limit to `n` (0: keep the inherited one)")
	fs.StringVar(&c.gatewayHeapProf, "gateway-heapprofile", "", "idle-max, idle-100k, fanout-100k: each gateway writes its heap profile to `file` after the window, streams still open; several gateways to file.g1, file.g2, …")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	timeoutSet, stepsSet := false, false
	fs.Visit(func(f *flag.Flag) {
		timeoutSet = timeoutSet || f.Name == "timeout"
		stepsSet = stepsSet || f.Name == "steps"
	})
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch upstreamProtocol {
	case "graphql-transport-ws":
	case "graphql-sse":
		c.upstreamSSE = true
	default:
		return c, fmt.Errorf("-upstream-protocol %q: graphql-transport-ws or graphql-sse", upstreamProtocol)
	}
	d, ok := scenarioDefaults(c.scenario)
	if !ok {
		fs.Usage()
		return c, fmt.Errorf("-scenario must be %s, not %q", scenarioNames, c.scenario)
	}
	orInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orInt(&c.clients, d.clients)
	orInt(&c.stalled, d.stalled)
	orInt(&c.rcvbuf, d.rcvbuf)
	orInt(&c.cycles, d.cycles)
	orInt(&c.warmupCycles, d.warmupCycles)
	orInt(&c.concurrency, d.concurrency)
	orInt(&c.clusterSize, d.clusterSize)
	if c.rate == 0 {
		c.rate = d.rate
	}
	if c.factor == 0 {
		c.factor = d.factor
	}
	if c.maxRate == 0 {
		c.maxRate = d.maxRate
	}
	if c.duration == 0 {
		c.duration = d.duration
	}
	if c.warmup == 0 {
		c.warmup = d.warmup
	}
	if c.churnVars == "" {
		c.churnVars = d.churnVars
	}
	if c.liveInterval == 0 {
		c.liveInterval = d.liveInterval
	}
	orInt(&c.gateways, d.gateways)
	orInt(&c.rooms, d.rooms)
	orInt(&c.probe, d.probe)
	if !timeoutSet && d.timeout > 0 {
		c.timeout = d.timeout
	}
	c.steps = d.steps
	if stepsSet {
		var err error
		if c.steps, err = parseSteps(steps); err != nil {
			return c, err
		}
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.clients < 1 && c.scenario != "churn" && c.scenario != "idle-max" {
		bad("-clients must be at least 1")
	}
	if c.scale() {
		errs = append(errs, c.validateScale()...)
	}
	switch c.base() {
	case "fanout", "saturate", "distinct", "stall", "cluster", "live", "floor", "fanout-100k":
		if c.rate <= 0 {
			bad("-rate must be positive")
		}
	}
	if c.scenario != "churn" && c.duration <= 0 {
		bad("-duration must be positive")
	}
	if c.warmup < 0 || c.timeout <= 0 || c.settle <= 0 || c.rampEvery <= 0 || c.ramp < 1 {
		bad("-warmup must not be negative; -timeout, -settle, -ramp and -ramp-every must be positive")
	}
	if c.scenario == "saturate" && (c.factor <= 1 || c.maxRate < c.rate) {
		bad("-factor must be above 1 and -max-rate at least -rate")
	}
	if c.scenario == "stall" && (c.stalled < 1 || c.rcvbuf < 1) {
		bad("-stalled and -rcvbuf must be positive")
	}
	if c.scenario == "churn" {
		if c.cycles < 1 || c.concurrency < 1 || c.warmupCycles < -1 {
			bad("-cycles and -concurrency must be positive")
		}
		if c.churnVars != "distinct" && c.churnVars != "shared" {
			bad("-churn-vars must be distinct or shared")
		}
	}
	if c.scenario == "cluster" {
		if c.clusterSize < 2 || c.clients < c.clusterSize {
			bad("-cluster-size must be at least 2, and -clients at least -cluster-size")
		}
		if c.gatewayURL != "" || c.upstreamURL != "" {
			bad("cluster starts its own gateways and upstream: no -gateway, no -upstream")
		}
	}
	if c.scenario == "live" {
		if c.liveInterval <= 0 {
			bad("-live-interval must be positive")
		}
		// Each result is the chat's message count, which counts only
		// its last MaxHistory messages: past them, it stops changing.
		if posts := c.rate * (c.warmup + c.duration).Seconds(); posts > maxLivePosts {
			bad("live: -rate × (-warmup + -duration) is %.0f posts, over %d: the chat's messageCount counts its last %d messages only",
				posts, maxLivePosts, gqlpushtest.MaxHistory)
		}
	}
	if c.floor {
		switch {
		case c.base() == "fanout", c.scenario == "cluster", c.scenario == "nats-distinct":
		case c.scenario == "distinct" && c.upstreamURL != "":
			bad("-floor: distinct's floor subscribes on the in-process upstream, which loadgen publishes into: not with -upstream (an external upstream)")
		case c.scenario == "distinct" && c.upstreamSSE:
			bad("-floor: distinct's floor reads one upstream WebSocket (graphql-transport-ws): not with -upstream-protocol graphql-sse")
		case c.scenario == "distinct":
		default:
			bad("-floor is for fanout, nats-fanout, distinct, nats-distinct and cluster, not %s", c.scenario)
		}
		// fanout's floor runs its clients over HTTP/1.1 whatever -proto:
		// its ratios then tell what HTTP/2 costs over the machine's
		// HTTP/1.1 floor. cluster's -proto is refused below.
		if c.h2() && c.base() == "distinct" {
			bad("-floor with -proto %s is for fanout and nats-fanout (their floor's clients run over HTTP/1.1): not for %s", c.proto, c.scenario)
		}
	}
	if c.scenario == "floor" {
		if c.proto != protoH1 {
			bad("the floor speaks HTTP/1.1 only: no -proto %s with -scenario floor (fanout -floor -proto %s compares HTTP/2 fan-out with it)", c.proto, c.proto)
		}
		if c.gatewayURL != "" || c.upstreamURL != "" || c.upstreamListen != "" {
			bad("floor runs no gateway and no upstream: no -gateway, -upstream or -upstream-listen")
		}
	}
	switch c.proto {
	case protoH1:
	case protoH2, protoH2C:
		switch {
		case c.scenario == "stall" || c.scenario == "churn" || c.scenario == "cluster":
			bad("-proto %s: %s runs HTTP/1.1 clients only", c.proto, c.scenario)
		case c.gatewayURL != "":
			bad("-proto %s starts its own gateway: no -gateway", c.proto)
		case c.h2Streams < 1 || c.h2Streams > maxH2Streams:
			bad("-h2-streams must be 1 to %d (net/http's server's MaxConcurrentStreams)", maxH2Streams)
		}
	default:
		bad("-proto must be h1, h2 or h2c, not %q", c.proto)
	}
	if c.gatewayPID != 0 && c.gatewayURL == "" {
		bad("-gateway-pid needs -gateway")
	}
	if c.upstreamURL != "" && c.upstreamListen != "" {
		bad("-upstream and -upstream-listen exclude each other")
	}
	switch {
	case c.upstreamSSE && (c.nats() || c.upstreamURL != "" || c.scenario == "floor"):
		bad("-upstream-protocol graphql-sse is for the in-process GraphQL upstream: not with -upstream, the nats- scenarios or floor")
	case c.nats() && c.upstreamURL != "":
		bad("-upstream is for a GraphQL upstream: the nats- scenarios run their own NATS server (with -gateway, give -upstream-listen)")
	case c.nats() && c.gatewayURL != "" && c.upstreamListen == "":
		bad("with -gateway, give -upstream-listen ADDRESS (and point the gateway at nats://ADDRESS: loadgen gateway -nats nats://ADDRESS)")
	case c.gatewayURL != "" && c.upstreamURL == "" && c.upstreamListen == "":
		bad("with -gateway, give -upstream-listen ADDRESS (and point the gateway at ws://ADDRESS/graphql) or -upstream URL")
	}
	if c.gatewayURL != "" {
		c.gatewayURL = strings.TrimRight(c.gatewayURL, "/")
		if !strings.HasPrefix(c.gatewayURL, "http://") {
			bad("-gateway must be an http:// URL")
		}
	}
	return errors.Join(errs...)
}

// run runs one scenario and writes its report; it returns the exit status:
// 0, 1 (a failure, or a FAIL with -check) or 2 (a usage error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	stderr = &syncWriter{w: stderr}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := execute(ctx, cfg, "loadgen "+strings.Join(args, " "), stderr)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		err = fmt.Errorf("-timeout %v reached: %w", cfg.timeout, err)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		err = errors.New("interrupted")
	}
	if err != nil {
		rep.Error = err.Error()
	}
	if cfg.check {
		rep.Checks = checksFor(cfg, rep)
	}
	if cfg.json {
		rep.writeJSON(stdout)
	} else {
		rep.writeText(stdout, cfg.check)
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	case cfg.check && !rep.passed():
		return 1
	}
	return 0
}
