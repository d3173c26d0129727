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
var urlInText = regexp.MustCompile(`(?i)\b(?:wss?|https?)://[^\s"'<>]+`)

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
// sampleEvery, which says how many were held back ("suppressed"). One
// serves each upstream connection: an upstream that sends a million bad
// messages costs a line every ten seconds.
type logSampler struct {
	log *slog.Logger

	mu    sync.Mutex
	kinds [logKinds]struct {
		last       time.Time // when one was last logged
		suppressed int       // since then
	}
}

func newLogSampler(log *slog.Logger) *logSampler { return &logSampler{log: log} }

func (l *logSampler) warn(kind int, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	k := &l.kinds[kind]
	if !k.last.IsZero() && now.Sub(k.last) < sampleEvery {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn(msg, args...)
}
