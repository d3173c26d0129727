package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt/jwttest"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// roomOps is an operation on the in-process upstream with a variable, so
// that streams can ask for distinct subscriptions.
var roomOps = map[string]string{
	"Room.graphql": "subscription ($room: String!) { gql_messageCreated(room: $room) { id content room } }\n",
}

// retryAfter is the Retry-After of every 429.
var retryAfter = fmt.Sprint(gqlpush.RetryAfter)

// TestLimitsEndToEnd runs the gateway with each cap on streams and on what
// they open upstream, and checks who is refused, with what, and who is not.
func TestLimitsEndToEnd(t *testing.T) {
	t.Run("upstream connections", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), roomOps), "-upstream", "gql="+up.URL,
			"-forward-header", "X-Api-Key", "-max-upstream-conns", "1", "-heartbeat", "1h")
		keyA := http.Header{"X-Api-Key": {"a"}}
		g.openOK(t, "/operations/Room?wg_sse=true&room=r1", keyA)
		// The same key shares the connection, whatever it subscribes to.
		g.openOK(t, "/operations/Room?wg_sse=true&room=r2", keyA)
		// Another key needs a connection of its own: one too many.
		resp, body := g.do(t, http.MethodGet, "/operations/Room?wg_sse=true&room=r1", http.Header{"X-Api-Key": {"b"}})
		wantRefused(t, "a second key", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyUpstreamConns, "Retry-After", retryAfter)

		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := up.WaitSubscriptions(ctx, 2); err != nil {
			t.Fatalf("upstream runs %d subscriptions, want 2", up.Subscriptions())
		}
		conns := up.Conns()
		if len(conns) != 1 || conns[0].Header.Get("X-Api-Key") != "a" {
			t.Errorf("upstream connections %+v, want one, with X-Api-Key a", conns)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), roomOps), "-upstream", "gql="+up.URL,
			"-max-subscriptions", "1", "-heartbeat", "1h")
		g.openOK(t, "/operations/Room?wg_sse=true&room=r1", nil)
		// A second stream of the same subscription shares it.
		g.openOK(t, "/operations/Room?wg_sse=true&room=r1", nil)
		resp, body := g.do(t, http.MethodGet, "/operations/Room?wg_sse=true&room=r2", nil)
		wantRefused(t, "a second subscription", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManySubscriptions, "Retry-After", retryAfter)

		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := up.WaitSubscriptions(ctx, 1); err != nil {
			t.Fatalf("upstream runs %d subscriptions, want 1", up.Subscriptions())
		}
		var rooms []string
		for _, m := range up.Received() {
			if m.Type == "subscribe" {
				rooms = append(rooms, jsonField(m.Variables(), "room"))
			}
		}
		if len(rooms) != 1 || rooms[0] != `"r1"` {
			t.Errorf("the upstream got subscriptions to rooms %q, want r1 alone", rooms)
		}
	})

	t.Run("anonymous streams", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		dir := t.TempDir()
		g := startGateway(t, "-operations", writeFiles(t, filepath.Join(dir, "ops"), authOps), "-upstream", "gql="+up.URL,
			"-jwt-secret-file", writeSecret(t, dir, testSecret, 0o600), "-max-streams", "2", "-max-anonymous-streams", "1", "-heartbeat", "1h")
		g.openOK(t, "/operations/Open?wg_sse=true", nil)
		resp, body := g.do(t, http.MethodGet, "/operations/Open?wg_sse=true", nil)
		wantRefused(t, "a second anonymous stream", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", retryAfter)
		// The rest of -max-streams is for callers with a token...
		g.openOK(t, "/operations/Open?wg_sse=true", bearer(jwttest.HS256(t, []byte(testSecret), jwttest.Claims("alice"))))
		// ... up to -max-streams in all.
		resp, body = g.do(t, http.MethodGet, "/operations/Open?wg_sse=true", bearer(jwttest.HS256(t, []byte(testSecret), jwttest.Claims("bob"))))
		wantRefused(t, "a third stream", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", retryAfter)
	})

	// Requests come from 127.0.0.1. As the trusted proxy, its
	// X-Forwarded-For names the caller: the rightmost address, which the
	// proxy wrote; what the client wrote to the left of it is not read.
	t.Run("trusted proxy", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL,
			"-trusted-proxy", "127.0.0.1", "-max-streams-per-principal", "1", "-heartbeat", "1h")
		g.openOK(t, "/operations/Messages?wg_sse=true", http.Header{"X-Forwarded-For": {"9.9.9.9, 1.1.1.1"}})
		resp, body := g.do(t, http.MethodGet, "/operations/Messages?wg_sse=true", http.Header{"X-Forwarded-For": {"8.8.8.8, 1.1.1.1"}})
		wantRefused(t, "a second stream of 1.1.1.1, with a forged hop", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", retryAfter)
		g.openOK(t, "/operations/Messages?wg_sse=true", http.Header{"X-Forwarded-For": {"2.2.2.2"}})
	})

	// A peer that is no trusted proxy counts by its own address, whatever
	// its X-Forwarded-For says.
	t.Run("untrusted peer", func(t *testing.T) {
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", writeFiles(t, t.TempDir(), chatOps), "-upstream", "gql="+up.URL,
			"-trusted-proxy", "10.0.0.0/8", "-max-streams-per-principal", "1", "-heartbeat", "1h")
		g.openOK(t, "/operations/Messages?wg_sse=true", http.Header{"X-Forwarded-For": {"1.1.1.1"}})
		resp, body := g.do(t, http.MethodGet, "/operations/Messages?wg_sse=true", http.Header{"X-Forwarded-For": {"2.2.2.2"}})
		wantRefused(t, "a second stream of 127.0.0.1", resp, body, http.StatusTooManyRequests, gqlpush.CodeTooManyStreams, "Retry-After", retryAfter)
	})
}
