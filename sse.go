package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Frames of the wire format (the SSE part of the HTML standard,
// https://html.spec.whatwg.org/multipage/server-sent-events.html).
const (
	sseIDPrefix    = "id: "
	sseDataPrefix  = "data: "
	sseComment     = ":\n\n"                       // first frame and heartbeat
	sseComplete    = "event: complete\ndata: \n\n" // the end of an SSE stream
	sseReset       = "event: reset\ndata: \n\n"    // a Last-Event-ID that cannot be resumed
	plainHeartbeat = "\n"
)

// Error codes, in extensions.code of every error gqlpush sends.
const (
	CodeNotFound             = "NOT_FOUND"
	CodeMethodNotAllowed     = "METHOD_NOT_ALLOWED"
	CodeBadUserInput         = "BAD_USER_INPUT"
	CodeUnauthenticated      = "UNAUTHENTICATED"
	CodeForbidden            = "FORBIDDEN"
	CodeTooManyStreams       = "TOO_MANY_STREAMS"
	CodeTooManySubscriptions = "TOO_MANY_SUBSCRIPTIONS"
	CodeTooManyUpstreamConns = "TOO_MANY_UPSTREAM_CONNECTIONS"
	CodeUpstreamUnavailable  = "UPSTREAM_UNAVAILABLE"
	CodeSlowConsumer         = "SLOW_CONSUMER"
	CodeShuttingDown         = "SHUTTING_DOWN"
	CodeResultTooLarge       = "RESULT_TOO_LARGE"
	CodeInternal             = "INTERNAL_SERVER_ERROR"
)

// Request flags.
const (
	flagSSE       = "wg_sse"
	flagSSEAlias  = "wg_see"
	flagOnce      = "wg_subscribe_once"
	flagJSONPatch = "wg_json_patch"
	flagDedupe    = "wg_deduplicate"
	flagVariables = "wg_variables"
)

// A request is a parsed, checked client request.
type request struct {
	ep        *endpoint
	principal *Principal // nil: anonymous
	sse       bool
	once      bool
	patch     bool   // wg_json_patch
	dedupe    bool   // wg_deduplicate
	vars      []byte // canonical JSON

	// What goes upstream on the connection's handshake, and the identity
	// that keeps callers with different values apart.
	header   http.Header
	init     json.RawMessage
	identity string

	key   subKey // of its shared subscription
	owner string // its caller, for the stream caps
}

// An httpError is an error answered before the stream starts.
type httpError struct {
	status int
	code   string
	msg    string
	allow  string // the Allow header of a 405
	bearer string // the WWW-Authenticate header of a 401
	retry  string // the Retry-After header of a 429
}

func (e *httpError) Error() string { return e.msg }

var errShuttingDown = &httpError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server shutting down"}

func badInput(msg string) *httpError {
	return &httpError{status: http.StatusBadRequest, code: CodeBadUserInput, msg: msg}
}

// ServeHTTP serves GET <prefix><operation>?<flags and variables>.
//
// The checks run in this order, and the first that fails answers: the
// operation exists (404), the method (405), the query string's size (414),
// the credentials (401), the operation's rules (401, 403), flags and
// variables (400), the stream caps (429).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cors(w, r) {
		return // a preflight, answered
	}
	req, herr := h.parseRequest(r)
	if herr != nil {
		writeError(w, herr)
		return
	}
	req.key = subKey{ep: req.ep, identity: req.identity, vars: string(req.vars)}
	if req.once {
		// A one-shot request gets its own upstream subscription: it wants
		// the upstream's first result, not the next one of a running
		// subscription.
		req.key.nonce = h.nonce.Add(1)
	}
	req.owner = h.limitKey(r, req.principal)
	anonymous := req.principal == nil
	release, byCaller, herr := h.limits.acquire(req.owner, anonymous)
	if byCaller && h.hub.makeRoom(req.owner, req.key) {
		release, _, herr = h.limits.acquire(req.owner, anonymous)
	}
	if herr != nil {
		writeError(w, herr)
		return
	}
	if !h.track() {
		release()
		writeError(w, errShuttingDown)
		return
	}
	h.serveStream(w, r, req, func() {
		h.untrack()
		release()
	})
}

func (h *Handler) parseRequest(r *http.Request) (*request, *httpError) {
	p := r.URL.Path
	if !strings.HasPrefix(p, h.prefix) {
		return nil, &httpError{status: http.StatusNotFound, code: CodeNotFound, msg: "not found"}
	}
	name := strings.TrimPrefix(p[len(h.prefix):], "/")
	ep := h.endpoints[name]
	if ep == nil {
		return nil, &httpError{status: http.StatusNotFound, code: CodeNotFound, msg: "no operation " + quoteShort(name)}
	}
	if r.Method != http.MethodGet {
		return nil, &httpError{status: http.StatusMethodNotAllowed, code: CodeMethodNotAllowed, msg: "method " + r.Method + " not allowed: subscriptions are GET requests", allow: "GET"}
	}
	if len(r.URL.RawQuery) > h.cfg.maxQueryBytes {
		return nil, &httpError{status: http.StatusRequestURITooLong, code: CodeBadUserInput, msg: "query string longer than " + strconv.Itoa(h.cfg.maxQueryBytes) + " bytes"}
	}
	principal, herr := h.authenticate(r, ep)
	if herr != nil {
		return nil, herr
	}
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badInput("malformed query string")
	}
	req := &request{ep: ep, principal: principal}
	var (
		varsJSON   map[string]any
		varsParams map[string][]string
		seenSSE    bool
	)
	for k, vals := range params {
		if !strings.HasPrefix(k, "wg_") {
			if k == "access_token" && !ep.declares(k) {
				// RFC 6750 allows it; gqlpush does not: URLs end up
				// in logs and in browser history.
				return nil, badInput("a token is not accepted in the query string: send it in the Authorization header or the cookie")
			}
			if varsParams == nil {
				varsParams = map[string][]string{}
			}
			varsParams[k] = vals
			continue
		}
		if len(vals) != 1 {
			return nil, badInput("parameter " + quoteShort(k) + " given " + strconv.Itoa(len(vals)) + " times")
		}
		v := vals[0]
		switch k {
		case flagSSE, flagSSEAlias:
			if seenSSE {
				return nil, badInput("give wg_sse once (wg_see is the same flag)")
			}
			seenSSE = true
			if req.sse, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagOnce:
			if req.once, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagJSONPatch:
			if req.patch, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagDedupe:
			if req.dedupe, err = parseFlag(k, v); err != nil {
				return nil, badInput(err.Error())
			}
		case flagVariables:
			obj, err := decodeJSON(v)
			m, isObj := obj.(map[string]any)
			if err != nil || !isObj {
				return nil, badInput("wg_variables is not a JSON object")
			}
			varsJSON = m
		default:
			return nil, badInput("unknown parameter " + quoteShort(k) + " (wg_ parameters: wg_sse, wg_subscribe_once, wg_json_patch, wg_deduplicate, wg_variables)")
		}
	}
	if varsJSON != nil && varsParams != nil {
		return nil, badInput("give variables either in wg_variables or as parameters, not both")
	}
	vars, err := ep.coerceVariables(varsJSON, varsParams, principal)
	if err != nil {
		var ie *inputError
		if errors.As(err, &ie) {
			return nil, badInput(ie.msg)
		}
		return nil, badInput("invalid variables")
	}
	if req.vars, err = encodeVariables(vars); err != nil {
		return nil, badInput("invalid variables")
	}
	if req.header, req.init, req.identity, herr = h.forward(r, ep.up, principal); herr != nil {
		return nil, herr
	}
	return req, nil
}

// parseFlag reads a flag: on when empty, "true" or "1"; off when "false" or
// "0".
func parseFlag(name, v string) (bool, error) {
	switch v {
	case "", "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, errors.New(name + " must be true, false, 1, 0 or empty, not " + quoteShort(v))
}

// writeError answers with the JSON error body:
// {"errors":[{"message":…,"extensions":{"code":…}}]}.
func writeError(w http.ResponseWriter, e *httpError) {
	hd := w.Header()
	if e.allow != "" {
		hd.Set("Allow", e.allow)
	}
	if e.bearer != "" {
		hd.Set("WWW-Authenticate", e.bearer)
	}
	if e.retry != "" {
		hd.Set("Retry-After", e.retry)
	}
	writeJSON(w, e.status, errorBody(e.msg, e.code))
}

func errorBody(msg, code string) []byte {
	return errorsJSON(errorList(msg, code))
}

// serveStream subscribes and writes the response. done is called once the
// stream is over, whenever that is: over HTTP/1.x the stream outlives
// ServeHTTP (see runStream).
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, req *request, done func()) {
	lastID := ""
	if req.sse && !req.once {
		lastID = r.Header.Get("Last-Event-ID")
	}
	s, reset, err := h.hub.join(req.key, req.owner, req.header, req.init, lastID)
	if err != nil {
		done()
		herr := errShuttingDown
		if !errors.As(err, &herr) && !errors.Is(err, errClosed) {
			h.log.Error("starting a subscription failed", "operation", req.ep.op.name, "err", logText(err))
			herr = &httpError{status: http.StatusInternalServerError, code: CodeInternal, msg: "internal error"}
		}
		writeError(w, herr)
		return
	}
	op := req.ep.op.name
	h.obs.streamOpened(op)
	// The stream ends in two steps: finish lets the subscription go and
	// reports the end, before the response's last bytes are written, so
	// that a client that has read its response finds both done; done
	// releases the stream's slot after the response is over, so that
	// Close returns only when every response is.
	finish := func(reason string) {
		defer h.hub.leave(s)
		h.obs.streamClosed(op, reason)
	}
	if req.once && !req.sse {
		reason := ReasonClientGone
		defer done()
		defer func() { finish(reason) }()
		reason = h.serveOnce(w, r, s)
		return
	}
	st := &stream{req: req, timeout: h.cfg.writeTimeout}
	if !st.begin(w, r, !h.cfg.useResponseWriter, reset) {
		defer done()
		finish(ReasonClientGone) // the head could not be written
		return
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
func (h *Handler) runStream(s *subscriber, st *stream, finish func(reason string), done func(), detached bool) {
	if detached {
		// Deferred first, so it runs last: it also catches a panic in
		// the release below.
		defer func() {
			if p := recover(); p != nil {
				h.log.Error("panic serving a stream", "operation", st.req.ep.op.name, "panic", p, "stack", string(debug.Stack()))
			}
		}()
	}
	reason := ReasonClientGone
	defer func() {
		defer done()
		defer st.sink.close()
		finish(reason)
	}()
	if h.cfg.heartbeat > 0 {
		st.beat = time.NewTimer(h.cfg.heartbeat)
		st.beatEvery = h.cfg.heartbeat
		defer st.beat.Stop()
	}
	reason = h.streamLoop(s, st)
	if reason == ReasonWriteFailed {
		switch {
		case s.isSlow():
			reason = ReasonSlowConsumer // it fell behind while its write hung
		case st.isGone():
			reason = ReasonClientGone
		}
	}
	if reason == ReasonSlowConsumer || reason == ReasonWriteFailed {
		h.obs.subscriberDropped(st.req.ep.op.name, reason)
	}
}

// streamLoop writes results until the stream ends, and says why it ended.
func (h *Handler) streamLoop(s *subscriber, st *stream) string {
	var (
		beat      <-chan time.Time
		drainDone <-chan time.Time
		expired   <-chan time.Time
		buf       = make([]*event, 0, 8)
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
	gone := st.sink.gone()
	for {
		select {
		case <-gone:
			return ReasonClientGone
		case <-expired:
			st.end(endExpired)
			return ReasonTokenExpired
		case <-drainDone:
			st.end(endShutdown)
			return ReasonShutdown
		case <-beat:
			// The timer is not reset on every write, which would cost
			// each one a timer operation: it fires every interval and
			// checks how long the stream has been silent.
			if idle := time.Since(st.lastWrite); idle < st.beatEvery {
				st.beat.Reset(st.beatEvery - idle)
				continue
			}
			if !st.heartbeat() {
				return ReasonWriteFailed
			}
			st.beat.Reset(st.beatEvery)
		case <-s.wake:
			var end endReason
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
				end = endComplete
			}
			n, ok := st.events(buf)
			if n > 0 && h.obs != nil { // spares time.Since without an Observer
				h.obs.framesDelivered(op, n, time.Since(buf[len(buf)-1].at))
			}
			clear(buf)
			if !ok {
				return ReasonWriteFailed
			}
			if end.kind != 0 {
				st.end(end)
				if st.req.once && end.kind == endKindComplete {
					return ReasonOnce
				}
				return end.reason()
			}
		}
	}
}

// serveOnce answers wg_subscribe_once without wg_sse: the first result as
// the whole JSON body.
func (h *Handler) serveOnce(w http.ResponseWriter, r *http.Request, s *subscriber) string {
	var buf []*event
	for {
		select {
		case <-r.Context().Done():
			return ReasonClientGone
		case <-s.wake:
		}
		var end endReason
		buf, end = s.take(buf[:0])
		if len(buf) > 0 {
			writeJSON(w, http.StatusOK, buf[0].json)
			return ReasonOnce
		}
		if h.shuttingDown.Load() { // read after take: see streamLoop
			writeError(w, errShuttingDown)
			return ReasonShutdown
		}
		switch end.kind {
		case 0:
			continue
		case endKindComplete:
			w.WriteHeader(http.StatusNoContent)
		case endKindUpstreamError:
			writeJSON(w, http.StatusOK, errorsJSON(end.errors))
		case endKindUnavailable:
			writeError(w, &httpError{status: http.StatusBadGateway, code: CodeUpstreamUnavailable, msg: "upstream unavailable"})
		default:
			writeError(w, errShuttingDown)
		}
		return end.reason()
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// errorsJSON renders {"errors":[…]}.
func errorsJSON(errs json.RawMessage) []byte {
	b := make([]byte, 0, len(errs)+12)
	b = append(b, `{"errors":`...)
	b = append(b, errs...)
	return append(b, '}')
}

// A stream writes the frames of one response, through its sink. Writes stop
// at the first error: the client is gone or too slow.
type stream struct {
	sink      sink
	req       *request
	timeout   time.Duration
	beat      *time.Timer
	beatEvery time.Duration
	lastWrite time.Time // of the last write
	armed     time.Time // the write deadline in force
	last      *event    // the last result this client has, for patch and dedupe
	batch     [][]byte  // frames of one write, reused
	failed    bool
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
	sk, err := openSink(w, r, hijack, first, st.deadline(time.Now()))
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
// event.
func (st *stream) end(end endReason) {
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

// write writes frames in one write, unless an earlier write failed.
func (st *stream) write(frames [][]byte) bool {
	if st.failed {
		return false
	}
	now := time.Now()
	if err := st.sink.writev(frames, st.deadline(now)); err != nil {
		st.failed = true
		return false
	}
	st.lastWrite = now
	return true
}

// deadline bounds the next write: a client that does not take it within the
// write timeout is dropped. The deadline is moved only when less than half
// the timeout is left, not on every write: a write always has at least half
// the timeout, and a busy stream spares the poller most updates.
func (st *stream) deadline(now time.Time) time.Time {
	if st.armed.Sub(now) <= st.timeout/2 {
		st.armed = now.Add(st.timeout)
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
