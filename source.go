package gqlpush

import (
	"context"
	"encoding/json"
	"net/http"
)

// The hub (subscription.go) shares results among clients; a source is where
// they come from. The WebSocket upstream pool (upstream_conn.go) is one
// source; every upstream names the one that serves it.
//
// Neither side holds a lock of its own while it calls the other: the hub
// opens and closes with none of its locks held, and a source calls a
// receiver with none of its own. Each side has its own lock order.

// A source starts and stops upstream subscriptions.
type source interface {
	// open starts the subscription req describes, delivering to r until
	// the handle is closed or the source calls r.end. It may deliver
	// before it returns. An error means nothing was started, and r hears
	// nothing: a *httpError says how the request is to be refused.
	open(req *openRequest, r receiver) (handle, error)
	// close stops every subscription, each with r.end(endShutdown):
	// politely at first, at once when ctx ends. It returns when the
	// source's goroutines have ended.
	close(ctx context.Context) error
	// conns reports the upstream connections it holds, for Stats.
	conns() int
}

// A receiver takes what a source delivers for one subscription, one call at
// a time.
type receiver interface {
	// publish takes one result, valid JSON, which it does not keep: the
	// source may reuse its bytes. pos is the result's position in the
	// source, for a source that has positions (a JetStream stream's
	// sequence), increasing; 0 for one that has none. An error means it
	// was not a GraphQL result and was dropped, for the source to log.
	publish(raw []byte, pos uint64) error
	// end says the subscription is over, and why. Nothing follows it.
	end(e ending)
}

// A handle is an open subscription, as its opener holds it.
type handle interface {
	// close stops the subscription upstream. A delivery the source had
	// begun may still reach the receiver after it returns: the receiver
	// ignores what comes once it has stopped.
	close()
}

// An openRequest is what a source needs to start a subscription.
type openRequest struct {
	ep            *endpoint       // the operation, bound to its upstream
	vars          json.RawMessage // canonical; nil when there are none
	header        http.Header     // for the upstream's handshake
	init          json.RawMessage // the connection_init payload
	forwardDigest string          // of what was forwarded: callers apart

	// after asks a source with positions to start after that position
	// rather than with what comes next (0); the source sets reset when it
	// no longer holds all that followed it, and starts with what it has.
	after uint64
	reset bool
}
