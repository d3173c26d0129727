package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
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
)

// An event is one upstream result, framed once for every subscriber: buf
// holds the SSE frame, and the plain frame and the bare JSON are slices of
// it, so no bytes are copied per subscriber.
type event struct {
	seq   uint64
	sse   []byte // "data: {…}\n\n"
	plain []byte // "{…}\n\n"
	json  []byte // "{…}"
}

func newEvent(payload []byte) *event {
	buf := make([]byte, 0, len(sseDataPrefix)+len(payload)+2)
	buf = append(buf, sseDataPrefix...)
	buf = append(buf, payload...)
	buf = append(buf, "\n\n"...)
	start := len(sseDataPrefix)
	return &event{sse: buf, plain: buf[start:], json: buf[start : len(buf)-2]}
}

// A hub holds the shared upstream subscriptions of a handler. Requests for the
// same operation with the same variables and forwarded identity share one.
//
// Lock order: hub.mu, then pool.mu, then upConn.mu, then shared.mu.
type hub struct {
	cfg  *settings
	pool *pool
	log  *slog.Logger

	mu     sync.Mutex
	subs   map[subKey]*shared
	closed bool
}

type subKey struct {
	ep       *endpoint
	identity string
	vars     string // canonical JSON
	nonce    uint64 // non-zero for a subscription that is never shared
}

// A shared subscription is one upstream subscription and its subscribers.
// Its events form a log: each subscriber reads it from its own cursor, and
// the log keeps what the slowest subscriber has not read yet, up to the
// queue size.
type shared struct {
	h       *hub
	key     subKey
	payload json.RawMessage // of subscribe: query, variables, operationName
	conn    *upConn
	cs      *connSub

	mu      sync.Mutex
	events  []*event // events[i].seq == base+i
	base    uint64
	next    uint64 // seq of the next event
	subs    []*subscriber
	ended   bool // by the upstream or the pool; end says why
	stopped bool // its last subscriber left
	end     endReason
}

// A subscriber is one client's view of a shared subscription.
type subscriber struct {
	sh     *shared
	wake   chan struct{} // cap 1: something to read
	cursor uint64        // seq of the next event to deliver; guarded by sh.mu
	slow   bool          // fell behind; guarded by sh.mu
}

func newHub(cfg *settings, p *pool, log *slog.Logger) *hub {
	return &hub{cfg: cfg, pool: p, log: log, subs: make(map[subKey]*shared)}
}

// join adds a subscriber to the shared subscription for key, starting one
// upstream when there is none.
func (h *hub) join(key subKey, header http.Header, init json.RawMessage) (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errClosed
	}
	sh := h.subs[key]
	if sh == nil {
		payload, err := json.Marshal(subscribePayload{
			Query:         key.ep.query,
			Variables:     key.ep.variablesJSON(key.vars),
			OperationName: key.ep.op.opName,
		})
		if err != nil {
			return nil, err
		}
		sh = &shared{h: h, key: key, payload: payload}
		s := &subscriber{sh: sh, wake: make(chan struct{}, 1)}
		// The subscriber is in before the upstream hears of the
		// subscription, so it cannot miss the first result.
		sh.subs = append(sh.subs, s)
		if err := h.pool.attach(connKey{up: key.ep.up, identity: key.identity}, header, init, sh); err != nil {
			return nil, err
		}
		h.subs[key] = sh
		return s, nil
	}
	s := &subscriber{sh: sh, wake: make(chan struct{}, 1)}
	sh.mu.Lock()
	s.cursor = sh.next
	sh.subs = append(sh.subs, s)
	sh.mu.Unlock()
	return s, nil
}

// leave removes a subscriber. The last one to leave stops the upstream
// subscription at once.
func (h *hub) leave(s *subscriber) {
	sh := s.sh
	h.mu.Lock()
	sh.mu.Lock()
	for i, o := range sh.subs {
		if o == s {
			last := len(sh.subs) - 1
			sh.subs[i] = sh.subs[last]
			sh.subs[last] = nil
			sh.subs = sh.subs[:last]
			break
		}
	}
	stop := len(sh.subs) == 0 && !sh.ended && !sh.stopped
	if stop {
		sh.stopped = true
		sh.events = nil
		if h.subs[sh.key] == sh {
			delete(h.subs, sh.key)
		}
	} else {
		sh.trimLocked()
	}
	sh.mu.Unlock()
	h.mu.Unlock()
	if stop {
		sh.conn.detach(sh.cs)
	}
}

// count reports the number of shared subscriptions.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// close refuses new subscribers.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

// publish frames one upstream result and hands it to every subscriber. It
// never waits for a client: a subscriber that has more than the queue size
// unread is marked slow and dropped by its own writer.
func (sh *shared) publish(raw json.RawMessage) {
	payload, err := resultJSON(raw)
	if err != nil {
		sh.h.log.Warn("bad upstream result", "operation", sh.key.ep.op.name, "err", err)
		return
	}
	ev := newEvent(payload)
	limit := uint64(sh.h.cfg.queueSize)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.ended || sh.stopped {
		return
	}
	ev.seq = sh.next
	sh.next++
	sh.events = append(sh.events, ev)
	for _, s := range sh.subs {
		if s.slow {
			continue
		}
		if sh.next-s.cursor > limit {
			s.slow = true
		}
		s.notify()
	}
	sh.trimLocked()
}

// trimLocked drops the events every subscriber has read.
func (sh *shared) trimLocked() {
	low := sh.next
	for _, s := range sh.subs {
		if !s.slow && s.cursor < low {
			low = s.cursor
		}
	}
	n := int(low - sh.base)
	if n <= 0 {
		return
	}
	clear(sh.events[:n])
	if n == len(sh.events) {
		sh.events = sh.events[:0]
	} else if n >= cap(sh.events)/2 {
		sh.events = append(sh.events[:0], sh.events[n:]...)
	} else {
		sh.events = sh.events[n:]
	}
	sh.base = low
}

// finish ends the shared subscription for every subscriber; they get what
// they have not read yet, then the end.
func (sh *shared) finish(end endReason) {
	h := sh.h
	h.mu.Lock()
	if h.subs[sh.key] == sh {
		delete(h.subs, sh.key)
	}
	sh.mu.Lock()
	if !sh.ended && !sh.stopped {
		sh.ended = true
		sh.end = end
		for _, s := range sh.subs {
			s.notify()
		}
	}
	sh.mu.Unlock()
	h.mu.Unlock()
}

func (s *subscriber) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take appends the unread events to buf. When the stream is over for this
// subscriber it also returns why (kind 0 while it goes on).
func (s *subscriber) take(buf []*event) ([]*event, endReason) {
	sh := s.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.slow {
		return buf, endSlow
	}
	for seq := s.cursor; seq < sh.next; seq++ {
		buf = append(buf, sh.events[seq-sh.base])
	}
	s.cursor = sh.next
	if sh.ended {
		return buf, sh.end
	}
	return buf, endReason{}
}

// resultJSON renders an upstream result as the compact JSON sent to clients:
// its data and errors, in that order; extensions stay upstream.
func resultJSON(raw json.RawMessage) ([]byte, error) {
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and "Data" is not "data".
	var r map[string]json.RawMessage
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, err
	}
	data, hasData := r["data"]
	errs, hasErrs := r["errors"]
	if hasErrs && bytes.Equal(errs, []byte("null")) {
		hasErrs = false
	}
	if !hasData && !hasErrs {
		return nil, errors.New("result has neither data nor errors")
	}
	var b bytes.Buffer
	b.Grow(len(raw))
	b.WriteByte('{')
	if hasData {
		b.WriteString(`"data":`)
		if err := json.Compact(&b, data); err != nil {
			return nil, err
		}
	}
	if hasErrs {
		if hasData {
			b.WriteByte(',')
		}
		b.WriteString(`"errors":`)
		if err := json.Compact(&b, errs); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
