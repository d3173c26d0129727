//go:build !unix

package main

import (
	"errors"
	"io"
	"net"
	"syscall"
)

func rcvbufControl(int) func(network, address string, c syscall.RawConn) error { return nil }

func fileLimit() (soft, hard uint64, err error) {
	return 0, 0, errors.New("no RLIMIT_NOFILE on this system")
}

func raiseFileLimit() error { return nil }

func bindNoPort(string, string, syscall.RawConn) error { return nil }

func lowerFileLimit(uint64) error { return errors.New("no RLIMIT_NOFILE on this system") }

func newReader(conn net.Conn) io.Reader { return conn }
