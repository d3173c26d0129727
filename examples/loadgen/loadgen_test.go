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

// TestFanoutEndToEnd runs a tiny fanout: a child gateway, the in-process
// upstream, five clients. It asserts what the report says, never how fast:
// the machine may be loaded and the binary built with -race.
func TestFanoutEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway process and runs for seconds")
	}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{
		"-scenario", "fanout", "-clients", "5", "-rate", "20",
		"-warmup", "500ms", "-duration", "1s", "-json",
	}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit status %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, &stdout)
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
	if rep.Gateway.Exit != "0" {
		t.Errorf("the gateway exited with %q, want 0", rep.Gateway.Exit)
	}
	if !strings.Contains(stderr.String(), "gateway (child, pid") {
		t.Errorf("stderr does not tell of the child gateway:\n%s", &stderr)
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
