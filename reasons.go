package gqlpush

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// A Code is the extensions.code of an error gqlpush sends a client: in the
// JSON body of a refused request, and in the error frame that ends a stream.
type Code string

// Error codes, one per row of the problems table below.
const (
	CodeNotFound             Code = "NOT_FOUND"
	CodeMethodNotAllowed     Code = "METHOD_NOT_ALLOWED"
	CodeBadUserInput         Code = "BAD_USER_INPUT"
	CodeUnauthenticated      Code = "UNAUTHENTICATED"
	CodeForbidden            Code = "FORBIDDEN"
	CodeTooManyStreams       Code = "TOO_MANY_STREAMS"
	CodeTooManySubscriptions Code = "TOO_MANY_SUBSCRIPTIONS"
	CodeTooManyUpstreamConns Code = "TOO_MANY_UPSTREAM_CONNECTIONS"
	CodeUpstreamUnavailable  Code = "UPSTREAM_UNAVAILABLE"
	CodeUpstreamTimeout      Code = "UPSTREAM_TIMEOUT"
	CodeResultTooLarge       Code = "RESULT_TOO_LARGE"
	CodeSlowConsumer         Code = "SLOW_CONSUMER"
	CodeShuttingDown         Code = "SHUTTING_DOWN"
	CodeInternal             Code = "INTERNAL_SERVER_ERROR"
)

// A Reason says why a stream or a shared subscription ended, as an
// [Observer] is told.
type Reason string

// Reasons a stream or a shared subscription ends.
const (
	ReasonClientGone          Reason = "client_gone"          // the client left
	ReasonComplete            Reason = "complete"             // the upstream completed
	ReasonUpstreamError       Reason = "upstream_error"       // the upstream sent an error
	ReasonUpstreamUnavailable Reason = "upstream_unavailable" // the upstream is lost, or refused for good
	ReasonResultTooLarge      Reason = "result_too_large"     // a result over the upstream's read limit
	ReasonShutdown            Reason = "shutdown"             // Handler.Close
	ReasonSlowConsumer        Reason = "slow_consumer"        // the client fell behind, or took too long to take a write
	ReasonOnce                Reason = "once"                 // wg_subscribe_once got its result
	ReasonOnceTimeout         Reason = "once_timeout"         // wg_subscribe_once got no result in time
	ReasonTokenExpired        Reason = "token_expired"        // the caller's token expired
)

// A problem is one row of the problems table: why a request is refused,
// or why a stream ends.
type problem uint8

const (
	// Requests refused before a stream starts.
	probNotFound problem = iota + 1
	probMethodNotAllowed
	probQueryTooLong
	probBadInput
	probUnauthenticated
	probForbidden
	probTooManyStreams
	probTooManySubscriptions
	probTooManyUpstreamConns
	probInternal

	// Ends of a stream. A wg_subscribe_once request that ends so before
	// it has a result is answered with the row's status.
	probComplete
	probUpstreamError // the upstream's own errors go to the client
	probUpstreamGone
	probResultTooLarge
	probShutdown
	probSlowConsumer
	probTokenExpired
	probOnceTimeout
	probClientGone
	probOnce
)

// problems is the table: for each problem, the code sent to the client (none
// for a clean end), the reason an Observer is told (for the ends), the HTTP
// status where one applies, and the message the client reads.
var problems = [...]struct {
	code    Code
	reason  Reason
	status  int
	message string
}{
	probNotFound:             {CodeNotFound, "", http.StatusNotFound, "not found"},
	probMethodNotAllowed:     {CodeMethodNotAllowed, "", http.StatusMethodNotAllowed, "method not allowed: subscriptions are GET requests"},
	probQueryTooLong:         {CodeBadUserInput, "", http.StatusRequestURITooLong, "query string too long"},
	probBadInput:             {CodeBadUserInput, "", http.StatusBadRequest, "bad request"},
	probUnauthenticated:      {CodeUnauthenticated, "", http.StatusUnauthorized, "not authenticated"},
	probForbidden:            {CodeForbidden, "", http.StatusForbidden, "forbidden"},
	probTooManyStreams:       {CodeTooManyStreams, "", http.StatusTooManyRequests, "too many streams"},
	probTooManySubscriptions: {CodeTooManySubscriptions, "", http.StatusTooManyRequests, "too many subscriptions"},
	probTooManyUpstreamConns: {CodeTooManyUpstreamConns, "", http.StatusTooManyRequests, "too many upstream connections"},
	probInternal:             {CodeInternal, "", http.StatusInternalServerError, "internal error"},

	probComplete:       {"", ReasonComplete, http.StatusNoContent, ""},
	probUpstreamError:  {"", ReasonUpstreamError, http.StatusOK, ""},
	probUpstreamGone:   {CodeUpstreamUnavailable, ReasonUpstreamUnavailable, http.StatusBadGateway, "upstream unavailable"},
	probResultTooLarge: {CodeResultTooLarge, ReasonResultTooLarge, http.StatusBadGateway, "upstream result over the read limit"},
	probShutdown:       {CodeShuttingDown, ReasonShutdown, http.StatusServiceUnavailable, "server shutting down"},
	probSlowConsumer:   {CodeSlowConsumer, ReasonSlowConsumer, 0, "client fell too far behind the stream"},
	probTokenExpired:   {CodeUnauthenticated, ReasonTokenExpired, http.StatusUnauthorized, "token expired"},
	probOnceTimeout:    {CodeUpstreamTimeout, ReasonOnceTimeout, http.StatusGatewayTimeout, "no result from the upstream in time"},
	probClientGone:     {"", ReasonClientGone, 0, ""},
	probOnce:           {"", ReasonOnce, 0, ""},
}

func (p problem) reason() Reason { return problems[p].reason }

// An ending says why a stream or a shared subscription ends, and carries
// the GraphQL errors sent to the client before the end, if any. The zero
// ending means the stream goes on.
type ending struct {
	why    problem
	errors json.RawMessage
}

// endOf is the end of problem p, with the table's error frame.
func endOf(p problem) ending {
	return endWith(p, problems[p].message)
}

// endWith is the end of problem p whose error says msg instead of the
// table's message.
func endWith(p problem, msg string) ending {
	e := ending{why: p}
	if code := problems[p].code; code != "" {
		e.errors = errorList(msg, code)
	}
	return e
}

// The ends that carry nothing but the table's row, made once.
var (
	endComplete     = endOf(probComplete)
	endUpstreamGone = endOf(probUpstreamGone)
	endTooLarge     = endOf(probResultTooLarge)
	endShutdown     = endOf(probShutdown)
	endSlow         = endOf(probSlowConsumer)
	endExpired      = endOf(probTokenExpired)
	endOnceTimeout  = endOf(probOnceTimeout)
)

// errorList renders [{"message":msg,"extensions":{"code":code}}].
func errorList(msg string, code Code) json.RawMessage {
	type ext struct {
		Code Code `json:"code"`
	}
	type gqlError struct {
		Message    string `json:"message"`
		Extensions ext    `json:"extensions"`
	}
	b, _ := json.Marshal([]gqlError{{Message: msg, Extensions: ext{Code: code}}})
	return b
}

// errorsJSON renders {"errors":[…]}.
func errorsJSON(errs json.RawMessage) []byte {
	b := make([]byte, 0, len(errs)+12)
	b = append(b, `{"errors":`...)
	b = append(b, errs...)
	return append(b, '}')
}

// An httpError is a request refused before its stream starts: a row of the
// problems table, with a message of its own where it says more.
type httpError struct {
	why    problem
	msg    string // "" means the table's message
	bearer string // the WWW-Authenticate header of a 401
}

func (e *httpError) Error() string { return e.message() }

func (e *httpError) message() string {
	if e.msg != "" {
		return e.msg
	}
	return problems[e.why].message
}

// refuse is the refusal of problem p, with msg (or the table's message).
func refuse(p problem, msg string) *httpError { return &httpError{why: p, msg: msg} }

func badInput(msg string) *httpError { return refuse(probBadInput, msg) }

// errClosed is returned to requests that arrive after Close.
var errClosed = errors.New("gqlpush: handler closed")

// RetryAfter is the Retry-After of a 429: a hint, in seconds, of when a
// stream may be free again.
const RetryAfter = 5

// Refusals made once.
var (
	errShuttingDown         = refuse(probShutdown, "")
	errForbidden            = refuse(probForbidden, "")
	errInternal             = refuse(probInternal, "")
	errTooManyStreams       = refuse(probTooManyStreams, "")
	errTooManySubscriptions = refuse(probTooManySubscriptions, "")
	errTooManyUpstreamConns = refuse(probTooManyUpstreamConns, "")
)

// errNotAuthenticated answers a request without valid credentials where
// they are needed. Missing and invalid credentials get the same message: a
// client learns nothing of which check failed.
func errNotAuthenticated(presented bool) *httpError {
	e := &httpError{why: probUnauthenticated, bearer: "Bearer"}
	if presented {
		e.bearer = `Bearer error="invalid_token"` // RFC 6750, section 3.1
	}
	return e
}

// writeError answers with the JSON error body,
// {"errors":[{"message":…,"extensions":{"code":…}}]}, and the headers its
// status calls for.
func writeError(w http.ResponseWriter, e *httpError) {
	row := problems[e.why]
	hd := w.Header()
	switch row.status {
	case http.StatusMethodNotAllowed:
		hd.Set("Allow", http.MethodGet)
	case http.StatusUnauthorized:
		hd.Set("WWW-Authenticate", e.bearer)
	case http.StatusTooManyRequests:
		hd.Set("Retry-After", strconv.Itoa(RetryAfter))
	}
	writeJSON(w, row.status, errorsJSON(errorList(e.message(), row.code)))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}
