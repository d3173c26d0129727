//go:build unix

package main

import (
	"io"
	"net"
	"runtime"
	"syscall"
)

// rcvbufControl returns a net.Dialer Control that sets SO_RCVBUF before
// connecting, so the advertised window is small from the first segment.
func rcvbufControl(size int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		}); err != nil {
			return err
		}
		return serr
	}
}

// bindNoPort is a net.Dialer Control that sets IP_BIND_ADDRESS_NO_PORT
// (Linux 4.2 on): a dialer with a LocalAddr binds its socket before it
// connects, and bind would pick a port unused on the source address, so
// that one address could make only as many connections as the ephemeral
// range has ports, whatever their destinations, and no port left in
// TIME_WAIT by an earlier run would serve again. With the option, the port
// is picked at connect, unique only per destination. Elsewhere it does
// nothing.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	const ipBindAddressNoPort = 24 // linux/in.h
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}

// fileLimit returns the soft and hard limits on open files. Go (1.19 on)
// raises the soft limit to the hard one when a program starts; ensureFiles
// raises it again in case something lowered it.
func fileLimit() (soft, hard uint64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	return uint64(r.Cur), uint64(r.Max), nil
}

func raiseFileLimit() error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	r.Cur = r.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
}

// lowerFileLimit sets the soft limit on open files to n, if that is below
// the current one.
func lowerFileLimit(n uint64) error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	if uint64(r.Cur) <= n {
		return nil
	}
	r.Cur = n
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
}

// A waitingReader reads a connection without the read that finds nothing.
// net.Conn's Read tries the read(2) first and waits for the poller only when
// it fails with EAGAIN: a client that gets one event at a time pays two
// system calls per event. This reader waits first, unless its last read
// filled the buffer (the socket may hold more, and an edge-triggered poller
// would not say so again). What loadgen saves, the gateway it shares the
// cores with gets.
type waitingReader struct {
	rc     syscall.RawConn
	p      []byte
	n      int
	err    error
	wait   bool // wait for readability before the next read(2)
	waited bool
	fn     func(fd uintptr) bool
}

// newReader returns a reader of conn's bytes that spends as few system
// calls as it can.
func newReader(conn net.Conn) io.Reader {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return conn
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return conn
	}
	r := &waitingReader{rc: rc}
	r.fn = r.read
	return r
}

func (r *waitingReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err, r.waited = p, 0, nil, !r.wait
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	r.wait = r.n < len(p) && r.err == nil
	r.p = nil
	return r.n, r.err
}

func (r *waitingReader) read(fd uintptr) bool {
	if !r.waited {
		r.waited = true
		return false
	}
	n, err := syscall.Read(int(fd), r.p)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return false
	case err != nil:
		r.err = err
	case n == 0:
		r.err = io.EOF
	default:
		r.n = n
	}
	return true
}
