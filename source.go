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

// A closer is what a Handler closes when it closes: its sources, and its
// cluster.
type closer interface {
	// close ends what it serves: see source.
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
	// begin says, for a source with positions, that the subscription
	// delivers every result that follows the source's end as of now: a
	// client that catches up from a replay reads past it only after
	// this.
	begin()
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
	canonVars     string          // the key's canonical variables
}

// A replayer is a source with positions (a JetStream stream) that can read
// what it delivered before, from a position on, at its reader's pace. A
// client that comes back after an event the hub's log no longer holds
// catches up from it, then reads the shared subscription like any other.
type replayer interface {
	// replay starts reading req's results after position after, asking
	// the network no longer than ctx lasts. reset reports that the source
	// no longer holds all that followed it; then nothing is started. An
	// error is a *httpError, as for open, or ctx's.
	replay(ctx context.Context, req *openRequest, after uint64) (r replayReader, reset bool, err error)
}

// A replayReader reads a source's results from a position on. Its reader
// calls it, one call at a time.
type replayReader interface {
	// next reads up to max results that follow the last one read, and
	// calls fn with each (raw valid only during the call). It waits for
	// no result: caught reports that the source held no more when asked,
	// as the source said (a read that found nothing is not enough). After
	// an error, the next call reads again from the last result read.
	next(max int, fn func(raw []byte, pos uint64)) (caught bool, err error)
	// close lets go of what the reader holds in its source.
	close()
}
