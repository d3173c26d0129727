package gqlpush

import "time"

// Reasons a stream or a shared subscription ends, as told to an [Observer].
const (
	ReasonClientGone          = "client_gone"          // the client left
	ReasonComplete            = "complete"             // the upstream completed
	ReasonUpstreamError       = "upstream_error"       // the upstream sent an error
	ReasonUpstreamUnavailable = "upstream_unavailable" // the upstream is lost for good
	ReasonShutdown            = "shutdown"             // Handler.Close
	ReasonSlowConsumer        = "slow_consumer"        // the client fell too far behind
	ReasonWriteFailed         = "write_failed"         // a write to the client failed or timed out
	ReasonOnce                = "once"                 // wg_subscribe_once got its result
	ReasonTokenExpired        = "token_expired"        // the caller's token expired
)

// An Observer is told what a [Handler] does, for metrics and tracing. Every
// field may be nil. The functions are called from gqlpush's own goroutines,
// FramesDelivered on the hot path: they must be quick, must not block, and
// must be safe for concurrent use. The gqlpushprom package provides one
// that exports Prometheus metrics.
type Observer struct {
	// StreamOpened is called when a client's stream starts.
	StreamOpened func(operation string)
	// StreamClosed is called when it ends, with one of the Reason
	// constants.
	StreamClosed func(operation, reason string)
	// SubscriptionStarted is called when a shared upstream subscription
	// starts, with its first subscriber.
	SubscriptionStarted func(operation string)
	// SubscriptionStopped is called when it ends, with one of the Reason
	// constants.
	SubscriptionStopped func(operation, reason string)
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
	// behind (ReasonSlowConsumer) or for a write that failed or timed out
	// (ReasonWriteFailed).
	SubscriberDropped func(operation, reason string)
}

// The methods below make a nil *Observer and nil fields no-ops.

func (o *Observer) streamOpened(op string) {
	if o != nil && o.StreamOpened != nil {
		o.StreamOpened(op)
	}
}

func (o *Observer) streamClosed(op, reason string) {
	if o != nil && o.StreamClosed != nil {
		o.StreamClosed(op, reason)
	}
}

func (o *Observer) subscriptionStarted(op string) {
	if o != nil && o.SubscriptionStarted != nil {
		o.SubscriptionStarted(op)
	}
}

func (o *Observer) subscriptionStopped(op, reason string) {
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

func (o *Observer) subscriberDropped(op, reason string) {
	if o != nil && o.SubscriberDropped != nil {
		o.SubscriberDropped(op, reason)
	}
}
