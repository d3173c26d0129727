package gqlpush

import "time"

// An Observer is told what a [Handler] does, for metrics and tracing. Every
// field may be nil. The functions are called from gqlpush's own goroutines,
// FramesDelivered on the hot path, most of them where nothing recovers a
// panic (an upstream connection's reader, say): they must be quick, must not
// block, must not panic, and must be safe for concurrent use. The gqlpushprom package provides one
// that exports Prometheus metrics.
type Observer struct {
	// StreamOpened is called when a client's stream starts.
	StreamOpened func(operation string)
	// StreamClosed is called when it ends, and why.
	StreamClosed func(operation string, reason Reason)
	// SubscriptionStarted is called when a shared upstream subscription
	// starts, with its first subscriber.
	SubscriptionStarted func(operation string)
	// SubscriptionStopped is called when it ends, and why.
	SubscriptionStopped func(operation string, reason Reason)
	// UpstreamConnected is called when a connection to an upstream is up
	// (acknowledged); reconnect counts the redials that preceded it.
	UpstreamConnected func(upstream string, reconnect int)
	// UpstreamDisconnected is called when a connection that was up goes
	// down: lost (err non-nil) or closed on purpose (err nil).
	UpstreamDisconnected func(upstream string, err error)
	// FramesDelivered is called after frames were written to a client:
	// how many, and how long the newest took from the upstream to the
	// client's connection.
	FramesDelivered func(operation string, frames int, latency time.Duration)
	// SubscriberDropped is called when a client is dropped for falling
	// behind or for a write that outlasted WriteTimeout: both are
	// ReasonSlowConsumer.
	SubscriberDropped func(operation string, reason Reason)

	// In a Cluster: ClusterKeyTaken is called when this instance becomes
	// the owner of a key, which it then subscribes upstream; failover
	// says that its owner before had not given it up (it died, or lost
	// NATS).
	ClusterKeyTaken func(operation string, failover bool)
	// ClusterKeyReleased is called when this instance stops owning a key:
	// lost says that another instance took it, or that its lease could
	// not be renewed; else no instance had clients for it any more, its
	// upstream subscription ended, or the Handler closed.
	ClusterKeyReleased func(operation string, lost bool)
	// ClusterError is called when publishing a result to the cluster's
	// stream fails (its clients on every instance miss it).
	ClusterError func(operation string, err error)
	// ClusterLag is called for each result this instance reads from the
	// cluster's stream: how long it took from its owner's publish.
	ClusterLag func(operation string, lag time.Duration)
}

// The methods below make a nil *Observer and nil fields no-ops.

func (o *Observer) streamOpened(op string) {
	if o != nil && o.StreamOpened != nil {
		o.StreamOpened(op)
	}
}

func (o *Observer) streamClosed(op string, reason Reason) {
	if o != nil && o.StreamClosed != nil {
		o.StreamClosed(op, reason)
	}
}

func (o *Observer) subscriptionStarted(op string) {
	if o != nil && o.SubscriptionStarted != nil {
		o.SubscriptionStarted(op)
	}
}

func (o *Observer) subscriptionStopped(op string, reason Reason) {
	if o != nil && o.SubscriptionStopped != nil {
		o.SubscriptionStopped(op, reason)
	}
}

func (o *Observer) upstreamConnected(up string, reconnect int) {
	if o != nil && o.UpstreamConnected != nil {
		o.UpstreamConnected(up, reconnect)
	}
}

func (o *Observer) upstreamDisconnected(up string, err error) {
	if o != nil && o.UpstreamDisconnected != nil {
		o.UpstreamDisconnected(up, err)
	}
}

func (o *Observer) framesDelivered(op string, n int, latency time.Duration) {
	if o != nil && o.FramesDelivered != nil {
		o.FramesDelivered(op, n, latency)
	}
}

func (o *Observer) subscriberDropped(op string, reason Reason) {
	if o != nil && o.SubscriberDropped != nil {
		o.SubscriberDropped(op, reason)
	}
}

func (o *Observer) clusterKeyTaken(op string, failover bool) {
	if o != nil && o.ClusterKeyTaken != nil {
		o.ClusterKeyTaken(op, failover)
	}
}

func (o *Observer) clusterKeyReleased(op string, lost bool) {
	if o != nil && o.ClusterKeyReleased != nil {
		o.ClusterKeyReleased(op, lost)
	}
}

func (o *Observer) clusterError(op string, err error) {
	if o != nil && o.ClusterError != nil {
		o.ClusterError(op, err)
	}
}

func (o *Observer) clusterLag(op string, lag time.Duration) {
	if o != nil && o.ClusterLag != nil {
		o.ClusterLag(op, lag)
	}
}
