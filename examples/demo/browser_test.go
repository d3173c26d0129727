package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/gqlpush/gqlpush/examples/internal/browsertest"
)

// browserWait bounds each wait for the page.
const browserWait = browsertest.Wait

// consoleErrors keeps what the page reported at the level of an error: calls
// of console.error and console.assert, exceptions nothing caught, and the
// browser's own log entries, where Chromium reports Content Security Policy
// violations and failed requests.
type consoleErrors struct {
	mu   sync.Mutex
	msgs []string
}

// listen is a chromedp.Listen func: it runs in the loop that reads the tab's
// messages, so an event is seen before the reply to any later command.
func (c *consoleErrors) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		args := make([]string, 0, len(ev.Args))
		for _, a := range ev.Args {
			if a.Description != "" {
				args = append(args, a.Description)
			} else {
				args = append(args, string(a.Value))
			}
		}
		msg = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = "exception: " + d.Text
		if d.Exception != nil {
			// The description is the error, then its stack.
			desc, _, _ := strings.Cut(d.Exception.Description, "\n")
			msg += " " + desc
		}
		msg += fmt.Sprintf(" (%s:%d:%d)", d.URL, d.LineNumber+1, d.ColumnNumber+1)
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError {
			return
		}
		msg = "log (" + string(ev.Entry.Source) + "): " + ev.Entry.Text
		if ev.Entry.URL != "" {
			msg += " (" + ev.Entry.URL + ")"
		}
	default:
		return
	}
	c.mu.Lock()
	c.msgs = append(c.msgs, msg)
	c.mu.Unlock()
}

func (c *consoleErrors) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

// pageView is what the page shows, as the person in front of it sees it.
type pageView struct {
	State      string `json:"state"`
	StateClass string `json:"stateClass"`
	Problem    string `json:"problem"` // empty when hidden
	Input      string `json:"input"`
	Messages   []struct {
		ID       string `json:"id"`
		Content  string `json:"content"`  // the textContent of the message
		Elements int    `json:"elements"` // elements inside the message's text
	} `json:"messages"`
	Bold   int  `json:"bold"`   // <b> elements anywhere in the list
	Closed bool `json:"closed"` // the page's EventSource is CLOSED

	// The orders, from NATS.
	FeedState      string `json:"feedState"`
	FeedStateClass string `json:"feedStateClass"`
	FeedProblem    string `json:"feedProblem"` // empty when hidden
	Orders         []struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		DataSet  string `json:"dataStatus"` // the row's data-status
		What     string `json:"what"`
		Seq      string `json:"seq"`
		Title    string `json:"title"` // of the seq: the event id
		Elements int    `json:"elements"`
	} `json:"orders"`
	FeedClosed bool `json:"feedClosed"`
}

// viewJS reads a pageView. The page's top-level const source is in the global
// scope, where Runtime.evaluate sees it.
const viewJS = `(() => {
	const $ = (id) => document.getElementById(id);
	const problem = $('problem');
	return {
		state: $('state').textContent,
		stateClass: $('state').className,
		problem: problem.hidden ? '' : problem.textContent,
		input: $('content').value,
		messages: [...$('messages').children].map((li) => ({
			id: li.children[0].textContent,
			content: li.children[1].textContent,
			elements: li.children[1].childElementCount,
		})),
		bold: $('messages').querySelectorAll('b').length,
		closed: source.readyState === EventSource.CLOSED,
		feedState: $('feed-state').textContent,
		feedStateClass: $('feed-state').className,
		feedProblem: $('feed-problem').hidden ? '' : $('feed-problem').textContent,
		orders: [...$('orders').children].map((li) => ({
			id: li.children[0].textContent,
			status: li.children[1].textContent,
			dataStatus: li.dataset.status,
			what: li.children[2].textContent,
			seq: li.children[3].textContent,
			title: li.children[3].title,
			elements: li.querySelectorAll('span *').length,
		})),
		feedClosed: feedSource.readyState === EventSource.CLOSED,
	};
})()`

// readView reads what the page shows, within browserWait.
func readView(tab context.Context) (pageView, error) {
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[pageView](viewJS))
}

func view(t *testing.T, tab context.Context) pageView {
	t.Helper()
	v, err := readView(tab)
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	return v
}

// String shows the view in a failure: the state and the newest messages.
func (v pageView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state %q (class %q), problem %q, box %q, %d messages", v.State, v.StateClass, v.Problem, v.Input, len(v.Messages))
	for i, m := range v.Messages {
		if i == 5 {
			b.WriteString(" …")
			break
		}
		fmt.Fprintf(&b, " %s %q", m.ID, m.Content)
	}
	fmt.Fprintf(&b, "; orders: state %q (class %q), problem %q, %d orders", v.FeedState, v.FeedStateClass, v.FeedProblem, len(v.Orders))
	for i, o := range v.Orders {
		if i == 5 {
			b.WriteString(" …")
			break
		}
		fmt.Fprintf(&b, " [%s %s %q %s]", o.ID, o.Status, o.What, o.Seq)
	}
	return b.String()
}

// waitFor waits, within browserWait, until the page function pred returns a
// truthy value for args. The page runs pred on each change of the DOM, so
// nothing polls on a timer. On a time-out, the failure shows the page.
func waitFor(t *testing.T, tab context.Context, what, pred string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[chromedp.Void](pred,
		chromedp.WithPollingMutation(),
		chromedp.WithPollingTimeout(browserWait),
		chromedp.WithPollingArgs(args...)))
	if err != nil {
		shows := "(unreadable)"
		if v, verr := readView(tab); verr == nil {
			shows = v.String()
		}
		t.Fatalf("waiting until %s: %v\nthe page shows %s", what, err, shows)
	}
}

// TestBrowser opens the demo page in a real, headless Chromium, as a person
// would: the live list fills, a posted message shows as the text it is, the
// orders published to NATS show beside it, and the page tells when the
// server ends the streams. The page reports no error
// to the console on the way, not even a Content Security Policy violation.
func TestBrowser(t *testing.T) {
	browsertest.Chromium(t)
	d := startDemo(t)
	var errs consoleErrors
	tab := browsertest.Start(t, errs.listen)

	ctx, cancel := context.WithTimeout(tab, browserWait)
	err := chromedp.Do(ctx,
		chromedp.Navigate(d.base+"/"),
		chromedp.WaitVisible(chromedp.ID("content")),
	)
	cancel()
	if err != nil {
		t.Fatalf("opening %s/: %v", d.base, err)
	}

	// The stream connects and the ticks arrive.
	waitFor(t, tab, "the page is live and lists a tick", `() =>
		document.getElementById('state').className === 'live' &&
		[...document.querySelectorAll('#messages > li > span:last-child')]
			.some((s) => s.textContent.startsWith('tick '))`)
	if v := view(t, tab); v.State != "live" || v.Problem != "" {
		t.Fatalf("the page shows state %q and problem %q, want live and none", v.State, v.Problem)
	}

	// The live query's count shows, and grows with the ticks: pushed when
	// it changed.
	waitFor(t, tab, "the live count shows a number", `() => /^[0-9]+$/.test(document.getElementById('count').textContent)`)
	ctx, cancel = context.WithTimeout(tab, browserWait)
	first, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Number(document.getElementById('count').textContent)`))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, "the live count grows", `(n) => Number(document.getElementById('count').textContent) > n`, first)

	// The orders published to NATS show too, each with its stream
	// sequence, newest first.
	waitFor(t, tab, "the orders are live and list two", `() =>
		document.getElementById('feed-state').className === 'live' &&
		document.querySelectorAll('#orders > li').length >= 2`)
	v := view(t, tab)
	if v.FeedState != "live" || v.FeedProblem != "" {
		t.Fatalf("the orders show state %q and problem %q, want live and none", v.FeedState, v.FeedProblem)
	}
	statuses := append(slices.Clone(lifecycle), cancelled)
	what := regexp.MustCompile(`^[A-Z][a-z]+ \([A-Z]{2}\) · [0-9]+ items? · [0-9]+\.[0-9]{2} EUR$`)
	for i, o := range v.Orders {
		seq, err := strconv.Atoi(strings.TrimPrefix(o.Seq, "seq "))
		switch {
		case !strings.HasPrefix(o.ID, "#") || strings.Trim(o.ID, "#0123456789") != "":
			t.Errorf("order id %q, want #N", o.ID)
		case !slices.Contains(statuses, o.Status) || o.DataSet != o.Status:
			t.Errorf("order %s shows status %q (data-status %q), want one of %v", o.ID, o.Status, o.DataSet, statuses)
		case !what.MatchString(o.What):
			t.Errorf("order %s shows %q, want customer (country) · N items · amount EUR", o.ID, o.What)
		case !strings.HasPrefix(o.Seq, "seq ") || err != nil || !strings.HasSuffix(o.Title, "."+strconv.Itoa(seq)):
			t.Errorf("order %s shows %q titled %q, want seq N titled with an event id ending in .N", o.ID, o.Seq, o.Title)
		case o.Elements != 0:
			t.Errorf("order %s holds elements inside its text", o.ID)
		case i > 0:
			if prev, _ := strconv.Atoi(strings.TrimPrefix(v.Orders[i-1].Seq, "seq ")); prev <= seq {
				t.Errorf("the orders show %s above %s, want newest first", v.Orders[i-1].Seq, o.Seq)
			}
		}
	}

	// A message with HTML in it, typed and posted as a person would, shows
	// as the very text typed: nothing of it is parsed as HTML.
	const typed = `<b>hi</b> & "q"`
	ctx, cancel = context.WithTimeout(tab, browserWait)
	err = chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("content"), typed))
	if err == nil {
		var value string
		if value, err = chromedp.Run(ctx, chromedp.Value(chromedp.ID("content"))); err == nil && value != typed {
			err = fmt.Errorf("the box holds %q, want %q", value, typed)
		}
	}
	if err == nil {
		err = chromedp.Do(ctx, chromedp.Click(chromedp.ID("send")))
	}
	cancel()
	if err != nil {
		t.Fatalf("posting %q: %v", typed, err)
	}
	// The box clears when the post succeeded. Any message but a tick is
	// the posted one, whatever the page made of it: it is checked below.
	waitFor(t, tab, "the box clears and the posted message is listed", `() =>
		document.getElementById('content').value === '' &&
		[...document.querySelectorAll('#messages > li > span:last-child')]
			.some((s) => !s.textContent.startsWith('tick '))`)
	v = view(t, tab)
	found := false
	for _, m := range v.Messages {
		if m.Content == typed {
			found = true
			if m.Elements != 0 {
				t.Errorf("the message %s %q holds %d elements, want plain text", m.ID, m.Content, m.Elements)
			}
		}
	}
	if !found || v.Bold != 0 {
		t.Errorf("the page shows %s, with %d <b> elements in the list; want %q as text and no <b>", v, v.Bold, typed)
	}
	if v.Problem != "" {
		t.Errorf("the page shows the problem %q after the post", v.Problem)
	}
	// Newest first: ids fall down the list.
	for i := 1; i < len(v.Messages); i++ {
		prev, err1 := strconv.Atoi(strings.TrimPrefix(v.Messages[i-1].ID, "#"))
		cur, err2 := strconv.Atoi(strings.TrimPrefix(v.Messages[i].ID, "#"))
		if err1 != nil || err2 != nil || prev <= cur {
			t.Errorf("the list shows %s above %s, want ids #N, newest first", v.Messages[i-1].ID, v.Messages[i].ID)
		}
	}

	// The server shuts down: the page gets the end of both streams, says
	// so, and closes their EventSources rather than reconnect.
	d.cancel()
	waitFor(t, tab, "the page shows both streams ended", `() =>
		document.getElementById('state').className === 'ended' &&
		document.getElementById('feed-state').className === 'ended'`)
	v = view(t, tab)
	if v.State != "stream ended" || !v.Closed || v.FeedState != "stream ended" || !v.FeedClosed {
		t.Errorf("the page shows state %q and %q, EventSources closed %v and %v; want \"stream ended\" and closed",
			v.State, v.FeedState, v.Closed, v.FeedClosed)
	}
	if v.Problem != "server shutting down" || v.FeedProblem != "server shutting down" {
		t.Errorf("the page shows the problems %q and %q, want the server's %q", v.Problem, v.FeedProblem, "server shutting down")
	}
	if err := d.stop(t); err != nil {
		t.Errorf("run returned %v, want nil", err)
	}

	// The view above was read after every event the page sent before it.
	if msgs := errs.all(); len(msgs) > 0 {
		t.Errorf("the browser console has %d errors:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
}
