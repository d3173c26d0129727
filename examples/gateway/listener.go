package main

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// defaultMaxConns is the default of -max-conns. A flood of
	// connections then ends at the cap, rather than at the process's file
	// descriptor limit, where the gateway could not dial an upstream or
	// read a key set either.
	defaultMaxConns = 10000

	// refusedLogEvery is how often, at most, refused connections are
	// logged: a flood must not become one log line per connection.
	refusedLogEvery = 10 * time.Second
)

// limitConns caps the connections open at once from ln at max; 0 leaves ln
// as it is. Over the cap, a new connection is accepted and closed at once,
// rather than left in the kernel's backlog: the backlog does not fill up
// for the clients that come once connections are free again, and a client
// refused learns so at once instead of at its connect timeout.
//
// A connection counts until it is closed. That covers the streams gqlpush
// takes over from net/http (http.Hijacker hands it the connection this
// listener returned, and gqlpush closes it when the stream ends) as well as
// the requests net/http serves and its idle kept-alive connections.
func limitConns(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if max == 0 {
		return ln
	}
	return &limitListener{Listener: ln, max: int64(max), log: log}
}

// A limitListener is the listener of limitConns.
type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64 // connections returned and not yet closed
	log  *slog.Logger

	mu      sync.Mutex
	refused int         // connections refused since the last log line
	logged  time.Time   // when the last log line was written; zero before
	flush   *time.Timer // set while refusals wait to be told
	closed  bool
}

// Accept returns the next connection while fewer than max are open, and
// closes those that come over the cap meanwhile.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return wrapConn(c, l), nil
		}
		l.open.Add(-1)
		l.refuse(c)
	}
}

// refuse closes c and logs the refusals, at most once per refusedLogEvery:
// the first at once, those that follow when that time is up, counted in one
// line, so that a burst is told in full even if nothing follows it.
func (l *limitListener) refuse(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		// A reset: the client fails at once, and the gateway keeps no
		// TIME_WAIT state for a connection it never served.
		tc.SetLinger(0)
	}
	c.Close()
	l.mu.Lock()
	l.refused++
	now := time.Now()
	if !l.logged.IsZero() && now.Sub(l.logged) < refusedLogEvery {
		if l.flush == nil && !l.closed {
			l.flush = time.AfterFunc(refusedLogEvery-now.Sub(l.logged), l.tell)
		}
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.tell()
}

// tell logs the refusals not yet told, if any.
func (l *limitListener) tell() {
	l.mu.Lock()
	n := l.refused
	l.refused, l.flush = 0, nil
	if n > 0 {
		l.logged = time.Now()
	}
	l.mu.Unlock()
	if n > 0 {
		l.log.Warn("connections refused: -max-conns reached", "refused", n, "max_conns", l.max)
	}
}

// Close closes the listener, and tells the refusals not yet told.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	if l.flush != nil {
		l.flush.Stop()
	}
	l.mu.Unlock()
	l.tell()
	return err
}

// release gives back the slot of a connection that closed.
func (l *limitListener) release() { l.open.Add(-1) }

// wrapConn returns c, counted by l until its first Close. A TCP connection
// is wrapped in a type that embeds *net.TCPConn, so that the methods that
// make writes fast stay: SyscallConn (gqlpush writes streams with writev(2)
// only to a syscall.Conn), ReadFrom (sendfile) and the one net.Buffers
// uses for writev(2).
func wrapConn(c net.Conn, l *limitListener) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tc, slot: slot{l: l}}
	}
	return &otherConn{Conn: c, slot: slot{l: l}}
}

// A slot is what one connection holds of its listener's cap.
type slot struct {
	l    *limitListener
	done atomic.Bool
}

// free releases the slot the first time only: a connection may be closed
// more than once.
func (s *slot) free() {
	if s.done.CompareAndSwap(false, true) {
		s.l.release()
	}
}

// A tcpConn is a TCP connection that holds a slot.
type tcpConn struct {
	*net.TCPConn
	slot slot
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.slot.free()
	return err
}

// An otherConn is a connection of any other kind that holds a slot.
type otherConn struct {
	net.Conn
	slot slot
}

func (c *otherConn) Close() error {
	err := c.Conn.Close()
	c.slot.free()
	return err
}
