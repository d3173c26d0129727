// Package browsertest starts Debian's Chromium, headless, for the browser
// tests of the examples: a real browser, driven with chromedp.
package browsertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gqlpush/gqlpush/examples/internal/testexe"
)

// Env, set to 1, makes a missing Chromium fail a browser test instead of
// skipping it, as in CI (.ci/run).
const Env = "GQLPUSH_BROWSER"

// Wait bounds each wait for a page: long enough for a slow, loaded machine
// running a browser, so a failure means a hang, not slowness.
const Wait = 60 * time.Second

// Chromium returns the path of Debian's Chromium, or skips the test when
// there is none, unless Env is 1.
func Chromium(t *testing.T) string {
	t.Helper()
	return testexe.Find(t, Env, "/usr/bin/chromium", "chromium")
}

// Start starts Chromium (skipping the test when there is none, see
// Chromium) with a profile of its own and the flags a headless browser
// needs here, then extra, and returns its tab. listen, when not nil, sees
// every event of the tab from the start (see chromedp.Listen). The
// browser is closed when the test ends, before its profile is removed.
func Start(t *testing.T, listen func(ev any), extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	exe := Chromium(t)
	profile := t.TempDir() // removed after the browser is closed: cleanups run last first
	// The browser lives until session ends, or until the cleanups below
	// close it.
	session, endSession := context.WithCancel(context.Background())
	t.Cleanup(endSession)
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		// Chromium's sandbox does not start as root, as in containers.
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		// This machine may have no network beyond loopback: without
		// these, Chromium keeps trying to reach Google's services.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Debian's launcher adds this when /dev/shm is small, as in
		// many containers, but not when it fails to measure it.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
	}, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(session, opts...)
	// Each cancel waits: the tab's until the browser process has exited,
	// the allocator's until the goroutines that watched it have ended.
	t.Cleanup(cancelAlloc)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(cancelTab)

	// Listen starts the browser, for the tab's lifetime, and sees every
	// event from the start. Nothing in chromedp bounds the start: a start
	// that hangs ends the session.
	if listen == nil {
		listen = func(any) {}
	}
	start, cancel := context.WithTimeout(session, Wait)
	stopWatch := context.AfterFunc(start, endSession)
	err := chromedp.Listen(tab, listen)
	stopWatch()
	cancel()
	if err != nil {
		if errors.Is(start.Err(), context.DeadlineExceeded) {
			t.Fatalf("%s did not start within %v: %v", exe, Wait, err)
		}
		t.Fatalf("starting %s: %v", exe, err)
	}
	t.Cleanup(func() {
		// Close the browser as its user would, rather than kill it: it
		// ends its child processes and flushes the profile before it
		// exits, so nothing writes to the profile as it is removed.
		// Registered only once the browser runs: after a failed start,
		// Cancel and cancelTab would both wait for the browser's slot,
		// and the second would wait forever.
		ctx, cancel := context.WithTimeout(tab, Wait)
		defer cancel()
		if err := chromedp.Cancel(ctx); err != nil && !t.Failed() {
			t.Errorf("closing the browser: %v", err)
		}
	})
	return tab
}
