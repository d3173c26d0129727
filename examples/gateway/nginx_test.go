package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush/examples/internal/testexe"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// nginxEnv, set to 1, makes a missing nginx fail the tests that run the
// gateway behind it instead of skipping them, as in CI (.ci/run).
const nginxEnv = "GQLPUSH_NGINX"

// nginxRecommended is the location block the README recommends for
// streams, besides proxy_pass (in "Deploying behind a proxy").
const nginxRecommended = `
		proxy_http_version 1.1;
		proxy_set_header Connection "";
		proxy_buffering off;
		proxy_read_timeout 1h;
		proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`

// nginxExe returns the path of nginx (Debian's apt-get install nginx puts
// it in /usr/sbin), or skips the test when there is none, unless nginxEnv
// is 1.
func nginxExe(t *testing.T) string {
	t.Helper()
	return testexe.Find(t, nginxEnv, "nginx", "/usr/sbin/nginx")
}

// startNginx runs nginx, in the foreground and as one process, as a
// reverse proxy to the gateway g, with location's directives besides
// proxy_pass, and returns the gateway as reached through it. Everything
// nginx writes lives in a temporary directory. nginx is killed when the
// test ends.
func startNginx(t *testing.T, g *gateway, location string) *gateway {
	t.Helper()
	exe := nginxExe(t)
	// The port is free when chosen, but something else may take it
	// before nginx binds it: then nginx exits, and another is tried.
	for try := 1; ; try++ {
		nx, inUse := runNginx(t, exe, g, location)
		if !inUse {
			return nx
		}
		if try == 3 {
			t.Fatalf("nginx found its port taken %d times", try)
		}
	}
}

// runNginx is one try of startNginx, on a port free when chosen. It
// reports whether nginx exited because the port was taken meanwhile.
func runNginx(t *testing.T, exe string, g *gateway, location string) (nx *gateway, inUse bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path client_body_temp;
	proxy_temp_path proxy_temp;
	fastcgi_temp_path fastcgi_temp;
	uwsgi_temp_path uwsgi_temp;
	scgi_temp_path scgi_temp;
	server {
		listen %s;
		location / {
			proxy_pass %s;%s
		}
	}
}
`, addr, g.base, location)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &nginxLog{started: make(chan struct{})}
	// -e: the log before the configuration is read, which otherwise
	// goes to /var/log/nginx.
	cmd := exec.Command(exe, "-p", dir+"/", "-c", "nginx.conf", "-e", "stderr")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case <-log.started:
	case err := <-exited:
		if strings.Contains(log.String(), "Address already in use") {
			return nil, true
		}
		t.Fatalf("nginx exited before it started: %v\nnginx.conf:\n%s\nnginx's log:\n%s", err, conf, log.String())
	case <-timer.C:
		cmd.Process.Kill()
		<-exited
		t.Fatalf("nginx did not start within %v\nnginx's log:\n%s", waitTime, log.String())
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("nginx.conf:\n%s\nnginx's log:\n%s", conf, log.String())
		}
	})
	return &gateway{base: "http://" + addr, client: g.client}, false
}

// nginxStarted matches the line nginx logs, at notice level, once it has
// read its configuration and bound its listening sockets, before it
// accepts: "... [notice] 123#123: nginx/1.22.1". From then on, connections
// queue until it accepts them.
var nginxStarted = regexp.MustCompile(`\[notice\] [0-9]+#[0-9]+: nginx/`)

// nginxLog is nginx's standard output and error: it keeps what nginx
// writes, and closes started at the line of nginxStarted.
type nginxLog struct {
	syncBuffer
	started chan struct{}
	once    sync.Once
}

func (l *nginxLog) Write(p []byte) (int, error) {
	n, err := l.syncBuffer.Write(p)
	if nginxStarted.MatchString(l.String()) {
		l.once.Do(func() { close(l.started) })
	}
	return n, err
}

// gatewayBehindNginx starts an upstream, the gateway in front of it with
// the Messages operation and args, and nginx in front of the gateway with
// location's directives.
func gatewayBehindNginx(t *testing.T, location string, args ...string) (g, nx *gateway, up *gqlpushtest.Server) {
	t.Helper()
	nginxExe(t) // skip before starting anything
	up = gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	ops := writeFiles(t, t.TempDir(), map[string]string{"Messages.graphql": "subscription { gql_messageCreated { id content } }\n"})
	g = startGateway(t, append([]string{"-operations", ops, "-upstream", "gql=" + up.URL}, args...)...)
	return g, startNginx(t, g, location), up
}

// Through nginx, a stream's first comment arrives before anything is
// posted, and each result as it is posted, while the stream stays open:
// with the configuration the README recommends; with nginx's defaults
// (buffering on, HTTP/1.0 to the gateway), which gqlpush's
// X-Accel-Buffering: no turns off for its streams; and with nginx's gzip
// told to compress streams, which it flushes frame by frame.
func TestNginxStreamsUnbuffered(t *testing.T) {
	for _, tc := range []struct {
		name, location string
		gzip           bool // the response is compressed
	}{
		{name: "recommended", location: nginxRecommended},
		{name: "nginx defaults", location: ""},
		{name: "gzip", location: nginxRecommended + "\n\t\t\tgzip on;\n\t\t\tgzip_types text/event-stream;", gzip: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No heartbeats: nothing but the frames under test crosses
			// nginx.
			_, nx, up := gatewayBehindNginx(t, tc.location, "-heartbeat", "-1s")
			s := nx.open(t, "/operations/Messages?wg_sse=true")
			if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != 200 || ct != "text/event-stream" {
				t.Fatalf("through nginx: %d %q", s.resp.StatusCode, ct)
			}
			// The client asked for gzip and decompresses transparently.
			if s.resp.Uncompressed != tc.gzip {
				t.Errorf("compressed by nginx: %v, want %v", s.resp.Uncompressed, tc.gzip)
			}
			if cc := s.resp.Header.Get("Cache-Control"); cc != "no-cache" {
				t.Errorf("Cache-Control %q through nginx", cc)
			}
			// nginx keeps X-Accel-* to itself: a proxy in front of
			// nginx never sees it.
			if xa := s.resp.Header.Get("X-Accel-Buffering"); xa != "" {
				t.Errorf("X-Accel-Buffering %q passed through nginx", xa)
			}
			// Nothing is posted yet: only an unbuffered proxy lets the
			// first comment through.
			if f := s.frame(t); f != comment {
				t.Fatalf("first frame %q, want %q", f, comment)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTime)
			defer cancel()
			if err := up.WaitSubscriptions(ctx, 1); err != nil {
				t.Fatal(err)
			}
			for i, content := range []string{"one", "two", "three"} {
				up.Chat.Post("", content)
				want := fmt.Sprintf(`data: {"data":{"gql_messageCreated":{"id":"%d","content":"%s"}}}`+"\n\n", i+1, content)
				if f := s.frame(t); !strings.HasSuffix(f, want) {
					t.Fatalf("result %d: %q, want %q", i+1, f, want)
				}
			}
		})
	}
}

// The control: told to ignore X-Accel-Buffering, nginx buffers the stream
// and holds all of it, the response head included, until several results
// have filled its buffer. So the header is what makes nginx's defaults
// work.
func TestNginxBuffersWithoutAccelHeader(t *testing.T) {
	g, nx, up := gatewayBehindNginx(t, "\n\t\t\tproxy_ignore_headers X-Accel-Buffering;", "-heartbeat", "-1s")
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()

	// A client of the stream through nginx notes how many results had
	// been posted when the response head came, and when the first frame
	// came.
	var posted atomic.Int64
	arrived := make(chan nginxArrival, 1)
	clientDone := make(chan struct{})
	go followThrough(ctx, nx, &posted, arrived, clientDone)
	defer func() {
		cancel()
		<-clientDone
	}()
	// The stream has reached the gateway once the upstream has its
	// subscription; the direct stream then shares it.
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatal(err)
	}
	direct := g.open(t, "/operations/Messages?wg_sse=true")
	if f := direct.frame(t); f != comment {
		t.Fatalf("direct: first frame %q", f)
	}

	// Results of about 1 KiB, each posted once the direct stream has it:
	// nginx's buffer (proxy_buffer_size, 4 or 8 KiB) fills after a few.
	content := strings.Repeat("x", 1000)
	const maxPosts = 64
	var got *nginxArrival
	for i := 1; i <= maxPosts && got == nil; i++ {
		posted.Add(1)
		up.Chat.Post("", content)
		if f := direct.dataFrame(t); !strings.Contains(f, content) {
			t.Fatalf("direct: %q", f)
		}
		select {
		case a := <-arrived:
			got = &a
		default:
		}
	}
	if got == nil {
		select {
		case a := <-arrived:
			got = &a
		case <-ctx.Done():
			t.Fatalf("nothing came through nginx after %d results", maxPosts)
		}
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	if got.head < 2 || got.first < got.head {
		t.Errorf("through nginx, the response head came after %d results, the first frame after %d; want both after a buffer's worth (2 or more): nginx did not buffer", got.head, got.first)
	}
	t.Logf("through nginx, the head and the first frame came after %d and %d results of %d bytes", got.head, got.first, len(content))
}

// An nginxArrival is when a stream's response head, then its first frame,
// came through nginx, counted in results posted by then.
type nginxArrival struct {
	head, first int64
	err         error
}

// followThrough opens the Messages stream through nx and reports on
// arrived when its head and first frame came, then closes done.
func followThrough(ctx context.Context, nx *gateway, posted *atomic.Int64, arrived chan<- nginxArrival, done chan<- struct{}) {
	defer close(done)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, nx.base+"/operations/Messages?wg_sse=true", nil)
	if err != nil {
		arrived <- nginxArrival{err: err}
		return
	}
	resp, err := nx.client.Do(req)
	if err != nil {
		arrived <- nginxArrival{err: err}
		return
	}
	defer resp.Body.Close()
	a := nginxArrival{head: posted.Load()}
	if _, err := gqlpushtest.NewSSEReader(resp.Body).Next(); err != nil {
		a.err = fmt.Errorf("first frame through nginx: %w", err)
	}
	a.first = posted.Load()
	arrived <- a
	<-ctx.Done() // keep the stream open while results are posted
}

// Heartbeats keep an idle stream open through nginx past its
// proxy_read_timeout; without them, nginx cuts the stream at that
// timeout, with no end frame.
func TestNginxIdleTimeout(t *testing.T) {
	const readTimeout = "\n\t\t\tproxy_http_version 1.1;\n\t\t\tproxy_set_header Connection \"\";\n\t\t\tproxy_buffering off;\n\t\t\tproxy_read_timeout 2s;"
	t.Run("heartbeats", func(t *testing.T) {
		_, nx, up := gatewayBehindNginx(t, readTimeout, "-heartbeat", "200ms")
		s := nx.open(t, "/operations/Messages?wg_sse=true")
		// Twenty heartbeats, each after 200 ms of silence at least: the
		// stream has been idle for twice proxy_read_timeout.
		for i := 0; i <= 20; i++ {
			if f := s.frame(t); f != comment {
				t.Fatalf("frame %d: %q, want a heartbeat", i, f)
			}
		}
		up.Chat.Post("", "still here")
		if f := s.dataFrame(t); !strings.Contains(f, `"content":"still here"`) {
			t.Fatalf("after the heartbeats: %q", f)
		}
	})
	t.Run("no heartbeats", func(t *testing.T) {
		_, nx, _ := gatewayBehindNginx(t, readTimeout, "-heartbeat", "-1s")
		s := nx.open(t, "/operations/Messages?wg_sse=true")
		if f := s.frame(t); f != comment {
			t.Fatalf("first frame %q", f)
		}
		// nginx ends the chunked response without its last chunk.
		b, err := io.ReadAll(s.br)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(b) > 0 {
			t.Fatalf("an idle stream through nginx ended with %q, %v; want it cut (an unexpected EOF), with nothing more", b, err)
		}
	})
}
