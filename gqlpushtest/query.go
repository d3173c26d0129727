package gqlpushtest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// Queries over HTTP. The server answers a POST of a GraphQL-over-HTTP
// request (application/json: query, variables, operationName) with the
// result, as application/graphql-response+json when the request accepts
// it, else application/json. Each is recorded as a Message of Type
// "query", Conn 0, whose Payload is the request's body.

// maxQueryBody bounds a query request's body.
const maxQueryBody = 1 << 20

// serveQuery answers one GraphQL-over-HTTP request.
func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxQueryBody))
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	s.record(0, wireMessage{Type: "query", Payload: body})
	media := "application/json"
	if strings.Contains(r.Header.Get("Accept"), "application/graphql-response+json") {
		media = "application/graphql-response+json"
	}
	var req struct {
		Query         string         `json:"query"`
		Variables     map[string]any `json:"variables"`
		OperationName string         `json:"operationName"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Query == "" {
		w.Header().Set("Content-Type", media)
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"errors":[{"message":"the body is no GraphQL request"}]}`))
		return
	}
	resp := s.schema.Exec(r.Context(), req.Query, req.OperationName, req.Variables)
	out, err := json.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", media)
	w.Write(out)
}

// Queries returns how many queries the server was posted.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.received {
		if m.Type == "query" {
			n++
		}
	}
	return n
}

// HTTPClient returns a client whose requests the server answers in memory,
// with no listener, as [Server.Dialer] does for WebSockets: for
// [gqlpush.Upstream.HTTPClient] in tests that run in a synctest bubble.
// GraphQL-over-SSE responses stream as they would over a network: the
// response returns once its header is written, its body carries each frame
// as it is flushed, closing the body is the client leaving, and a response
// the server drops ([Server.CloseConnections]) ends with
// io.ErrUnexpectedEOF.
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: memTransport{s}}
}

type memTransport struct{ s *Server }

func (t memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodPost) && acceptsEventStream(r.Header) {
		return t.s.roundTripStream(r)
	}
	w := httptest.NewRecorder()
	t.s.ServeHTTP(w, r)
	resp := w.Result()
	resp.Request = r
	return resp, nil
}

// roundTripStream serves r in a goroutine of its own and returns the
// response once its header is written, its body read as the server writes
// it.
func (s *Server) roundTripStream(r *http.Request) (*http.Response, error) {
	if !s.add() {
		return nil, errClosed
	}
	ctx, cancel := context.WithCancel(r.Context())
	sr := r.WithContext(ctx)
	if sr.Body == nil {
		sr.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, pw: pw, headed: make(chan struct{})}
	done := make(chan struct{})
	go s.serveStream(w, sr, pr, done)
	select {
	case <-w.headed:
	case <-done:
		w.WriteHeader(http.StatusOK)
	}
	return &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &streamBody{pr: pr, cancel: cancel},
		ContentLength: -1,
		Request:       r,
	}, nil
}

// serveStream runs the handler for roundTripStream. A handler that aborts
// (http.ErrAbortHandler) ends the body with io.ErrUnexpectedEOF, as a
// connection closed in the middle of a response does; so does the server's
// Close, which a handler blocked writing to a client that does not read
// would otherwise wait for.
func (s *Server) serveStream(w *pipeResponse, r *http.Request, pr *io.PipeReader, done chan<- struct{}) {
	defer s.wg.Done()
	defer close(done)
	defer context.AfterFunc(s.ctx, func() { pr.CloseWithError(io.ErrUnexpectedEOF) })()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			w.pw.CloseWithError(io.ErrUnexpectedEOF)
		}
	}()
	s.ServeHTTP(w, r)
	w.pw.Close()
}

// A pipeResponse is the ResponseWriter of a streamed in-memory response.
type pipeResponse struct {
	header http.Header
	pw     *io.PipeWriter

	// Set once, before headed is closed: the status and the header as
	// written.
	status int
	sent   http.Header
	headed chan struct{}
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	if w.sent != nil {
		return
	}
	w.status, w.sent = code, w.header.Clone()
	close(w.headed)
}

func (w *pipeResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush sends the header; each Write already reached the reader.
func (w *pipeResponse) Flush() { w.WriteHeader(http.StatusOK) }

// A streamBody is the body of a streamed in-memory response: closing it is
// the client leaving.
type streamBody struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
}

func (b *streamBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *streamBody) Close() error {
	b.cancel()
	return b.pr.Close()
}
