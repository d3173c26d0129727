package gqlpush

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// A sink is where the bytes of one stream go. Over HTTP/1.x gqlpush takes
// the connection over (rawSink): frames go to the socket as they are, with
// no chunked encoding and no copy into a buffer, several in one writev, and
// net/http's buffers and background reader are freed for the life of the
// stream. Where the connection cannot be taken (HTTP/2, a ResponseWriter
// wrapped by middleware, a test recorder), the stream goes through the
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

// openSink sends the head of a 200 response with the given header and
// returns the sink for the body. first is written with the head, in the
// same write.
func openSink(w http.ResponseWriter, r *http.Request, first []byte, deadline time.Time) (sink, error) {
	if r.ProtoMajor == 1 {
		rc := http.NewResponseController(w)
		conn, rw, err := rc.Hijack()
		if err == nil {
			return newRawSink(conn, rw, w.Header(), first, deadline)
		}
		if !errors.Is(err, http.ErrNotSupported) {
			return nil, err
		}
	}
	s := &httpSink{w: w, rc: http.NewResponseController(w), done: r.Context().Done()}
	w.WriteHeader(http.StatusOK)
	return s, s.writev([][]byte{first}, deadline)
}

// httpSink streams through the ResponseWriter.
type httpSink struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	done  <-chan struct{}
	armed time.Time
}

func (s *httpSink) writev(frames [][]byte, deadline time.Time) error {
	if !deadline.Equal(s.armed) {
		s.armed = deadline
		s.rc.SetWriteDeadline(deadline) // ErrNotSupported is fine: no deadline then
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

func (s *httpSink) gone() <-chan struct{} { return s.done }

// close lifts the deadline: no deadline may outlive the stream on a
// kept-alive connection.
func (s *httpSink) close() { s.rc.SetWriteDeadline(time.Time{}) }

// rawSink streams on a hijacked HTTP/1.x connection. The response has no
// length and no chunking: it ends when the connection closes (RFC 9112,
// section 6.3), which "Connection: close" announces.
type rawSink struct {
	conn    net.Conn
	goneCh  chan struct{} // closed by watch when the client goes
	watched chan struct{} // closed when watch returns
	bufs    net.Buffers   // reused by writev
	armed   time.Time
}

func newRawSink(conn net.Conn, rw *bufio.ReadWriter, header http.Header, first []byte, deadline time.Time) (sink, error) {
	// The server may have left deadlines on the connection; the stream
	// sets its own.
	conn.SetReadDeadline(time.Time{})
	header.Set("Connection", "close")
	header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	var head bytes.Buffer
	head.Grow(256 + len(first))
	head.WriteString("HTTP/1.1 200 OK\r\n")
	header.Write(&head) // sorted, with CR and LF in values made spaces
	head.WriteString("\r\n")
	head.Write(first)
	// Whatever the client sent past its request is dropped, and with it
	// net/http's 4 KiB read buffer: watch reads the socket itself.
	rw.Reader.Discard(rw.Reader.Buffered())
	s := &rawSink{conn: conn, goneCh: make(chan struct{}), watched: make(chan struct{})}
	go watch(conn, s.goneCh, s.watched)
	if err := s.writev([][]byte{head.Bytes()}, deadline); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// watch reads the connection until it fails, which is how a client's
// leaving shows; it takes the place of net/http's background reader. A
// client has nothing to send on a stream, and what it sends is dropped.
func watch(r io.Reader, gone, done chan<- struct{}) {
	defer close(done)
	var b [16]byte
	for {
		if _, err := r.Read(b[:]); err != nil {
			close(gone)
			return
		}
	}
}

func (s *rawSink) writev(frames [][]byte, deadline time.Time) error {
	if !deadline.Equal(s.armed) {
		s.armed = deadline
		s.conn.SetWriteDeadline(deadline)
	}
	if len(frames) == 1 {
		_, err := s.conn.Write(frames[0])
		return err
	}
	// net.Buffers is consumed as it is written; its backing array is
	// kept for the next batch.
	bufs := append(s.bufs[:0], frames...)
	s.bufs = bufs
	_, err := bufs.WriteTo(s.conn)
	clear(s.bufs[:cap(s.bufs)])
	return err
}

func (s *rawSink) gone() <-chan struct{} { return s.goneCh }

func (s *rawSink) close() {
	s.conn.Close()
	<-s.watched
}
