package gqlpush

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// GraphQL over Server-Sent Events, in the protocol's distinct connections
// mode (https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md):
// each upstream subscription is one HTTP request, a GET with the
// GraphQL-over-HTTP parameters in its query string, or a POST with them as
// JSON for an upstream that refuses GET, answered with a stream of events:
// "next" carries one result, "complete" ends it. GraphQL Yoga serves its
// subscriptions so by default.
//
// One loop per subscription owns the request, its retries (the WebSocket
// upstreams' backoff and ReconnectLimit) and its end; its events are split
// by a bufio.Scanner bounded by MaxResponseBytes, by the HTML standard's
// event stream rules.

// mediaEventStream is the media type of an SSE response.
const mediaEventStream = "text/event-stream"

// sseFieldSlack is what an event may hold besides its data, within its
// reader's buffer: field names, an event type, line ends.
const sseFieldSlack = 4 << 10

var (
	// errTryPOST says the upstream refused a GET: the subscription is
	// asked again, at once, with a POST.
	errTryPOST = errors.New("upstream refused GET")
	// errCompleted says the upstream completed the subscription.
	errCompleted = errors.New("upstream completed the subscription")
)

// An sseRefusal is an answer that ends a subscription for good: asking
// again would get it again.
type sseRefusal struct {
	end ending
	err error // the cause, for the log
	// keep, when set, is how requests for the same subscription are
	// refused for a while: the answer was a status or a content type,
	// which a client that comes back at once would get again.
	keep *httpError
}

func (e *sseRefusal) Error() string { return e.err.Error() }

// An sseSource subscribes to one ProtocolSSE upstream.
type sseSource struct {
	cfg  *Config
	up   *upstream
	logs *logSampler

	ctx    context.Context // ends with close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the subscriptions' run goroutines

	post      atomic.Bool  // the upstream refused GET: subscribe with POST
	streaming atomic.Int64 // requests answered with a stream, for Stats
	refused   refusals[string]

	mu      sync.Mutex
	closed  bool
	running int // subscriptions, for MaxUpstreamConns
}

var _ source = (*sseSource)(nil)

func newSSESource(cfg *Config, up *upstream) *sseSource {
	ctx, cancel := context.WithCancel(context.Background())
	return &sseSource{cfg: cfg, up: up, logs: newLogSampler(cfg.Logger), ctx: ctx, cancel: cancel}
}

// An sseSub is one upstream subscription: the handle its opener holds.
type sseSub struct {
	src    *sseSource
	req    *openRequest
	r      receiver
	ctx    context.Context // ends when the handle is closed, or the source
	cancel context.CancelFunc
	data   []byte // the current event's data, reused
	post   bool   // the upstream refused its GET as too long: it asks with POST
	held   bool   // it counts against MaxUpstreamConns; the run goroutine's
}

var _ handle = (*sseSub)(nil)

func (s *sseSource) open(req *openRequest, r receiver) (handle, error) {
	if err := s.refused.check(refusalKey(req)); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, errClosed
	case s.cfg.MaxUpstreamConns > 0 && s.running >= s.cfg.MaxUpstreamConns:
		return nil, errTooManyUpstreamConns
	}
	s.running++
	sub := &sseSub{src: s, req: req, r: r, held: true}
	sub.ctx, sub.cancel = context.WithCancel(s.ctx)
	s.wg.Add(1)
	go sub.run()
	return sub, nil
}

// close is the handle's: the key has no client left. The request's
// context ends, which closes its connection (HTTP/1.1) or resets its
// stream (HTTP/2): the upstream sees the subscription stop at once.
func (sub *sseSub) close() { sub.cancel() }

// close ends every subscription with endShutdown and waits for them: each
// ends at once, its request cancelled.
func (s *sseSource) close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.logs.close()
	return nil
}

// conns reports the subscription requests whose events are being read.
func (s *sseSource) conns() int { return int(s.streaming.Load()) }

// run subscribes, and subscribes again when the response is lost, until
// the subscription completes, is refused for good, its handle is closed,
// or the upstream stays lost past ReconnectLimit.
func (sub *sseSub) run() {
	s := sub.src
	defer s.wg.Done()
	defer sub.cancel()
	defer sub.release()
	label, op := s.up.label, sub.req.ep.op.name
	rt := retrier{limit: s.cfg.ReconnectLimit}
	for {
		upAt, err := sub.request(rt.redials)
		var refused *sseRefusal
		switch {
		case errors.Is(err, errCompleted):
			sub.end(endComplete)
			return
		case sub.ctx.Err() != nil:
			if s.ctx.Err() != nil {
				sub.end(endShutdown)
			}
			return
		case errors.As(err, &refused):
			s.logs.warn(logUnexpected, "upstream refused a subscription for good, ending its streams", "upstream", label, "operation", op, "err", logText(err))
			if refused.keep != nil {
				s.refused.remember(refusalKey(sub.req), refused.keep)
			}
			sub.end(refused.end)
			return
		case errors.Is(err, errTryPOST):
			continue
		case upAt.IsZero():
			s.logs.warn(logFailed, "upstream subscription request failed", "upstream", label, "operation", op, "err", logText(err))
		default:
			rt.stayedUp(upAt)
			s.logs.warn(logLost, "upstream subscription response lost", "upstream", label, "operation", op, "err", logText(err))
		}
		wait, again := rt.next()
		if !again {
			s.logs.warn(logLost, "upstream unavailable, ending a subscription's streams", "upstream", label, "operation", op)
			sub.end(endUpstreamGone)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-sub.ctx.Done():
			t.Stop()
		}
	}
}

// end lets the subscription's place under MaxUpstreamConns go, then tells
// its receiver it is over, and why.
func (sub *sseSub) end(e ending) {
	sub.release()
	sub.r.end(e)
}

// release lets the subscription's place under MaxUpstreamConns go, once.
func (sub *sseSub) release() {
	if sub.held {
		sub.held = false
		s := sub.src
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}
}

// refusalKey is what an upstream's refusal is remembered for: the
// subscription's key, so that a client that asks again in a loop is
// refused at once, and no other.
func refusalKey(req *openRequest) string {
	return req.ep.op.name + "\x00" + req.forwardDigest + "\x00" + req.canonVars
}

// request makes one subscription request and reads its events. It returns
// errCompleted once the upstream completed the subscription; else why the
// response was lost or refused, and, if the upstream had answered with a
// stream, when.
func (sub *sseSub) request(redials int) (upAt time.Time, err error) {
	s := sub.src
	hr, err := sub.newRequest()
	if err != nil {
		return time.Time{}, &sseRefusal{end: endUpstreamGone, err: err}
	}
	resp, err := s.up.client.Do(hr)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || media != mediaEventStream {
		return time.Time{}, sub.refusal(hr.Method, resp, media)
	}
	upAt = time.Now()
	if redials > 0 {
		s.cfg.Logger.Debug("upstream subscription answered again", "upstream", s.up.label, "operation", sub.req.ep.op.name, "redials", redials)
	}
	s.streaming.Add(1)
	s.cfg.Observer.upstreamConnected(s.up.label, redials)
	err = sub.read(resp.Body)
	s.cfg.Observer.upstreamDisconnected(s.up.label, err)
	s.streaming.Add(-1)
	return upAt, err
}

// newRequest is the subscription's request: a GET, or a POST once the
// upstream has refused GET.
func (sub *sseSub) newRequest() (*http.Request, error) {
	s, req := sub.src, sub.req
	var hr *http.Request
	var err error
	if sub.post || s.post.Load() {
		var body []byte
		body, err = json.Marshal(queryBody{Query: req.ep.query, Variables: req.vars, OperationName: req.ep.op.opName})
		if err != nil {
			return nil, err
		}
		hr, err = http.NewRequestWithContext(sub.ctx, http.MethodPost, s.up.url, bytes.NewReader(body))
	} else {
		hr, err = http.NewRequestWithContext(sub.ctx, http.MethodGet, s.up.url, nil)
		if err == nil {
			q := hr.URL.Query()
			q.Set("query", req.ep.query)
			if req.vars != nil {
				q.Set("variables", string(req.vars))
			}
			if req.ep.op.opName != "" {
				q.Set("operationName", req.ep.op.opName)
			}
			hr.URL.RawQuery = q.Encode()
		}
	}
	if err != nil {
		return nil, err
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if hr.Method == http.MethodPost {
		hr.Header.Set("Content-Type", mediaJSON)
	}
	hr.Header.Set("Accept", mediaEventStream)
	hr.Header.Set("Cache-Control", "no-cache")
	return hr, nil
}

// refusal says what an answer other than a stream of events means: a
// failure to retry (a 5xx, 408 or 429: the upstream is restarting or
// busy), a GET to ask again as a POST (405, 414), the upstream's own
// errors for the query (a GraphQL response with errors), or a refusal for
// good (any other status, content type or body).
func (sub *sseSub) refusal(method string, resp *http.Response, media string) error {
	code := resp.StatusCode
	switch {
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return fmt.Errorf("answered with status %d", code)
	case method == http.MethodGet && code == http.StatusRequestURITooLong:
		// This request's URL is too long; the next one's may not be.
		sub.post = true
		return errTryPOST
	case method == http.MethodGet && code == http.StatusMethodNotAllowed:
		if !sub.src.post.Swap(true) {
			sub.src.cfg.Logger.Info("upstream refuses GET: subscribing with POST", "upstream", sub.src.up.label)
		}
		return errTryPOST
	}
	if media == mediaJSON || media == mediaGraphQLResponse {
		body, err := io.ReadAll(io.LimitReader(resp.Body, int64(sub.src.cfg.MaxResponseBytes)+1))
		var gr struct {
			Errors []json.RawMessage `json:"errors"`
		}
		if err == nil && len(body) <= sub.src.cfg.MaxResponseBytes && json.Unmarshal(body, &gr) == nil && len(gr.Errors) > 0 {
			return &sseRefusal{
				end: ending{why: probUpstreamError, errors: upstreamErrors(body)},
				err: fmt.Errorf("answered %d with GraphQL errors", code),
			}
		}
	}
	msg := "upstream refused the subscription with HTTP " + strconv.Itoa(code)
	if code == http.StatusOK {
		msg = fmt.Sprintf("upstream answered with %q, not %s", clip(media), mediaEventStream)
	}
	return &sseRefusal{end: endWith(probUpstreamGone, msg), err: errors.New(msg), keep: refuse(probUpstreamGone, msg)}
}

// read delivers the events of one response until the subscription
// completes (errCompleted) or the response is lost. A response that ends
// without a complete event is lost, not over: the upstream went away
// mid-stream.
func (sub *sseSub) read(body io.Reader) error {
	limit := sub.src.cfg.MaxResponseBytes
	events := bufio.NewScanner(&lineEnds{r: body})
	events.Buffer(make([]byte, 0, min(4<<10, limit)), limit+sseFieldSlack)
	events.Split(splitEvents)
	for first := true; events.Scan(); first = false {
		ev := events.Bytes()
		if first {
			ev = bytes.TrimPrefix(ev, byteOrderMark)
		}
		typ, data, ok := sub.parseEvent(ev)
		switch {
		case !ok:
			// A comment (a keep-alive) or an event of no interest.
		case typ == "complete":
			return errCompleted
		case typ != "next" && typ != "":
			// Not of this protocol: ignored, as the HTML standard
			// has clients ignore events they do not listen for.
		case len(data) > limit:
			return &sseRefusal{end: endTooLarge, err: fmt.Errorf("an event over %d bytes", limit)}
		case !json.Valid(data):
			sub.src.logs.warn(logBadResult, "upstream sent an event that is not JSON; dropped", "upstream", sub.src.up.label, "operation", sub.req.ep.op.name)
		default:
			if err := sub.r.publish(data, 0); err != nil {
				sub.src.logs.warn(logBadResult, "upstream sent an event that is no GraphQL result; dropped", "upstream", sub.src.up.label, "operation", sub.req.ep.op.name, "err", logText(err))
			}
		}
	}
	switch err := events.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		return &sseRefusal{end: endTooLarge, err: fmt.Errorf("an event over %d bytes", limit)}
	case err != nil:
		return err // a cancelled read too: the caller tells it by the subscription's context
	}
	return errors.New("the response ended before the subscription completed")
}

var (
	newline   = []byte("\n")
	blankLine = []byte("\n\n")
	// byteOrderMark may open an event stream; it is no part of its
	// first field.
	byteOrderMark = []byte("\uFEFF")
)

// splitEvents splits an event stream whose line ends are all LF (lineEnds)
// into events, each ended by a blank line. What is left when the stream
// ends is an event cut short, which the HTML standard discards.
func splitEvents(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.Index(data, blankLine); i >= 0 {
		return i + len(blankLine), data[:i], nil
	}
	return 0, nil, nil // more, or, at the end, nothing
}

// lineEnds reads a response's body with every line end, CR, LF or CRLF,
// made one LF, as the HTML standard reads an event stream.
type lineEnds struct {
	r  io.Reader
	cr bool // the last byte read was a CR: an LF right after it is dropped
}

func (l *lineEnds) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	k := 0
	for _, c := range p[:n] {
		switch {
		case c == '\n' && l.cr:
			l.cr = false
			continue // the LF of a CRLF, whose CR was one LF already
		case c == '\r':
			l.cr, c = true, '\n'
		default:
			l.cr = false
		}
		p[k] = c
		k++
	}
	return k, err
}

// parseEvent reads the fields of one event, by the rules of the HTML
// standard's event stream interpretation: lines end with LF (lineEnds made
// every line end one); a line starting with a colon is a comment; "field:
// value" loses one space after the colon; data lines join with LF. It returns the event's
// type and data (valid until the next call), and false for an event with
// neither data nor a type.
func (sub *sseSub) parseEvent(ev []byte) (typ string, data []byte, ok bool) {
	data = sub.data[:0]
	hasData := false
	for len(ev) > 0 {
		line, rest, _ := bytes.Cut(ev, newline)
		ev = rest
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		name, value := line, []byte(nil)
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			name, value = line[:c], line[c+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "event":
			typ = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
	sub.data = data
	return typ, data, hasData || typ != ""
}
