// Package gqlpushprom exports what a gqlpush.Handler does as Prometheus
// metrics. It lives apart so that the gqlpush package does not depend on
// the Prometheus client.
//
//	m, err := gqlpushprom.New(prometheus.DefaultRegisterer)
//	h, err := gqlpush.NewHandler(gqlpush.Config{..., Observer: m.Observer()})
//	http.Handle("/metrics", promhttp.Handler())
package gqlpushprom

import (
	"strconv"
	"sync"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collectors of one handler. Register them once; two
// handlers in one process need two registries, or a ConstLabel to tell them
// apart (see NewWith).
type Metrics struct {
	streams        *prometheus.GaugeVec   // operation
	streamsClosed  *prometheus.CounterVec // operation, reason
	subscriptions  *prometheus.GaugeVec   // operation
	upstreamConns  *prometheus.GaugeVec   // upstream
	reconnects     *prometheus.CounterVec // upstream
	upstreamLosses *prometheus.CounterVec // upstream
	frames         *prometheus.CounterVec // operation
	dropped        *prometheus.CounterVec // operation, reason
	latency        prometheus.Histogram
	keysOwned      *prometheus.GaugeVec     // operation
	keysTaken      *prometheus.CounterVec   // operation, failover
	keysReleased   *prometheus.CounterVec   // operation, lost
	clusterErrors  *prometheus.CounterVec   // operation
	clusterLag     *prometheus.HistogramVec // operation

	// Delivery and reading the cluster's stream are the hot paths: their
	// children are looked up once per operation, not per call.
	framesByOp sync.Map // operation → prometheus.Counter
	lagByOp    sync.Map // operation → prometheus.Observer
}

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	return NewWith(reg, nil)
}

// NewWith is New with constant labels added to every metric.
func NewWith(reg prometheus.Registerer, constLabels prometheus.Labels) (*Metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "gqlpush", Name: name, Help: help, ConstLabels: constLabels}
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts(opts(name, help)), labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts(opts(name, help)), labels)
	}
	m := &Metrics{
		streams:        gauge("streams_active", "Client streams open now.", "operation"),
		streamsClosed:  counter("streams_closed_total", "Client streams ended, by why.", "operation", "reason"),
		subscriptions:  gauge("subscriptions_active", "Shared upstream subscriptions running now.", "operation"),
		upstreamConns:  gauge("upstream_connections_active", "Upstream connections up now.", "upstream"),
		reconnects:     counter("upstream_reconnects_total", "Upstream connections that came up after a loss or failed dials.", "upstream"),
		upstreamLosses: counter("upstream_losses_total", "Upstream connections lost (not closed on purpose).", "upstream"),
		frames:         counter("frames_delivered_total", "Frames written to clients.", "operation"),
		dropped:        counter("subscribers_dropped_total", "Clients dropped for falling behind or failed writes.", "operation", "reason"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace:   "gqlpush",
			Name:        "fanout_latency_seconds",
			Help:        "Time from a result's arrival from the upstream to its write to a client.",
			ConstLabels: constLabels,
			Buckets:     prometheus.ExponentialBuckets(50e-6, 2, 16), // 50 µs to 1.6 s
		}),
		keysOwned:     gauge("cluster_keys_owned", "Subscription keys this instance owns in the cluster now.", "operation"),
		keysTaken:     counter("cluster_keys_taken_total", "Subscription keys this instance became the owner of, by whether their owner before had not given them up.", "operation", "failover"),
		keysReleased:  counter("cluster_keys_released_total", "Subscription keys this instance stopped owning, by whether another instance took them or their lease could not be renewed.", "operation", "lost"),
		clusterErrors: counter("cluster_errors_total", "Results that could not be published to the cluster's stream.", "operation"),
		clusterLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace:   "gqlpush",
			Name:        "cluster_lag_seconds",
			Help:        "Time from a result's publish by its owner to its read from the cluster's stream by this instance.",
			ConstLabels: constLabels,
			Buckets:     prometheus.ExponentialBucketsRange(50e-6, 2, 16), // 50 µs to 2 s
		}, []string{"operation"}),
	}
	for _, c := range []prometheus.Collector{m.streams, m.streamsClosed, m.subscriptions, m.upstreamConns, m.reconnects, m.upstreamLosses, m.frames, m.dropped, m.latency,
		m.keysOwned, m.keysTaken, m.keysReleased, m.clusterErrors, m.clusterLag} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observer returns the hook to put in gqlpush.Config.Observer.
func (m *Metrics) Observer() *gqlpush.Observer {
	return &gqlpush.Observer{
		StreamOpened: func(op string) { m.streams.WithLabelValues(op).Inc() },
		StreamClosed: func(op string, reason gqlpush.Reason) {
			m.streams.WithLabelValues(op).Dec()
			m.streamsClosed.WithLabelValues(op, string(reason)).Inc()
		},
		SubscriptionStarted: func(op string) { m.subscriptions.WithLabelValues(op).Inc() },
		SubscriptionStopped: func(op string, _ gqlpush.Reason) { m.subscriptions.WithLabelValues(op).Dec() },
		UpstreamConnected: func(up string, reconnect int) {
			m.upstreamConns.WithLabelValues(up).Inc()
			if reconnect > 0 {
				m.reconnects.WithLabelValues(up).Inc()
			}
		},
		UpstreamDisconnected: func(up string, err error) {
			m.upstreamConns.WithLabelValues(up).Dec()
			if err != nil {
				m.upstreamLosses.WithLabelValues(up).Inc()
			}
		},
		FramesDelivered:   m.framesDelivered,
		SubscriberDropped: func(op string, reason gqlpush.Reason) { m.dropped.WithLabelValues(op, string(reason)).Inc() },
		ClusterKeyTaken: func(op string, failover bool) {
			m.keysOwned.WithLabelValues(op).Inc()
			m.keysTaken.WithLabelValues(op, strconv.FormatBool(failover)).Inc()
		},
		ClusterKeyReleased: func(op string, lost bool) {
			m.keysOwned.WithLabelValues(op).Dec()
			m.keysReleased.WithLabelValues(op, strconv.FormatBool(lost)).Inc()
		},
		ClusterError: func(op string, _ error) { m.clusterErrors.WithLabelValues(op).Inc() },
		ClusterLag:   m.clusterLagged,
	}
}

func (m *Metrics) framesDelivered(op string, n int, latency time.Duration) {
	c, ok := m.framesByOp.Load(op)
	if !ok {
		c, _ = m.framesByOp.LoadOrStore(op, m.frames.WithLabelValues(op))
	}
	c.(prometheus.Counter).Add(float64(n))
	m.latency.Observe(latency.Seconds())
}

func (m *Metrics) clusterLagged(op string, lag time.Duration) {
	h, ok := m.lagByOp.Load(op)
	if !ok {
		h, _ = m.lagByOp.LoadOrStore(op, m.clusterLag.WithLabelValues(op))
	}
	// The lag spans two instances' clocks: one behind its publisher's
	// would make it negative.
	h.(prometheus.Observer).Observe(max(lag, 0).Seconds())
}
