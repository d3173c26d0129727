package gqlpush

import (
	"log/slog"
	"net/url"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"
)

// What reaches a log line: URLs scrubbed of credentials, text an upstream
// controls clipped, and warnings an upstream can repeat at will sampled, so
// that no upstream can flood the logs.

// urlInText finds URLs in error texts.
var urlInText = regexp.MustCompile(`(?i)\b(?:wss?|https?|nats|tls)://[^\s"'<>]+`)

// scrubURLs rewrites every URL in a text to its scheme, host and path: user
// info and query strings, where credentials hide, never reach a log line.
func scrubURLs(s string) string {
	return urlInText.ReplaceAllStringFunc(s, func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return "<url>"
		}
		return u.Scheme + "://" + u.Host + u.EscapedPath()
	})
}

// clipBytes is how much of a text from outside (an upstream's message type
// or close reason, a client's path or value) a log line or an error message
// quotes.
const clipBytes = 200

// clip shortens s to at most clipBytes, on a rune boundary, marking the cut.
func clip(s string) string {
	return clipTo(s, clipBytes)
}

func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// logText is an error as a log line shows it: clipped, then scrubbed.
// Clipping first bounds the scrubber's work, and a URL it cut keeps no more
// than it had.
func logText(err error) string {
	return scrubURLs(clip(err.Error()))
}

// sampleEvery is how often a warning that repeats is logged again, with the
// count of those held back.
const sampleEvery = 10 * time.Second

// Kinds of warnings a logSampler samples.
const (
	logLost = iota
	logFailed
	logBadMessage
	logBadResult
	logUnexpected
	logTooLarge
	logKinds
)

// A logSampler logs the first warning of each kind, then at most one every
// sampleEvery: the warnings held back meanwhile are told in one line when
// that time is up ("suppressed": how many), or when the sampler closes, so
// that a burst is counted even if nothing follows it. One serves each
// upstream connection: an upstream that sends a million bad messages costs
// a line every ten seconds.
type logSampler struct {
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	kinds  [logKinds]sampled
}

// sampled is one kind of warning: when one was last logged, and those held
// back since, the last of which is told for them all.
type sampled struct {
	last       time.Time
	suppressed int
	msg        string
	args       []any
	flush      *time.Timer // set while some are held back
}

func newLogSampler(log *slog.Logger) *logSampler { return &logSampler{log: log} }

func (l *logSampler) warn(kind int, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	k := &l.kinds[kind]
	if !k.last.IsZero() && now.Sub(k.last) < sampleEvery {
		k.suppressed++
		k.msg, k.args = msg, args
		if k.flush == nil && !l.closed {
			k.flush = time.AfterFunc(sampleEvery-now.Sub(k.last), func() { l.flushKind(kind) })
		}
		l.mu.Unlock()
		return
	}
	k.last = now
	l.mu.Unlock()
	l.log.Warn(msg, args...)
}

// flushKind tells the warnings of kind held back, if any.
func (l *logSampler) flushKind(kind int) {
	l.mu.Lock()
	k := &l.kinds[kind]
	n, msg, args := k.suppressed, k.msg, k.args
	k.suppressed, k.flush = 0, nil
	if n > 0 {
		k.last = time.Now()
	}
	l.mu.Unlock()
	if n > 0 {
		l.log.Warn(msg, append(args[:len(args):len(args)], "suppressed", n)...)
	}
}

// close tells what is held back, and lets no timer run on.
func (l *logSampler) close() {
	l.mu.Lock()
	l.closed = true
	for i := range l.kinds {
		if f := l.kinds[i].flush; f != nil {
			f.Stop()
		}
	}
	l.mu.Unlock()
	for kind := range logKinds {
		l.flushKind(kind)
	}
}
