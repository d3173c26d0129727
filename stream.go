package gqlpush

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"runtime/debug"
	"time"
)

// serveStream subscribes and writes the response. done is called once the
// stream is over, whenever that is: over HTTP/1.x the stream outlives
// ServeHTTP (see runStream).
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, req *request, done func()) {
	lastID := ""
	if req.sse && !req.once {
		lastID = r.Header.Get("Last-Event-ID")
	}
	s, reset, err := h.hub.join(r.Context(), req.key, req.owner, req.header, req.init, lastID)
	if err != nil {
		done()
		if r.Context().Err() != nil {
			return // the client is gone
		}
		herr := errShuttingDown
		if !errors.As(err, &herr) && !errors.Is(err, errClosed) {
			h.log.Error("starting a subscription failed", "operation", req.ep.op.name, "err", logText(err))
			herr = errInternal
		}
		writeError(w, herr)
		return
	}
	op := req.ep.op.name
	h.cfg.Observer.streamOpened(op)
	// The stream ends in two steps: finish lets the subscription go and
	// reports the end, before the response's last bytes are written, so
	// that a client that has read its response finds both done; done
	// releases the stream's slot after the response is over, so that
	// Close returns only when every response is.
	finish := func(why problem) {
		defer h.hub.leave(s)
		h.cfg.Observer.streamClosed(op, why.reason())
	}
	if req.once && !req.sse {
		why := probClientGone
		defer done()
		defer func() { finish(why) }()
		why = h.serveOnce(w, r, s)
		return
	}
	st := &stream{req: req, timeout: h.cfg.WriteTimeout, obs: h.cfg.Observer}
	if r.ProtoMajor >= 2 && h.cfg.Heartbeat > 0 {
		// See slack.
		st.slack = h.cfg.Heartbeat
	}
	if !st.begin(w, r, !h.cfg.UseResponseWriter, reset) {
		defer done()
		finish(probClientGone) // the head could not be written
		return
	}
	if !req.patch && !req.dedupe && !req.once {
		if d := newDirect(st.sink, req.sse); d != nil {
			st.direct = d
			h.hub.setDirect(s, d)
		}
	}
	if _, raw := st.sink.(*rawSink); raw {
		// The connection is gqlpush's now: ServeHTTP returns, and with it
		// goes net/http's state for the request — its goroutine and
		// stack, its buffers — while the stream goes on in a goroutine of
		// its own, counted by the Handler until it ends.
		go h.runStream(s, st, finish, done, true)
		return
	}
	h.runStream(s, st, finish, done, false)
}

// runStream writes the stream until it ends, then releases it. Whatever
// happens, even a panic (in an Observer, say), the stream is released; on a
// connection gqlpush took over, where no net/http recovers it, a panic is
// logged, as net/http logs a handler's.
func (h *Handler) runStream(s *subscriber, st *stream, finish func(problem), done func(), detached bool) {
	if detached {
		// Deferred first, so it runs last: it also catches a panic in
		// the release below.
		defer func() {
			if p := recover(); p != nil {
				h.log.Error("panic serving a stream", "operation", st.req.ep.op.name, "panic", p, "stack", string(debug.Stack()))
			}
		}()
	}
	why := probClientGone
	defer func() {
		defer done()
		defer st.sink.close()
		defer func() {
			// Before the sink's last chunk, which must not follow
			// part of another.
			if st.direct.close() {
				st.sink.(*rawSink).failed = true
			}
		}()
		finish(why)
	}()
	if h.cfg.Heartbeat > 0 {
		st.beat = time.NewTimer(h.cfg.Heartbeat)
		st.beatEvery = h.cfg.Heartbeat
		defer st.beat.Stop()
	}
	why = h.streamLoop(s, st)
	if why == probClientGone && st.failed && (s.isSlow() || errors.Is(st.err, os.ErrDeadlineExceeded)) {
		// A write that outlasted the write timeout, or that hung while
		// the client fell a queue behind: a slow consumer, whose error
		// frame cannot follow a write cut short.
		why = probSlowConsumer
	}
	if why == probSlowConsumer {
		h.cfg.Observer.subscriberDropped(st.req.ep.op.name, ReasonSlowConsumer)
	}
}

// streamLoop writes results until the stream ends, and says why it ended.
func (h *Handler) streamLoop(s *subscriber, st *stream) problem {
	var (
		beat      <-chan time.Time
		drainDone <-chan time.Time
		expired   <-chan time.Time
		timeout   <-chan time.Time
		buf       []*event // made at the first wake: an idle stream holds none
		op        = st.req.ep.op.name
	)
	if st.beat != nil {
		beat = st.beat.C
	}
	if p := st.req.principal; p != nil && !p.Expires.IsZero() {
		t := time.NewTimer(time.Until(p.Expires))
		defer t.Stop()
		expired = t.C
	}
	if st.req.once {
		t := time.NewTimer(h.cfg.OnceTimeout)
		defer t.Stop()
		timeout = t.C
	}
	gone := st.sink.gone()
	for {
		select {
		case <-gone:
			return probClientGone
		case <-expired:
			st.end(endExpired)
			return probTokenExpired
		case <-timeout:
			st.end(endOnceTimeout)
			return probOnceTimeout
		case <-drainDone:
			st.end(endShutdown)
			return probShutdown
		case <-beat:
			// The timer is not reset on every write, which would cost
			// each one a timer operation: it fires every interval and
			// checks how long the stream has been silent.
			if idle := time.Since(st.lastWritten()); idle < st.beatEvery {
				st.beat.Reset(st.beatEvery - idle)
				continue
			}
			st.direct.lock()
			ok := st.heartbeat()
			st.direct.unlock()
			if !ok {
				return probClientGone
			}
			st.beat.Reset(st.beatEvery)
		case <-s.wake:
			var end ending
			// Held while the stream writes: a publisher writes to the
			// socket only while the stream does not.
			if buf == nil {
				buf = make([]*event, 0, 8)
			}
			st.direct.lock()
			buf, end = s.take(buf[:0])
			// Close wakes every subscriber rather than closing a channel
			// that every stream would wait on: such a channel's lock would
			// be taken by every stream at every turn of this loop. The
			// flag is read after take, which holds the lock Close holds
			// when it wakes: a wake that Close found pending is followed
			// by a take that sees the flag.
			if drainDone == nil && h.shuttingDown.Load() {
				// Streams end spread over the drain window, so that
				// clients do not all come back in the same instant.
				t := time.NewTimer(h.drainDelay())
				defer t.Stop()
				drainDone = t.C
			}
			if st.req.once && len(buf) > 0 {
				buf = buf[:1]
				end = ending{why: probOnce}
			}
			n, ok := st.events(buf)
			if ok && len(buf) == 0 {
				ok = st.flushPending() // woken for the rest of a publisher's write
			}
			st.direct.unlock()
			if n > 0 && h.cfg.Observer != nil { // spares time.Since without an Observer
				h.cfg.Observer.framesDelivered(op, n, time.Since(buf[len(buf)-1].at))
			}
			clear(buf)
			if !ok {
				return probClientGone
			}
			if end.why != 0 {
				st.end(end)
				return end.why
			}
		}
	}
}

// serveOnce answers wg_subscribe_once without wg_sse: the first result as
// the whole JSON body; or, when the subscription ends first, what the row
// of its end says: 204 for a clean end, the upstream's errors, or the
// error of the end with its status.
func (h *Handler) serveOnce(w http.ResponseWriter, r *http.Request, s *subscriber) problem {
	var buf []*event
	timeout := time.NewTimer(h.cfg.OnceTimeout)
	defer timeout.Stop()
	for {
		select {
		case <-r.Context().Done():
			return probClientGone
		case <-timeout.C:
			writeJSON(w, problems[probOnceTimeout].status, errorsJSON(endOnceTimeout.errors))
			return probOnceTimeout
		case <-s.wake:
		}
		var end ending
		buf, end = s.take(buf[:0])
		if len(buf) > 0 {
			writeJSON(w, http.StatusOK, buf[0].json)
			return probOnce
		}
		if h.shuttingDown.Load() { // read after take: see streamLoop
			writeError(w, errShuttingDown)
			return probShutdown
		}
		switch {
		case end.why == 0:
			continue
		case end.why == probComplete:
			w.WriteHeader(http.StatusNoContent)
		default:
			writeJSON(w, problems[end.why].status, errorsJSON(end.errors))
		}
		return end.why
	}
}

// A stream writes the frames of one response, through its sink. Writes stop
// at the first error: the client is gone or too slow.
type stream struct {
	sink      sink
	req       *request
	timeout   time.Duration
	beat      *time.Timer
	beatEvery time.Duration
	// Of the last write, and the write deadline in force: times with the
	// monotonic clock's reading, so that a step of the wall clock moves
	// neither a deadline nor a heartbeat.
	lastWrite time.Time
	armed     time.Time
	// slack lengthens the write deadline over HTTP/2 by a heartbeat
	// interval. There net/http resets a stream once its write deadline
	// passes, whether a write is under way or not: the deadline must not
	// pass while the stream is quiet, and the next heartbeat, which moves
	// it, comes within an interval. A write that blocks is then bounded by
	// the write timeout and the interval together.
	slack  time.Duration
	direct *direct   // nil unless a publisher may write to the socket itself
	obs    *Observer // told of the results whose rest flushPending writes
	last   *event    // the last result this client has, for patch and dedupe
	batch  [][]byte  // frames of one write, reused
	failed bool
	err    error // of the write that failed
}

// begin sends the head and, for SSE, the first comment (and the reset
// event, when resumption failed), at once, so the client knows the stream
// is open before any result.
func (st *stream) begin(w http.ResponseWriter, r *http.Request, hijack bool, reset bool) bool {
	hd := w.Header()
	if st.req.sse {
		hd.Set("Content-Type", "text/event-stream")
	} else {
		hd.Set("Content-Type", "application/json")
	}
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	var first []byte
	if st.req.sse {
		first = []byte(sseComment)
		if reset {
			first = []byte(sseComment + sseReset)
		}
	}
	// Over HTTP/2 without heartbeats, nothing moves the deadline on a
	// quiet stream: the sink lifts it after each write.
	sk, err := openSink(w, r, hijack, first, st.deadline(time.Now()), st.slack == 0)
	if err != nil {
		return false
	}
	st.sink = sk
	st.lastWrite = time.Now()
	return true
}

// events writes a batch of results in one write, so a client with several
// results waiting gets them at once. It reports how many frames it wrote,
// and false when the write failed.
func (st *stream) events(evs []*event) (int, bool) {
	batch := st.batch[:0]
	for _, ev := range evs {
		if b := st.frame(ev); b != nil {
			batch = append(batch, b)
		}
		st.last = ev
	}
	st.batch = batch
	if len(batch) == 0 {
		return 0, true
	}
	ok := st.write(batch)
	clear(batch) // let the events go
	return len(batch), ok
}

// frame picks the bytes this client gets for ev: the shared frame, a shared
// patch frame, or nothing (a duplicate, or a patch with no change).
func (st *stream) frame(ev *event) []byte {
	prev := st.last
	if prev != nil && st.req.dedupe && bytes.Equal(prev.json, ev.json) {
		return nil
	}
	if prev != nil && st.req.patch && !st.req.once {
		p := ev.patchFrom(prev)
		switch {
		case p.empty:
			return nil
		case p.sse != nil:
			if st.req.sse {
				return p.sse
			}
			return p.plain
		}
	}
	if st.req.sse {
		return ev.sse
	}
	return ev.plain
}

var (
	sseCommentBytes     = []byte(sseComment)
	plainHeartbeatBytes = []byte(plainHeartbeat)
	sseCompleteBytes    = []byte(sseComplete)
	sseDataPrefixBytes  = []byte(sseDataPrefix)
	blankLineBytes      = []byte("\n\n")
)

func (st *stream) heartbeat() bool {
	if st.req.sse {
		return st.write([][]byte{sseCommentBytes})
	}
	return st.write([][]byte{plainHeartbeatBytes})
}

// end writes the error frame of end, if any, then, for SSE, the complete
// event; after it, no publisher writes to the stream.
func (st *stream) end(end ending) {
	st.direct.lock()
	defer st.direct.unlock()
	if st.direct != nil {
		st.direct.closed = true
	}
	batch := st.batch[:0]
	if end.errors != nil {
		if st.req.sse {
			batch = append(batch, sseDataPrefixBytes)
		}
		batch = append(batch, errorsJSON(end.errors), blankLineBytes)
	}
	if st.req.sse {
		batch = append(batch, sseCompleteBytes)
	}
	if len(batch) > 0 {
		st.write(batch)
	}
}

// write writes frames in one write, unless an earlier write failed: after
// the rest of a publisher's write, if there is one. With a direct, its lock
// is held.
func (st *stream) write(frames [][]byte) bool {
	if !st.flushPending() {
		return false
	}
	now := time.Now()
	if err := st.sink.writev(frames, st.deadline(now)); err != nil {
		st.failed, st.err = true, err
		return false
	}
	st.lastWrite = now
	return true
}

// flushPending writes what a publisher's write left, if anything, and
// takes on its failure, if it failed. The direct's lock is held.
func (st *stream) flushPending() bool {
	if st.failed {
		return false
	}
	d := st.direct
	if d == nil {
		return true
	}
	if d.err != nil {
		st.failed, st.err = true, d.err
		return false
	}
	if d.pending == nil {
		return true
	}
	now := time.Now()
	if err := st.sink.(*rawSink).writeRaw(d.pending, st.deadline(now)); err != nil {
		st.failed, st.err = true, err
		return false
	}
	d.pending = nil
	st.lastWrite = now
	if st.obs != nil {
		st.obs.framesDelivered(st.req.ep.op.name, 1, now.Sub(time.Unix(0, d.lastWrite.Load())))
	}
	return true
}

// lastWritten is when the stream was last written to, by its goroutine or
// by a publisher.
func (st *stream) lastWritten() time.Time {
	if d := st.direct; d != nil {
		if t := d.lastWrite.Load(); t > st.lastWrite.UnixNano() {
			return time.Unix(0, t)
		}
	}
	return st.lastWrite
}

// deadline bounds the next write: a client that does not take it within the
// write timeout (and the slack) is dropped. The deadline is moved only when
// less than half the timeout (and the slack) is left, not on every write: a
// write always has at least half the timeout, and a busy stream spares the
// poller most updates.
func (st *stream) deadline(now time.Time) time.Time {
	if st.armed.Sub(now) <= st.timeout/2+st.slack {
		st.armed = now.Add(st.timeout + st.slack)
	}
	return st.armed
}

// isGone reports whether the client has gone.
func (st *stream) isGone() bool {
	select {
	case <-st.sink.gone():
		return true
	default:
		return false
	}
}
