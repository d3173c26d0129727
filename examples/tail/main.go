// Command tail prints the results of a gqlpush Server-Sent Events stream, one
// JSON document a line, until the stream completes:
//
//	go run ./examples/tail [-retries N] 'http://127.0.0.1:9991/operations/Sub?wg_sse=true'
//
// The messages of an error frame go to stderr. tail exits 0 when the stream
// completes without an error, or on Ctrl-C; 1 when it ends with an error or
// cannot be had; 2 on a usage error.
//
// It is written with github.com/r3labs/sse/v2, an SSE client that is not
// gqlpush's own, so its tests also check gqlpush's wire format against a
// third-party reader.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

const (
	// defaultRetries is how many times tail reconnects, by default, over
	// the whole run.
	defaultRetries = 5

	// maxEventBytes bounds one event. r3labs/sse reads 64 KiB at most by
	// default, and fails (then reconnects, again and again) on a larger
	// event; gqlpush forwards upstream messages of up to 1 MiB by default,
	// and more when configured. The buffer grows only as events need it.
	maxEventBytes = 16 << 20

	// maxErrorBody bounds the error body read from a refused request.
	maxErrorBody = 64 << 10
)

var (
	// errFailed is returned when the stream ended with an error frame; its
	// messages have been printed already.
	errFailed = errors.New("the stream ended with an error")
	// errUsage is a command-line error; the usage has been printed.
	errUsage = errors.New("usage error")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "tail:", err)
		os.Exit(1)
	}
}

// run reads the stream named by args until it completes, ctx ends, or it
// fails for good. It returns nil when the stream completed without error and
// when ctx ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("tail", flag.ContinueOnError)
	fl.SetOutput(stderr)
	retries := fl.Int("retries", defaultRetries, "reconnect at most `N` times in all when the stream cannot be had or is cut")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: tail [-retries N] URL\n\nPrints the results of a gqlpush SSE stream, such as\nhttp://127.0.0.1:9991/operations/Sub?wg_sse=true, one JSON a line.\n\nFlags:")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fl.NArg() != 1 || *retries < 0 {
		fl.Usage()
		return errUsage
	}
	u, err := url.Parse(fl.Arg(0))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "tail: %q is not an http:// or https:// URL\n", fl.Arg(0))
		return errUsage
	}

	// Its own transport, so run leaves no idle connection behind.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	// stop ends the subscription: the complete event calls it. The backoff
	// is bound to this context, as r3labs/sse checks no context between
	// attempts: without it, the end of ctx would not stop the retries.
	sctx, stop := context.WithCancel(ctx)
	defer stop()

	c := sse.NewClient(u.String(), sse.ClientMaxBufferSize(maxEventBytes))
	c.Connection = &http.Client{Transport: tr}
	c.ReconnectStrategy = reconnectStrategy(sctx, *retries)
	c.ReconnectNotify = func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "tail: %v; reconnecting in %v\n", err, wait.Round(time.Millisecond))
	}
	c.ResponseValidator = checkResponse

	p := &printer{stdout: stdout, stderr: stderr, stop: stop}
	err = c.SubscribeRawWithContext(sctx, p.event)
	switch {
	case p.writeErr != nil:
		return fmt.Errorf("write: %w", p.writeErr)
	case p.completed && p.failed:
		return errFailed
	case p.completed, ctx.Err() != nil:
		return nil
	case err != nil:
		return err
	}
	return errors.New("the stream ended without its complete event")
}

// reconnectStrategy allows retries reconnects in all, with exponential
// backoff, and none once ctx ends.
func reconnectStrategy(ctx context.Context, retries int) backoff.BackOff {
	var b backoff.BackOff = &backoff.StopBackOff{}
	if retries > 0 {
		exp := backoff.NewExponentialBackOff()
		// The elapsed time counts from the first attempt: by default, a
		// stream cut after 15 minutes would never be reconnected.
		exp.MaxElapsedTime = 0
		// WithMaxTries(b, 0) would retry forever: 0 is handled above.
		b = backoff.WithMaxTries(exp, uint64(retries))
	}
	return backoff.WithContext(b, ctx)
}

// checkResponse accepts an event stream and turns anything else into an
// error, a permanent one (not retried) unless the status says a later try
// may work.
func checkResponse(_ *sse.Client, res *http.Response) error {
	ct := res.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); res.StatusCode == http.StatusOK && mt == "text/event-stream" {
		res.Body = cutOff{res.Body}
		return nil
	}
	// r3labs/sse closes the body only of a response the validator accepts.
	defer res.Body.Close()
	if res.StatusCode == http.StatusOK {
		return backoff.Permanent(fmt.Errorf("the response is %q, not an event stream: is wg_sse=true in the URL?", ct))
	}
	err := fmt.Errorf("HTTP %d: %s", res.StatusCode, errorBody(res.Body, res.StatusCode))
	switch res.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return err
	}
	return backoff.Permanent(err)
}

// errorBody reads the messages of a gqlpush error body,
// {"errors":[{"message":…,"extensions":{"code":…}}]}; of another body, the
// status text.
func errorBody(r io.Reader, status int) string {
	var body gqlErrors
	b, _ := io.ReadAll(io.LimitReader(r, maxErrorBody))
	if json.Unmarshal(b, &body) != nil || len(body.Errors) == 0 {
		return http.StatusText(status)
	}
	msgs := make([]string, len(body.Errors))
	for i, e := range body.Errors {
		msgs[i] = e.String()
	}
	return strings.Join(msgs, "; ")
}

// cutOff reports the end of a response body as io.ErrUnexpectedEOF. A gqlpush
// stream ends with its complete event, on which tail stops: an end it reads
// means the connection was cut. r3labs/sse takes io.EOF for success and
// would not reconnect.
type cutOff struct{ io.ReadCloser }

func (b cutOff) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

type gqlError struct {
	Message    string `json:"message"`
	Extensions struct {
		Code string `json:"code"`
	} `json:"extensions"`
}

// String returns the message and code, without the control characters that
// could drive a terminal.
func (e gqlError) String() string {
	s := e.Message
	if e.Extensions.Code != "" {
		s += " (" + e.Extensions.Code + ")"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return unicode.ReplacementChar
		}
		return r
	}, s)
}

type gqlErrors struct {
	Errors []gqlError `json:"errors"`
}

// A printer handles the events of one run. r3labs/sse calls event from the
// goroutine that called Subscribe, one event at a time.
type printer struct {
	stdout, stderr io.Writer
	stop           context.CancelFunc

	completed bool  // the complete event arrived
	failed    bool  // the last result was an error frame
	writeErr  error // stdout failed
}

func (p *printer) event(e *sse.Event) {
	if p.completed || p.writeErr != nil {
		return
	}
	switch string(e.Event) {
	case "": // a result, or the error frame that ends a stream
		p.result(e.Data)
	case "complete":
		// Stop at once: gqlpush ends the response after this event, and
		// r3labs/sse would take the end for a cut connection (see cutOff).
		p.completed = true
		p.stop()
	case "reset":
		// r3labs/sse reconnects with the Last-Event-ID of the last result;
		// gqlpush answers reset when it no longer holds what followed.
		fmt.Fprintln(p.stderr, "tail: the stream could not be resumed: results may have been missed")
	}
	// Other events are not gqlpush's: ignored.
}

func (p *printer) result(data []byte) {
	var r struct {
		Data json.RawMessage `json:"data"`
		gqlErrors
	}
	if err := json.Unmarshal(data, &r); err != nil {
		fmt.Fprintf(p.stderr, "tail: an event that is not JSON: %q\n", data)
		return
	}
	for _, e := range r.Errors {
		fmt.Fprintln(p.stderr, e)
	}
	p.failed = r.Data == nil && len(r.Errors) > 0
	if p.failed {
		return
	}
	// One line a result, even from a server that would indent its JSON;
	// the data is valid JSON, so Compact succeeds.
	var line bytes.Buffer
	json.Compact(&line, data)
	line.WriteByte('\n')
	if _, err := p.stdout.Write(line.Bytes()); err != nil {
		p.writeErr = err
		p.stop()
	}
}
