package gqlpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"
)

// Queries. A query operation is answered once, with the upstream's result
// as the whole body, or followed live (wg_live): its pollSource asks the
// upstream again at an interval, one poller per key shared by all its
// clients, and publishes a result only when it differs from the last. Both
// ask over GraphQL over HTTP: a POST of application/json, answered with
// application/graphql-response+json or application/json (the
// GraphQL-over-HTTP specification).

// Media types of GraphQL over HTTP.
const (
	mediaGraphQLResponse = "application/graphql-response+json"
	mediaJSON            = "application/json"
)

// A queryError is why asking the upstream for a query's result failed:
// the row of the problems table a client is told (UPSTREAM_UNAVAILABLE,
// RESULT_TOO_LARGE, UPSTREAM_TIMEOUT), and the cause, for the log.
type queryError struct {
	why problem
	err error
}

func (e *queryError) Error() string { return e.err.Error() }

// queryBody is the body of a GraphQL-over-HTTP request.
type queryBody struct {
	Query         string          `json:"query"`
	Variables     json.RawMessage `json:"variables,omitempty"`
	OperationName string          `json:"operationName,omitempty"`
}

// askUpstream posts req's query to its upstream and returns the result, as
// compact JSON {"data":…,"errors":…}. GraphQL errors are a result, passed
// through; refused reports a request the upstream refused with a GraphQL
// response (a 4xx of application/graphql-response+json: the query does not
// parse or validate there), whose errors are the result. An answer that is
// not a GraphQL response is an error.
func askUpstream(ctx context.Context, cfg *Config, req *openRequest) (raw []byte, refused bool, qerr *queryError) {
	up := req.ep.up
	body, err := json.Marshal(queryBody{Query: req.ep.query, Variables: req.vars, OperationName: req.ep.op.opName})
	if err != nil {
		return nil, false, &queryError{probUpstreamGone, err}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.QueryTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, up.httpURL, bytes.NewReader(body))
	if err != nil {
		return nil, false, &queryError{probUpstreamGone, err}
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	hr.Header.Set("Content-Type", mediaJSON)
	hr.Header.Set("Accept", mediaGraphQLResponse+", "+mediaJSON)
	resp, err := up.client.Do(hr)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, false, &queryError{probOnceTimeout, fmt.Errorf("no answer within %v", cfg.QueryTimeout)}
		}
		return nil, false, &queryError{probUpstreamGone, err}
	}
	defer resp.Body.Close()
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case media != mediaGraphQLResponse && media != mediaJSON:
		return nil, false, &queryError{probUpstreamGone, fmt.Errorf("answered %d with content type %q", resp.StatusCode, clip(media))}
	case resp.StatusCode/100 == 2:
	case media == mediaGraphQLResponse && resp.StatusCode/100 == 4:
		// A request the upstream refused, told as a GraphQL response:
		// its errors are the result.
		refused = true
	default:
		return nil, false, &queryError{probUpstreamGone, fmt.Errorf("answered with status %d", resp.StatusCode)}
	}
	raw, err = io.ReadAll(io.LimitReader(resp.Body, int64(cfg.MaxResponseBytes)+1))
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, false, &queryError{probOnceTimeout, fmt.Errorf("no whole answer within %v", cfg.QueryTimeout)}
	case err != nil:
		return nil, false, &queryError{probUpstreamGone, err}
	case len(raw) > cfg.MaxResponseBytes:
		return nil, false, &queryError{probResultTooLarge, fmt.Errorf("an answer over %d bytes", cfg.MaxResponseBytes)}
	}
	if !json.Valid(raw) {
		return nil, false, &queryError{probUpstreamGone, errors.New("answered with no valid JSON")}
	}
	out, err := appendResult(nil, raw)
	if err != nil {
		return nil, false, &queryError{probUpstreamGone, fmt.Errorf("answered with no GraphQL response: %w", err)}
	}
	return out, refused, nil
}

// serveQuery answers a query request once: the upstream's result as the
// body. Handler.Close ends the wait for it with 503.
func (h *Handler) serveQuery(w http.ResponseWriter, r *http.Request, req *request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.closing, cancel)()
	raw, _, qerr := askUpstream(ctx, &h.cfg, openRequestFor(req.key, req.header, req.init))
	if qerr != nil {
		switch {
		case r.Context().Err() != nil:
			return // the client left
		case h.closing.Err() != nil:
			writeError(w, errShuttingDown)
			return
		}
		h.log.Warn("a query to the upstream failed", "upstream", req.ep.up.label, "operation", req.ep.op.name, "err", logText(qerr.err))
		writeError(w, refuse(qerr.why, ""))
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", mediaJSON)
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(raw)
}

// A pollSource is the source of live queries: each subscription is a
// poller that asks the upstream at the operation's interval.
type pollSource struct {
	cfg  *Config
	logs *logSampler

	ctx    context.Context // ends with close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pollers

	mu     sync.Mutex
	closed bool
}

var _ source = (*pollSource)(nil)

func newPollSource(cfg *Config) *pollSource {
	ctx, cancel := context.WithCancel(context.Background())
	return &pollSource{cfg: cfg, logs: newLogSampler(cfg.Logger), ctx: ctx, cancel: cancel}
}

// A poller asks the upstream for one key's result, until its handle is
// closed or the source closes.
type poller struct {
	src    *pollSource
	req    *openRequest
	r      receiver
	ctx    context.Context // ends when the handle is closed, or the source
	cancel context.CancelFunc
}

func (s *pollSource) open(req *openRequest, r receiver) (handle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	p := &poller{src: s, req: req, r: r}
	p.ctx, p.cancel = context.WithCancel(s.ctx)
	s.wg.Add(1)
	go p.run()
	return p, nil
}

// close is the handle's: the key has no client left.
func (p *poller) close() { p.cancel() }

// run polls: the first time at once, then an interval after each poll
// was due. Polls never overlap: an answer slower than the interval delays
// the next poll. A result equal to the last one published is not
// published. An upstream that fails for longer than ReconnectLimit ends
// the subscription; one that refuses the query ends it at once.
func (p *poller) run() {
	s := p.src
	defer s.wg.Done()
	interval := p.req.ep.op.live
	if interval == 0 {
		interval = s.cfg.LivePollInterval
	}
	var last []byte
	var failing time.Time // since when every poll failed
	next := time.Now()    // when the next poll is due: an interval after the last was
	for {
		began := time.Now()
		raw, refused, qerr := askUpstream(p.ctx, s.cfg, p.req)
		if p.over() {
			return
		}
		switch {
		case refused:
			// Asking again would be refused again: the stream ends
			// with the upstream's errors, as a subscription the
			// upstream refuses does.
			p.r.end(ending{why: probUpstreamError, errors: upstreamErrors(raw)})
			return
		case qerr == nil:
			failing = time.Time{}
			if !bytes.Equal(raw, last) {
				last = raw
				if err := p.r.publish(raw, 0); err != nil {
					s.logs.warn(logBadResult, "a query's result is no GraphQL result", "upstream", p.req.ep.up.label, "operation", p.req.ep.op.name, "err", logText(err))
				}
			}
		case qerr.why == probResultTooLarge:
			s.logs.warn(logLost, "a query's result is over MaxResponseBytes", "upstream", p.req.ep.up.label, "operation", p.req.ep.op.name)
			p.r.end(endTooLarge)
			return
		default:
			s.logs.warn(logFailed, "a query to the upstream failed; asked again at the next interval", "upstream", p.req.ep.up.label, "operation", p.req.ep.op.name, "err", logText(qerr.err))
			if failing.IsZero() {
				failing = began
			}
			if time.Since(failing) >= s.cfg.ReconnectLimit {
				p.r.end(endUpstreamGone)
				return
			}
		}
		// Due an interval after the last poll was due, so that late
		// timers do not add up; a poll that overran starts the next at
		// once.
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			p.over()
			return
		}
	}
}

// over reports that the poller stops: its handle was closed, or the source
// closes, and then its subscription ends with endShutdown.
func (p *poller) over() bool {
	if p.ctx.Err() == nil {
		return false
	}
	if p.src.ctx.Err() != nil {
		p.r.end(endShutdown)
	}
	return true
}

// close ends every poller with endShutdown and waits for them: each ends
// at once, its request cancelled.
func (s *pollSource) close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *pollSource) conns() int { return 0 }
