package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// acceptConns hands what l accepts to conns until l is closed or stop is.
func acceptConns(l net.Listener, conns chan<- net.Conn, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		select {
		case conns <- c:
		case <-stop:
			c.Close()
			return
		}
	}
}

// serveAccepts runs acceptConns on l until the test ends, then closes l
// and every connection it accepted.
func serveAccepts(t *testing.T, l net.Listener) <-chan net.Conn {
	conns, stop, done := make(chan net.Conn), make(chan struct{}), make(chan struct{})
	go acceptConns(l, conns, stop, done)
	t.Cleanup(func() {
		close(stop)
		l.Close()
		<-done
	})
	return conns
}

// accepted returns the server side of client, the next connection accepted.
func accepted(t *testing.T, conns <-chan net.Conn, client net.Conn) net.Conn {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		if c.RemoteAddr().String() != client.LocalAddr().String() {
			t.Fatalf("accepted %s, want %s", c.RemoteAddr(), client.LocalAddr())
		}
		return c
	case <-timer.C:
		t.Fatalf("%s was never accepted", client.LocalAddr())
		return nil
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTime))
	return c
}

// exchange sends a line each way between the ends of one connection.
func exchange(t *testing.T, client, server net.Conn) {
	t.Helper()
	for _, ends := range [][2]net.Conn{{client, server}, {server, client}} {
		if _, err := io.WriteString(ends[0], "ping\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		line, err := bufio.NewReader(ends[1]).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("read %q, %v; want ping", line, err)
		}
	}
}

// isClosed reports whether err is how a connection fails once its peer
// closed or reset it.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// wantClosed checks that c was closed by its peer without a byte.
func wantClosed(t *testing.T, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 1))
	if n > 0 || !isClosed(err) {
		t.Fatalf("read %d bytes, %v; want EOF or a reset", n, err)
	}
}

// TestConnLimit: over the cap, a connection is accepted and closed at once,
// while those within it are served; closing one frees its slot, once.
func TestConnLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	l := limitConns(ln, 2, slog.New(slog.NewTextHandler(&logs, nil)))
	conns := serveAccepts(t, l)
	addr := l.Addr().String()

	c1, c2 := dialTCP(t, addr), dialTCP(t, addr)
	s1, s2 := accepted(t, conns, c1), accepted(t, conns, c2)
	// The refusal may come before the dial has returned, or after.
	if c3, err := net.Dial("tcp", addr); err == nil {
		defer c3.Close()
		c3.SetDeadline(time.Now().Add(waitTime))
		wantClosed(t, c3)
	} else if !isClosed(err) {
		t.Fatalf("dial over the cap: %v, want a reset", err)
	}
	exchange(t, c1, s1)
	exchange(t, c2, s2)

	// net/http, or gqlpush, may close a connection more than once.
	s1.Close()
	s1.Close()
	if n := l.(*limitListener).open.Load(); n != 1 {
		t.Errorf("%d connections counted open, want 1", n)
	}
	c4 := dialTCP(t, addr)
	exchange(t, c4, accepted(t, conns, c4))
	exchange(t, c2, s2)

	// c4 was accepted after c3 was refused, and the refusal logged.
	if log := logs.String(); strings.Count(log, "\n") != 1 || !strings.Contains(log, "refused=1 max_conns=2") {
		t.Errorf("log %q, want one line about a refusal", log)
	}
}

// TestConnLimitKeepsFastPaths: the connections of the listener keep what
// gqlpush and net/http look for on a TCP connection.
func TestConnLimitKeepsFastPaths(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConns(ln, 1, slog.New(slog.DiscardHandler))
	conns := serveAccepts(t, l)
	c := dialTCP(t, l.Addr().String())
	s := accepted(t, conns, c)
	if _, ok := s.(*tcpConn); !ok {
		t.Fatalf("accepted a %T, want a *tcpConn", s)
	}
	// gqlpush writes streams with writev(2) only to a syscall.Conn.
	if _, ok := s.(syscall.Conn); !ok {
		t.Error("not a syscall.Conn")
	}
	// net/http half-closes with CloseWrite, and sends files with ReadFrom.
	if _, ok := s.(interface{ CloseWrite() error }); !ok {
		t.Error("no CloseWrite")
	}
	if _, ok := s.(io.ReaderFrom); !ok {
		t.Error("not an io.ReaderFrom")
	}
	exchange(t, c, s)
}

// pipeListener accepts the net.Pipe ends sent on conns: connections of no
// kind net knows.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "pipe"} }

// TestConnLimitLog: refusals are logged at most once per refusedLogEvery,
// with the count since the last line; a connection net does not know is
// counted too.
func TestConnLimitLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		pl := &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
		l := limitConns(pl, 1, slog.New(slog.NewTextHandler(&logs, nil)))
		conns := serveAccepts(t, l)
		// connect hands a connection to the listener and waits until it
		// is handled: served or refused.
		connect := func() net.Conn {
			client, server := net.Pipe()
			t.Cleanup(func() { client.Close() })
			pl.conns <- server
			synctest.Wait()
			return client
		}
		lines := func() []string { return strings.Split(strings.TrimSuffix(logs.String(), "\n"), "\n") }

		connect()
		s := <-conns
		if _, ok := s.(*otherConn); !ok {
			t.Fatalf("accepted a %T, want an *otherConn", s)
		}
		wantClosed(t, connect())
		if l := lines(); len(l) != 1 || !strings.Contains(l[0], "refused=1 max_conns=1") {
			t.Fatalf("log %q, want a line about one refusal", l)
		}
		wantClosed(t, connect())
		wantClosed(t, connect())
		if l := lines(); len(l) != 1 {
			t.Fatalf("log %q, want the first line alone", l)
		}
		// When the interval is up, the refusals held back are told, though
		// none follows them.
		time.Sleep(refusedLogEvery)
		synctest.Wait()
		if l := lines(); len(l) != 2 || !strings.Contains(l[1], "refused=2 max_conns=1") {
			t.Fatalf("log %q, want a second line about two refusals", l)
		}
		wantClosed(t, connect())
		if l := lines(); len(l) != 2 {
			t.Fatalf("log %q, want the third refusal held back", l)
		}

		s.Close()
		s.Close()
		connect()
		s = <-conns
		s.Close()
		if l := lines(); len(l) != 2 {
			t.Errorf("log %q, want no more lines", l)
		}
		// Closing the listener tells the one held back.
		l.Close()
		if l := lines(); len(l) != 3 || !strings.Contains(l[2], "refused=1 max_conns=1") {
			t.Errorf("log %q, want a last line about one refusal", l)
		}
	})
}

// rawGet makes a request over a connection of its own, and returns the
// response, or the error that ended the connection.
func rawGet(t *testing.T, g *gateway, path string, header http.Header) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if header != nil {
		req.Header = header
	}
	req.Close = true
	c, err := net.Dial("tcp", req.URL.Host)
	if err != nil {
		if isClosed(err) {
			return nil, "", err // reset before the dial returned
		}
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitTime))
	// The request is written beside the read: a gateway that refuses a
	// large request head answers and closes before it has read it all.
	written := make(chan struct{})
	go writeRequest(req, c, written)
	defer func() {
		c.Close() // ends the write, if it is still going
		<-written
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp, string(b), nil
}

func writeRequest(req *http.Request, w io.Writer, done chan<- struct{}) {
	defer close(done)
	req.Write(w)
}

// TestMaxConns runs the gateway with -max-conns 1: a stream, which gqlpush
// takes over from net/http, holds the one connection, and frees it once it
// ends.
func TestMaxConns(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL,
		"-max-conns", "1", "-heartbeat", "1h")
	s := g.dial(t, "/operations/Messages?wg_sse=true", nil)
	if f := s.frame(t); f != comment {
		t.Fatalf("first frame %q", f)
	}
	if _, _, err := rawGet(t, g, "/healthz", nil); !isClosed(err) {
		t.Fatalf("a second connection: %v, want it closed", err)
	}
	if rest := s.leave(t); rest != "" {
		t.Fatalf("after leaving: %q", rest)
	}
	// gqlpush closes the stream's connection right after its last chunk:
	// the slot is free soon after, and a connection that comes before is
	// refused.
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	for {
		resp, body, err := rawGet(t, g, "/healthz", nil)
		if err == nil {
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
			}
			break
		}
		if !isClosed(err) {
			t.Fatalf("/healthz: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the slot of the stream's connection was never freed")
		}
	}
	if log := g.stderr.String(); !strings.Contains(log, "connections refused") || !strings.Contains(log, "max_conns=1") {
		t.Errorf("the refusal was not logged:\n%s", log)
	}
}

// TestMaxHeaderBytes: a request head of 64 KiB and more is refused with 431;
// one with a query string of the most gqlpush takes and large headers is
// served.
func TestMaxHeaderBytes(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL)

	path := "/healthz?pad=" + strings.Repeat("q", gqlpush.DefaultMaxQueryBytes-len("pad="))
	resp, body, err := rawGet(t, g, path, http.Header{"Authorization": {"Bearer " + strings.Repeat("t", 8<<10)}, "X-Pad": {strings.Repeat("h", 32<<10)}})
	if err != nil {
		t.Fatalf("a 56 KiB request head: %v", err)
	}
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("a 56 KiB request head: %d %q, want 200 ok", resp.StatusCode, body)
	}
	resp, body, err = rawGet(t, g, "/healthz", http.Header{"X-Pad": {strings.Repeat("h", 100<<10)}})
	if err != nil {
		t.Fatalf("a 100 KiB request head: %v", err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 100 KiB request head: %d %q, want 431", resp.StatusCode, body)
	}
}
