package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// loadgen starts its gateway by running its own executable with the
	// argument "gateway"; under go test that executable is the test binary.
	if len(os.Args) > 1 && os.Args[1] == "gateway" {
		os.Exit(gatewayMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
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
		name      string
		operation string
		upstream  string // the report's upstream URL starts so
		subs      int    // upstream subscriptions during the window
	}{
		{"fanout", "Sub", "ws://", 1},
		{"distinct", "Room (a room per client)", "ws://", 5},
		{"nats-fanout", "NatsSub", "nats://", 1},
		{"nats-distinct", "NatsRoom (a subject per client)", "nats://", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{
				"-scenario", tc.name, "-clients", "5", "-rate", "20",
				"-warmup", "500ms", "-duration", "1s", "-json",
			}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit status %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
			}
			var rep report
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatalf("the report is not JSON: %v\n%s", err, &stdout)
			}
			if rep.Scenario != tc.name || rep.Params.Operation != tc.operation {
				t.Errorf("scenario %q on %q, want %q on %q", rep.Scenario, rep.Params.Operation, tc.name, tc.operation)
			}
			if !rep.Upstream.InProcess || !rep.Upstream.Publishing || !strings.HasPrefix(rep.Upstream.URL, tc.upstream) {
				t.Errorf("upstream %+v, want an in-process %s… that loadgen publishes into", rep.Upstream, tc.upstream)
			}
			if s := rep.Upstream.Subscriptions; s == nil || *s != tc.subs {
				t.Errorf("upstream subscriptions %s, want %d", ptrText(s, "%d"), tc.subs)
			}
			if len(rep.Windows) != 1 {
				t.Fatalf("%d windows, want 1:\n%s", len(rep.Windows), &stdout)
			}
			w := rep.Windows[0]
			if w.Delivered == 0 {
				t.Errorf("nothing delivered in the window:\n%s", &stdout)
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
			if !strings.Contains(stderr.String(), "gateway (child, pid") {
				t.Errorf("stderr does not tell of the child gateway:\n%s", &stderr)
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
			var stderr bytes.Buffer
			c, err := parseConfig(tc.args, &stderr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
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
	if got := codeSuffix([]byte(`{"errors":[{"extensions":{"code":"SLOW_CONSUMER"}}]}`)); got != " SLOW_CONSUMER" {
		t.Errorf("codeSuffix = %q", got)
	}
}
