package gqlpushtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	graphql "github.com/graph-gophers/graphql-go"
	qerrors "github.com/graph-gophers/graphql-go/errors"
)

// GraphQL over Server-Sent Events, in the distinct connections mode of the
// graphql-sse protocol
// (https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md), as
// the graphql-sse reference handler and GraphQL Yoga serve it: one request,
// one operation, one event stream. The package doc says what a client sees.

// Frames of the event stream. A next event's data is one line of compact
// JSON; complete carries an empty data field, which graphql-sse writes so
// that an EventSource, which dispatches no event without data, sees it.
const (
	sseNext     = "event: next\ndata: "
	sseComplete = "event: complete\ndata:\n\n"
)

// An sseStream is one GraphQL-over-SSE request being served.
type sseStream struct {
	id     int
	cancel context.CancelFunc // ends the operation: CompleteAll
	drop   chan struct{}      // closed by CloseConnections

	dropped bool // under Server.mu: drop is closed
}

// acceptsEventStream reports whether an Accept header names
// text/event-stream.
func acceptsEventStream(h http.Header) bool {
	for _, t := range acceptedTypes(h) {
		if t == "text/event-stream" {
			return true
		}
	}
	return false
}

// acceptsOnlyEventStream reports whether text/event-stream is all an Accept
// header names: the graphql-sse handler then streams validation errors
// rather than answering 400.
func acceptsOnlyEventStream(h http.Header) bool {
	ts := acceptedTypes(h)
	return len(ts) == 1 && ts[0] == "text/event-stream"
}

// acceptedTypes returns the media ranges of every Accept header, lower case,
// without parameters.
func acceptedTypes(h http.Header) []string {
	var ts []string
	for _, v := range h.Values("Accept") {
		for r := range strings.SplitSeq(v, ",") {
			if t, _, err := mime.ParseMediaType(r); err == nil {
				ts = append(ts, t)
			}
		}
	}
	return ts
}

// An sseRequest is the operation of a GraphQL-over-SSE request.
type sseRequest struct {
	Query         string          `json:"query"`
	Variables     json.RawMessage `json:"variables,omitempty"`
	OperationName string          `json:"operationName,omitempty"`
	Extensions    json.RawMessage `json:"extensions,omitempty"`

	vars map[string]any
}

// readSSERequest reads the operation of a GET's query string or a POST's
// JSON body. It returns the payload to record — the body as received, or
// the query string's parameters as a JSON object — or the status and the
// error, for the client, of a request it cannot read.
func readSSERequest(r *http.Request) (sseRequest, json.RawMessage, int, error) {
	var req sseRequest
	var payload json.RawMessage
	if r.Method == http.MethodGet {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return req, nil, http.StatusBadRequest, errors.New("unparsable query string")
		}
		req.Query = q.Get("query")
		req.OperationName = q.Get("operationName")
		if v := q.Get("variables"); v != "" {
			req.Variables = json.RawMessage(v)
		}
		if v := q.Get("extensions"); v != "" {
			req.Extensions = json.RawMessage(v)
		}
		// Marshalling checks that variables and extensions are JSON.
		if payload, err = json.Marshal(req); err != nil {
			return req, nil, http.StatusBadRequest, errors.New("variables or extensions are not JSON")
		}
	} else {
		if t, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); t != "application/json" {
			return req, nil, http.StatusUnsupportedMediaType, errors.New("the body must be application/json")
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxQueryBody+1))
		if err != nil {
			return req, nil, http.StatusBadRequest, errors.New("unreadable body")
		}
		if len(body) > maxQueryBody {
			return req, nil, http.StatusRequestEntityTooLarge, errors.New("the body is too large")
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return req, nil, http.StatusBadRequest, errors.New("the body is no GraphQL request")
		}
		payload = body
	}
	if req.Query == "" {
		return req, nil, http.StatusBadRequest, errors.New("missing query")
	}
	if !jsonObject(req.Variables, &req.vars) {
		return req, nil, http.StatusBadRequest, errors.New("variables must be an object")
	}
	var ext map[string]any
	if !jsonObject(req.Extensions, &ext) {
		return req, nil, http.StatusBadRequest, errors.New("extensions must be an object")
	}
	return req, payload, http.StatusOK, nil
}

// jsonObject decodes b, absent or null, or an object, into m.
func jsonObject(b json.RawMessage, m *map[string]any) bool {
	if len(b) == 0 {
		return true
	}
	return json.Unmarshal(b, m) == nil
}

// serveSSE serves one GraphQL-over-SSE request, h being how it misbehaves.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request, h Hostile) {
	if !s.speaksSSE() {
		http.Error(w, "GraphQL over SSE is not served here", http.StatusNotAcceptable)
		return
	}
	if r.Method == http.MethodGet && s.opts.SSEPostOnly {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "GraphQL over SSE takes POST only", http.StatusMethodNotAllowed)
		return
	}
	if !s.add() {
		http.Error(w, "upstream closed", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	// The operation ends with the request, the server, or CompleteAll.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	st := &sseStream{cancel: cancel, drop: make(chan struct{})}
	if !s.openStream(st, r.Header.Clone()) {
		http.Error(w, "upstream down", http.StatusServiceUnavailable)
		return
	}
	defer s.closeStream(st)

	req, payload, status, err := readSSERequest(r)
	if err != nil {
		writeJSONErrors(w, status, []*qerrors.QueryError{{Message: err.Error()}})
		return
	}
	s.record(st.id, wireMessage{Type: "subscribe", Payload: payload})
	if errs := s.schema.ValidateWithVariables(req.Query, req.vars); len(errs) > 0 {
		// As the graphql-sse handler does: a document that does not parse
		// is a 400, and so is one that does not validate, unless the
		// client accepts only an event stream: then the errors are its one
		// result.
		if !validationOnly(errs) || !acceptsOnlyEventStream(r.Header) {
			writeJSONErrors(w, http.StatusBadRequest, errs)
			return
		}
		streamErrors(w, errs)
		return
	}
	results, err := s.schema.Subscribe(ctx, req.Query, req.OperationName, req.vars)
	if err != nil {
		// A schema without subscriptions: the error is the one result.
		streamErrors(w, []*qerrors.QueryError{{Message: err.Error()}})
		return
	}
	s.streamResults(w, r, st, h, results)
}

// streamResults writes the operation's results as next events, then
// complete, or stops when the client leaves, the server drops the response
// or closes. This goroutine is the only writer of the response.
func (s *Server) streamResults(w http.ResponseWriter, r *http.Request, st *sseStream, h Hostile, results <-chan any) {
	s.mu.Lock()
	s.live++
	s.changedLocked()
	s.mu.Unlock()
	running := true
	ended := func() {
		if running {
			running = false
			s.mu.Lock()
			s.live--
			s.changedLocked()
			s.mu.Unlock()
		}
	}
	defer ended()
	defer func() {
		st.cancel()
		drain(results)
	}()
	// gone ends the operation of a client that left, and records it.
	gone := func() {
		st.cancel()
		drain(results)
		if running && !s.isDropped(st) && s.ctx.Err() == nil {
			s.record(st.id, wireMessage{Type: "complete"})
		}
	}

	sw := startEventStream(w)
	first := true
	for {
		select {
		case res, ok := <-results:
			if !ok {
				results = nil
				// When the request, the server or the response is ending,
				// its case below says how.
				if r.Context().Err() != nil || s.ctx.Err() != nil || s.isDropped(st) {
					continue
				}
				ended()
				// A silent server says nothing and holds the response
				// open, as a hung upstream would.
				if s.isSilent() {
					continue
				}
				sw.write([]byte(sseComplete))
				return
			}
			resp, ok := res.(*graphql.Response)
			if !ok || s.isSilent() {
				continue
			}
			b, err := json.Marshal(resp)
			if err != nil {
				continue
			}
			if first && h.OversizedResult > 0 {
				// It stands in for this result, as over a WebSocket.
				b = paddedResult("padding", h.OversizedResult)
			}
			first = false
			if !sw.write(nextFrame(b)) {
				gone()
				return
			}
		case <-r.Context().Done():
			gone()
			return
		case <-st.drop:
			abort(st, results)
		case <-s.ctx.Done():
			abort(st, results)
		}
	}
}

// abort ends the response abruptly: net/http closes its connection (or
// resets its HTTP/2 stream) without ending the body.
func abort(st *sseStream, results <-chan any) {
	st.cancel()
	drain(results)
	panic(http.ErrAbortHandler)
}

// drain waits for the operation's results to end, once its context has;
// nil is results already ended.
func drain(results <-chan any) {
	if results == nil {
		return
	}
	for range results {
	}
}

// validationOnly reports whether every error is a validation rule's, none
// the parser's or about the document as a whole.
func validationOnly(errs []*qerrors.QueryError) bool {
	for _, e := range errs {
		if e.Rule == "" {
			return false
		}
	}
	return true
}

func nextFrame(result []byte) []byte {
	b := make([]byte, 0, len(sseNext)+len(result)+2)
	b = append(b, sseNext...)
	b = append(b, result...)
	return append(b, "\n\n"...)
}

// streamErrors answers with an event stream of one result, errs, then
// complete.
func streamErrors(w http.ResponseWriter, errs []*qerrors.QueryError) {
	b, _ := json.Marshal(&graphql.Response{Errors: errs})
	sw := startEventStream(w)
	if sw.write(nextFrame(b)) {
		sw.write([]byte(sseComplete))
	}
}

// writeJSONErrors answers a request the stream does not start for, as the
// graphql-sse handler does: a status and {"errors":[...]}.
func writeJSONErrors(w http.ResponseWriter, status int, errs []*qerrors.QueryError) {
	b, _ := json.Marshal(struct {
		Errors []*qerrors.QueryError `json:"errors"`
	}{errs})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// An sseWriter writes an event stream: one Write per frame, then a flush.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

// startEventStream sends the response's header at once, so that the client
// knows the stream is accepted before any result.
func startEventStream(w http.ResponseWriter) *sseWriter {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w)}
	sw.err = sw.rc.Flush()
	return sw
}

// write sends one frame; it reports false once a write failed.
func (sw *sseWriter) write(frame []byte) bool {
	if sw.err != nil {
		return false
	}
	if _, sw.err = sw.w.Write(frame); sw.err == nil {
		sw.err = sw.rc.Flush()
	}
	return sw.err == nil
}

func (s *Server) speaksSSE() bool {
	return len(s.wsProto) < len(s.opts.Protocols)
}

// openStream gives an SSE request its conn number and ConnInfo; it reports
// false when the server is down.
func (s *Server) openStream(st *sseStream, header http.Header) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return false
	}
	s.nextConn++
	st.id = s.nextConn
	s.streams[st.id] = st
	s.infos = append(s.infos, ConnInfo{ID: st.id, Subprotocol: ProtocolSSE, Header: header})
	s.changedLocked()
	return true
}

func (s *Server) closeStream(st *sseStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, st.id)
	s.changedLocked()
}

func (s *Server) isDropped(st *sseStream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return st.dropped
}

// dropStreams makes every SSE response end abruptly.
func (s *Server) dropStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if !st.dropped {
			st.dropped = true
			close(st.drop)
		}
	}
}

// completeStreams ends every SSE operation: each response gets complete.
func (s *Server) completeStreams() {
	s.mu.Lock()
	streams := make([]*sseStream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.cancel()
	}
}
