package gqlpush

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A hub holds the shared upstream subscriptions of a handler. Requests for the
// same operation with the same variables and forwarded headers share one.
// Their results come from the source of the operation's upstream (see
// source.go), which the hub calls with none of its locks held.
//
// Lock order: hub.mu, then shared.mu, then limits.mu.
type hub struct {
	cfg    *Config
	limits *limits

	nonces atomic.Uint64 // make the keys of unshared subscriptions unique

	// writers are the goroutines writing results to streams' sockets
	// (writeDirect): Handler.Close waits for them once its sources, which
	// start them, are closed.
	writers sync.WaitGroup
	// procs is GOMAXPROCS when the hub was made: a result's writes are
	// shared among at most as many writers.
	procs int

	mu     sync.Mutex
	subs   map[subKey]*shared
	closed bool
	// The subscriptions kept by ResumeGrace, oldest first: the ones to end
	// when room is needed.
	keptHead, keptTail *shared
}

type subKey struct {
	ep            *endpoint
	forwardDigest string // of what was forwarded: callers apart
	vars          string // canonical JSON
	nonce         uint64 // non-zero for a subscription that is never shared
}

// A shared subscription is one upstream subscription and its subscribers.
// Its events form a log: each subscriber reads it from its own cursor. The
// log keeps what the slowest subscriber has not read yet, and the resume
// window: the last resumeFrames events, no more than queueBytes of them.
//
// It is the receiver its source delivers to.
type shared struct {
	h          *hub
	key        subKey
	token      string // names it in event ids; "" when resumption is off
	positional bool   // its ids are its source's positions (JetStream)
	// live: a live query's, whose last result is its current state: the
	// log always holds it, and a new subscriber starts with it.
	live   bool
	handle handle // of its source; set once open has returned

	// opening is closed when its source's open returns; nil after. Until
	// then the subscription has its first subscriber only: others wait.
	// Guarded by h.mu.
	opening chan struct{}

	mu      sync.Mutex
	events  []*event // events[i].seq == base+i
	base    uint64
	next    uint64 // seq of the next event
	bytes   uint64 // the bytes of every event so far: next's off
	window  uint64 // seq of the first event of the resume window
	subs    []*subscriber
	ended   bool // by its source; endedBy says why
	stopped bool // its last subscriber left (and the grace passed)
	endedBy ending
	grace   *time.Timer // running while it has no subscriber
	begun   bool        // its source delivers all that follows; see receiver.begin

	// The publisher's own, reused by each publish: the subscribers it
	// writes to directly, the result it writes them, and its chunks'
	// buffers.
	directs              []*subscriber
	dw                   directWrite
	sseChunk, plainChunk []byte
	// writing counts the writeDirect calls under way, each writing dw to
	// the sockets of some subscribers, in a goroutine of its own or, for
	// one socket, in the publisher's; guarded by mu. The next result is
	// left to the streams' goroutines until they are done: they take
	// several results in one write when results come faster than the
	// writers write them.
	writing int

	// While kept by ResumeGrace (guarded by h.mu): its place in the hub's
	// list, the caller charged for it and how to undo the charge.
	kept               bool
	keptPrev, keptNext *shared
	owner              string
	uncharge           func()
}

var _ receiver = (*shared)(nil)

// A subscriber is one client's view of a shared subscription.
type subscriber struct {
	sh     *shared
	owner  string        // the limit key of its caller
	wake   chan struct{} // cap 1: something to read
	cursor uint64        // seq of the next event to deliver; guarded by sh.mu
	slow   bool          // fell behind; guarded by sh.mu

	// A subscriber that catches up reads its source's replay, at its own
	// pace, until it has read all the source held; then it reads the log
	// from its cursor, past what the replay gave it. Meanwhile its cursor
	// holds the log for it, as any subscriber's does, but it is never
	// slow: when it falls behind, its cursor moves to the log's end and
	// repins counts it, for the replay has all that it skipped.
	catching bool   // guarded by sh.mu
	repins   uint64 // guarded by sh.mu
	// direct, when set, lets the publisher write results to the stream's
	// socket itself (see direct); set once, under sh.mu, by the stream.
	direct *direct
	replay replayReader // used by the subscriber's stream only, as are last and failed
	last   uint64       // the position of the last event the client has
	failed time.Time    // when the replay's reads began to fail
}

func newHub(cfg *Config, l *limits) *hub {
	return &hub{cfg: cfg, limits: l, subs: make(map[subKey]*shared), procs: runtime.GOMAXPROCS(0)}
}

// join adds a subscriber to the shared subscription for key, starting one
// upstream when there is none. owner is the caller's limit key. With a
// lastEventID the subscriber resumes after that event when the log still
// holds what followed it, or, for a source with positions, catches up from
// the source; reset reports that it could do neither, so the client must
// start afresh.
//
// ctx bounds what join asks the network to resume: the request's.
func (h *hub) join(ctx context.Context, key subKey, owner string, header http.Header, init json.RawMessage, lastEventID string) (s *subscriber, reset bool, err error) {
	token, seq, resume := parseEventID(lastEventID)
	// A positional subscription's ids are its source's positions, under a
	// token that its key alone decides: an id is good for it whatever
	// process issued it.
	replay := resume && key.nonce == 0 && key.ep.positional() && token == positionalToken(key)
	var rr replayReader
	defer func() {
		if err != nil && rr != nil {
			rr.close()
		}
	}()
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, false, errClosed
		}
		sh := h.subs[key]
		if sh == nil && replay {
			h.mu.Unlock()
			if rr, reset, err = h.replayFrom(ctx, key, header, init, seq); err != nil {
				return nil, false, err
			}
			replay, resume = false, false
			continue
		}
		if sh == nil {
			s, err := h.start(key, owner, header, init, rr, seq)
			return s, resume || reset, err
		}
		if opening := sh.opening; opening != nil {
			// Its source is still opening it: wait, then look again, for
			// the open may have failed.
			h.mu.Unlock()
			<-opening
			continue
		}
		s = &subscriber{sh: sh, owner: owner, wake: make(chan struct{}, 1)}
		sh.mu.Lock()
		s.cursor = sh.current()
		if resume {
			from, ok := sh.resumeFrom(token, seq)
			switch {
			case ok:
				s.cursor = from
				if sh.live && from < sh.next {
					// A live query's client is owed its current
					// result only, not every state in between.
					s.cursor = sh.next - 1
				}
				if s.cursor < sh.next {
					s.notify()
				}
			case replay:
				// What followed the client's last event is no longer
				// held here, but its source has it.
				sh.mu.Unlock()
				h.mu.Unlock()
				if rr, reset, err = h.replayFrom(ctx, key, header, init, seq); err != nil {
					return nil, false, err
				}
				replay, resume = false, false
				continue
			default:
				reset = true
			}
		}
		if s.cursor < sh.next {
			s.notify() // a live query's current result
		}
		if rr != nil {
			s.catchUp(rr, seq)
		}
		if sh.grace != nil {
			sh.grace.Stop()
			sh.grace = nil
		}
		sh.subs = append(sh.subs, s)
		sh.mu.Unlock()
		h.unkeepLocked(sh)
		h.mu.Unlock()
		return s, reset, nil
	}
}

// resumeFrom finds where a client whose last event was token.n resumes in
// the log: the seq of the event after it, when the log holds everything
// that followed it. Called with sh.mu held.
func (sh *shared) resumeFrom(token string, n uint64) (uint64, bool) {
	if token != sh.token {
		return 0, false
	}
	if !sh.positional {
		// Resumable when what follows the client's last event lies in
		// the resume window (the event itself need not). The log may
		// hold more, for a subscriber behind; that would make resumption
		// depend on how fast others read.
		from := max(sh.base, sh.window)
		return n + 1, n+1 >= from && n < sh.next
	}
	// Positions have gaps: the client's last event itself must be held,
	// at the window's edge or inside it, for nothing to be missed.
	for seq := max(sh.base, max(sh.window, 1)-1); seq < sh.next; seq++ {
		if sh.events[seq-sh.base].pos == n {
			return seq + 1, true
		}
	}
	return 0, false
}

// replayFrom asks the source of key for a replay after position after;
// reset reports that it no longer holds all that followed, or cannot
// replay at all. It is called with no lock held.
func (h *hub) replayFrom(ctx context.Context, key subKey, header http.Header, init json.RawMessage, after uint64) (replayReader, bool, error) {
	src, ok := key.ep.src.(replayer)
	if !ok {
		return nil, true, nil
	}
	rr, reset, err := src.replay(ctx, openRequestFor(key, header, init), after)
	if err == nil && ctx.Err() != nil { // the client left meanwhile
		if rr != nil {
			rr.close()
		}
		return nil, false, ctx.Err()
	}
	return rr, reset, err
}

// openRequestFor is what a source needs to serve key.
func openRequestFor(key subKey, header http.Header, init json.RawMessage) *openRequest {
	return &openRequest{
		ep:            key.ep,
		vars:          key.ep.variablesJSON(key.vars),
		header:        header,
		init:          init,
		forwardDigest: key.forwardDigest,
		canonVars:     key.vars,
	}
}

// start opens a new shared subscription for key, with its first
// subscriber. It is called with h.mu held and returns with it released: the
// source opens the subscription without it, while other requests for key
// wait on opening.
//
// replay, when not nil, is what the first subscriber catches up from,
// after position after.
func (h *hub) start(key subKey, owner string, header http.Header, init json.RawMessage, replay replayReader, after uint64) (*subscriber, error) {
	if max := h.cfg.MaxSubscriptions; max > 0 && len(h.subs) >= max && h.keptHead == nil {
		h.mu.Unlock()
		return nil, errTooManySubscriptions
	}
	sh := &shared{h: h, key: key, opening: make(chan struct{}), positional: key.ep.positional(), live: key.ep.op.query}
	switch {
	case h.cfg.ResumeFrames <= 0, key.nonce != 0:
	case sh.positional:
		sh.token = positionalToken(key)
	default:
		sh.token = newToken()
	}
	// The subscriber is in before the source hears of the subscription,
	// so it cannot miss the first result.
	s := &subscriber{sh: sh, owner: owner, wake: make(chan struct{}, 1)}
	if replay != nil {
		s.catchUp(replay, after)
	}
	sh.subs = append(sh.subs, s)
	h.subs[key] = sh
	h.mu.Unlock()

	hd, err := key.ep.src.open(openRequestFor(key, header, init), sh)

	var evicted *shared
	h.mu.Lock()
	close(sh.opening)
	sh.opening = nil
	if err == nil {
		if max := h.cfg.MaxSubscriptions; max > 0 && len(h.subs) > max {
			// Room is made by ending the oldest subscription that no
			// client reads, now that the new one has started; if
			// another request took the last such one meanwhile, the new
			// one gives way.
			if evicted = h.keptHead; evicted != nil {
				h.evictLocked(evicted)
			} else {
				err = errTooManySubscriptions
				defer hd.close()
			}
		}
	}
	if err != nil {
		if h.subs[key] == sh {
			delete(h.subs, key)
		}
		sh.mu.Lock()
		sh.stopped = true // anything delivered meanwhile is dropped
		sh.mu.Unlock()
		h.mu.Unlock()
		return nil, err
	}
	sh.handle = hd
	sh.mu.Lock()
	ended, endedBy := sh.ended, sh.endedBy
	sh.mu.Unlock()
	h.mu.Unlock()
	if evicted != nil {
		evicted.release(ReasonClientGone)
	}
	// Reported here, in order, even when the source ended it while it
	// opened (end leaves the report to start then).
	op := key.ep.op.name
	h.cfg.Observer.subscriptionStarted(op)
	if ended {
		h.cfg.Observer.subscriptionStopped(op, endedBy.why.reason())
	}
	return s, nil
}

// setDirect lets the publisher of s's subscription write to its stream's
// socket through d.
func (h *hub) setDirect(s *subscriber, d *direct) {
	s.sh.mu.Lock()
	s.direct = d
	s.sh.mu.Unlock()
}

// leave removes a subscriber. When the last one leaves, the upstream
// subscription stops at once, or after the resume grace, charged meanwhile
// to the caller who left it.
func (h *hub) leave(s *subscriber) {
	if s.replay != nil {
		s.replay.close()
		s.replay = nil
	}
	sh := s.sh
	h.mu.Lock()
	sh.mu.Lock()
	for i, o := range sh.subs {
		if o == s {
			last := len(sh.subs) - 1
			sh.subs[i] = sh.subs[last]
			sh.subs[last] = nil
			sh.subs = sh.subs[:last]
			break
		}
	}
	var stop bool
	if len(sh.subs) == 0 && !sh.ended && !sh.stopped {
		if grace := h.cfg.ResumeGrace; grace > 0 && sh.key.nonce == 0 {
			if sh.grace == nil {
				sh.grace = time.AfterFunc(grace, sh.expire)
				h.keepLocked(sh, s.owner)
			}
		} else {
			sh.stopLocked()
			stop = true
		}
	}
	sh.trimLocked()
	sh.mu.Unlock()
	h.mu.Unlock()
	if stop {
		sh.release(ReasonClientGone)
	}
}

// keepLocked puts sh, which has just lost its last subscriber, at the end
// of the list of kept subscriptions, charged to owner. Called with h.mu
// held.
func (h *hub) keepLocked(sh *shared, owner string) {
	sh.kept, sh.owner = true, owner
	sh.uncharge = h.limits.charge(owner)
	sh.keptPrev, sh.keptNext = h.keptTail, nil
	if h.keptTail != nil {
		h.keptTail.keptNext = sh
	} else {
		h.keptHead = sh
	}
	h.keptTail = sh
}

// unkeepLocked takes sh off the list of kept subscriptions, if it is on it,
// and undoes its charge. Called with h.mu held.
func (h *hub) unkeepLocked(sh *shared) {
	if !sh.kept {
		return
	}
	if sh.keptPrev != nil {
		sh.keptPrev.keptNext = sh.keptNext
	} else {
		h.keptHead = sh.keptNext
	}
	if sh.keptNext != nil {
		sh.keptNext.keptPrev = sh.keptPrev
	} else {
		h.keptTail = sh.keptPrev
	}
	sh.kept, sh.keptPrev, sh.keptNext = false, nil, nil
	sh.uncharge()
	sh.uncharge = nil
}

// evictLocked ends a kept subscription before its grace is over; the caller
// releases it once the locks are let go. Called with h.mu held.
func (h *hub) evictLocked(sh *shared) {
	h.unkeepLocked(sh)
	sh.mu.Lock()
	if sh.grace != nil {
		sh.grace.Stop()
		sh.grace = nil
	}
	sh.stopLocked()
	sh.mu.Unlock()
}

// makeRoom frees a place under MaxStreamsPerPrincipal for a caller at that
// cap who opens a stream for key: a kept subscription for key itself gives
// its place to the stream that resumes it; else the caller's oldest kept
// subscription ends. It reports whether a place was freed.
func (h *hub) makeRoom(owner string, key subKey) bool {
	var evicted *shared
	h.mu.Lock()
	for sh := h.keptHead; sh != nil; sh = sh.keptNext {
		if sh.owner != owner {
			continue
		}
		if sh.key == key {
			// Still kept, within its grace, for the stream about to
			// join it; only the charge moves to that stream.
			sh.uncharge()
			sh.uncharge = func() {}
			h.mu.Unlock()
			return true
		}
		if evicted == nil {
			evicted = sh
		}
	}
	if evicted != nil {
		h.evictLocked(evicted)
	}
	h.mu.Unlock()
	if evicted == nil {
		return false
	}
	evicted.release(ReasonClientGone)
	return true
}

// stopLocked takes the subscription out of the hub; the caller then calls
// release. Called with h.mu and sh.mu held.
func (sh *shared) stopLocked() {
	sh.stopped = true
	// The log is let go whole: it starts where it ended, so that it holds
	// what it says it holds (events[i] is seq base+i).
	clear(sh.events)
	sh.events = nil
	sh.base, sh.window = sh.next, sh.next
	if sh.h.subs[sh.key] == sh {
		delete(sh.h.subs, sh.key)
	}
}

// release tells the source that a stopped subscription is over, and the
// Observer why. It is called with no lock held.
func (sh *shared) release(reason Reason) {
	sh.handle.close()
	sh.h.cfg.Observer.subscriptionStopped(sh.key.ep.op.name, reason)
}

// expire ends a subscription whose resume grace passed with no subscriber.
func (sh *shared) expire() {
	h := sh.h
	h.mu.Lock()
	sh.mu.Lock()
	stop := sh.grace != nil && len(sh.subs) == 0 && !sh.ended && !sh.stopped
	if stop {
		sh.grace = nil
		sh.stopLocked()
	}
	sh.mu.Unlock()
	if stop {
		h.unkeepLocked(sh)
	}
	h.mu.Unlock()
	if stop {
		sh.release(ReasonClientGone)
	}
}

// stats reports the number of shared subscriptions and of the events they
// hold.
func (h *hub) stats() (subs, events int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sh := range h.subs {
		sh.mu.Lock()
		events += len(sh.events)
		sh.mu.Unlock()
	}
	return len(h.subs), events
}

// close refuses new subscribers, wakes every subscriber (their streams then
// see that the handler is closing), and ends the subscriptions that wait out
// their resume grace.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	var idle []*shared
	for _, sh := range h.subs {
		sh.mu.Lock()
		for _, s := range sh.subs {
			s.notify()
		}
		if sh.grace != nil {
			sh.grace.Stop()
			sh.grace = nil
			sh.stopLocked()
			idle = append(idle, sh)
		}
		sh.mu.Unlock()
	}
	for _, sh := range idle {
		h.unkeepLocked(sh)
	}
	h.mu.Unlock()
	for _, sh := range idle {
		sh.release(ReasonShutdown)
	}
}

// publish frames one upstream result and hands it to every subscriber. It
// never waits for a client: a subscriber that has more than the queue size
// unread, or more than the queue's bytes besides the newest result, is
// marked slow and dropped by its own writer.
//
// Only the reader goroutine of the subscription's connection calls it, one
// call at a time, and only it advances sh.next: so the event can be framed
// with its sequence number before the lock is taken, keeping the lock short.
//
// A result that is not a GraphQL result is dropped and returned as an error,
// for the caller to log.
func (sh *shared) publish(raw []byte, pos uint64) error {
	cfg := sh.h.cfg
	limit, byteLimit := uint64(cfg.QueueSize), uint64(cfg.QueueBytes)
	seq := sh.nextSeq()
	id := seq
	if sh.positional {
		id = pos
	}
	ev, err := frameEvent(raw, sh.token, id)
	if err != nil {
		return err
	}
	ev.seq, ev.pos = seq, pos
	now := time.Now()
	sh.mu.Lock()
	if sh.ended || sh.stopped {
		sh.mu.Unlock()
		return nil
	}
	ev.at = now
	ev.off = sh.bytes
	sh.bytes += uint64(len(ev.sse))
	sh.next++
	sh.events = append(sh.events, ev)
	low := sh.next
	var directs []*subscriber
	direct := sh.writing == 0
	if direct {
		directs = sh.directs[:0]
	}
	for _, s := range sh.subs {
		if s.slow {
			continue
		}
		// The newest result is left out of the bytes: a client may be
		// sent a burst of up to QueueBytes, then one more result, however
		// large, before its writer runs.
		if unread := sh.next - s.cursor; unread > limit || (unread > 1 && ev.off-sh.offset(s.cursor) > byteLimit) {
			if s.catching {
				s.cursor = sh.next
				s.repins++
				continue
			}
			s.slow = true
		} else if s.cursor < low {
			low = s.cursor
		}
		if direct && s.takeDirect(ev) {
			directs = append(directs, s)
			continue
		}
		s.notify()
	}
	sh.advanceWindow()
	sh.trimTo(low)
	if len(directs) == 0 {
		sh.mu.Unlock()
		return nil
	}
	sh.directs = directs[:0] // its array, kept for the next result
	w := &sh.dw
	*w = directWrite{ev: ev}
	w.chunks(sh, directs)
	if len(directs) == 1 {
		// One write that does not wait costs the source's reader less
		// than waking the stream's goroutine would: written here, as a
		// subscription of one client's results mostly are.
		sh.writing = 1
		sh.h.writers.Add(1)
		sh.mu.Unlock()
		sh.writeDirect(directs, w)
		return nil
	}
	// Written by goroutines of their own, a share of the sockets each:
	// the source's reader goes back to its upstream at once, whatever the
	// clients, and the writes take every core.
	per := max(directShard, (len(directs)+sh.h.procs-1)/sh.h.procs)
	for i := 0; i < len(directs); i += per {
		sh.writing++
		sh.h.writers.Add(1)
		go sh.writeDirect(directs[i:min(i+per, len(directs))], w)
	}
	sh.mu.Unlock()
	return nil
}

// directShard is the fewest sockets a writer goroutine of a result is given:
// below it, another goroutine costs more than it saves.
const directShard = 32

// A directWrite is a result as the publisher writes it: its frames as
// chunks of the chunked coding, built once for every socket.
type directWrite struct {
	ev         *event
	sse, plain []byte // the chunks, for the SSE and the plain streams
}

// chunks builds w's chunks for the directs that take them, in buffers of
// sh's: no other result is written directly until w's writes are done.
// Called with sh.mu held.
func (w *directWrite) chunks(sh *shared, directs []*subscriber) {
	for _, s := range directs {
		switch d := s.direct; {
		case d.unframed: // HTTP/1.0: the frame as it is
		case d.sse && w.sse == nil:
			w.sse = appendChunk(sh.sseChunk[:0], w.ev.sse)
			sh.sseChunk = w.sse
		case !d.sse && w.plain == nil:
			w.plain = appendChunk(sh.plainChunk[:0], w.ev.plain)
			sh.plainChunk = w.plain
		}
	}
}

// frame is what w writes to d's socket.
func (w *directWrite) frame(d *direct) []byte {
	switch {
	case d.unframed && d.sse:
		return w.ev.sse
	case d.unframed:
		return w.ev.plain
	case d.sse:
		return w.sse
	}
	return w.plain
}

// takeDirect reports whether the publisher writes ev to s's socket itself,
// sh.mu held: s has a direct, has read all before ev, and its stream's
// goroutine is not writing. Then ev is s's, as if taken, and the
// publisher holds s.direct's lock.
func (s *subscriber) takeDirect(ev *event) bool {
	d := s.direct
	if d == nil || s.cursor != ev.seq || s.catching || !d.mu.TryLock() {
		return false
	}
	// s.last is the stream's, read and written with d.mu held.
	if d.closed || d.pending != nil || d.err != nil || (ev.pos != 0 && ev.pos <= s.last) {
		d.mu.Unlock()
		return false
	}
	s.cursor = ev.seq + 1
	if ev.pos != 0 {
		s.last = ev.pos
	}
	return true
}

// writeDirect writes ev to the sockets of directs, whose locks it holds,
// one non-blocking write each, and lets each lock go. A subscriber whose
// socket did not take it all is woken, for its goroutine to write the
// rest. The hub's writers count it; sh.mu is not held.
func (sh *shared) writeDirect(directs []*subscriber, w *directWrite) {
	defer sh.h.writers.Done()
	ev := w.ev
	now := time.Now()
	delivered := 0
	for i, s := range directs {
		d := s.direct
		ok := d.try(w.frame(d), now, ev.at)
		d.mu.Unlock()
		if ok {
			delivered++
		} else {
			s.notify()
		}
		directs[i] = nil
	}
	if delivered > 0 && sh.h.cfg.Observer != nil {
		sh.h.cfg.Observer.framesDelivered(sh.key.ep.op.name, delivered, time.Since(ev.at))
	}
	sh.mu.Lock()
	if sh.writing--; sh.writing == 0 {
		sh.dw = directWrite{} // the log alone keeps the result
		// One large result does not keep its chunk's buffer, as a
		// stream's batch buffer is not kept (rawSink.write).
		if cap(sh.sseChunk) > copyBelow {
			sh.sseChunk = nil
		}
		if cap(sh.plainChunk) > copyBelow {
			sh.plainChunk = nil
		}
	}
	sh.mu.Unlock()
}

// offset is the off of the event seq, which the log holds.
func (sh *shared) offset(seq uint64) uint64 {
	return sh.events[seq-sh.base].off
}

// current is where a new subscriber starts reading: after the last event,
// or, for a live query, at it (its current result), when there is one.
// Called with sh.mu held.
func (sh *shared) current() uint64 {
	if sh.live && sh.next > sh.base {
		return sh.next - 1
	}
	return sh.next
}

// advanceWindow moves the start of the resume window past what no longer
// fits in it: more than resumeFrames events, or more than queueBytes of
// them (the last event always fits). A live query's keeps its last event
// at least.
func (sh *shared) advanceWindow() {
	keep := uint64(max(sh.h.cfg.ResumeFrames, 0))
	if sh.live {
		keep = max(keep, 1)
	}
	if keep == 0 {
		sh.window = sh.next
		return
	}
	sh.window = max(sh.window, sh.base, sh.next-min(keep, sh.next))
	for sh.window+1 < sh.next && sh.bytes-sh.offset(sh.window) > uint64(sh.h.cfg.QueueBytes) {
		sh.window++
	}
}

// nextSeq reads sh.next; see publish.
func (sh *shared) nextSeq() uint64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.next
}

// trimLocked drops what no subscriber will read and resumption does not
// need.
func (sh *shared) trimLocked() {
	low := sh.next
	for _, s := range sh.subs {
		if !s.slow && s.cursor < low {
			low = s.cursor
		}
	}
	sh.trimTo(low)
}

func (sh *shared) trimTo(low uint64) {
	low = min(low, sh.window)
	if low <= sh.base {
		return
	}
	n := int(low - sh.base)
	clear(sh.events[:n])
	if n == len(sh.events) {
		sh.events = sh.events[:0]
	} else if n >= cap(sh.events)/2 {
		sh.events = append(sh.events[:0], sh.events[n:]...)
	} else {
		sh.events = sh.events[n:]
	}
	sh.base = low
}

// end ends the shared subscription for every subscriber, for its source's
// reason; they get what they have not read yet, then the end.
func (sh *shared) end(e ending) {
	h := sh.h
	h.mu.Lock()
	if h.subs[sh.key] == sh {
		delete(h.subs, sh.key)
	}
	opening := sh.opening != nil
	sh.mu.Lock()
	done := !sh.ended && !sh.stopped
	if done {
		sh.ended = true
		sh.endedBy = e
		if sh.grace != nil {
			sh.grace.Stop()
			sh.grace = nil
		}
		for _, s := range sh.subs {
			s.notify()
		}
	}
	sh.mu.Unlock()
	if done {
		h.unkeepLocked(sh)
	}
	h.mu.Unlock()
	if done && !opening { // else start reports it, after the start
		h.cfg.Observer.subscriptionStopped(sh.key.ep.op.name, e.why.reason())
	}
}

func (s *subscriber) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) isSlow() bool {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	return s.slow
}

// take appends the unread events to buf. When the stream is over for this
// subscriber it also returns why (kind 0 while it goes on).
func (s *subscriber) take(buf []*event) ([]*event, ending) {
	if s.replay != nil {
		var e ending
		if buf, e = s.takeReplay(buf); s.replay != nil || e.why != 0 {
			return buf, e
		}
	}
	sh := s.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.slow {
		return buf, endSlow
	}
	for seq := s.cursor; seq < sh.next; seq++ {
		if ev := sh.events[seq-sh.base]; ev.pos > s.last || ev.pos == 0 {
			buf = append(buf, ev)
		}
	}
	s.cursor = sh.next
	if sh.ended {
		return buf, sh.endedBy
	}
	return buf, ending{}
}

// positionalToken names the positional subscription of key in event ids:
// derived from the key, so that every process that serves it, before and
// after a restart, gives its events the same ids.
func positionalToken(key subKey) string {
	return strings.ToLower(base32.StdEncoding.EncodeToString(keyHash(key.ep, key.forwardDigest, key.vars))[:tokenLen])
}

// keyHash names a key the same in every process: its operation, what is
// forwarded upstream, its canonical variables; and, for a cluster's key,
// whose results the instances share, the upstream and the query sent to
// it, which an instance running another version of the operation does not
// share.
func keyHash(ep *endpoint, forwardDigest, vars string) []byte {
	d := sha256.New()
	parts := []string{ep.op.name, forwardDigest, vars}
	if ep.clustered {
		parts = append(parts, ep.up.name, ep.query)
	}
	for _, part := range parts {
		d.Write([]byte(part))
		d.Write([]byte{0})
	}
	return d.Sum(nil)
}

// catchUp makes a new subscriber, whose client has the events up to
// position after, catch up from rr before it reads the log. Called with
// sh.mu held, before the subscriber is in sh.subs.
func (s *subscriber) catchUp(rr replayReader, after uint64) {
	s.replay, s.catching, s.last = rr, true, after
	s.notify()
}

// replayRetry is how long a stream waits before it reads its replay again
// after a failed read, within the reconnect limit; replayBegin, how long
// when the replay has caught up but the shared subscription has not begun.
const (
	replayRetry = 250 * time.Millisecond
	replayBegin = 10 * time.Millisecond
)

// begin is the receiver's: see receiver.
func (sh *shared) begin() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.begun = true
}

// takeReplay appends the next page of the subscriber's replay to buf, and
// wakes the subscriber again for the next. The replay is let go, and the
// subscriber reads the log from its cursor on, past what the replay gave
// it, when three things hold: the replay has caught up with its source;
// the shared subscription had begun (it delivers all that followed its
// source's end) before the replay's last read; and the log has held every
// event since (no repin during that read). When the shared subscription
// ends first, the client gets its end only: the log from the cursor on
// would skip what the replay had not given yet. A replay that fails for
// the reconnect limit ends the stream.
func (s *subscriber) takeReplay(buf []*event) ([]*event, ending) {
	sh := s.sh
	cfg := sh.h.cfg
	sh.mu.Lock()
	repins, begun, ended, endedBy := s.repins, sh.begun, sh.ended, sh.endedBy
	sh.mu.Unlock()
	if ended {
		return buf, endedBy
	}
	now := time.Now()
	caught, err := s.replay.next(max(cfg.QueueSize, 1), func(raw []byte, pos uint64) {
		ev, err := frameEvent(raw, sh.token, pos)
		if err != nil {
			return // not a result: the source's live subscription logs it
		}
		ev.pos, ev.at, ev.replayed = pos, now, true
		buf = append(buf, ev)
		s.last = pos
	})
	if errors.Is(err, errReplayGap) { // no read again will find them
		return buf, endWith(probUpstreamGone, "results were lost in the cluster's stream")
	}
	if err != nil {
		if s.failed.IsZero() {
			s.failed = now
		}
		if time.Since(s.failed) >= cfg.ReconnectLimit {
			cfg.Logger.Warn("replaying a stream failed", "operation", sh.key.ep.op.name, "err", logText(err))
			return buf, endWith(probUpstreamGone, "replaying what was missed failed")
		}
		time.Sleep(replayRetry)
		s.notify()
		return buf, ending{}
	}
	s.failed = time.Time{}
	if caught {
		if !begun {
			time.Sleep(replayBegin)
		}
		sh.mu.Lock()
		if caught = begun && s.repins == repins; caught {
			s.catching = false
		}
		sh.mu.Unlock()
	}
	if !caught {
		s.notify()
		return buf, ending{}
	}
	s.replay.close()
	s.replay = nil
	return buf, ending{}
}
