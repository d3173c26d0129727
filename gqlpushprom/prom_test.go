package gqlpushprom_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushprom"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := gqlpushprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gqlpushprom.New(reg); err == nil {
		t.Fatal("registering twice succeeded")
	}
	up := gqlpushtest.NewServer(nil)
	defer up.Close()
	op, err := gqlpush.ParseOperation("Count", `subscription ($from: Int! = 3) { gql_countdown(from: $from) }`)
	if err != nil {
		t.Fatal(err)
	}
	live, err := gqlpush.ParseOperation("Live", `subscription { gql_messageCreated { id } }`)
	if err != nil {
		t.Fatal(err)
	}
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: []*gqlpush.Operation{op, live},
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
		Observer:   m.Observer(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/Count?wg_sse")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/Live?wg_sse", nil)
	liveResp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer liveResp.Body.Close()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}

	want := `
# HELP gqlpush_frames_delivered_total Frames written to clients.
# TYPE gqlpush_frames_delivered_total counter
gqlpush_frames_delivered_total{operation="Count"} 3
# HELP gqlpush_streams_active Client streams open now.
# TYPE gqlpush_streams_active gauge
gqlpush_streams_active{operation="Count"} 0
gqlpush_streams_active{operation="Live"} 1
# HELP gqlpush_streams_closed_total Client streams ended, by why.
# TYPE gqlpush_streams_closed_total counter
gqlpush_streams_closed_total{operation="Count",reason="complete"} 1
# HELP gqlpush_subscriptions_active Shared upstream subscriptions running now.
# TYPE gqlpush_subscriptions_active gauge
gqlpush_subscriptions_active{operation="Count"} 0
gqlpush_subscriptions_active{operation="Live"} 1
# HELP gqlpush_upstream_connections_active Upstream connections up now.
# TYPE gqlpush_upstream_connections_active gauge
gqlpush_upstream_connections_active{upstream="gql"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gqlpush_frames_delivered_total", "gqlpush_streams_active", "gqlpush_streams_closed_total",
		"gqlpush_subscriptions_active", "gqlpush_upstream_connections_active"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "gqlpush_fanout_latency_seconds"); n != 1 {
		t.Errorf("latency histogram: %d series", n)
	}

	up.CloseConnections()
	if _, err := up.WaitMatches(ctx, 3, func(m gqlpushtest.Message) bool { return m.Type == "subscribe" }); err != nil {
		t.Fatalf("no resubscribe: %v", err)
	}
	want = `
# HELP gqlpush_upstream_connections_active Upstream connections up now.
# TYPE gqlpush_upstream_connections_active gauge
gqlpush_upstream_connections_active{upstream="gql"} 1
# HELP gqlpush_upstream_losses_total Upstream connections lost (not closed on purpose).
# TYPE gqlpush_upstream_losses_total counter
gqlpush_upstream_losses_total{upstream="gql"} 1
# HELP gqlpush_upstream_reconnects_total Upstream connections that came up after a loss or failed dials.
# TYPE gqlpush_upstream_reconnects_total counter
gqlpush_upstream_reconnects_total{upstream="gql"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gqlpush_upstream_connections_active", "gqlpush_upstream_losses_total", "gqlpush_upstream_reconnects_total"); err != nil {
		t.Error(err)
	}
	liveResp.Body.Close()
	cancel()
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP gqlpush_streams_active Client streams open now.
# TYPE gqlpush_streams_active gauge
gqlpush_streams_active{operation="Count"} 0
gqlpush_streams_active{operation="Live"} 0
# HELP gqlpush_subscriptions_active Shared upstream subscriptions running now.
# TYPE gqlpush_subscriptions_active gauge
gqlpush_subscriptions_active{operation="Count"} 0
gqlpush_subscriptions_active{operation="Live"} 0
# HELP gqlpush_upstream_connections_active Upstream connections up now.
# TYPE gqlpush_upstream_connections_active gauge
gqlpush_upstream_connections_active{upstream="gql"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gqlpush_streams_active", "gqlpush_subscriptions_active", "gqlpush_upstream_connections_active"); err != nil {
		t.Errorf("after Close: %v", err)
	}
}

func TestClusterMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := gqlpushprom.NewWith(reg, prometheus.Labels{"gateway": "a"})
	if err != nil {
		t.Fatal(err)
	}
	o := m.Observer()
	o.ClusterKeyTaken("Live", false)
	o.ClusterKeyTaken("Live", true)
	o.ClusterKeyTaken("Count", false)
	o.ClusterKeyReleased("Live", false)
	o.ClusterKeyReleased("Count", true)
	o.ClusterError("Live", io.ErrUnexpectedEOF)
	o.ClusterError("Live", io.ErrUnexpectedEOF)
	o.ClusterLag("Live", 100*time.Microsecond)
	o.ClusterLag("Live", 3*time.Millisecond)
	o.ClusterLag("Live", 5*time.Second)
	o.ClusterLag("Count", -time.Millisecond) // a clock behind the publisher's

	want := `
# HELP gqlpush_cluster_errors_total Results that could not be published to the cluster's stream.
# TYPE gqlpush_cluster_errors_total counter
gqlpush_cluster_errors_total{gateway="a",operation="Live"} 2
# HELP gqlpush_cluster_keys_owned Subscription keys this instance owns in the cluster now.
# TYPE gqlpush_cluster_keys_owned gauge
gqlpush_cluster_keys_owned{gateway="a",operation="Count"} 0
gqlpush_cluster_keys_owned{gateway="a",operation="Live"} 1
# HELP gqlpush_cluster_keys_released_total Subscription keys this instance stopped owning, by whether another instance took them or their lease could not be renewed.
# TYPE gqlpush_cluster_keys_released_total counter
gqlpush_cluster_keys_released_total{gateway="a",lost="false",operation="Live"} 1
gqlpush_cluster_keys_released_total{gateway="a",lost="true",operation="Count"} 1
# HELP gqlpush_cluster_keys_taken_total Subscription keys this instance became the owner of, by whether their owner before had not given them up.
# TYPE gqlpush_cluster_keys_taken_total counter
gqlpush_cluster_keys_taken_total{failover="false",gateway="a",operation="Count"} 1
gqlpush_cluster_keys_taken_total{failover="false",gateway="a",operation="Live"} 1
gqlpush_cluster_keys_taken_total{failover="true",gateway="a",operation="Live"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gqlpush_cluster_errors_total", "gqlpush_cluster_keys_owned",
		"gqlpush_cluster_keys_released_total", "gqlpush_cluster_keys_taken_total"); err != nil {
		t.Error(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	lags := map[string]struct {
		count uint64
		sum   float64
		inf   bool // the largest observation is above the last bucket
	}{"Live": {3, 5.0031, true}, "Count": {1, 0, false}}
	found := 0
	for _, mf := range mfs {
		if mf.GetName() != "gqlpush_cluster_lag_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			var op string
			for _, l := range s.GetLabel() {
				if l.GetName() == "operation" {
					op = l.GetValue()
				}
			}
			w, ok := lags[op]
			if !ok {
				t.Errorf("lag of unexpected operation %q", op)
				continue
			}
			found++
			h := s.GetHistogram()
			if h.GetSampleCount() != w.count || h.GetSampleSum() < w.sum-1e-9 || h.GetSampleSum() > w.sum+1e-9 {
				t.Errorf("lag of %s: count %d, sum %g; want %d, %g", op, h.GetSampleCount(), h.GetSampleSum(), w.count, w.sum)
			}
			b := h.GetBucket()
			if first, last := b[0].GetUpperBound(), b[len(b)-1].GetUpperBound(); first != 50e-6 || last < 1.9 || last > 2.1 {
				t.Errorf("lag buckets %g .. %g", first, last)
			}
			if below := b[len(b)-1].GetCumulativeCount(); (below < w.count) != w.inf {
				t.Errorf("lag of %s: %d of %d in the last bucket", op, below, w.count)
			}
			if op == "Count" && b[0].GetCumulativeCount() != 1 {
				t.Errorf("negative lag not in the first bucket")
			}
		}
	}
	if found != len(lags) {
		t.Errorf("lag histogram: %d series, want %d", found, len(lags))
	}
}
