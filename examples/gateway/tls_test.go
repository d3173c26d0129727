package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gqlpush/gqlpush/examples/internal/selfsigned"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files in dir, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool, err := selfsigned.Write(dir, "gateway test")
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// connCounter counts the connections a client's requests got, by the
// connection.
type connCounter struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (c *connCounter) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conns == nil {
			c.conns = map[net.Conn]bool{}
		}
		c.conns[info.Conn] = true
	}}
}

func (c *connCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// streamsOverOneConnection opens n SSE streams of Messages on g, each over
// HTTP/2, and checks they share one connection, that a posted message
// reaches every one with the same bytes, and that shutdown ends each with
// its end frames.
func streamsOverOneConnection(t *testing.T, g *gateway, up *gqlpushtest.Server, n int) {
	t.Helper()
	var cc connCounter
	var streams []*stream
	for range n {
		s := g.openIn(t, httptrace.WithClientTrace(context.Background(), cc.trace()), "/operations/Messages?wg_sse=true", nil)
		if s.resp.ProtoMajor != 2 {
			t.Fatalf("a stream over %s, want HTTP/2", s.resp.Proto)
		}
		if f := s.frame(t); f != comment {
			t.Fatalf("first frame %q", f)
		}
		streams = append(streams, s)
	}
	if c := cc.count(); c != 1 {
		t.Fatalf("%d streams over %d connections, want one", n, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	up.Chat.Post("", "over h2")
	var first string
	for i, s := range streams {
		f := s.dataFrame(t)
		if !strings.Contains(f, `"content":"over h2"`) || (i > 0 && f != first) {
			t.Fatalf("stream %d got %q, the first %q", i, f, first)
		}
		first = f
	}
	if err := g.stop(t); err != nil {
		t.Fatal(err)
	}
	const end = `data: {"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}` + "\n\nevent: complete\ndata: \n\n"
	for i, s := range streams {
		if rest := withoutHeartbeats(s.rest(t)); rest != end {
			t.Fatalf("stream %d ended with %q", i, rest)
		}
	}
}

// With -tls-cert and -tls-key the gateway serves HTTPS, and HTTP/2 to a
// client that offers it: many streams on one connection, the same bytes,
// the same end at shutdown.
func TestTLSServesHTTP2(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	ops := writeFiles(t, filepath.Join(dir, "ops"), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id content } }\n"})
	g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-tls-cert", cert, "-tls-key", key)
	if !strings.HasPrefix(g.base, "https://") {
		t.Fatalf("listening on %s, want https", g.base)
	}
	g.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	g.client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	streamsOverOneConnection(t, g, up, 20)
}

// With -h2c the gateway takes cleartext HTTP/2 too, as a proxy in front
// would speak it, and HTTP/1.1 still.
func TestH2C(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	ops := writeFiles(t, t.TempDir(), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id content } }\n"})
	g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-h2c")
	if resp, body := g.get(t, "/healthz"); resp.ProtoMajor != 1 || body != "ok" {
		t.Fatalf("HTTP/1.1: %s %q", resp.Proto, body)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	g.client.Transport = &http.Transport{Protocols: &p}
	streamsOverOneConnection(t, g, up, 20)
}
