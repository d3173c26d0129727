package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// A source is an in-process upstream that loadgen publishes into: the
// gqlpushtest server of the WebSocket scenarios (an inProcessUpstream), or
// the NATS server of the nats- ones (a natsUpstream). The scenarios are the
// same whatever the source: the publisher posts into it, and they count its
// subscriptions to know when the gateway has subscribed and whether it let
// go.
type source interface {
	// post sends a chat message to room ("" is gqlpushtest.DefaultRoom)
	// whose content is content, stamped with sentAt (Unix nanoseconds)
	// now. Only the publisher's goroutine calls it.
	post(room, content string) error
	// flush sends what post buffered; the publisher calls it after each
	// tick's batch.
	flush() error
	// subscriptions counts the subscriptions the gateway holds.
	subscriptions() int
	// close stops the source and waits for its goroutines.
	close()
}

// An inProcessUpstream is the gqlpushtest server loadgen publishes into.
type inProcessUpstream struct {
	srv    *gqlpushtest.Server
	http   *http.Server  // when it listens on a given address; nil otherwise
	served chan struct{} // closed when http's Serve returned
	url    string
}

// startUpstream starts the in-process upstream: on a loopback port of its
// own choosing when listen is empty, else on listen (so that a gateway
// started by hand can be pointed at it).
func startUpstream(listen string) (*inProcessUpstream, error) {
	if listen == "" {
		srv := gqlpushtest.NewServer(nil)
		return &inProcessUpstream{srv: srv, url: srv.URL}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	srv := gqlpushtest.NewUnstartedServer(nil)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	u := &inProcessUpstream{srv: srv, http: hs, served: make(chan struct{}), url: "ws://" + ln.Addr().String() + "/graphql"}
	go u.serve(ln)
	return u, nil
}

// serve accepts connections until close closes the server.
func (u *inProcessUpstream) serve(ln net.Listener) {
	defer close(u.served)
	u.http.Serve(ln)
}

// close closes the listener and every connection, and waits for the
// server's goroutines.
func (u *inProcessUpstream) close() {
	if u.http != nil {
		u.http.Close()
		<-u.served
	}
	u.srv.Close()
}

var _ source = (*inProcessUpstream)(nil)

// post waits while a subscriber's buffer is full: the chat loses nothing.
func (u *inProcessUpstream) post(room, content string) error {
	u.srv.Chat.Post(room, content)
	return nil
}

// flush has nothing to do: the chat hands each post to its subscribers at
// once.
func (u *inProcessUpstream) flush() error { return nil }

func (u *inProcessUpstream) subscriptions() int { return u.srv.Subscriptions() }

// A publisher posts chat messages into its source at a steady rate, round
// robin over its rooms. Each message's content is the room's sequence
// number, from 0, so a client can tell a lost result from a late one; the
// source stamps each with sentAt (Unix nanoseconds) when it is posted.
//
// It ticks at most every millisecond and posts what is due since the rate
// was set, so the average rate holds whatever the ticker's jitter or a late
// wake-up, and a high rate is a batch of posts per tick rather than a busy
// loop; the source flushes once per batch. A rate change is heard between
// posts, even in a long batch.
type publisher struct {
	to    source
	rooms []string
	ctrl  chan pubCtrl
	done  chan struct{}

	posted atomic.Int64

	// stamps, when not nil (the live scenario: one room), holds the time
	// just before each post (Unix nanoseconds), by sequence number, as
	// long as there is room: a live query's result says how many
	// messages were posted, not when, and its clients look the newest up
	// here. The chat takes its own stamp a few microseconds later.
	stamps []atomic.Int64

	// seq is each room's next sequence number; failed counts the posts
	// the source refused (their sequence numbers are used again), and err
	// is the first error of a post or a flush. Only run writes them; the
	// coordinator reads them after pause, which orders the reads after the
	// writes.
	seq    []int64
	failed int64
	err    error
}

type pubCtrl struct {
	rate float64 // per room, per second; 0 pauses
	ack  chan struct{}
}

// Bounds of the publisher's tick.
const (
	minTick = time.Millisecond
	maxTick = 100 * time.Millisecond
)

func newPublisher(to source, rooms []string) *publisher {
	return &publisher{to: to, rooms: rooms, ctrl: make(chan pubCtrl), done: make(chan struct{}), seq: make([]int64, len(rooms))}
}

// set changes the rate, per room and per second; 0 pauses. It returns once
// the publisher posts nothing more at the old rate.
func (p *publisher) set(ctx context.Context, rate float64) error {
	c := pubCtrl{rate: rate, ack: make(chan struct{})}
	select {
	case p.ctrl <- c:
	case <-p.done:
		return errors.New("publisher stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finalSeq returns the next sequence number of every room; call it after
// set(ctx, 0).
func (p *publisher) finalSeq() []int64 { return p.seq }

// rewind starts every room's sequence numbers again from 0, as a new
// publisher's; call it after set(ctx, 0), before the rate is set again. The
// distinct floor posts before the scenario does, whose clients expect each
// room's first result to be 0.
func (p *publisher) rewind() { clear(p.seq) }

// failures returns how many posts the source refused, and the first error
// of a post or a flush; call it after set(ctx, 0).
func (p *publisher) failures() (int64, error) { return p.failed, p.err }

// fail keeps the first error.
func (p *publisher) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	var (
		ticker *time.Ticker
		tick   <-chan time.Time
		total  float64 // posts per second, all rooms
		start  time.Time
		sent   int64
		room   int
	)
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	apply := func(c pubCtrl) {
		if ticker != nil {
			ticker.Stop()
			ticker, tick = nil, nil
		}
		total = c.rate * float64(len(p.rooms))
		if total > 0 {
			period := time.Duration(float64(time.Second) / total)
			period = min(max(period, minTick), maxTick)
			ticker = time.NewTicker(period)
			tick = ticker.C
			start, sent = time.Now(), 0
		}
		close(c.ack)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-p.ctrl:
			apply(c)
		case now := <-tick:
			due := int64(now.Sub(start).Seconds()*total) - sent
			var changed *pubCtrl // a rate change heard in the batch
			for i := int64(0); i < due && changed == nil; i++ {
				if i%64 == 63 {
					select {
					case c := <-p.ctrl:
						changed = &c
						continue
					case <-ctx.Done():
						return
					default:
					}
				}
				sent++
				if s := p.seq[room]; s < int64(len(p.stamps)) {
					p.stamps[s].Store(time.Now().UnixNano())
				}
				if err := p.to.post(p.rooms[room], strconv.FormatInt(p.seq[room], 10)); err != nil {
					p.failed++
					p.fail(err)
				} else {
					p.seq[room]++
					p.posted.Add(1)
				}
				room++
				if room == len(p.rooms) {
					room = 0
				}
			}
			// Flushed before a change is acknowledged: what was posted at
			// the old rate is on its way when set returns.
			if due > 0 {
				if err := p.to.flush(); err != nil {
					p.fail(err)
				}
			}
			if changed != nil {
				apply(*changed)
			}
		}
	}
}
