package gqlpushtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: memTransport{s}}
}

type memTransport struct{ s *Server }

func (t memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	w := httptest.NewRecorder()
	t.s.ServeHTTP(w, r)
	resp := w.Result()
	resp.Request = r
	return resp, nil
}
