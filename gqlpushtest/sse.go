package gqlpushtest

import (
	"bufio"
	"bytes"
	"io"
	"strings"
)

// A Frame is one frame of a Server-Sent Events stream: the lines up to and
// including the blank line that ends them.
type Frame struct {
	// ID, Event and Data are the values of the frame's id, event and data
	// fields, "" for a field it lacks, parsed as the SSE part of the HTML
	// standard says
	// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
	// one space after the colon is dropped, data lines are joined with
	// "\n", and an id holding NUL is ignored. A browser dispatches Event ""
	// as "message". Other fields (retry, unknown ones) are only in Raw.
	ID, Event, Data string

	// Comment is true when every line of the frame is a comment (starts
	// with ':'), as a heartbeat is: the standard dispatches nothing for it.
	Comment bool

	// Raw is the frame's bytes as received, line endings included. The
	// Raw of successive frames, joined, is the stream.
	Raw string
}

// An SSEReader reads the frames of a Server-Sent Events stream, as a test
// sees them: one frame per call, up to and including its blank line. It
// takes the line endings the standard allows (LF, CRLF, a lone CR) and a
// leading byte order mark. It has no limit on a frame's size: a test reads
// what the server under test sends, and finding out how large that is may be
// the point.
type SSEReader struct {
	br      *bufio.Reader
	raw     []byte // the frame being read
	started bool   // past the first line, which may carry a byte order mark
	afterCR bool   // the last line ended with CR: an LF that follows is part of its end
}

// NewSSEReader returns a reader of the stream r, such as an HTTP response
// body. As with [bufio.NewReader], a *bufio.Reader given as r is used
// as it is, so a test may read it directly between frames — to read the rest
// of the stream at once, say — as long as the stream's lines do not end
// with a lone CR.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{br: bufio.NewReader(r)}
}

// Next reads the next frame. At the end of the stream, when no byte of a
// new frame was read, it returns io.EOF. A stream that ends in the middle
// of a frame, before its blank line, gives io.ErrUnexpectedEOF (the
// standard discards such a frame); any other error of the underlying reader
// is returned as it is. On an error the Frame holds what was read of the
// frame so far.
//
// A blank line with nothing before it is a frame too, with only Raw: the
// standard dispatches nothing for it, but it is on the wire (a plain
// gqlpush stream's heartbeat is one).
func (r *SSEReader) Next() (Frame, error) {
	f, _, err := r.next()
	return f, err
}

// NextEvent reads frames until one with a field, skipping comments
// (heartbeats) and blank lines, and returns it. Its errors are those of
// [SSEReader.Next].
func (r *SSEReader) NextEvent() (Frame, error) {
	for {
		f, fields, err := r.next()
		if err != nil || fields {
			return f, err
		}
	}
}

// next reads a frame and reports whether it has a field, known or not.
func (r *SSEReader) next() (Frame, bool, error) {
	r.raw = r.raw[:0]
	// An LF that ends the previous frame's last CR may come first: it
	// starts no frame.
	lead := r.afterCR
	var (
		f        Frame
		data     []string
		fields   bool
		comments bool
	)
	for {
		line, err := r.line()
		if err != nil {
			f.Data = strings.Join(data, "\n")
			f.Raw = string(r.raw)
			if err == io.EOF && f.Raw != "" && !(lead && f.Raw == "\n") {
				err = io.ErrUnexpectedEOF
			}
			return f, fields, err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ':' {
			comments = true
			continue
		}
		fields = true
		name, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(name) {
		case "event":
			f.Event = string(value)
		case "data":
			data = append(data, string(value))
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				f.ID = string(value)
			}
		}
	}
	f.Data = strings.Join(data, "\n")
	f.Comment = comments && !fields
	f.Raw = string(r.raw)
	return f, fields, nil
}

// line reads one line and its end (LF, CRLF or CR), appending its bytes to
// r.raw, and returns the line without its end. It returns io.EOF when the
// stream ends before the end of a line, whatever was read of it.
func (r *SSEReader) line() ([]byte, error) {
	start := len(r.raw)
	if r.afterCR {
		// The LF of a CRLF split across reads: the end of the previous
		// line, whose frame may already have been returned.
		r.afterCR = false
		if b, err := r.br.Peek(1); err == nil && b[0] == '\n' {
			r.raw = append(r.raw, '\n')
			r.br.Discard(1)
			start++
		}
	}
	for {
		// Peek(1) waits for at least one byte; then everything buffered
		// is scanned at once, so a large frame is not read byte by byte.
		if _, err := r.br.Peek(1); err != nil {
			return r.raw[start:], err
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			r.raw = append(r.raw, buf...)
			r.br.Discard(len(buf))
			continue
		}
		eol := buf[i]
		r.raw = append(r.raw, buf[:i+1]...)
		r.br.Discard(i + 1)
		end := len(r.raw) - 1
		if eol == '\r' {
			// Peek only at what has arrived: waiting for the LF
			// would block on a frame that ends with a lone CR.
			if r.br.Buffered() > 0 {
				if b, _ := r.br.Peek(1); b[0] == '\n' {
					r.raw = append(r.raw, '\n')
					r.br.Discard(1)
				}
			} else {
				r.afterCR = true
			}
		}
		line := r.raw[start:end]
		if !r.started {
			r.started = true
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		return line, nil
	}
}
