package gqlpush

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// records keeps what is logged, one line per record.
type records struct {
	mu    sync.Mutex
	lines []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return nil
}

func (r *records) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// A burst of warnings costs a line, and a line that counts the rest when
// the sampling interval is up, even if nothing follows the burst.
func TestLogSampler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec records
		l := newLogSampler(slog.New(&rec))
		for i := range 100 {
			l.warn(logBadMessage, "bad upstream message", "n", i)
		}
		l.warn(logLost, "upstream connection lost")
		if got := rec.get(); len(got) != 2 || got[0] != "bad upstream message n=0" {
			t.Fatalf("during the burst: %q", got)
		}
		time.Sleep(sampleEvery)
		synctest.Wait()
		if got := rec.get(); len(got) != 3 || got[2] != "bad upstream message n=99 suppressed=99" {
			t.Fatalf("after the interval: %q", got)
		}
		// Held back when the sampler closes: told then.
		l.warn(logBadMessage, "bad upstream message", "n", 100)
		l.warn(logBadMessage, "bad upstream message", "n", 101)
		l.close()
		got := rec.get()
		if len(got) != 4 || !strings.HasSuffix(got[3], "n=101 suppressed=2") {
			t.Fatalf("after close: %q", got)
		}
		time.Sleep(2 * sampleEvery)
		synctest.Wait()
		if n := len(rec.get()); n != 4 {
			t.Fatalf("%d lines after close, want 4", n)
		}
	})
}

// Every URL a log line may quote loses its credentials and query.
func TestScrubURLs(t *testing.T) {
	for in, want := range map[string]string{
		`dial ws://u:p@host:1/graphql?token=x (refused)`:   `dial ws://host:1/graphql (refused)`,
		`get "https://host/jwks?key=x"`:                    `get "https://host/jwks"`,
		`connect nats://gw:s3cret@127.0.0.1:4222: refused`: `connect nats://127.0.0.1:4222: refused`,
		`servers tls://tok3n@a:4222,tls://b:4222`:          `servers tls://a:4222,tls://b:4222`,
		`NATS://User:Pass@H:1`:                             `nats://H:1`,
		`nothing here`:                                     `nothing here`,
	} {
		if got := scrubURLs(in); got != want {
			t.Errorf("scrubURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
