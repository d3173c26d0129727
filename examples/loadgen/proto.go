package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gqlpush/gqlpush/examples/internal/selfsigned"
)

// The protocols of -proto: how the clients reach the gateway.
//
// Over HTTP/1.1 (h1) every stream is a connection of its own, which the
// gateway's gqlpush takes over from net/http. Over HTTP/2 streams run
// through net/http's ResponseWriter, many on one connection: h2 is HTTP/2
// over TLS, with a self-signed certificate loadgen makes at start (in a
// temporary directory, removed at the end) and gives the child gateway
// (loadgen gateway -tls-cert FILE -tls-key FILE); h2c is HTTP/2 in
// cleartext with prior knowledge (loadgen gateway -h2c), as a proxy in
// front of a gateway would speak it.
const (
	protoH1  = "h1"
	protoH2  = "h2"
	protoH2C = "h2c"

	// defaultH2Streams is the default of -h2-streams: how many streams
	// one client connection carries. 100 is what browsers and most
	// HTTP/2 servers allow by default, and below net/http's server's
	// limit (maxH2Streams), so no stream waits for a slot.
	defaultH2Streams = 100
	// maxH2Streams is net/http's server's default MaxConcurrentStreams
	// (http2defaultMaxStreams), which the child gateway keeps: a
	// connection carrying more would make the streams over it wait.
	maxH2Streams = 250
)

// protoName is what the report calls a protocol.
func protoName(proto string) string {
	switch proto {
	case protoH2:
		return "HTTP/2 over TLS (h2)"
	case protoH2C:
		return "HTTP/2 cleartext (h2c)"
	}
	return "HTTP/1.1"
}

// h2 reports whether the clients speak HTTP/2.
func (c *config) h2() bool { return c.proto == protoH2 || c.proto == protoH2C }

// scheme is the scheme of the gateway's URLs.
func (c *config) scheme() string {
	if c.proto == protoH2 {
		return "https"
	}
	return "http"
}

// A selfSigned is the certificate the gateway serves over TLS: its files,
// for the child gateway, and a client configuration that trusts it.
type selfSigned struct {
	dir, certFile, keyFile string
	client                 *tls.Config
}

// makeCert makes a self-signed certificate for loopback in a new temporary
// directory (remove removes it).
func makeCert() (*selfSigned, error) {
	dir, err := os.MkdirTemp("", "loadgen-tls-")
	if err != nil {
		return nil, err
	}
	s := &selfSigned{dir: dir}
	var roots *x509.CertPool
	if s.certFile, s.keyFile, roots, err = selfsigned.Write(dir, "loadgen gateway"); err != nil {
		s.remove()
		return nil, err
	}
	s.client = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return s, nil
}

func (s *selfSigned) remove() { os.RemoveAll(s.dir) }

// gatewayTLSFlags are the child gateway's flags for the protocol: the
// certificate's files for h2, -h2c for h2c.
func (c *config) gatewayTLSFlags(cert *selfSigned) []string {
	switch {
	case c.proto == protoH2 && cert != nil:
		return []string{"-tls-cert", cert.certFile, "-tls-key", cert.keyFile}
	case c.proto == protoH2C:
		return []string{"-h2c"}
	}
	return nil
}

// serverProtocols are what the child gateway speaks: HTTP/1.1 always (the
// debug endpoints, and h1's clients), HTTP/2 over TLS with a certificate,
// and cleartext HTTP/2 with -h2c, as examples/gateway does.
func serverProtocols(overTLS, h2c bool) *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(overTLS)
	p.SetUnencryptedHTTP2(h2c)
	return &p
}

// h2Conns are the HTTP/2 connections a fleet's streams share: client i
// runs on connection i / perConn, which the first of its clients dials.
// Each is dialed on its own (Transport.NewClientConn) rather than left to a
// Transport's pool: how many connections carry the streams is then what
// -h2-streams says, not what a race of first requests makes it.
type h2Conns struct {
	tr      *http.Transport
	scheme  string
	perConn int

	mu    sync.Mutex
	conns map[int]*h2Conn
}

// An h2Conn is one client connection, ready once ready is closed.
type h2Conn struct {
	ready chan struct{}
	cc    *http.ClientConn
	err   error
}

// newH2Conns returns the connections of a fleet on proto (h2 or h2c); tc
// is the TLS configuration of h2's, which trusts the gateway's certificate.
func newH2Conns(proto string, tc *tls.Config, perConn int) *h2Conns {
	tr := &http.Transport{
		TLSClientConfig:   tc,
		ForceAttemptHTTP2: true,
		Protocols:         new(http.Protocols),
		// Buffers per connection, not per stream: the connection's
		// reader hands each stream its bytes through a pipe.
		ReadBufferSize:  readBufSize,
		WriteBufferSize: readBufSize,
	}
	scheme := "http"
	if proto == protoH2 {
		tr.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &h2Conns{tr: tr, scheme: scheme, perConn: perConn, conns: map[int]*h2Conn{}}
}

// conn returns the connection of client id, dialing it if it is the
// first.
func (p *h2Conns) conn(ctx context.Context, addr string, id int) (*http.ClientConn, error) {
	n := id / p.perConn
	p.mu.Lock()
	c, ok := p.conns[n]
	if !ok {
		c = &h2Conn{ready: make(chan struct{})}
		p.conns[n] = c
	}
	p.mu.Unlock()
	if !ok {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c.cc, c.err = p.tr.NewClientConn(dctx, p.scheme, addr)
		cancel()
		close(c.ready)
	}
	select {
	case <-c.ready:
		return c.cc, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// count is how many connections were dialed, and how many streams the
// gateway lets one carry at once, as its SETTINGS told the first (nil when
// none is open).
func (p *h2Conns) count() (conns int, maxStreams *int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		select {
		case <-c.ready:
		default:
			continue
		}
		if c.cc == nil {
			continue
		}
		conns++
		if maxStreams == nil && c.cc.Err() == nil {
			maxStreams = ptr(c.cc.Available() + c.cc.InFlight())
		}
	}
	return conns, maxStreams
}

// close closes every connection.
func (p *h2Conns) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		<-c.ready
		if c.cc != nil {
			c.cc.Close()
		}
	}
	p.tr.CloseIdleConnections()
}

// openH2 sends GET target as a stream on cc and waits for the response
// head. A status other than 200 is an error naming it and the error code of
// the body. The stream ends when ctx ends, or close is called.
func openH2(ctx context.Context, cc *http.ClientConn, scheme, addr, target string) (*sseConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+target, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("User-Agent", "gqlpush-loadgen")
	// The head must come within a bounded time; the stream itself may be
	// silent for as long as the heartbeat allows.
	headTimer := time.AfterFunc(30*time.Second, cancel)
	resp, err := cc.RoundTrip(req)
	headTimer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.ProtoMajor != 2 {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("response over %s, not HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("HTTP %d%s", resp.StatusCode, codeSuffix(b))
	}
	return &sseConn{body: resp.Body, pend: make([]byte, 0, frameBufSize), stop: func() {
		cancel()
		resp.Body.Close()
	}}, nil
}
