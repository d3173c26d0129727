package gqlpush

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Frames of the wire format (the SSE part of the HTML standard,
// https://html.spec.whatwg.org/multipage/server-sent-events.html).
const (
	sseDataPrefix  = "data: "
	sseComment     = ":\n\n"                       // first frame and heartbeat
	sseComplete    = "event: complete\ndata: \n\n" // the end of an SSE stream
	plainHeartbeat = "\n"
)

// Error codes, in extensions.code of every error gqlpush sends.
const (
	CodeNotFound            = "NOT_FOUND"
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	CodeBadUserInput        = "BAD_USER_INPUT"
	CodeUnauthenticated     = "UNAUTHENTICATED"
	CodeForbidden           = "FORBIDDEN"
	CodeTooManyStreams      = "TOO_MANY_STREAMS"
	CodeUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	CodeSlowConsumer        = "SLOW_CONSUMER"
	CodeShuttingDown        = "SHUTTING_DOWN"
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
	ep   *endpoint
	sse  bool
	once bool
	vars []byte // canonical JSON
}

// An httpError is an error answered before the stream starts.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badInput(msg string) *httpError {
	return &httpError{status: http.StatusBadRequest, code: CodeBadUserInput, msg: msg}
}

// ServeHTTP serves GET <prefix><operation>?<flags and variables>.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, herr := h.parseRequest(r)
	if herr != nil {
		if herr.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET")
		}
		writeError(w, herr)
		return
	}
	if !h.track() {
		writeError(w, &httpError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server shutting down"})
		return
	}
	defer h.untrack()
	h.serveStream(w, r, req)
}

func (h *Handler) parseRequest(r *http.Request) (*request, *httpError) {
	p := r.URL.Path
	if !strings.HasPrefix(p, h.prefix) {
		return nil, &httpError{status: http.StatusNotFound, code: CodeNotFound, msg: "not found"}
	}
	name := strings.TrimPrefix(p[len(h.prefix):], "/")
	ep := h.endpoints[name]
	if ep == nil {
		return nil, &httpError{status: http.StatusNotFound, code: CodeNotFound, msg: "no operation " + strconv.Quote(name)}
	}
	if r.Method != http.MethodGet {
		return nil, &httpError{status: http.StatusMethodNotAllowed, code: CodeMethodNotAllowed, msg: "method " + r.Method + " not allowed: subscriptions are GET requests"}
	}
	if len(r.URL.RawQuery) > h.cfg.maxQueryBytes {
		return nil, &httpError{status: http.StatusRequestURITooLong, code: CodeBadUserInput, msg: "query string longer than " + strconv.Itoa(h.cfg.maxQueryBytes) + " bytes"}
	}
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badInput("malformed query string")
	}
	req := &request{ep: ep}
	var (
		varsJSON   map[string]any
		varsParams map[string][]string
		seenSSE    bool
	)
	for k, vals := range params {
		if !strings.HasPrefix(k, "wg_") {
			if varsParams == nil {
				varsParams = map[string][]string{}
			}
			varsParams[k] = vals
			continue
		}
		if len(vals) != 1 {
			return nil, badInput("parameter " + k + " given " + strconv.Itoa(len(vals)) + " times")
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
		case flagJSONPatch, flagDedupe:
			on, err := parseFlag(k, v)
			if err != nil {
				return nil, badInput(err.Error())
			}
			if on {
				return nil, badInput(k + " is not supported")
			}
		case flagVariables:
			obj, err := decodeJSON(v)
			m, isObj := obj.(map[string]any)
			if err != nil || !isObj {
				return nil, badInput("wg_variables is not a JSON object")
			}
			varsJSON = m
		default:
			return nil, badInput("unknown parameter " + strconv.Quote(k) + " (wg_ parameters: wg_sse, wg_subscribe_once, wg_json_patch, wg_deduplicate, wg_variables)")
		}
	}
	if varsJSON != nil && varsParams != nil {
		return nil, badInput("give variables either in wg_variables or as parameters, not both")
	}
	vars, err := ep.coerceVariables(varsJSON, varsParams)
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
	return false, errors.New(name + " must be true, false, 1, 0 or empty, not " + strconv.Quote(v))
}

// writeError answers with the JSON error body:
// {"errors":[{"message":…,"extensions":{"code":…}}]}.
func writeError(w http.ResponseWriter, e *httpError) {
	body := errorBody(e.msg, e.code)
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	w.Write(body)
}

func errorBody(msg, code string) []byte {
	type ext struct {
		Code string `json:"code"`
	}
	type gqlError struct {
		Message    string `json:"message"`
		Extensions ext    `json:"extensions"`
	}
	b, _ := json.Marshal(struct {
		Errors []gqlError `json:"errors"`
	}{[]gqlError{{Message: msg, Extensions: ext{Code: code}}}})
	return b
}

// serveStream subscribes and writes the response. It is the only goroutine
// that writes to w; one select handles results, the heartbeat, the client
// leaving and shutdown.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, req *request) {
	key := subKey{ep: req.ep, vars: string(req.vars)}
	if req.once {
		// A one-shot request gets its own upstream subscription: it wants
		// the upstream's first result, not the next one of a running
		// subscription.
		key.nonce = h.nonce.Add(1)
	}
	s, err := h.hub.join(key, req.ep.up.header, req.ep.up.init)
	if err != nil {
		writeError(w, &httpError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server shutting down"})
		return
	}
	defer h.hub.leave(s)
	if req.once && !req.sse {
		h.serveOnce(w, r, s)
		return
	}
	st := &stream{w: w, rc: http.NewResponseController(w), sse: req.sse, timeout: h.cfg.writeTimeout}
	if !st.begin() {
		return
	}
	// No deadline may outlive the stream on a kept-alive connection.
	defer st.rc.SetWriteDeadline(time.Time{})
	var beat <-chan time.Time
	if h.cfg.heartbeat > 0 {
		t := time.NewTimer(h.cfg.heartbeat)
		defer t.Stop()
		beat = t.C
		st.beat = t
		st.beatEvery = h.cfg.heartbeat
	}
	buf := make([]*event, 0, 8)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.shutdown:
			st.end(endShutdown)
			return
		case <-beat:
			if !st.heartbeat() {
				return
			}
		case <-s.wake:
			var end endReason
			buf, end = s.take(buf[:0])
			if req.once && len(buf) > 0 {
				st.events(buf[:1])
				st.end(endComplete)
				return
			}
			if !st.events(buf) {
				return
			}
			clear(buf)
			if end.kind != 0 {
				st.end(end)
				return
			}
		}
	}
}

// serveOnce answers wg_subscribe_once without wg_sse: the first result as
// the whole JSON body.
func (h *Handler) serveOnce(w http.ResponseWriter, r *http.Request, s *subscriber) {
	var buf []*event
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.shutdown:
			writeError(w, &httpError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server shutting down"})
			return
		case <-s.wake:
		}
		var end endReason
		buf, end = s.take(buf[:0])
		if len(buf) > 0 {
			writeJSON(w, http.StatusOK, buf[0].json)
			return
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
			writeError(w, &httpError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server shutting down"})
		}
		return
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

// A stream writes the frames of one response. Writes stop at the first error:
// the client is gone or too slow.
type stream struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	sse       bool
	timeout   time.Duration
	beat      *time.Timer
	beatEvery time.Duration
	failed    bool
}

// begin sends the head and, for SSE, the first comment, flushed at once so
// the client knows the stream is open before any result.
func (st *stream) begin() bool {
	hd := st.w.Header()
	if st.sse {
		hd.Set("Content-Type", "text/event-stream")
	} else {
		hd.Set("Content-Type", "application/json")
	}
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	st.w.WriteHeader(http.StatusOK)
	if st.sse {
		return st.write([]byte(sseComment))
	}
	return st.flush()
}

func (st *stream) events(evs []*event) bool {
	if len(evs) == 0 {
		return true
	}
	st.deadline()
	for _, ev := range evs {
		b := ev.plain
		if st.sse {
			b = ev.sse
		}
		if _, err := st.w.Write(b); err != nil {
			st.failed = true
			return false
		}
	}
	return st.flush()
}

func (st *stream) heartbeat() bool {
	if st.sse {
		return st.write([]byte(sseComment))
	}
	return st.write([]byte(plainHeartbeat))
}

// end writes the error frame of end, if any, then, for SSE, the complete
// event.
func (st *stream) end(end endReason) {
	if st.failed {
		return
	}
	st.deadline()
	if end.errors != nil {
		body := errorsJSON(end.errors)
		if st.sse {
			st.w.Write([]byte(sseDataPrefix))
			st.w.Write(body)
			st.w.Write([]byte("\n\n"))
		} else {
			st.w.Write(body)
			st.w.Write([]byte("\n\n"))
		}
	}
	if st.sse {
		st.w.Write([]byte(sseComplete))
	}
	st.flush()
}

func (st *stream) write(b []byte) bool {
	st.deadline()
	if _, err := st.w.Write(b); err != nil {
		st.failed = true
		return false
	}
	return st.flush()
}

// deadline bounds the next write: a client that does not take it within the
// write timeout is dropped.
func (st *stream) deadline() {
	st.rc.SetWriteDeadline(time.Now().Add(st.timeout))
}

func (st *stream) flush() bool {
	if err := st.rc.Flush(); err != nil {
		st.failed = true
		return false
	}
	if st.beat != nil {
		st.beat.Reset(st.beatEvery)
	}
	return true
}
