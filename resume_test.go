package gqlpush_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gqlpush/gqlpush"
)

var idLine = regexp.MustCompile(`(?m)^id: (\S+)$`)

// lastID returns the id of the last event in a stream excerpt.
func lastID(t *testing.T, s string) string {
	t.Helper()
	m := idLine.FindAllStringSubmatch(s, -1)
	if len(m) == 0 {
		t.Fatalf("no id in %q", s)
	}
	return m[len(m)-1][1]
}

// contents lists the message contents in a stream excerpt, in order.
func contents(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"content":"([^"]*)"`).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// readThenLeave opens a keeper, which holds the shared subscription, and a
// client that reads the results of posting contents and then leaves. It
// returns the id of the client's last result, and what stops the keeper.
func (b *bubble) readThenLeave(t *testing.T, contents ...string) (last string, stopKeeper func()) {
	t.Helper()
	_, stop, keeperDone := b.openSSE(t, "/Sub?wg_sse", nil)
	w, leave, done := b.openSSE(t, "/Sub?wg_sse", nil)
	for _, c := range contents {
		b.up.Chat.Post("", c)
	}
	synctest.Wait()
	last = lastID(t, w.seen())
	leave()
	<-done
	return last, func() {
		stop()
		<-keeperDone
	}
}

func TestResumeWithinWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, nil)
		last, stopKeeper := b.readThenLeave(t, "a", "b")
		for _, c := range []string{"c", "d"} {
			b.up.Chat.Post("", c)
		}
		synctest.Wait()
		w2, leave2, done2 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {last}})
		b.up.Chat.Post("", "e")
		synctest.Wait()
		got := w2.seen()
		if !strings.HasPrefix(got, ":\n\nid: ") {
			t.Fatalf("resumed stream starts %q", got)
		}
		if c := strings.Join(contents(got), ","); c != "c,d,e" {
			t.Fatalf("resumed with %s, want c,d,e (nothing lost, nothing repeated)", c)
		}
		// Ids go on where they were.
		if !strings.Contains(got, "id: "+strings.TrimSuffix(last, "1")+"2\n") {
			t.Errorf("ids do not continue from %s: %q", last, got)
		}
		leave2()
		<-done2
		stopKeeper()
		b.close(t)
	})
}

func TestResumeOutsideWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.ResumeFrames = 2 })
		last, stopKeeper := b.readThenLeave(t, "a")
		for _, c := range []string{"b", "c", "d"} { // one more than the window
			b.up.Chat.Post("", c)
		}
		synctest.Wait()
		w2, leave2, done2 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {last}})
		b.up.Chat.Post("", "e")
		synctest.Wait()
		got := w2.seen()
		if !strings.HasPrefix(got, ":\n\nevent: reset\ndata: \n\nid: ") {
			t.Fatalf("want the reset frame first, got %q", got)
		}
		if c := strings.Join(contents(got), ","); c != "e" {
			t.Fatalf("after a reset: %s, want only the live e", c)
		}
		leave2()
		<-done2
		stopKeeper()
		b.close(t)
	})
}

func TestLastEventIDOddities(t *testing.T) {
	for _, tt := range []struct {
		name, id string
		reset    bool
	}{
		{"malformed is ignored", "not an id", false},
		{"empty is ignored", "", false},
		{"bad number is ignored", "abcdefghijklmnop.x", false},
		{"unknown subscription resets", "abcdefghijklmnop.3", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBubble(t, nil)
				w, leave, done := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {tt.id}})
				want := ":\n\n"
				if tt.reset {
					want += "event: reset\ndata: \n\n"
				}
				if got := w.seen(); got != want {
					t.Fatalf("got %q, want %q", got, want)
				}
				leave()
				<-done
				b.close(t)
			})
		})
	}
}

func TestResumeGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace = 5 * time.Second
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.ResumeGrace = grace })
		w, leave, done := b.openSSE(t, "/Sub?wg_sse", nil)
		b.up.Chat.Post("", "a")
		synctest.Wait()
		last := lastID(t, w.seen())
		leave() // a network blip
		<-done
		b.up.Chat.Post("", "b")
		time.Sleep(grace - time.Second)
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions during the grace", n)
		}
		w2, leave2, done2 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {last}})
		if c := strings.Join(contents(w2.seen()), ","); c != "b" {
			t.Fatalf("resumed with %q, want b", c)
		}
		leave2()
		<-done2
		time.Sleep(grace - time.Nanosecond)
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 1 {
			t.Fatalf("%d upstream subscriptions before the grace passed", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := b.up.Subscriptions(); n != 0 {
			t.Fatalf("%d upstream subscriptions after the grace", n)
		}
		if s := b.h.Stats(); s.Subscriptions != 0 || s.Frames != 0 {
			t.Errorf("after the grace: %+v", s)
		}
		b.close(t)
	})
}

func TestDedupe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Operations = append(cfg.Operations, mustParse(t, map[string]string{
				"Content": `subscription { gql_messageCreated { content } }`,
			})...)
		})
		w, leave, done := b.openSSE(t, "/Content?wg_sse&wg_deduplicate", nil)
		plain, leavePlain, donePlain := b.openSSE(t, "/Content?wg_deduplicate=true", nil)
		all, leaveAll, doneAll := b.openSSE(t, "/Content?wg_sse", nil)
		for _, c := range []string{"a", "a", "b", "a", "a"} {
			b.up.Chat.Post("", c)
		}
		synctest.Wait()
		if got := strings.Join(contents(w.seen()), ","); got != "a,b,a" {
			t.Errorf("deduplicated SSE: %s, want a,b,a", got)
		}
		if got := strings.Join(contents(plain.seen()), ","); got != "a,b,a" {
			t.Errorf("deduplicated plain: %s, want a,b,a", got)
		}
		if got := strings.Join(contents(all.seen()), ","); got != "a,a,b,a,a" {
			t.Errorf("without the flag: %s", got)
		}
		for _, f := range []func(){leave, leavePlain, leaveAll} {
			f()
		}
		<-done
		<-donePlain
		<-doneAll
		b.close(t)
	})
}

func TestJSONPatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		room := strings.Repeat("r", 80) // makes a patch of content alone worth it
		b := newBubble(t, func(cfg *gqlpush.Config) {
			cfg.Operations = append(cfg.Operations, mustParse(t, map[string]string{
				"Patch": `subscription { gql_messageCreated { content room } }`,
			})...)
		})
		w, leave, done := b.openSSE(t, "/Patch?wg_sse&wg_json_patch", nil)
		plain, leavePlain, donePlain := b.openSSE(t, "/Patch?wg_json_patch", nil)
		b.up.Chat.Post(room, "a")
		b.up.Chat.Post(room, "b")
		b.up.Chat.Post(room, "b")                       // no change: nothing sent
		b.up.Chat.Post("x", strings.Repeat("long", 40)) // the patch would be bigger: full result
		synctest.Wait()
		want := []string{
			`data: {"data":{"gql_messageCreated":{"content":"a","room":"` + room + `"}}}`,
			`data: [{"value":"b","op":"replace","path":"/data/gql_messageCreated/content"}]`,
			`data: {"data":{"gql_messageCreated":{"content":"` + strings.Repeat("long", 40) + `","room":"x"}}}`,
		}
		got := w.seen()
		var data []string
		for _, line := range strings.Split(got, "\n") {
			if strings.HasPrefix(line, "data: ") {
				data = append(data, line)
			}
		}
		if strings.Join(data, "\n") != strings.Join(want, "\n") {
			t.Errorf("patch stream:\n%q\nwant data lines:\n%s", got, strings.Join(want, "\n"))
		}
		if n := strings.Count(got, "id: "); n != 3 {
			t.Errorf("%d ids for 3 frames", n)
		}
		var plainWant []string
		for _, d := range want {
			plainWant = append(plainWant, strings.TrimPrefix(d, "data: ")+"\n\n")
		}
		if got := plain.seen(); got != strings.Join(plainWant, "") {
			t.Errorf("plain patch stream %q, want %q", got, strings.Join(plainWant, ""))
		}
		leave()
		leavePlain()
		<-done
		<-donePlain
		b.close(t)
	})
}

// With ResumeFrames N, a client may miss N results and still resume: only
// what follows its last event has to be kept.
func TestResumeAtTheEdgeOfTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.ResumeFrames = 2 })
		last, stopKeeper := b.readThenLeave(t, "a")
		b.up.Chat.Post("", "b")
		b.up.Chat.Post("", "c") // exactly the window
		synctest.Wait()
		w2, leave2, done2 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {last}})
		got := w2.seen()
		if strings.Contains(got, "reset") || strings.Join(contents(got), ",") != "b,c" {
			t.Fatalf("resumed with %q, want b and c", got)
		}
		leave2()
		<-done2
		stopKeeper()
		b.close(t)
	})
}

// The resume window holds no more than QueueBytes of results: a client
// that missed more than that starts afresh.
func TestResumeWindowBoundedInBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubble(t, func(cfg *gqlpush.Config) { cfg.QueueBytes = 4096 })
		last, stopKeeper := b.readThenLeave(t, "a")
		big := strings.Repeat("x", 3000)
		b.up.Chat.Post("", big+"1")
		b.up.Chat.Post("", big+"2") // the two do not fit in 4 KiB together
		synctest.Wait()
		w2, leave2, done2 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {last}})
		if got := w2.seen(); got != ":\n\nevent: reset\ndata: \n\n" {
			t.Fatalf("resuming past the window's bytes: %.100q, want the reset", got)
		}
		leave2()
		<-done2
		// Resuming after the first big one needs only the last: it is
		// kept.
		next := strings.TrimSuffix(last, "0") + "1"
		w3, leave3, done3 := b.openSSE(t, "/Sub?wg_sse", http.Header{"Last-Event-Id": {next}})
		if got := w3.seen(); len(contents(got)) != 1 || contents(got)[0] != big+"2" {
			t.Fatalf("resumed with %d results, want the last big one: %.300q", len(contents(got)), got)
		}
		if s := b.h.Stats(); s.Frames != 1 {
			t.Errorf("%d frames held, want 1 (the window's bytes allow one)", s.Frames)
		}
		leave3()
		<-done3
		stopKeeper()
		b.close(t)
	})
}
