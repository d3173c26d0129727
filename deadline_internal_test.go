package gqlpush

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// withWall returns mono with its wall clock reading replaced by wall's:
// the instant mono names by the monotonic clock, as time.Now would return
// it after the wall clock was stepped to wall's reading (an NTP step, a VM
// resumed). Both must come from time.Now, and carry a monotonic reading.
func withWall(t *testing.T, mono, wall time.Time) time.Time {
	type timeLayout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	if unsafe.Sizeof(time.Time{}) != unsafe.Sizeof(timeLayout{}) {
		t.Skip("time.Time's layout is not the one assumed")
	}
	out := mono
	(*timeLayout)(unsafe.Pointer(&out)).wall = (*timeLayout)(unsafe.Pointer(&wall)).wall
	// Check the construction: monotonic from mono, wall from wall.
	if out.Sub(mono) != 0 || !out.Round(0).Equal(wall.Round(0)) {
		t.Skip("could not build a time with a stepped wall clock")
	}
	return out
}

// TestDeadlineFollowsTheMonotonicClock: stream.deadline moves the
// write deadline when less than half the write timeout is left. "Left" must
// be measured by the monotonic clock, as the poller measures the deadline
// once it is set (SetWriteDeadline converts it to a monotonic instant):
// after the wall clock is stepped back, a deadline that is about to pass in
// real time must still be moved, or the sink (which sets a deadline only
// when it differs from the one in force) leaves the old one in the poller,
// and the stream's next write fails with ErrDeadlineExceeded: a slow
// consumer that is not slow.
//
// A deadline kept as Unix nanoseconds fails it: the comparison is then on
// the wall clock.
func TestDeadlineFollowsTheMonotonicClock(t *testing.T) {
	const timeout = 10 * time.Second
	st := &stream{timeout: timeout}
	t0 := time.Now()
	d0 := st.deadline(t0)
	// 9s later in real time, 1s before d0 passes in the poller; meanwhile
	// the wall clock was stepped back a minute.
	t1 := withWall(t, t0.Add(9*time.Second), t0.Add(-time.Minute))
	if left := t0.Add(timeout).Sub(t1); left != time.Second {
		t.Fatalf("setup: %v left", left)
	}
	d1 := st.deadline(t1)
	if d1.Equal(d0) {
		t.Fatalf("deadline not moved with 1s of %v left in real time (the wall clock was stepped back): %v, as before", timeout, d1)
	}
}

// TestHeartbeatIdleFollowsTheMonotonicClock: the stream's silence,
// which decides whether a heartbeat is due, is read by time.Since of
// lastWritten. After the stream's own write, and a wall clock stepped back,
// the idle time must not come out negative (which would postpone the next
// heartbeat by the step: beat.Reset(beatEvery - idle)).
// (A publisher's last write, direct.lastWrite, is still Unix nanoseconds:
// the stream's own last write is what this checks.)
func TestHeartbeatIdleFollowsTheMonotonicClock(t *testing.T) {
	st := &stream{}
	w0 := time.Now()
	// The stream's last write, as stream.write records it.
	setLastWrite(st, w0)
	lw := st.lastWritten()
	t1 := withWall(t, w0.Add(time.Second), w0.Add(-time.Minute))
	// time.Since(lw) as read at t1: lw.Sub(t1) with t1 as "now".
	if idle := t1.Sub(lw); idle < 0 {
		t.Fatalf("idle %v after a second of real silence (the wall clock was stepped back a minute): the next heartbeat waits that much longer", idle)
	}
}

// setLastWrite stores t as stream.write does.
func setLastWrite(st *stream, t time.Time) { st.lastWrite = t }

// setArmed records d as the deadline in force on rs, as its write does.
func setArmed(rs *rawSink, d time.Time) { rs.armed = d }

// TestWriteAfterWallClockStepBack: the same, through the sink to a
// real socket. A stream's deadline was armed 10.001s ago (real time) with a
// 10s write timeout: in the poller it has passed. The wall clock has since
// been stepped back a minute. The stream writes now: stream.deadline must
// give a new deadline, and the write must go. Here the deadline is not
// moved (on the wall clock it is a minute away), the sink sees it unchanged
// and sets nothing, and the write fails at once with ErrDeadlineExceeded,
// which runStream reports as a slow consumer.
func TestWriteAfterWallClockStepBack(t *testing.T) {
	rs, server := loopbackRawSink(t)
	sk := sink(rs)
	defer sk.close()

	const timeout = 10 * time.Second
	st := &stream{timeout: timeout, sink: sk}
	// What the stream's write did 10.001s ago: a deadline 10s ahead, set on
	// the socket (where it has passed by now).
	now := time.Now()
	t0 := now.Add(-timeout - time.Millisecond)
	d0 := st.deadline(t0)
	server.SetWriteDeadline(d0)
	setArmed(rs, d0)
	// Now, with the wall clock a minute behind.
	t1 := withWall(t, now, now.Add(-time.Minute))
	if err := rs.writev([][]byte{[]byte("data: x\n\n")}, st.deadline(t1)); err != nil {
		t.Fatalf("write after the wall clock was stepped back: %v (ErrDeadlineExceeded: %v)", err, errors.Is(err, os.ErrDeadlineExceeded))
	}
}

// TestLoneSubscriptionKeepsNoLargeChunk: a subscription with one client,
// sent one large result, keeps no buffer of that size once it is written.
// The publisher writes a lone client's results itself (takeDirect,
// writeDirect), building the chunk in sh.sseChunk for the next result too:
// kept whatever its size, every subscription of one client would hold a
// buffer the size of the largest result it ever had. rawSink.write lets a
// buffer over copyBelow go in the same way, as the NATS source does past
// shrinkAbove.
func TestLoneSubscriptionKeepsNoLargeChunk(t *testing.T) {
	th := newTestHub(nil)
	s := th.mustJoin(t, "", "")
	rs, _ := loopbackRawSink(t)
	sk := sink(rs)
	d := newDirect(sk, true)
	if d == nil {
		t.Fatal("no direct on a loopback TCP socket")
	}
	th.setDirect(s, d)
	defer func() {
		d.close()
		sk.close()
		th.leave(s)
	}()
	big := `{"data":{"s":"` + strings.Repeat("x", 1<<20) + `"}}`
	if err := th.src.subs()[0].r.publish([]byte(big), 0); err != nil {
		t.Fatal(err)
	}
	sh := s.sh
	sh.mu.Lock()
	keep := cap(sh.sseChunk) + cap(sh.plainChunk)
	sh.mu.Unlock()
	if keep > copyBelow {
		t.Fatalf("the subscription keeps %d bytes of chunk buffer after one result of %d bytes", keep, len(big))
	}
}

// loopbackRawSink returns a rawSink on the server's end of a loopback TCP
// connection, and that end; the client's end reads and discards everything,
// and closes with the test.
func loopbackRawSink(t *testing.T) (*rawSink, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	go io.Copy(io.Discard, client)
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := newRawSink(server, http.Header{}, false, []byte(":\n\n"), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return sk.(*rawSink), server
}
