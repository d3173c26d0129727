package gqlpush

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A Protocol is how gqlpush subscribes to an upstream: a
// GraphQL-over-WebSocket subprotocol, or GraphQL over Server-Sent Events.
type Protocol string

const (
	// ProtocolAuto tries graphql-transport-ws, then graphql-ws, and keeps
	// what worked for the upstream. The zero Protocol means ProtocolAuto.
	ProtocolAuto Protocol = "auto"
	// ProtocolTransportWS is graphql-transport-ws, the protocol of the
	// graphql-ws library:
	// https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md
	ProtocolTransportWS Protocol = "graphql-transport-ws"
	// ProtocolLegacyWS is the older graphql-ws subprotocol of
	// subscriptions-transport-ws (Apollo): start, data, stop, ka.
	ProtocolLegacyWS Protocol = "graphql-ws"
	// ProtocolSSE is GraphQL over Server-Sent Events, in its distinct
	// connections mode: one HTTP request per upstream subscription, as
	// GraphQL Yoga and the graphql-sse library serve it:
	// https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md
	// ProtocolAuto never picks it: an upstream that serves subscriptions
	// over SSE says so.
	ProtocolSSE Protocol = "graphql-sse"
)

func (p Protocol) valid() bool {
	switch p {
	case "", ProtocolAuto, ProtocolTransportWS, ProtocolLegacyWS, ProtocolSSE:
		return true
	}
	return false
}

// Message types of both protocols. The graphql-transport-ws names come first;
// the legacy ones follow, where they differ.
const (
	msgConnectionInit = "connection_init"
	msgConnectionAck  = "connection_ack"
	msgPing           = "ping"
	msgPong           = "pong"
	msgSubscribe      = "subscribe"
	msgNext           = "next"
	msgError          = "error"
	msgComplete       = "complete"

	msgLegacyStart           = "start"
	msgLegacyData            = "data"
	msgLegacyStop            = "stop"
	msgLegacyKeepAlive       = "ka"
	msgLegacyConnectionError = "connection_error"
	msgLegacyTerminate       = "connection_terminate"
)

// A message is one frame of either protocol.
type message struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// subscribePayload is the payload of subscribe (and legacy start).
type subscribePayload struct {
	Query         string          `json:"query"`
	Variables     json.RawMessage `json:"variables,omitempty"`
	OperationName string          `json:"operationName,omitempty"`
}

var (
	errNoType      = errors.New("message has no type")
	errInvalidJSON = errors.New("message is not valid JSON")
	errNotObject   = errors.New("message is not a JSON object")
)

// A frame is an upstream message as the reader sees it: id and payload are
// slices of the message, valid until the next read.
type frame struct {
	typ     string
	id      []byte
	payload []byte // nil when absent or null
}

// knownTypes are the message types of both protocols; scanMessage returns
// these strings, so reading a type allocates nothing.
var knownTypes = []string{
	msgConnectionInit, msgConnectionAck, msgPing, msgPong, msgSubscribe, msgNext, msgError, msgComplete,
	msgLegacyStart, msgLegacyData, msgLegacyStop, msgLegacyKeepAlive, msgLegacyConnectionError, msgLegacyTerminate,
}

func internType(b []byte) string {
	for _, t := range knownTypes {
		if string(b) == t {
			return t
		}
	}
	// An unknown type is only ever logged: a long one is not copied whole.
	return clip(string(b[:min(len(b), clipBytes+utf8.UTFMax)]))
}

// scanMessage reads one message from the upstream. It accepts what
// decodeMessage accepts, without reflection and without copying: keys match
// exactly, the last of duplicate keys wins, unknown keys are ignored.
func scanMessage(b []byte) (frame, error) {
	if !json.Valid(b) {
		return frame{}, errInvalidJSON
	}
	var (
		f         frame
		slow, bad bool
		isObject  = members(b, func(key, value []byte) {
			k, ok := unquoted(key)
			if !ok {
				slow = true
				return
			}
			switch string(k) {
			case "type", "id":
				if string(value) == "null" {
					return
				}
				s, ok := unquoted(value)
				if !ok || !utf8.Valid(s) {
					if len(value) > 0 && value[0] == '"' {
						slow = true // escapes, or bytes encoding/json replaces
					} else {
						bad = true
					}
					return
				}
				if k[0] == 't' {
					f.typ = internType(s)
				} else {
					f.id = s
				}
			case "payload":
				f.payload = value
				if string(value) == "null" {
					f.payload = nil
				}
			}
		})
	)
	switch {
	case !isObject:
		return frame{}, errNotObject
	case slow:
		m, err := decodeMessageSlow(b)
		return frame{typ: m.Type, id: []byte(m.ID), payload: m.Payload}, err
	case bad:
		return frame{}, errors.New("message type or id is not a string")
	case f.typ == "":
		return frame{}, errNoType
	}
	switch f.typ {
	case msgNext, msgLegacyData, msgError, msgComplete:
		if len(f.id) == 0 {
			return frame{}, fmt.Errorf("upstream %s message has no id", f.typ)
		}
	}
	return f, nil
}

// decodeMessage reads one message into a message of its own.
func decodeMessage(b []byte) (message, error) {
	f, err := scanMessage(b)
	if err != nil {
		return message{}, err
	}
	m := message{Type: f.typ, ID: string(f.id)}
	if f.payload != nil {
		m.Payload = bytes.Clone(f.payload)
	}
	return m, nil
}

// decodeMessageSlow decodes a message whose keys or strings hold escapes.
func decodeMessageSlow(b []byte) (message, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return message{}, errNotObject
	}
	var m message
	for key, dst := range map[string]*string{"type": &m.Type, "id": &m.ID} {
		if v, ok := raw[key]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, dst); err != nil {
				return message{}, errors.New("message type or id is not a string")
			}
		}
	}
	if p, ok := raw["payload"]; ok && string(p) != "null" {
		m.Payload = p
	}
	if m.Type == "" {
		return message{}, errNoType
	}
	m.Type = internType([]byte(m.Type))
	switch m.Type {
	case msgNext, msgLegacyData, msgError, msgComplete:
		if m.ID == "" {
			return message{}, fmt.Errorf("upstream %s message has no id", m.Type)
		}
	}
	return m, nil
}

// encodeMessage renders a frame for the upstream. Payloads are built by
// gqlpush and always valid JSON; an invalid one is an error, not a panic.
func encodeMessage(m message) ([]byte, error) {
	return json.Marshal(m)
}

// wire is what differs between the two protocols.
type wire struct {
	protocol      Protocol
	subscribe     string // subscribe / start
	stop          string // complete / stop
	next          string // next / data
	answersPings  bool   // graphql-transport-ws has ping/pong; legacy has ka
	sendTerminate bool   // legacy says connection_terminate before closing
}

var (
	transportWS = wire{protocol: ProtocolTransportWS, subscribe: msgSubscribe, stop: msgComplete, next: msgNext, answersPings: true}
	legacyWS    = wire{protocol: ProtocolLegacyWS, subscribe: msgLegacyStart, stop: msgLegacyStop, next: msgLegacyData, sendTerminate: true}
)

func wireFor(p Protocol) wire {
	if p == ProtocolLegacyWS {
		return legacyWS
	}
	return transportWS
}

// headID finds the subscription id of a message from its first bytes, when
// it was too large to read whole: the value of a top-level "id" member that
// ends before the cut. Servers write id and type before the payload
// (graphql-ws, subscriptions-transport-ws); a message that does not, or
// whose id is escaped, names no subscription here.
func headID(head []byte) ([]byte, bool) {
	i := skipSpace(head, 0)
	if i >= len(head) || head[i] != '{' {
		return nil, false
	}
	for i = skipSpace(head, i+1); i < len(head) && head[i] == '"'; {
		k := skipString(head, i)
		key := head[i:k]
		v := skipSpace(head, k)
		if v >= len(head) || head[v] != ':' {
			return nil, false
		}
		v = skipSpace(head, v+1)
		end := skipValue(head, v)
		if end >= len(head) {
			return nil, false // the cut falls in this value
		}
		if string(key) == `"id"` {
			id, ok := unquoted(head[v:end])
			return id, ok && len(id) > 0
		}
		if i = skipSpace(head, end); i < len(head) && head[i] == ',' {
			i = skipSpace(head, i+1)
		} else {
			return nil, false
		}
	}
	return nil, false
}
