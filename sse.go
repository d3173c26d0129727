package gqlpush

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
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

// An event is one upstream result, framed once for every subscriber: buf
// holds the SSE frame, and the plain frame and the bare JSON are slices of
// it, so no bytes are copied per subscriber.
type event struct {
	seq uint64    // in its log
	pos uint64    // in its source, when it has positions (JetStream); else 0
	off uint64    // the bytes of the events before it in its log (len of sse)
	at  time.Time // when it came from the upstream
	// replayed: read from a replay for one subscriber, in no log (seq is
	// 0), so a patch from or to it is never shared.
	replayed bool
	sse      []byte // "id: <token>.<seq>\ndata: {…}\n\n"
	plain    []byte // "{…}\n\n"
	json     []byte // "{…}"

	patchOnce sync.Once
	patch     *patchFrames // from the previous event; nil when none is worth sending
}

// frameEvent builds the event of one upstream result, raw, which must be
// valid JSON: one buffer holding the id line, the data line and the blank
// line, with the result compacted into it.
func frameEvent(raw []byte, token string, seq uint64) (*event, error) {
	n := len(sseDataPrefix) + len(raw) + 2
	if token != "" {
		n += len(sseIDPrefix) + len(token) + 1 + 20 + 1
	}
	buf := make([]byte, 0, n)
	if token != "" {
		buf = append(buf, sseIDPrefix...)
		buf = appendEventID(buf, token, seq)
		buf = append(buf, '\n')
	}
	buf = append(buf, sseDataPrefix...)
	start := len(buf)
	buf, err := appendResult(buf, raw)
	if err != nil {
		return nil, err
	}
	buf = append(buf, "\n\n"...)
	return &event{seq: seq, sse: buf, plain: buf[start:], json: buf[start : len(buf)-2]}, nil
}

// appendEventID writes an SSE event id: the shared subscription's token, a
// dot, the sequence number. Neither part can hold CR, LF or NUL.
func appendEventID(b []byte, token string, seq uint64) []byte {
	b = append(b, token...)
	b = append(b, '.')
	return strconv.AppendUint(b, seq, 10)
}

// parseEventID reads a Last-Event-ID; ok is false for anything malformed.
func parseEventID(s string) (token string, seq uint64, ok bool) {
	token, num, found := strings.Cut(s, ".")
	if !found || len(token) != tokenLen {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return token, seq, true
}

const tokenLen = 16

// newToken names one shared subscription, so that event ids of another,
// or of another gqlpush instance, are never taken for its own.
func newToken() string {
	return strings.ToLower(rand.Text()[:tokenLen])
}

// appendResult appends the result raw, which is valid JSON, to dst as the
// compact JSON sent to clients: its data and errors, in that order;
// extensions stay upstream. Keys match exactly: "Data" is not "data".
func appendResult(dst, raw []byte) ([]byte, error) {
	var (
		data, errs       []byte
		hasData, hasErrs bool
		slow             bool
	)
	if !members(raw, func(key, value []byte) {
		k, ok := unquoted(key)
		if !ok {
			slow = true
			return
		}
		switch string(k) {
		case "data":
			data, hasData = value, true
		case "errors":
			errs, hasErrs = value, true
		}
	}) {
		return nil, errNotObject
	}
	if slow {
		// A key written with escapes: let encoding/json read the keys.
		var r map[string]json.RawMessage
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		data, hasData = r["data"]
		errs, hasErrs = r["errors"]
	}
	if hasErrs && string(errs) == "null" {
		hasErrs = false
	}
	if !hasData && !hasErrs {
		return nil, errors.New("result has neither data nor errors")
	}
	dst = append(dst, '{')
	if hasData {
		dst = append(dst, `"data":`...)
		dst = appendCompact(dst, data, false)
	}
	if hasErrs {
		if hasData {
			dst = append(dst, ',')
		}
		dst = append(dst, `"errors":`...)
		dst = appendCompact(dst, errs, false)
	}
	return append(dst, '}'), nil
}
