package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Over HTTP/1.1 (-proto h1, the default), clients are raw connections
// rather than net/http's: net/http's
// Transport gives each connection a read goroutine and a write goroutine and
// hands the body through a pipe, three goroutines and two buffers per client,
// where one goroutine reading its own socket is enough. loadgen shares the
// machine's cores with the gateway it measures; what it does not burn, the
// gateway gets. The request is written once; the response head is read line
// by line; the chunked body is decoded by httputil's chunked reader, which
// does not allocate per chunk and returns what it has without waiting for
// the next chunk header. Over HTTP/2 (proto.go) they are streams of
// net/http's client connections, several on each: there one goroutine per
// connection reads the socket and hands each stream its bytes.

const (
	readBufSize  = 4 << 10  // socket reads
	frameBufSize = 2 << 10  // de-chunked bytes waiting to form a frame; grows
	maxFrameSize = 1 << 20  // a longer frame ends the client
	maxHeadBytes = 16 << 10 // response head
)

var (
	framesEnd   = []byte("\n\n")
	dataPrefix  = []byte("data: ")
	dataLine    = []byte("\ndata: ")
	completeEvt = []byte("event: complete")
	errorsJSON  = []byte(`{"errors"`)
	contentKey  = []byte(`"content":"`)
	sentAtKey   = []byte(`"sentAt":"`)
	countKey    = []byte(`"gql_messageCount":`)
	codeKey     = []byte(`"code":"`)
)

// An sseConn is one SSE response being read: a connection of its own over
// HTTP/1.1, a stream over HTTP/2 (see proto.go).
type sseConn struct {
	conn net.Conn // HTTP/1.1; nil over HTTP/2
	br   *bufio.Reader
	body io.Reader
	pend []byte // de-chunked bytes not yet consumed as frames
	stop func() // HTTP/2: ends the stream
}

// headTimeout bounds the wait for a response head, unless a fleet sets its
// own.
const headTimeout = 30 * time.Second

// dialSSE connects, sends GET target and reads the response head, which
// must come within head. A status other than 200 is an error naming it and
// the error code of the body.
func dialSSE(ctx context.Context, d *net.Dialer, addr, target string, head time.Duration) (*sseConn, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	sc, err := startSSE(conn, addr, target, head)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return sc, nil
}

func startSSE(conn net.Conn, addr, target string, head time.Duration) (*sseConn, error) {
	// The head must come within a bounded time; the stream itself may be
	// silent for as long as the heartbeat allows.
	conn.SetDeadline(time.Now().Add(head))
	if _, err := io.WriteString(conn, requestHead(addr, target)); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(newReader(conn), readBufSize)
	status, chunked, err := readHead(br)
	if err != nil {
		return nil, err
	}
	sc := &sseConn{conn: conn, br: br, body: br, pend: make([]byte, 0, frameBufSize)}
	if chunked {
		sc.body = httputil.NewChunkedReader(br)
	}
	if status != 200 {
		b, _ := io.ReadAll(io.LimitReader(sc.body, 4<<10))
		return nil, fmt.Errorf("HTTP %d%s", status, codeSuffix(b))
	}
	conn.SetDeadline(time.Time{})
	return sc, nil
}

func requestHead(addr, target string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: " + addr +
		"\r\nAccept: text/event-stream\r\nUser-Agent: gqlpush-loadgen\r\n\r\n"
}

// readHead reads a response head: the status, and whether the body is
// chunked.
func readHead(br *bufio.Reader) (status int, chunked bool, err error) {
	n := 0
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		n += len(line)
		if err != nil {
			return 0, false, fmt.Errorf("response head: %w", err)
		}
		if n > maxHeadBytes {
			return 0, false, errors.New("response head too long")
		}
		line = bytes.TrimRight(line, "\r\n")
		if first {
			// HTTP/1.1 200 OK
			f := bytes.Fields(line)
			if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
				return 0, false, fmt.Errorf("bad status line %q", line)
			}
			if status, err = strconv.Atoi(string(f[1])); err != nil {
				return 0, false, fmt.Errorf("bad status line %q", line)
			}
			continue
		}
		if len(line) == 0 {
			return status, chunked, nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Transfer-Encoding")) &&
			bytes.EqualFold(bytes.TrimSpace(v), []byte("chunked")) {
			chunked = true
		}
	}
}

// codeSuffix returns " CODE" for a gqlpush error body, else "".
func codeSuffix(b []byte) string {
	i := bytes.Index(b, codeKey)
	if i < 0 {
		return ""
	}
	rest := b[i+len(codeKey):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return " " + string(rest[:j])
	}
	return ""
}

// read reads once from the connection and hands every complete frame to fn,
// without its final blank line, with the time the read returned (Unix
// nanoseconds). fn returns false to stop; the frames after it are kept for
// the next call.
func (sc *sseConn) read(fn func(frame []byte, now int64) bool) error {
	if len(sc.pend) == cap(sc.pend) {
		if cap(sc.pend) >= maxFrameSize {
			return errors.New("frame longer than 1 MiB")
		}
		sc.pend = append(make([]byte, 0, 2*cap(sc.pend)), sc.pend...)
	}
	n, err := sc.body.Read(sc.pend[len(sc.pend):cap(sc.pend)])
	if n > 0 {
		now := time.Now().UnixNano()
		sc.pend = sc.pend[:len(sc.pend)+n]
		start := 0
		for {
			i := bytes.Index(sc.pend[start:], framesEnd)
			if i < 0 {
				break
			}
			frame := sc.pend[start : start+i+1]
			start += i + 2
			if !fn(frame, now) {
				break
			}
		}
		sc.pend = sc.pend[:copy(sc.pend, sc.pend[start:])]
	}
	return err
}

func (sc *sseConn) close() {
	if sc.conn == nil {
		sc.stop()
		return
	}
	sc.conn.Close()
}

// A frame's kind.
const (
	frameComment = iota
	frameData
	frameError
	frameComplete
	frameOther
)

// classify returns a frame's kind and, for data and error frames, the value
// of its data line.
func classify(frame []byte) (int, []byte) {
	if len(frame) > 0 && frame[0] == ':' {
		return frameComment, nil
	}
	if bytes.HasPrefix(frame, completeEvt) {
		return frameComplete, nil
	}
	var data []byte
	if bytes.HasPrefix(frame, dataPrefix) {
		data = frame[len(dataPrefix):]
	} else if i := bytes.Index(frame, dataLine); i >= 0 {
		data = frame[i+len(dataLine):]
	} else {
		return frameOther, nil
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	if bytes.HasPrefix(data, errorsJSON) {
		return frameError, data
	}
	return frameData, data
}

// stringField returns the digits of "key":"<digits>" in a result, and false
// when the field is absent or not a decimal number. The results of the
// embedded operations are small and their fields unique, so a byte search is
// exact enough, and allocates nothing.
func stringField(data, key []byte) (int64, bool) {
	v, next, ok := digitsAfter(data, key)
	if !ok || next != '"' {
		return 0, false
	}
	return v, true
}

// intField returns the digits of "key":<digits> in a result, and false
// when the field is absent or not a whole number, as stringField does.
func intField(data, key []byte) (int64, bool) {
	v, next, ok := digitsAfter(data, key)
	if !ok || (next != '}' && next != ',') {
		return 0, false
	}
	return v, true
}

// digitsAfter reads the decimal digits that follow key in data, and the
// byte after them; ok is false when key is absent, or no digit or nothing
// follows it.
func digitsAfter(data, key []byte) (v int64, next byte, ok bool) {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(key):]
	n := 0
	for ; n < len(rest) && rest[n] >= '0' && rest[n] <= '9'; n++ {
		v = v*10 + int64(rest[n]-'0')
	}
	if n == 0 || n >= len(rest) {
		return 0, 0, false
	}
	return v, rest[n], true
}

// Client states.
const (
	stateConnecting = iota
	stateOpen
	stateEnded  // the stream ended on its own: complete, error, EOF
	stateFailed // it never opened
)

// A client is one SSE subscriber of a fleet. Its counters are written by its
// own goroutine and read by the coordinator.
type client struct {
	id     int
	room   int // index of the publisher's room it receives
	gw     int // index of the gateway it connects to, in its fleet's addrs
	target string

	state      atomic.Int32
	delivered  atomic.Int64 // results received
	heartbeats atomic.Int64 // comment frames after the first
	gaps       atomic.Int64 // results skipped: a sequence number jumped ahead
	ooo        atomic.Int64 // results whose sequence number was below the expected one
	next       atomic.Int64 // sequence number expected next; for a live query, the last count
}

// A fleet is the clients of a run. Each has a goroutine that reads its
// stream until the fleet is closed or the stream ends.
type fleet struct {
	addr   string
	addrs  []string // when not nil, several gateways: client i connects to addrs[i % len(addrs)]
	dialer *net.Dialer
	h2     *h2Conns                // when not nil, the clients are HTTP/2 streams on these connections
	seq    bool                    // results carry the publisher's sequence numbers
	hist   atomic.Pointer[histSet] // where latencies go; nil outside a measurement window

	// stamps, when not nil, says the results are a live query's: the
	// chat's message count, whose newest message was posted at
	// stamps[count-1] (the publisher's). A count may skip some (posted
	// between two polls): that is no loss; one not above the last is out
	// of order.
	stamps []atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	clients []*client // appended by the coordinator only

	// offset is added to a client's id to pick its gateway: the index of
	// the fleet's first client among those of several processes.
	offset int
	// inflight, when not nil, bounds the clients between their dial and
	// their response head: a token each. It keeps a fast ramp from
	// overflowing the gateways' accept queues.
	inflight chan struct{}
	// headTimeout bounds each client's dial and response head; zero means
	// headTimeout.
	headTimeout time.Duration

	opened atomic.Int64
	ended  atomic.Int64
	failed atomic.Int64

	mu      sync.Mutex
	reasons map[string]int // why streams ended or failed
}

func newFleet(ctx context.Context, addr string, seq bool) *fleet {
	f := &fleet{addr: addr, dialer: &net.Dialer{Timeout: 10 * time.Second}, seq: seq, reasons: map[string]int{}}
	f.ctx, f.cancel = context.WithCancel(ctx)
	return f
}

// newFleetOver is newFleet with its clients spread round robin over the
// gateways at addrs.
func newFleetOver(ctx context.Context, addrs []string, seq bool) *fleet {
	f := newFleet(ctx, addrs[0], seq)
	f.addrs = addrs
	return f
}

// add starts clients for targets, step of them every interval, and returns
// once all are started (not yet open: see waitOpen).
func (f *fleet) add(ctx context.Context, targets []string, rooms []int, step int, every time.Duration) error {
	step = max(step, 1)
	t := time.NewTicker(every)
	defer t.Stop()
	for i, target := range targets {
		if i > 0 && i%step == 0 {
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		c := &client{id: len(f.clients), target: target}
		if len(f.addrs) > 0 {
			c.gw = (f.offset + c.id) % len(f.addrs)
		}
		if rooms != nil {
			c.room = rooms[i]
		}
		f.clients = append(f.clients, c)
		f.start(c)
	}
	return nil
}

// start starts the goroutine of client c, one of f.clients.
func (f *fleet) start(c *client) {
	f.wg.Add(1)
	go f.runClient(c)
}

// waitOpen waits until every client is open or failed, and reports how many
// failed.
func (f *fleet) waitOpen(ctx context.Context, timeout time.Duration) error {
	n := int64(len(f.clients))
	err := waitUntil(ctx, timeout, 20*time.Millisecond, func() bool {
		return f.opened.Load()+f.failed.Load() >= n
	})
	if err != nil {
		return fmt.Errorf("%d of %d clients open after %v: %w", f.opened.Load(), n, timeout, err)
	}
	if nf := f.failed.Load(); nf > 0 {
		return fmt.Errorf("%d of %d clients failed to open: %v", nf, n, f.reasonList())
	}
	return nil
}

// close ends every client and waits for their goroutines; then it closes
// the HTTP/2 connections, if any.
func (f *fleet) close() {
	f.cancel()
	f.wg.Wait()
	if f.h2 != nil {
		f.h2.close()
	}
}

func (f *fleet) note(reason string) {
	f.mu.Lock()
	f.reasons[reason]++
	f.mu.Unlock()
}

func (f *fleet) reasonList() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.reasons))
	for k, v := range f.reasons {
		out[k] = v
	}
	return out
}

func (f *fleet) runClient(c *client) {
	defer f.wg.Done()
	addr := f.addr
	if len(f.addrs) > 0 {
		addr = f.addrs[c.gw]
	}
	if f.inflight != nil {
		select {
		case f.inflight <- struct{}{}:
		case <-f.ctx.Done():
			return
		}
	}
	sc, err := f.open(c, addr)
	if f.inflight != nil {
		<-f.inflight
	}
	if err != nil {
		if f.ctx.Err() == nil {
			c.state.Store(stateFailed)
			f.failed.Add(1)
			f.note("open: " + shortErr(err))
		}
		return
	}
	stop := context.AfterFunc(f.ctx, sc.close)
	defer func() {
		stop()
		sc.close()
	}()
	var (
		open     bool
		complete bool
		errCode  string
		next     int64 // sequence number expected next
		count    = int64(-1)
	)
	shard := c.id % histShards
	handle := func(frame []byte, now int64) bool {
		kind, data := classify(frame)
		switch kind {
		case frameComment:
			if !open {
				open = true
				c.state.Store(stateOpen)
				f.opened.Add(1)
			} else {
				c.heartbeats.Add(1)
			}
		case frameComplete:
			complete = true
			return false
		case frameError:
			errCode = codeSuffix(data)
		case frameData:
			c.delivered.Add(1)
			if f.stamps != nil {
				n, ok := intField(data, countKey)
				if !ok {
					break
				}
				if n <= count {
					c.ooo.Add(1)
					break
				}
				count = n
				c.next.Store(n)
				if n > 0 && n <= int64(len(f.stamps)) {
					if h, sent := f.hist.Load(), f.stamps[n-1].Load(); h != nil && sent != 0 {
						h.record(shard, now-sent)
					}
				}
				break
			}
			if sent, ok := stringField(data, sentAtKey); ok {
				if h := f.hist.Load(); h != nil {
					h.record(shard, now-sent)
				}
			}
			if !f.seq {
				break
			}
			if seq, ok := stringField(data, contentKey); ok {
				switch {
				case seq == next:
					next++
				case seq > next:
					c.gaps.Add(seq - next)
					next = seq + 1
				default:
					c.ooo.Add(1)
				}
				c.next.Store(next)
			}
		}
		return true
	}
	for !complete {
		err := sc.read(handle)
		if complete {
			break
		}
		if err != nil {
			if f.ctx.Err() != nil {
				return // closed by the fleet: not an end of its own
			}
			if !open {
				c.state.Store(stateFailed)
				f.failed.Add(1)
				f.note("open: " + shortErr(err))
				return
			}
			c.state.Store(stateEnded)
			f.ended.Add(1)
			if errors.Is(err, io.EOF) {
				f.note("ended: EOF" + errCode)
			} else {
				f.note("ended: " + shortErr(err) + errCode)
			}
			return
		}
	}
	if !open {
		c.state.Store(stateFailed)
		f.failed.Add(1)
		f.note("open: complete before the first frame" + errCode)
		return
	}
	c.state.Store(stateEnded)
	f.ended.Add(1)
	f.note("ended: complete" + errCode)
}

// open opens client c's stream: a connection of its own, or a stream on the
// HTTP/2 connection of its group.
func (f *fleet) open(c *client, addr string) (*sseConn, error) {
	if f.h2 == nil {
		return dialSSE(f.ctx, f.dialer, addr, c.target, cmp.Or(f.headTimeout, headTimeout))
	}
	cc, err := f.h2.conn(f.ctx, addr, c.id)
	if err != nil {
		return nil, err
	}
	return openH2(f.ctx, cc, f.h2.scheme, addr, c.target)
}

// totals sums the counters of every client.
type totals struct {
	delivered, heartbeats, gaps, ooo int64
}

// add adds u's counters to t's.
func (t *totals) add(u totals) {
	t.delivered += u.delivered
	t.heartbeats += u.heartbeats
	t.gaps += u.gaps
	t.ooo += u.ooo
}

// totals sums the counters of the fleet's clients and, for a fleet on
// several gateways, those of each gateway's clients (nil otherwise), read
// once each, so that the gateways' sums add up to the whole while results
// still come.
func (f *fleet) totals() (all totals, byGW []totals) {
	if len(f.addrs) > 0 {
		byGW = make([]totals, len(f.addrs))
	}
	for _, c := range f.clients {
		t := totals{delivered: c.delivered.Load(), heartbeats: c.heartbeats.Load(), gaps: c.gaps.Load(), ooo: c.ooo.Load()}
		all.add(t)
		if byGW != nil {
			byGW[c.gw].add(t)
		}
	}
	return all, byGW
}

// clientsByGateway counts the fleet's clients on each of its gateways;
// nil for a fleet on one gateway.
func (f *fleet) clientsByGateway() []int {
	if len(f.addrs) == 0 {
		return nil
	}
	n := make([]int, len(f.addrs))
	for _, c := range f.clients {
		n[c.gw]++
	}
	return n
}

// shortErr shortens network errors to what tells them apart.
func shortErr(err error) string {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Err != nil {
		return ne.Op + ": " + ne.Err.Error()
	}
	return err.Error()
}
