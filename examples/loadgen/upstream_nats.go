package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// natsSubjectPrefix starts the subject of every room: the chat's room r0 is
// subject rooms.r0. natsSchema's @natsSubscribe says the same.
const natsSubjectPrefix = "rooms."

// natsFlushTimeout bounds the wait for the NATS server's answer to a
// flush.
const natsFlushTimeout = 5 * time.Second

// A natsUpstream is the NATS server of the nats- scenarios, in process, and
// the connection loadgen publishes on. A message's payload is the JSON value
// of the chat's messageCreated field, the Message that the gqlpushtest chat
// would send: the gateway completes it through the operation's selection,
// so that clients read the same results as from the WebSocket upstream.
type natsUpstream struct {
	ns   *server.Server
	nc   *nats.Conn
	url  string
	base uint32 // the server's subscriptions before the gateway's

	// Only the publisher's goroutine uses these.
	nextID int64  // the last message's id, as the chat counts them
	buf    []byte // the payload being built
}

var _ source = (*natsUpstream)(nil)

// startNATS starts a NATS server, core NATS only, on a loopback port of its
// own choosing when listen is empty, else on listen; and connects to it to
// publish.
func startNATS(listen string) (*natsUpstream, error) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, err
		}
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("port %q: %w", port, err)
		}
		opts.Host = host
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	ns.Start() // it returns once it accepts in goroutines of its own
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("the NATS server did not accept connections within 10s")
	}
	// No reconnect: the server is this process's, and a publish that
	// cannot go is counted as failed rather than buffered.
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("loadgen publisher"), nats.NoReconnect())
	if err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("connect to the NATS server: %w", err)
	}
	return &natsUpstream{ns: ns, nc: nc, url: ns.ClientURL(), base: ns.NumSubscriptions()}, nil
}

// post publishes the message to its room's subject. nats.go buffers it
// until flush, or until its own flusher writes it. Rooms (r0, general) and
// contents (sequence numbers) need no JSON escaping.
func (u *natsUpstream) post(room, content string) error {
	if room == "" {
		room = gqlpushtest.DefaultRoom
	}
	u.nextID++
	b := append(u.buf[:0], `{"id":"`...)
	b = strconv.AppendInt(b, u.nextID, 10)
	b = append(b, `","content":"`...)
	b = append(b, content...)
	b = append(b, `","room":"`...)
	b = append(b, room...)
	b = append(b, `","sentAt":"`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `"}`...)
	u.buf = b
	return u.nc.Publish(natsSubjectPrefix+room, b) // it copies b
}

// flush writes what is buffered and waits for the server to have read it.
func (u *natsUpstream) flush() error { return u.nc.FlushTimeout(natsFlushTimeout) }

// subscriptions counts the subscriptions made since the server started:
// the gateway's, as loadgen's connection makes none.
func (u *natsUpstream) subscriptions() int {
	return int(u.ns.NumSubscriptions()) - int(u.base)
}

// close closes the connection, then the server, and waits for the server's
// goroutines.
func (u *natsUpstream) close() {
	u.nc.Close()
	u.ns.Shutdown()
	u.ns.WaitForShutdown()
}
