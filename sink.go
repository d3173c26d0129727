package gqlpush

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A sink is where the bytes of one stream go. Over HTTP/1.x gqlpush takes
// the connection over (rawSink): frames go to the socket as they are, with
// no copy into a buffer, several in one writev, and net/http's state for
// the request — its goroutine, its buffers, its background reader — is freed
// for the life of the stream. Where the connection cannot be taken (HTTP/2,
// a ResponseWriter wrapped by middleware, a test recorder), or
// Config.UseResponseWriter says so, the stream goes through the
// ResponseWriter (httpSink).
type sink interface {
	// writev writes frames in order, as one write where the transport
	// allows, within the deadline.
	writev(frames [][]byte, deadline time.Time) error
	// gone is closed when the client has gone.
	gone() <-chan struct{}
	// close ends the response; the sink is not used after.
	close()
}

// openSink sends the head of a 200 response with w's header, and first,
// and returns the sink for the rest of the body.
//
// liftIdle asks, over HTTP/2, for the write deadline to be lifted after
// each write: see httpSink.idleDeadline.
func openSink(w http.ResponseWriter, r *http.Request, hijack bool, first []byte, deadline time.Time, liftIdle bool) (sink, error) {
	if hijack && r.ProtoMajor == 1 {
		if conn, rw, err := http.NewResponseController(w).Hijack(); err == nil {
			// Hijack fails before it takes anything; then the
			// ResponseWriter path below serves.
			rw.Reader.Discard(rw.Reader.Buffered()) // a client has nothing to send
			return newRawSink(conn, w.Header(), r.ProtoMinor == 0, first, deadline)
		}
	}
	s := &httpSink{w: w, rc: http.NewResponseController(w), done: r.Context().Done(), idleDeadline: r.ProtoMajor >= 2 && liftIdle}
	w.WriteHeader(http.StatusOK)
	return s, s.writev([][]byte{first}, deadline)
}

// httpSink streams through the ResponseWriter.
type httpSink struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	done  <-chan struct{}
	armed time.Time
	// idleDeadline: a write deadline passes whether a write is under way
	// or not, and then ends the response. So it is over HTTP/2, where
	// net/http resets a stream whose deadline passed: a stream idle
	// between two results would be reset one WriteTimeout after its last
	// write. A stream with heartbeats keeps its deadline ahead of it (see
	// stream.slack); one without has its deadline lifted after each write,
	// at the cost of two more calls into net/http per write.
	idleDeadline bool
}

func (s *httpSink) writev(frames [][]byte, deadline time.Time) error {
	if !deadline.Equal(s.armed) {
		s.armed = deadline
		s.rc.SetWriteDeadline(deadline) // ErrNotSupported is fine: no deadline then
	}
	if s.idleDeadline {
		defer s.lift()
	}
	for _, f := range frames {
		if len(f) == 0 {
			continue
		}
		if _, err := s.w.Write(f); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// lift takes the write deadline off.
func (s *httpSink) lift() {
	s.armed = time.Time{}
	s.rc.SetWriteDeadline(time.Time{})
}

func (s *httpSink) gone() <-chan struct{} { return s.done }

// close lifts the deadline: no deadline may outlive the stream on a
// kept-alive connection.
func (s *httpSink) close() { s.rc.SetWriteDeadline(time.Time{}) }

// rawSink streams on a hijacked HTTP/1.x connection, in the chunked
// transfer coding (RFC 9112, section 7.1), so that a client can tell a
// response that ended (the last chunk) from a connection that was cut. The
// connection closes after the response, which "Connection: close" announces.
// An HTTP/1.0 client knows no chunked coding (RFC 9112, section 6.1): it gets
// the body as it is, ended by the close, as net/http would send it.
type rawSink struct {
	conn     net.Conn
	unframed bool          // HTTP/1.0: no chunks; the close ends the body
	vector   bool          // the conn takes writev; else batches are copied into buf
	failed   bool          // a write failed: the response cannot be ended cleanly
	goneCh   chan struct{} // closed by watch when the client goes, as it returns
	bufs     net.Buffers   // a large batch, with the chunk's size line and end; reused
	buf      []byte        // a small batch, copied for one write; reused
	size     []byte        // the chunk's size line; reused
	armed    time.Time     // the write deadline in force
}

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
)

// framingHeaders are dropped from a hijacked response's header: the body's
// framing is the chunked coding, whatever middleware may have set.
var framingHeaders = []string{"Content-Length", "Transfer-Encoding", "Trailer"}

func newRawSink(conn net.Conn, header http.Header, http10 bool, first []byte, deadline time.Time) (sink, error) {
	// The server may have left deadlines on the connection; the stream
	// sets its own.
	conn.SetReadDeadline(time.Time{})
	for _, k := range framingHeaders {
		header.Del(k)
	}
	if !http10 {
		header.Set("Transfer-Encoding", "chunked")
	}
	header.Set("Connection", "close")
	if header.Get("Date") == "" {
		header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var head bytes.Buffer
	if http10 {
		head.WriteString("HTTP/1.0 200 OK\r\n")
	} else {
		head.WriteString("HTTP/1.1 200 OK\r\n")
	}
	header.Write(&head) // sorted; CR and LF in values made spaces
	head.WriteString("\r\n")
	// writev(2) where the connection is a socket of net's (a listener's
	// wrapper that embeds *net.TCPConn keeps it); never under TLS, which
	// must see every byte.
	_, vector := conn.(syscall.Conn)
	s := &rawSink{conn: conn, unframed: http10, vector: vector, goneCh: make(chan struct{})}
	go watch(conn, s.goneCh)
	if err := s.write(deadline, head.Bytes(), first); err != nil {
		s.close()
		return nil, err
	}
	s.buf = nil // an idle stream keeps no buffer the size of its head
	return s, nil
}

// maxClientBytes is what a client may send on a stream before it is taken
// for gone: a client has nothing to send.
const maxClientBytes = 4 << 10

// watch reads the connection until it fails, which is how a client's
// leaving shows, and then closes gone; it takes the place of net/http's
// background reader. Its buffer is small: it is held by every idle stream,
// and a client has nothing to send.
func watch(r io.Reader, gone chan<- struct{}) {
	defer close(gone)
	var b [16]byte
	for n := 0; n <= maxClientBytes; {
		k, err := r.Read(b[:])
		if err != nil {
			return
		}
		n += k
	}
}

// arm sets the connection's write deadline, unless it is in force: a busy
// stream spares the poller most updates (see stream.deadline).
func (s *rawSink) arm(deadline time.Time) {
	if !deadline.Equal(s.armed) {
		s.armed = deadline
		s.conn.SetWriteDeadline(deadline)
	}
}

// writev writes frames as one chunk.
func (s *rawSink) writev(frames [][]byte, deadline time.Time) error {
	return s.write(deadline, nil, frames...)
}

// writeRaw writes b as it is, within the deadline: the rest of a chunk a
// direct write began.
func (s *rawSink) writeRaw(b []byte, deadline time.Time) error {
	s.arm(deadline)
	_, err := s.conn.Write(b)
	s.failed = s.failed || err != nil
	return err
}

// copyBelow is the size under which a batch is copied into one buffer and
// written with write(2); larger batches go out with writev(2), uncopied. For
// the usual frame of a few hundred bytes, one copy costs less than the
// kernel's walk over the iovecs of a chunk's size line, frames and CRLF.
const copyBelow = 16 << 10

// write writes head (raw) and then frames as one chunk, in one system call.
func (s *rawSink) write(deadline time.Time, head []byte, frames ...[]byte) error {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	s.arm(deadline)
	var err error
	if !s.vector || len(head)+n < copyBelow {
		// TLS and others would write each buffer of a writev on its own,
		// one record and one system call each: they always get one copy.
		b := append(s.buf[:0], head...)
		if n > 0 {
			if !s.unframed {
				b = strconv.AppendUint(b, uint64(n), 16)
				b = append(b, crlf...)
			}
			for _, f := range frames {
				b = append(b, f...)
			}
			if !s.unframed {
				b = append(b, crlf...)
			}
		}
		_, err = s.conn.Write(b)
		if cap(b) > copyBelow {
			b = nil // one large batch does not keep its buffer
		}
		s.buf = b
	} else {
		bufs := append(s.bufs[:0], head)
		chunked := !s.unframed && n > 0 // no frames, no chunk: a size of 0 would end the body
		if chunked {
			s.size = strconv.AppendUint(s.size[:0], uint64(n), 16)
			s.size = append(s.size, crlf...)
			bufs = append(bufs, s.size)
		}
		bufs = append(bufs, frames...)
		if chunked {
			bufs = append(bufs, crlf)
		}
		s.bufs = bufs
		_, err = bufs.WriteTo(s.conn) // consumes bufs, not s.bufs
		clear(s.bufs[:cap(s.bufs)])   // let the frames go
	}
	s.failed = s.failed || err != nil
	return err
}

func (s *rawSink) gone() <-chan struct{} { return s.goneCh }

// close ends the response with the last chunk, unless a write failed, and
// closes the connection. A client that only half-closed its side still gets
// a well-formed end; one that is gone costs a small write that fails, or
// waits at most a second.
func (s *rawSink) close() {
	if !s.failed && !s.unframed {
		s.write(time.Now().Add(time.Second), lastChunk)
	}
	s.conn.Close()
	<-s.goneCh // watch has returned
}

// A direct is a taken-over stream's socket, as the goroutine that publishes
// a shared subscription's results writes to it: one non-blocking write of
// the result's chunk, with no wake-up of the stream's own goroutine. A
// socket that takes less than the whole chunk (its buffer is full: a slow
// client) keeps the rest as pending, and the stream's goroutine, woken,
// writes it within the write timeout and serves that stream as before
// until it has caught up: a publisher never waits for a client.
//
// Whoever writes the stream holds mu: its goroutine for all its writes,
// a publisher for one chunk, taken only with TryLock, so a publisher never
// waits for it either. Streams whose frames are their own (patches,
// deduplication) or that write one result (once) have none.
type direct struct {
	mu       sync.Mutex
	rc       syscall.RawConn
	sse      bool // SSE frames, else plain ones
	unframed bool // HTTP/1.0: frames as they are, no chunks

	// Guarded by mu.
	closed  bool   // the stream wrote its end, or is closing: no more writes
	pending []byte // the rest of a chunk a publisher began, to go first
	err     error  // of a publisher's write that failed

	// Unix nanoseconds of a publisher's last write; while a result's rest
	// is pending, of when that result came.
	lastWrite atomic.Int64
}

// newDirect returns the direct of a stream on sink, or nil when its
// socket cannot be written to directly (not a socket of net's: TLS, or a
// wrapper).
func newDirect(sk sink, sse bool) *direct {
	rs, ok := sk.(*rawSink)
	if !ok || !rs.vector {
		return nil
	}
	sc, ok := rs.conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &direct{rc: rc, sse: sse, unframed: rs.unframed}
}

// appendChunk appends f to buf as one chunk of the chunked coding.
func appendChunk(buf, f []byte) []byte {
	buf = strconv.AppendUint(buf, uint64(len(f)), 16)
	buf = append(buf, crlf...)
	buf = append(buf, f...)
	return append(buf, crlf...)
}

// try writes b, the chunk of a result that came at at, with one write(2)
// that does not wait, d.mu held, and reports whether all of it went: what
// did not is pending, unless the socket failed.
func (d *direct) try(b []byte, now, at time.Time) bool {
	var n int
	var werr error
	err := d.rc.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true // once: a full buffer is the stream's goroutine's to wait on
			}
		}
	})
	if err == nil && werr == syscall.EAGAIN {
		n, werr = 0, nil
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The stream's write deadline has passed since its goroutine
		// last wrote: the goroutine sets a new one and writes it all.
		n = 0
	case err != nil || werr != nil:
		d.err = cmp.Or(err, werr)
		return false
	}
	if n < len(b) {
		d.pending = append(d.pending[:0], b[max(n, 0):]...)
		// When the result came, for the Observer once the rest is
		// written; a stream with bytes pending is busy, not idle.
		d.lastWrite.Store(at.UnixNano())
		return false
	}
	d.lastWrite.Store(now.UnixNano())
	return true
}

// lock and unlock hold d.mu for the stream's goroutine; a nil direct has
// nothing to hold.
func (d *direct) lock() {
	if d != nil {
		d.mu.Lock()
	}
}

func (d *direct) unlock() {
	if d != nil {
		d.mu.Unlock()
	}
}

// close stops publishers' writes for good, and reports whether the rest
// of a chunk was left unwritten: then the response cannot end cleanly.
func (d *direct) close() (cut bool) {
	if d != nil {
		d.mu.Lock()
		d.closed = true
		cut = d.pending != nil
		d.mu.Unlock()
	}
	return cut
}
