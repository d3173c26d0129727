package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/gqlpush/gqlpush"
)

// The distinct scenario's floor (loadgen floor -upstream URL) is the fanout
// floor that also reads one upstream WebSocket message per event: the least
// any gateway must do per event. It ticks no rounds. For each SSE request it
// subscribes to the request's room (its room query parameter) on the
// upstream, over graphql-transport-ws, on one WebSocket for all its
// subscriptions, as the gateway has; the subscribe is the one gqlpush sends
// for Room, so the upstream's results are the gateway's, byte for byte. One
// goroutine reads the WebSocket; for each next message it builds the SSE
// chunk (an id line with a 16-character token and the event's number, and
// the message's payload as data) and:
//
//	turn  writes it to the subscription's connection itself, one write
//	own   hands it to the connection's goroutine, without waiting: a
//	      connection whose slot still holds an event drops the new one
//	      (counted), as a fanout floor's connection misses a round
//
// The write time, from the message read to its write's return, is recorded
// per event and served at latencyPath. A client's connection that ends ends
// its subscription: the floor sends complete for it.
//
// The floor scans messages as gqlpushtest writes them (encoding/json, keys in
// its struct's order, nothing escaped in an id of digits):
//
//	{"id":"<id>","type":"next","payload":<payload>}
//
// and takes id and payload by position, without decoding the JSON. A message
// of another shape is no event: ping gets pong, connection_ack and pong are
// ignored, anything else is counted as skipped and the first few are logged.

// floorRoomQuery is the document gqlpush sends upstream for Room
// (roomOperation): its root field gql_messageCreated renamed to the
// upstream's messageCreated, aliased back to gql_messageCreated, so results
// have the shape clients parse. TestFloorSubscribeIsTheGateways checks it
// against what a gqlpush handler sends.
const floorRoomQuery = "subscription Room ($room: String!) {\n  gql_messageCreated: messageCreated(room: $room) {\n    id\n    content\n    sentAt\n  }\n}"

const (
	floorSubprotocol = "graphql-transport-ws"
	floorLogSkipped  = 5 // skipped messages logged; the rest are only counted
)

var (
	floorNextHead = []byte(`{"id":"`)
	floorNextMid  = []byte(`","type":"next","payload":`)
	floorTypeKey  = []byte(`"type":"`)
	floorPong     = []byte(`{"type":"pong"}`)
)

// A floorUpstream is the floor's one WebSocket to the upstream.
type floorUpstream struct {
	ws     *websocket.Conn
	ctx    context.Context // ends when the floor closes
	cancel context.CancelFunc
	log    io.Writer
	nextID atomic.Uint64
}

// dialFloorUpstream opens the WebSocket, sends connection_init and waits
// for connection_ack.
func dialFloorUpstream(ctx context.Context, url string, log io.Writer) (*floorUpstream, error) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(hctx, url, &websocket.DialOptions{Subprotocols: []string{floorSubprotocol}})
	if err != nil {
		return nil, err
	}
	if p := ws.Subprotocol(); p != floorSubprotocol {
		ws.CloseNow()
		return nil, fmt.Errorf("the upstream speaks %q, not %s", p, floorSubprotocol)
	}
	// The gateway's own limit; coder/websocket's default is 32 KiB.
	ws.SetReadLimit(gqlpush.DefaultReadLimit)
	if err := ws.Write(hctx, websocket.MessageText, []byte(`{"type":"connection_init"}`)); err != nil {
		ws.CloseNow()
		return nil, err
	}
	for {
		_, b, err := ws.Read(hctx)
		if err != nil {
			ws.CloseNow()
			return nil, fmt.Errorf("waiting for connection_ack: %w", err)
		}
		switch t := messageType(b); t {
		case "connection_ack":
			u := &floorUpstream{ws: ws, log: log}
			u.ctx, u.cancel = context.WithCancel(context.Background())
			return u, nil
		case "ping":
			if err := ws.Write(hctx, websocket.MessageText, floorPong); err != nil {
				ws.CloseNow()
				return nil, err
			}
		default:
			ws.CloseNow()
			return nil, fmt.Errorf("the upstream answered connection_init with %q", clipBytes(b))
		}
	}
}

// subscribe starts subscription id on room.
func (u *floorUpstream) subscribe(id, room string) error {
	return u.ws.Write(u.ctx, websocket.MessageText, floorSubscribe(id, room))
}

// complete stops subscription id.
func (u *floorUpstream) complete(id string) error {
	return u.ws.Write(u.ctx, websocket.MessageText, []byte(`{"id":"`+id+`","type":"complete"}`))
}

// close ends the WebSocket at once; the upstream ends its subscriptions.
func (u *floorUpstream) close() {
	u.cancel()
	u.ws.CloseNow()
}

// floorSubscribe is the subscribe message of subscription id on room: its
// payload is the one gqlpush sends for Room with that room.
func floorSubscribe(id, room string) []byte {
	vars, _ := json.Marshal(map[string]string{"room": room})
	payload, _ := json.Marshal(struct {
		Query         string          `json:"query"`
		Variables     json.RawMessage `json:"variables"`
		OperationName string          `json:"operationName"`
	}{floorRoomQuery, vars, "Room"})
	msg, _ := json.Marshal(struct {
		ID      string          `json:"id"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}{id, "subscribe", payload})
	return msg
}

// scanNext takes the id and the payload of a next message of gqlpushtest's
// shape, {"id":"<id>","type":"next","payload":<payload>}; ok is false for
// a message of any other shape. The payload is not checked: it is written
// out as it came.
func scanNext(msg []byte) (id, payload []byte, ok bool) {
	rest, ok := bytes.CutPrefix(msg, floorNextHead)
	if !ok {
		return nil, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i <= 0 {
		return nil, nil, false
	}
	id = rest[:i]
	rest, ok = bytes.CutPrefix(rest[i:], floorNextMid)
	if !ok {
		return nil, nil, false
	}
	payload, ok = bytes.CutSuffix(rest, []byte("}"))
	if !ok || len(payload) == 0 {
		return nil, nil, false
	}
	return id, payload, true
}

// messageType returns the value of a message's first "type" key, or "";
// for messages other than next, which are few.
func messageType(msg []byte) string {
	i := bytes.Index(msg, floorTypeKey)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(floorTypeKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// appendFloorChunk appends the chunk of an SSE frame: an id line with
// floorToken and the event's number n, and the concatenation of data as
// data.
func appendFloorChunk(b []byte, n uint64, data ...[]byte) []byte {
	var num [20]byte
	digits := strconv.AppendUint(num[:0], n, 10)
	size := len("id: "+floorToken+".") + len(digits) + len("\ndata: ") + len("\n\n")
	for _, d := range data {
		size += len(d)
	}
	b = strconv.AppendUint(b, uint64(size), 16)
	b = append(b, "\r\nid: "+floorToken+"."...)
	b = append(b, digits...)
	b = append(b, "\ndata: "...)
	for _, d := range data {
		b = append(b, d...)
	}
	return append(b, "\n\n\r\n"...)
}

// readUpstream is the floor's reader: it reads the upstream's messages
// until the WebSocket ends, and hands each event to its connection.
func (s *floorServer) readUpstream() {
	defer s.wg.Done()
	u := s.up
	var (
		msg   bytes.Buffer // reused, as gqlpush reuses its read buffer
		chunk []byte       // turn mode's, reused
	)
	for {
		_, r, err := u.ws.Reader(u.ctx)
		if err == nil {
			msg.Reset()
			_, err = msg.ReadFrom(r)
		}
		if err != nil {
			if u.ctx.Err() == nil {
				fmt.Fprintf(u.log, "the upstream's WebSocket ended: %v\n", err)
			}
			return
		}
		read := time.Now()
		b := msg.Bytes()
		if id, payload, ok := scanNext(b); ok {
			chunk = s.event(id, payload, read, chunk)
			continue
		}
		switch messageType(b) {
		case "ping":
			u.ws.Write(u.ctx, websocket.MessageText, floorPong)
		case "pong", "connection_ack":
		default:
			if n := s.skipped.Add(1); n <= floorLogSkipped {
				fmt.Fprintf(u.log, "skipped an upstream message of another shape than next (%d so far): %q\n", n, clipBytes(b))
			}
		}
	}
}

// event writes one next message's payload to the connection of
// subscription id (turn), or hands it to the connection's goroutine (own).
// chunk is turn mode's buffer, returned for the next event.
func (s *floorServer) event(id, payload []byte, read time.Time, chunk []byte) []byte {
	s.mu.Lock()
	return s.deliver(s.subs[string(id)], read, chunk, payload)
}

// deliver writes an event, whose data is the concatenation of data, to
// connection c (turn), or hands it to c's goroutine (own); c is nil when
// the event's subscription has ended. It is called with s.mu held, and
// unlocks it. chunk is turn mode's buffer, returned for the next event.
func (s *floorServer) deliver(c *floorConn, read time.Time, chunk []byte, data ...[]byte) []byte {
	if c == nil {
		// Its connection ended: the upstream sent it before it had
		// our complete (our unsubscribe).
		s.mu.Unlock()
		s.late.Add(1)
		return chunk
	}
	c.events++
	n := c.events
	if *s.mode.Load() == floorOwn {
		size := 64
		for _, d := range data {
			size += len(d)
		}
		// Under the lock: a dropped connection's wake is closed.
		r := &floorRound{chunk: appendFloorChunk(make([]byte, 0, size), n, data...), start: read}
		r.left.Store(1)
		select {
		case c.wake <- r:
		default:
			s.dropped.Add(1)
		}
		s.mu.Unlock()
		return chunk
	}
	s.mu.Unlock()
	chunk = appendFloorChunk(chunk[:0], n, data...)
	if _, err := c.conn.Write(chunk); err != nil {
		s.end(c)
		return chunk
	}
	s.rounds.Load().record(0, time.Since(read).Nanoseconds())
	return chunk
}

// watch reads a connection of the distinct floor until its client goes,
// and then ends its subscription. Clients send nothing after their request.
func (s *floorServer) watch(c *floorConn) {
	defer s.wg.Done()
	c.conn.SetReadDeadline(time.Time{})
	var b [64]byte
	for {
		if _, err := c.conn.Read(b[:]); err != nil {
			s.end(c)
			return
		}
	}
}

// end forgets a connection and, on the distinct floors, stops its
// subscription upstream (complete, or unsubscribe on NATS). Once the floor
// closes, it does neither: the end of the WebSocket (the NATS connection)
// stops every subscription.
func (s *floorServer) end(c *floorConn) {
	if !s.drop(c) {
		return
	}
	switch {
	case c.nsub != nil:
		if err := c.nsub.Unsubscribe(); err != nil && !s.nats.nc.IsClosed() {
			fmt.Fprintf(s.nats.log, "unsubscribe %s: %v\n", c.nsub.Subject, err)
		}
	case c.sub != "":
		if err := s.up.complete(c.sub); err != nil && s.up.ctx.Err() == nil {
			fmt.Fprintf(s.up.log, "complete %s: %v\n", c.sub, err)
		}
	}
}

// clipBytes shortens a message for a log line.
func clipBytes(b []byte) []byte {
	const n = 200
	if len(b) > n {
		return b[:n]
	}
	return b
}
