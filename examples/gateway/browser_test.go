package main

import (
	"context"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gqlpush/gqlpush/examples/internal/browsertest"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// manyStreamsPage opens .N EventSources on the gateway at ?gw=, with the
// token in the cookie a browser sends along with credentials, and counts
// each one's results in a list item of its own.
var manyStreamsPage = template.Must(template.New("page").Parse(`<!doctype html>
<meta charset="utf-8">
<title>many streams</title>
<ol id="streams"></ol>
<script>
'use strict';
const gw = new URLSearchParams(location.search).get('gw');
// A cookie belongs to its host, whatever the port: the gateway's requests
// carry it.
document.cookie = 'access_token={{.Token}}; path=/; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
const list = document.getElementById('streams');
window.sources = [];
for (let i = 0; i < {{.N}}; i++) {
  const li = document.createElement('li');
  li.textContent = '0';
  list.append(li);
  const es = new EventSource(gw + '/operations/Mine?wg_sse=true', {withCredentials: true});
  es.onmessage = () => { li.textContent = String(Number(li.textContent) + 1); };
  sources.push(es);
}
</script>
`))

// TestBrowserManyStreams opens one page with 20 EventSources on the
// gateway in Debian's Chromium, logged in by the cookie the page set, as a
// browser sends it. Over HTTPS the browser speaks HTTP/2 and every stream
// gets results; over HTTP/1.1 it opens at most six connections to the
// gateway, and the other fourteen streams wait: the limit the README
// explains.
func TestBrowserManyStreams(t *testing.T) {
	browsertest.Chromium(t)
	const n = 20
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir)
	ops := writeFiles(t, filepath.Join(dir, "ops"), map[string]string{"Mine.graphql": "subscription @auth { gql_messageCreated { id content } }\n"})
	secret := writeSecret(t, dir, testSecret+"\n", 0o600)
	token := jwttest.HS256(t, []byte(testSecret), jwttest.Claims("alice"))
	tab := browsertest.Start(t, nil, chromedp.Flag("ignore-certificate-errors", true))

	for _, tt := range []struct {
		name    string
		tls     bool
		receive int // streams that get results: over HTTP/1.1, one per connection, six at most
	}{
		{"HTTP/2", true, n},
		{"HTTP/1.1", false, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The page comes from an origin of its own: the gateway lets
			// it read streams, with cookies.
			page := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				manyStreamsPage.Execute(w, struct {
					Token string
					N     int
				}{token, n})
			}))
			if tt.tls {
				page.StartTLS()
			} else {
				page.Start()
			}
			t.Cleanup(page.Close)
			args := []string{"-operations", ops, "-upstream", "gql=" + up.URL,
				"-jwt-secret-file", secret, "-jwt-issuer", jwttest.Iss, "-jwt-audience", jwttest.Aud,
				"-cors-origin", page.URL}
			if tt.tls {
				args = append(args, "-tls-cert", cert, "-tls-key", key)
			}
			g := startGateway(t, args...)

			// Messages are posted until the test has seen what it waits for.
			posting, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go postUntil(posting, up, done)
			t.Cleanup(func() {
				stop()
				<-done
			})

			ctx, cancel := context.WithTimeout(tab, browsertest.Wait)
			defer cancel()
			err := chromedp.Do(ctx, chromedp.Navigate(page.URL+"/?gw="+url.QueryEscape(g.base)))
			if err == nil {
				// Every stream that gets results has three.
				_, err = chromedp.Run(ctx, chromedp.PollFunction[chromedp.Void](`(k) =>
					[...document.querySelectorAll('#streams > li')].filter((li) => Number(li.textContent) >= 3).length >= k`,
					chromedp.WithPollingMutation(), chromedp.WithPollingArgs(tt.receive), chromedp.WithPollingTimeout(browsertest.Wait)))
			}
			if err != nil {
				t.Fatalf("waiting for %d streams with results: %v", tt.receive, err)
			}
			type view struct {
				Receiving, Connecting int
			}
			v, err := chromedp.Run(ctx, chromedp.Evaluate[view](`({
				receiving: [...document.querySelectorAll('#streams > li')].filter((li) => li.textContent !== '0').length,
				connecting: sources.filter((es) => es.readyState === EventSource.CONNECTING).length,
			})`))
			if err != nil {
				t.Fatal(err)
			}
			if v.Receiving != tt.receive || v.Connecting != n-tt.receive {
				t.Fatalf("%d streams got results and %d are still connecting, want %d and %d", v.Receiving, v.Connecting, tt.receive, n-tt.receive)
			}
			// Leaving the page closes its streams.
			if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// postUntil posts a message to up every 50 ms until ctx ends, then closes
// done.
func postUntil(ctx context.Context, up *gqlpushtest.Server, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			up.Chat.Post("", "tick")
		case <-ctx.Done():
			return
		}
	}
}
