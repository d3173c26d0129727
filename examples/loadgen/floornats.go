package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// The nats-distinct scenario's floor (loadgen floor -nats URL) is the
// distinct floor on a NATS upstream: the least any gateway must do per
// event when each event is one NATS message for one client. It ticks no
// rounds. For each SSE request it subscribes, on one NATS connection for
// all, to the subject of the request's room (its room query parameter):
// rooms.<room>, the subject natsSchema's @natsSubscribe gives the gateway
// for NatsRoom, and the one loadgen publishes the room's messages on. It is
// a core subscription, as the gateway's.
//
// Every subscription delivers into one channel, read by one goroutine: the
// floor's reader, as the distinct floor's reads its one WebSocket. That
// costs less than a handler per subscription (what gqlpush has), for which
// nats.go runs a goroutine per subscription and wakes it for each of its
// messages: here no goroutine per client, and under load the one reader
// takes message after message without being parked and woken for each.
// For each message the reader builds the SSE chunk (an id line with a
// 16-character token and the event's number, then the data) and:
//
//	turn  writes it to the subscription's connection itself, one write
//	own   hands it to the connection's goroutine, without waiting: a
//	      connection whose slot still holds an event drops the new one
//	      (counted), as on the distinct floor
//
// The data is what gqlpush sends for NatsRoom,
// {"data":{"nats_messageCreated":<the message's payload>}}, with the
// payload as it came: the floor does not complete it through the
// operation's selection set as the gateway does. loadgen's payload, the
// chat's Message, has one field more than NatsRoom selects (room, between
// content and sentAt), which the floor's frames keep and the gateway's do
// not: clients read content and sentAt alike from both.
//
// The write time, from the message taken from the channel to its write's
// return, is recorded per event and served at latencyPath. A client's
// connection that ends ends its subscription (unsubscribe).
//
// The channel holds floorNATSPending messages, as many as gqlpush lets a
// subscription's pending messages grow (natsPendingMsgs): nats.go does
// not wait for room in it, it drops the message and tells the
// subscription's slow consumer error to the error handler. Those drops
// are counted as skipped, and the first few errors logged.

// floorNATSPending is the capacity of the channel every subscription
// delivers into.
const floorNATSPending = 64 << 10

var (
	floorNATSHead = []byte(`{"data":{"nats_messageCreated":`)
	floorNATSTail = []byte(`}}`)
)

// A floorNATS is the floor's one NATS connection, and the channel its
// subscriptions deliver into.
type floorNATS struct {
	nc   *nats.Conn
	msgs chan *nats.Msg
	done chan struct{} // closed when the floor closes: the reader returns
	log  io.Writer
	errs atomic.Int64 // asynchronous errors so far
}

// dialFloorNATS connects to the NATS server at url.
func dialFloorNATS(url string, log io.Writer) (*floorNATS, error) {
	u := &floorNATS{msgs: make(chan *nats.Msg, floorNATSPending), done: make(chan struct{}), log: log}
	// No reconnect: the server is loadgen's, and a floor that lost it has
	// nothing to measure.
	nc, err := nats.Connect(url, nats.Name("loadgen floor"), nats.NoReconnect(), nats.ErrorHandler(u.asyncError))
	if err != nil {
		return nil, err
	}
	u.nc = nc
	return u, nil
}

// asyncError logs the first few of nats.go's asynchronous errors: a slow
// consumer's, when the channel is full.
func (u *floorNATS) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if n := u.errs.Add(1); n <= floorLogSkipped {
		subject := ""
		if sub != nil {
			subject = " on " + sub.Subject
		}
		fmt.Fprintf(u.log, "NATS%s: %v (%d errors so far)\n", subject, err, n)
	}
}

// subscribe subscribes to room's subject.
func (u *floorNATS) subscribe(room string) (*nats.Subscription, error) {
	return u.nc.ChanSubscribe(natsSubjectPrefix+room, u.msgs)
}

// close closes the connection, which ends every subscription, and the
// reader.
func (u *floorNATS) close() {
	u.nc.Close()
	close(u.done)
}

// readNATS is the NATS floor's reader: it takes each message from the
// channel and hands it to its subscription's connection, until the floor
// closes.
func (s *floorServer) readNATS() {
	defer s.wg.Done()
	u := s.nats
	var chunk []byte // turn mode's, reused
	for {
		var m *nats.Msg
		select {
		case <-u.done:
			return
		case m = <-u.msgs:
		}
		read := time.Now()
		s.mu.Lock()
		chunk = s.deliver(s.nsubs[m.Sub], read, chunk, floorNATSHead, m.Data, floorNATSTail)
	}
}

// natsDropped counts the messages nats.go dropped, the channel full, over
// the subscriptions so far.
func (s *floorServer) natsDropped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.natsDroppedEnded
	for sub := range s.nsubs {
		if d, err := sub.Dropped(); err == nil {
			n += int64(d)
		}
	}
	return n
}
