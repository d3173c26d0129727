package gqlpush

import (
	"encoding/json"
	"errors"
	"fmt"
)

// A Protocol is a GraphQL-over-WebSocket subprotocol.
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
)

func (p Protocol) valid() bool {
	switch p {
	case "", ProtocolAuto, ProtocolTransportWS, ProtocolLegacyWS:
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

var errNoType = errors.New("message has no type")

// decodeMessage reads one frame from the upstream. It never fails on unknown
// fields, and fails on anything that is not a JSON object with a string type.
func decodeMessage(b []byte) (message, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return message{}, fmt.Errorf("decode upstream message: %w", err)
	}
	if m.Type == "" {
		return message{}, errNoType
	}
	switch m.Type {
	case msgNext, msgLegacyData, msgError, msgComplete:
		if m.ID == "" {
			return message{}, fmt.Errorf("upstream %s message has no id", m.Type)
		}
	}
	if len(m.Payload) > 0 && string(m.Payload) == "null" {
		m.Payload = nil
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
	singleErrors  bool   // legacy error payloads are one error object, not a list
	answersPings  bool   // graphql-transport-ws has ping/pong; legacy has ka
	sendTerminate bool   // legacy says connection_terminate before closing
}

var (
	transportWS = wire{protocol: ProtocolTransportWS, subscribe: msgSubscribe, stop: msgComplete, next: msgNext, answersPings: true}
	legacyWS    = wire{protocol: ProtocolLegacyWS, subscribe: msgLegacyStart, stop: msgLegacyStop, next: msgLegacyData, singleErrors: true, sendTerminate: true}
)

func wireFor(p Protocol) wire {
	if p == ProtocolLegacyWS {
		return legacyWS
	}
	return transportWS
}
