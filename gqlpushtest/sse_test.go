package gqlpushtest_test

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// sseTests are streams and the frames an SSEReader reads from them: every
// frame up to the end, then the error that ends them and the frame read
// with it.
var sseTests = []struct {
	name    string
	stream  string
	frames  []gqlpushtest.Frame
	err     error
	partial gqlpushtest.Frame // returned with err
}{
	{
		name:   "empty stream",
		stream: "",
		err:    io.EOF,
	},
	{
		name:   "gqlpush stream",
		stream: ":\n\nid: abc.0\ndata: {\"data\":1}\n\nevent: complete\ndata: \n\n",
		frames: []gqlpushtest.Frame{
			{Comment: true, Raw: ":\n\n"},
			{ID: "abc.0", Data: `{"data":1}`, Raw: "id: abc.0\ndata: {\"data\":1}\n\n"},
			{Event: "complete", Raw: "event: complete\ndata: \n\n"},
		},
		err: io.EOF,
	},
	{
		name:   "several data lines",
		stream: "data: a\ndata: b\ndata:c\ndata\ndata: \n\n",
		frames: []gqlpushtest.Frame{{Data: "a\nb\nc\n\n", Raw: "data: a\ndata: b\ndata:c\ndata\ndata: \n\n"}},
		err:    io.EOF,
	},
	{
		name:   "one space dropped, no more",
		stream: "event:x\ndata:  two\nid:  3\n\n",
		frames: []gqlpushtest.Frame{{ID: " 3", Event: "x", Data: " two", Raw: "event:x\ndata:  two\nid:  3\n\n"}},
		err:    io.EOF,
	},
	{
		name:   "comments",
		stream: ": hello\n:again\n\n: note\ndata: x\n: after\n\n",
		frames: []gqlpushtest.Frame{
			{Comment: true, Raw: ": hello\n:again\n\n"},
			{Data: "x", Raw: ": note\ndata: x\n: after\n\n"}, // comments beside a field
		},
		err: io.EOF,
	},
	{
		name:   "unknown fields and retry",
		stream: "retry: 10\nfoo: bar\nDATA: no\n\n",
		frames: []gqlpushtest.Frame{{Raw: "retry: 10\nfoo: bar\nDATA: no\n\n"}},
		err:    io.EOF,
	},
	{
		name:   "id holding NUL",
		stream: "id: a\x00b\ndata: x\n\n",
		frames: []gqlpushtest.Frame{{Data: "x", Raw: "id: a\x00b\ndata: x\n\n"}},
		err:    io.EOF,
	},
	{
		name:   "last of each field wins",
		stream: "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
		frames: []gqlpushtest.Frame{{ID: "2", Event: "b", Data: "x", Raw: "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n"}},
		err:    io.EOF,
	},
	{
		name:   "blank lines alone",
		stream: "\n\r\n:\n\n",
		frames: []gqlpushtest.Frame{{Raw: "\n"}, {Raw: "\r\n"}, {Comment: true, Raw: ":\n\n"}},
		err:    io.EOF,
	},
	{
		name:   "CRLF",
		stream: "id: 1\r\ndata: a\r\ndata: b\r\n\r\n:\r\n\r\n",
		frames: []gqlpushtest.Frame{
			{ID: "1", Data: "a\nb", Raw: "id: 1\r\ndata: a\r\ndata: b\r\n\r\n"},
			{Comment: true, Raw: ":\r\n\r\n"},
		},
		err: io.EOF,
	},
	{
		name:   "CR",
		stream: "data: a\rdata: b\r\r:\r\r",
		frames: []gqlpushtest.Frame{
			{Data: "a\nb", Raw: "data: a\rdata: b\r\r"},
			{Comment: true, Raw: ":\r\r"},
		},
		err: io.EOF,
	},
	{
		name:   "mixed line endings",
		stream: "data: a\r\ndata: b\ndata: c\r\r\ndata: d\n\r",
		frames: []gqlpushtest.Frame{
			{Data: "a\nb\nc", Raw: "data: a\r\ndata: b\ndata: c\r\r\n"},
			{Data: "d", Raw: "data: d\n\r"},
		},
		err: io.EOF,
	},
	{
		name:   "byte order mark",
		stream: "\ufeffdata: x\n\n\ufeffdata: y\n\n",
		frames: []gqlpushtest.Frame{
			{Data: "x", Raw: "\ufeffdata: x\n\n"},
			// Only the stream's first line may start with one.
			{Raw: "\ufeffdata: y\n\n"},
		},
		err: io.EOF,
	},
	{
		name:    "cut in a line",
		stream:  "data: a\n\ndata: {\"da",
		frames:  []gqlpushtest.Frame{{Data: "a", Raw: "data: a\n\n"}},
		err:     io.ErrUnexpectedEOF,
		partial: gqlpushtest.Frame{Raw: "data: {\"da"},
	},
	{
		name:    "last frame without its blank line",
		stream:  "data: a\n\nid: 7\ndata: b\n",
		frames:  []gqlpushtest.Frame{{Data: "a", Raw: "data: a\n\n"}},
		err:     io.ErrUnexpectedEOF,
		partial: gqlpushtest.Frame{ID: "7", Data: "b", Raw: "id: 7\ndata: b\n"},
	},
	{
		name:    "last frame without its blank line, CRLF",
		stream:  "data: a\r\n\r\ndata: b\r\n",
		frames:  []gqlpushtest.Frame{{Data: "a", Raw: "data: a\r\n\r\n"}},
		err:     io.ErrUnexpectedEOF,
		partial: gqlpushtest.Frame{Data: "b", Raw: "data: b\r\n"},
	},
}

// readAll reads frames until an error.
func readAll(r io.Reader) ([]gqlpushtest.Frame, gqlpushtest.Frame, error) {
	sr := gqlpushtest.NewSSEReader(r)
	var frames []gqlpushtest.Frame
	for {
		f, err := sr.Next()
		if err != nil {
			return frames, f, err
		}
		frames = append(frames, f)
	}
}

// joinRaw joins the Raw of frames: the stream they were read from.
func joinRaw(frames []gqlpushtest.Frame, last gqlpushtest.Frame) string {
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(f.Raw)
	}
	return b.String() + last.Raw
}

func TestSSEReader(t *testing.T) {
	for _, tt := range sseTests {
		t.Run(tt.name, func(t *testing.T) {
			frames, last, err := readAll(strings.NewReader(tt.stream))
			if err != tt.err {
				t.Errorf("error %v, want %v", err, tt.err)
			}
			if len(frames) != len(tt.frames) {
				t.Fatalf("frames %#v, want %#v", frames, tt.frames)
			}
			for i, f := range frames {
				if f != tt.frames[i] {
					t.Errorf("frame %d is %#v, want %#v", i, f, tt.frames[i])
				}
			}
			if last != tt.partial {
				t.Errorf("frame read with the error %#v, want %#v", last, tt.partial)
			}
		})
	}
}

// A stream read a byte at a time gives the same frames: a line end is never
// waited for once a frame is complete, so a CRLF split between reads may
// leave its LF at the start of the next frame's Raw.
func TestSSEReaderByteAtATime(t *testing.T) {
	for _, tt := range sseTests {
		t.Run(tt.name, func(t *testing.T) {
			frames, last, err := readAll(iotest.OneByteReader(strings.NewReader(tt.stream)))
			if err != tt.err {
				t.Errorf("error %v, want %v", err, tt.err)
			}
			if len(frames) != len(tt.frames) {
				t.Fatalf("frames %#v, want %#v", frames, tt.frames)
			}
			for i, f := range frames {
				want := tt.frames[i]
				f.Raw, want.Raw = "", ""
				if f != want {
					t.Errorf("frame %d is %#v, want %#v", i, f, want)
				}
			}
			if got := joinRaw(frames, last); got != tt.stream {
				t.Errorf("the frames' Raw join to %q, want the stream %q", got, tt.stream)
			}
		})
	}
}

// A frame of a live stream is returned as soon as its blank line is read,
// even one ending in a lone CR, whose next byte could be an LF.
func TestSSEReaderDoesNotWaitPastFrame(t *testing.T) {
	for _, end := range []string{"\n\n", "\r\n\r\n", "\r\r"} {
		pr, pw := io.Pipe()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			pw.Write([]byte("data: a" + end)) // then the stream stays open
		}()
		f, err := gqlpushtest.NewSSEReader(pr).Next()
		if err != nil || f.Data != "a" || f.Raw != "data: a"+end {
			t.Errorf("%q: got %#v, %v", end, f, err)
		}
		pr.Close()
		<-wrote
	}
}

func TestSSEReaderLargeFrame(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		data := strings.Repeat("x", 1<<20)
		stream := "id: big" + eol + "data: " + data + eol + eol + ":" + eol + eol
		sr := gqlpushtest.NewSSEReader(strings.NewReader(stream))
		f, err := sr.Next()
		if err != nil || f.ID != "big" || f.Data != data || f.Raw != stream[:len(stream)-2*len(eol)-1] {
			t.Fatalf("%q: frame with %d bytes of data and %d of Raw, %v", eol, len(f.Data), len(f.Raw), err)
		}
		if f, err := sr.Next(); err != nil || !f.Comment {
			t.Fatalf("%q: after the large frame, %#v, %v", eol, f, err)
		}
	}
}

func TestSSEReaderError(t *testing.T) {
	boom := errors.New("connection reset")
	sr := gqlpushtest.NewSSEReader(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom)))
	if f, err := sr.Next(); err != nil || f.Data != "a" {
		t.Fatalf("first frame %#v, %v", f, err)
	}
	if f, err := sr.Next(); err != boom || f.Raw != "data: b" {
		t.Fatalf("got %#v, %v; want the partial frame and %v", f, err, boom)
	}
}

func TestSSEReaderNextEvent(t *testing.T) {
	sr := gqlpushtest.NewSSEReader(strings.NewReader(":\n\n\n: x\n\nid: 1\n\n:\n\nevent: e\ndata: d\n\n:\n\n"))
	for _, want := range []gqlpushtest.Frame{
		{ID: "1", Raw: "id: 1\n\n"},
		{Event: "e", Data: "d", Raw: "event: e\ndata: d\n\n"},
	} {
		if f, err := sr.NextEvent(); err != nil || f != want {
			t.Fatalf("got %#v, %v; want %#v", f, err, want)
		}
	}
	if f, err := sr.NextEvent(); err != io.EOF {
		t.Fatalf("got %#v, %v; want io.EOF", f, err)
	}
}

// A *bufio.Reader is read through, so a test can read the rest of a stream
// itself.
func TestSSEReaderSharesBufioReader(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(":\n\ndata: a\n\nthe rest"))
	for _, want := range []string{":\n\n", "data: a\n\n"} {
		if f, err := gqlpushtest.NewSSEReader(br).Next(); err != nil || f.Raw != want {
			t.Fatalf("got %q, %v; want %q", f.Raw, err, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "the rest" {
		t.Fatalf("the rest is %q, %v", rest, err)
	}
}

// FuzzSSEReader checks that any stream is read to its end, in frames whose
// Raw join to the stream, the same whether it arrives at once or a byte at
// a time.
func FuzzSSEReader(f *testing.F) {
	for _, tt := range sseTests {
		f.Add(tt.stream)
	}
	f.Fuzz(func(t *testing.T, stream string) {
		frames, last, err := readAll(strings.NewReader(stream))
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Fatalf("error %v", err)
		}
		if got := joinRaw(frames, last); got != stream {
			t.Fatalf("the frames' Raw join to %q, not the stream", got)
		}
		slow, slowLast, slowErr := readAll(iotest.OneByteReader(strings.NewReader(stream)))
		if slowErr != err || len(slow) != len(frames) || joinRaw(slow, slowLast) != stream {
			t.Fatalf("a byte at a time: %#v, %v; at once: %#v, %v", slow, slowErr, frames, err)
		}
		for i := range frames {
			a, b := frames[i], slow[i]
			a.Raw, b.Raw = "", ""
			if a != b {
				t.Fatalf("frame %d is %#v at once, %#v a byte at a time", i, a, b)
			}
		}
	})
}
