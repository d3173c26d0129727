package gqlpush

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// errClosed is returned to requests that arrive after Close.
var errClosed = errors.New("gqlpush: handler closed")

type endKind uint8

const (
	endKindComplete      endKind = iota + 1 // the upstream completed
	endKindUpstreamError                    // the upstream sent error
	endKindUnavailable                      // the upstream is lost for good
	endKindShutdown                         // the handler is closing
	endKindSlow                             // this client fell behind
	endKindExpired                          // this client's token expired
)

// An endReason says why a stream ends; errors is the list of GraphQL errors
// sent before the end, if any.
type endReason struct {
	kind   endKind
	errors json.RawMessage
}

var (
	endComplete    = endReason{kind: endKindComplete}
	endUnavailable = endReason{kind: endKindUnavailable, errors: json.RawMessage(`[{"message":"upstream unavailable","extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]`)}
	endShutdown    = endReason{kind: endKindShutdown, errors: json.RawMessage(`[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]`)}
	endSlow        = endReason{kind: endKindSlow, errors: json.RawMessage(`[{"message":"client fell too far behind the stream","extensions":{"code":"SLOW_CONSUMER"}}]`)}
	endExpired     = endReason{kind: endKindExpired, errors: json.RawMessage(`[{"message":"token expired","extensions":{"code":"UNAUTHENTICATED"}}]`)}
	endTooLarge    = endReason{kind: endKindUpstreamError, errors: json.RawMessage(`[{"message":"upstream result over the read limit","extensions":{"code":"RESULT_TOO_LARGE"}}]`)}
)

// upstreamGone is the end of streams whose upstream refused them for good:
// UPSTREAM_UNAVAILABLE, with msg saying why.
func upstreamGone(msg string) endReason {
	return endReason{kind: endKindUnavailable, errors: errorList(msg, CodeUpstreamUnavailable)}
}

// errorList renders [{"message":msg,"extensions":{"code":code}}].
func errorList(msg, code string) json.RawMessage {
	type ext struct {
		Code string `json:"code"`
	}
	type gqlError struct {
		Message    string `json:"message"`
		Extensions ext    `json:"extensions"`
	}
	b, _ := json.Marshal([]gqlError{{Message: msg, Extensions: ext{Code: code}}})
	return b
}

// reason names an end for the Observer.
func (e endReason) reason() string {
	switch e.kind {
	case endKindComplete:
		return ReasonComplete
	case endKindUpstreamError:
		return ReasonUpstreamError
	case endKindUnavailable:
		return ReasonUpstreamUnavailable
	case endKindShutdown:
		return ReasonShutdown
	case endKindSlow:
		return ReasonSlowConsumer
	case endKindExpired:
		return ReasonTokenExpired
	}
	return ReasonClientGone
}

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

// errNotAuthenticated answers a request without valid credentials where
// they are needed. Missing and invalid credentials get the same message: a
// client learns nothing of which check failed.
func errNotAuthenticated(presented bool) *httpError {
	e := &httpError{status: http.StatusUnauthorized, code: CodeUnauthenticated, msg: "not authenticated", bearer: "Bearer"}
	if presented {
		e.bearer = `Bearer error="invalid_token"` // RFC 6750, section 3.1
	}
	return e
}

var errForbidden = &httpError{status: http.StatusForbidden, code: CodeForbidden, msg: "forbidden"}

// RetryAfter is the Retry-After of a 429: a hint, in seconds, of when a
// stream may be free again.
const RetryAfter = 5

// tooMany is the 429 of a cap reached.
func tooMany(code, msg string) *httpError {
	return &httpError{status: http.StatusTooManyRequests, code: code, msg: msg, retry: strconv.Itoa(RetryAfter)}
}

var (
	errTooManyStreams       = tooMany(CodeTooManyStreams, "too many streams")
	errTooManySubscriptions = tooMany(CodeTooManySubscriptions, "too many subscriptions")
	errTooManyUpstreamConns = tooMany(CodeTooManyUpstreamConns, "too many upstream connections")
)
