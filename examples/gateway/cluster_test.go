package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"github.com/nats-io/nats-server/v2/server"
)

// randomInstance is what a random -cluster-instance looks like.
var randomInstance = regexp.MustCompile(`^[a-z2-7]{16}$`)

// TestClusterFlagsToConfig checks what the cluster flags set in the
// handler's configuration, that gqlpush takes it, and the line the gateway
// logs about it at startup.
func TestClusterFlagsToConfig(t *testing.T) {
	ops := writeFiles(t, t.TempDir(), chatOps)
	creds := someNATSUser(t).creds
	base := []string{"-operations", ops, "-upstream", "gql=ws://127.0.0.1:1/graphql"}
	const password = "hunter2-c1u5t3r"
	type want struct {
		url, name, instance string // instance "": a random one
		lease, maxAge       time.Duration
		natsOptions         int
		log                 string // in the startup line
	}
	tests := []struct {
		name string
		args []string
		want *want // nil: no cluster
	}{
		{name: "no cluster"},
		{name: "defaults", args: []string{"-cluster", "nats://127.0.0.1:4222"},
			want: &want{url: "nats://127.0.0.1:4222", name: gqlpush.DefaultClusterName, lease: gqlpush.DefaultClusterLease, maxAge: gqlpush.DefaultResumeMaxAge,
				log: fmt.Sprintf("cluster=%s lease=%v resume_max_age=%v", gqlpush.DefaultClusterName, gqlpush.DefaultClusterLease, gqlpush.DefaultResumeMaxAge)}},
		{name: "every flag", args: []string{"-cluster", "tls://gw:" + password + "@10.0.0.1:4222,tls://10.0.0.2:4222", "-cluster-name", "chat_eu-1",
			"-cluster-instance", "gw-7_a", "-cluster-lease", "1500ms", "-resume-max-age", "1h", "-cluster-creds", creds},
			want: &want{url: "tls://gw:" + password + "@10.0.0.1:4222,tls://10.0.0.2:4222", name: "chat_eu-1", instance: "gw-7_a", lease: 1500 * time.Millisecond, maxAge: time.Hour, natsOptions: 1,
				log: "instance=gw-7_a cluster=chat_eu-1 lease=1.5s resume_max_age=1h0m0s"}},
		// Zero means the library's default, as in gqlpush.Cluster.
		{name: "zero", args: []string{"-cluster", "nats://127.0.0.1:4222", "-cluster-lease", "0", "-resume-max-age", "0s"},
			want: &want{url: "nats://127.0.0.1:4222", name: gqlpush.DefaultClusterName,
				log: fmt.Sprintf("lease=%v resume_max_age=%v", gqlpush.DefaultClusterLease, gqlpush.DefaultResumeMaxAge)}},
		{name: "shortest durations", args: []string{"-cluster", "nats://127.0.0.1:4222", "-cluster-lease", "100ms", "-resume-max-age", "100ms"},
			want: &want{url: "nats://127.0.0.1:4222", name: gqlpush.DefaultClusterName, lease: 100 * time.Millisecond, maxAge: 100 * time.Millisecond,
				log: "lease=100ms resume_max_age=100ms"}},
		// Beside a NATS upstream, which it leaves alone.
		{name: "beside a NATS upstream", args: []string{"-upstream", "shop=nats://127.0.0.1:4222", "-schema", "shop=" + writeFiles(t, t.TempDir(), map[string]string{"shop.graphql": shopSchema}) + "/shop.graphql",
			"-cluster", "nats://127.0.0.1:4222"},
			want: &want{url: "nats://127.0.0.1:4222", name: gqlpush.DefaultClusterName, lease: gqlpush.DefaultClusterLease, maxAge: gqlpush.DefaultResumeMaxAge}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(append(slices.Clone(base), tc.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.warnings) > 0 {
				t.Errorf("warnings %q, want none", cfg.warnings)
			}
			hc := cfg.handlerConfig()
			var logged bytes.Buffer
			cfg.logCluster(slog.New(slog.NewTextHandler(&logged, nil)))
			if tc.want == nil {
				if hc.Cluster != nil || logged.Len() > 0 {
					t.Errorf("Cluster %+v, logged %q: want none", hc.Cluster, logged.String())
				}
				return
			}
			cl := hc.Cluster
			if cl == nil {
				t.Fatal("no Cluster")
			}
			if cl.URL != tc.want.url || cl.Name != tc.want.name || cl.Lease != tc.want.lease || cl.MaxAge != tc.want.maxAge || len(cl.NATSOptions) != tc.want.natsOptions || cl.NATS != nil {
				t.Errorf("Cluster %+v, want %+v", *cl, *tc.want)
			}
			switch {
			case tc.want.instance != "" && cl.Instance != tc.want.instance:
				t.Errorf("instance %q, want %q", cl.Instance, tc.want.instance)
			case tc.want.instance == "" && !randomInstance.MatchString(cl.Instance):
				t.Errorf("instance %q, want a random one like %v", cl.Instance, randomInstance)
			}
			line := logged.String()
			if !strings.Contains(line, `msg="running as an instance of a cluster" instance=`+cl.Instance+" cluster=") || !strings.Contains(line, tc.want.log) {
				t.Errorf("logged %q, want instance %s and %q", line, cl.Instance, tc.want.log)
			}
			if strings.Contains(line, password) || strings.Contains(line, "4222") {
				t.Errorf("logged %q: the URL shows", line)
			}
			// handlerConfig gives gqlpush a Cluster of its own.
			if hc2 := cfg.handlerConfig(); hc2.Cluster == cl {
				t.Error("two handler configurations share one Cluster")
			}
			// gqlpush takes it; nothing is dialled before a stream needs it.
			h, err := gqlpush.NewHandler(hc)
			if err != nil {
				t.Fatal(cfg.handlerError(err, false))
			}
			if err := h.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Each gateway without -cluster-instance picks a name of its own.
	names := map[string]bool{}
	for range 3 {
		cfg, err := parseConfig(append(slices.Clone(base), "-cluster", "nats://127.0.0.1:4222"), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		names[cfg.cluster.Instance] = true
	}
	if len(names) != 3 {
		t.Errorf("three gateways picked the instance names %v", names)
	}

	// A credentials file others may read works, with a warning.
	if err := os.Chmod(creds, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(append(slices.Clone(base), "-cluster", "nats://127.0.0.1:4222", "-cluster-creds", creds), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := "-cluster-creds " + creds + ": readable by group or others (mode -rw-r--r--); chmod 600 it"; len(cfg.warnings) != 1 || cfg.warnings[0] != want {
		t.Errorf("warnings %q, want %q", cfg.warnings, want)
	}
}

// TestClusterConfigErrors: mistakes in the cluster flags, or in what they
// name, are usage errors under the flag that gave them, found before the
// gateway listens or connects, and show no URL credential.
func TestClusterConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	dir := writeFiles(t, t.TempDir(), chatOps)
	schema := filepath.Join(writeFiles(t, t.TempDir(), map[string]string{"shop.graphql": shopSchema}), "shop.graphql")
	acc := someNATSUser(t)
	missing := filepath.Join(t.TempDir(), "missing.creds")
	const cluster = "nats://gw:hunter2@127.0.0.1:1" // never dialled
	base := []string{"-operations", dir, "-upstream", "gql=ws://127.0.0.1:1/graphql"}
	with := func(args ...string) []string { return append(slices.Clone(base), args...) }
	inCluster := func(args ...string) []string { return with(append([]string{"-cluster", cluster}, args...)...) }

	tests := []struct {
		name string
		args []string
		want []string // in the message
	}{
		{name: "name without -cluster", args: with("-cluster-name", "chat"),
			want: []string{"-cluster-name: only with -cluster"}},
		{name: "instance without -cluster", args: with("-cluster-instance", "gw1"),
			want: []string{"-cluster-instance: only with -cluster"}},
		{name: "lease without -cluster", args: with("-cluster-lease", "1s"),
			want: []string{"-cluster-lease: only with -cluster"}},
		{name: "max age without -cluster", args: with("-resume-max-age", "1m"),
			want: []string{"-resume-max-age: only with -cluster"}},
		{name: "creds without -cluster", args: with("-cluster-creds", acc.creds),
			want: []string{"-cluster-creds: only with -cluster"}},
		{name: "a default value without -cluster", args: with("-cluster-name", gqlpush.DefaultClusterName),
			want: []string{"-cluster-name: only with -cluster"}},

		{name: "empty URL", args: with("-cluster", ""),
			want: []string{"-cluster: no URL; name the NATS server of the cluster"}},
		{name: "NATS upstreams alone", args: []string{"-operations", dir, "-upstream", "shop=nats://127.0.0.1:1", "-schema", "shop=" + schema, "-cluster", cluster},
			want: []string{"-cluster: every -upstream is a NATS upstream, which NATS shares itself"}},
		// What gqlpush refuses is reported under the flag that gave it.
		{name: "http URL", args: with("-cluster", "http://gw:hunter2@127.0.0.1:1"),
			want: []string{"-cluster: gqlpush: Config.Cluster.URL is not a list of nats:// or tls:// URLs with a host"}},
		{name: "URL with a bad port", args: with("-cluster", "nats://gw:hunter2@127.0.0.1:port"),
			want: []string{"-cluster: gqlpush: Config.Cluster.URL is not a list of nats:// or tls:// URLs with a host"}},
		{name: "URL without a host", args: with("-cluster", "nats://hunter2@"),
			want: []string{"-cluster: gqlpush: Config.Cluster.URL is not a list"}},
		{name: "URL list with another scheme", args: with("-cluster", "nats://hunter2@127.0.0.1:1,ws://hunter2@127.0.0.1:2"),
			want: []string{"-cluster: gqlpush: Config.Cluster.URL is not a list"}},
		{name: "URL without scheme", args: with("-cluster", "127.0.0.1:4222"),
			want: []string{"-cluster: gqlpush: Config.Cluster.URL is not a list"}},

		{name: "empty name", args: inCluster("-cluster-name", ""),
			want: []string{"-cluster-name: empty; leave the flag out for gqlpush"}},
		{name: "name with a dot", args: inCluster("-cluster-name", "chat.eu"),
			want: []string{"-cluster-name: gqlpush: Config.Cluster.Name may hold only letters, digits, '-' and '_'"}},
		{name: "name with a space", args: inCluster("-cluster-name", "my chat"),
			want: []string{"-cluster-name: gqlpush: Config.Cluster.Name may hold only"}},
		{name: "name too long", args: inCluster("-cluster-name", strings.Repeat("c", 65)),
			want: []string{"-cluster-name: gqlpush: Config.Cluster.Name may hold only"}},
		{name: "empty instance", args: inCluster("-cluster-instance", ""),
			want: []string{"-cluster-instance: empty; leave the flag out for a random name"}},
		{name: "instance with a wildcard", args: inCluster("-cluster-instance", "gw*"),
			want: []string{"-cluster-instance: gqlpush: Config.Cluster.Instance may hold only letters, digits, '-' and '_'"}},

		{name: "lease not a duration", args: inCluster("-cluster-lease", "soon"),
			want: []string{`invalid value "soon" for flag -cluster-lease`}},
		{name: "lease without unit", args: inCluster("-cluster-lease", "5"),
			want: []string{`invalid value "5" for flag -cluster-lease`}},
		{name: "negative lease", args: inCluster("-cluster-lease", "-1s"),
			want: []string{"-cluster-lease: gqlpush: Config.Cluster.Lease is negative"}},
		{name: "lease too short", args: inCluster("-cluster-lease", "99ms"),
			want: []string{"-cluster-lease 99ms: JetStream keeps nothing for less than 100ms; 0 means the default"}},
		{name: "lease of a nanosecond", args: inCluster("-cluster-lease", "1ns"),
			want: []string{"-cluster-lease 1ns: JetStream keeps nothing for less than 100ms"}},
		{name: "max age not a duration", args: inCluster("-resume-max-age", "1d"),
			want: []string{`invalid value "1d" for flag -resume-max-age`}},
		{name: "negative max age", args: inCluster("-resume-max-age", "-5m"),
			want: []string{"-resume-max-age: gqlpush: Config.Cluster.MaxAge is negative"}},
		{name: "max age too short", args: inCluster("-resume-max-age", "10ms"),
			want: []string{"-resume-max-age 10ms: JetStream keeps nothing for less than 100ms"}},
		{name: "max age under the lease", args: inCluster("-cluster-lease", "10s", "-resume-max-age", "5s"),
			want: []string{"-resume-max-age: gqlpush: Config.Cluster.MaxAge is shorter than Lease"}},

		{name: "creds file missing", args: inCluster("-cluster-creds", missing),
			want: []string{"-cluster-creds " + missing + ": no such file or directory"}},
		{name: "creds file empty name", args: inCluster("-cluster-creds", ""),
			want: []string{"-cluster-creds : no FILE"}},
		{name: "creds file a directory", args: inCluster("-cluster-creds", dir),
			want: []string{"-cluster-creds " + dir + ": not a regular file"}},
		{name: "creds file not creds", args: inCluster("-cluster-creds", schema),
			want: []string{"-cluster-creds " + schema + ": no user nkey seed"}},
		{name: "creds path to expand", args: inCluster("-cluster-creds", "~/gateway.creds"),
			want: []string{"-cluster-creds ~/gateway.creds: give the path with ~ and $ expanded"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkUsageError(t, busy.Addr().String(), tc.args, tc.want, []string{"hunter2", acc.seed})
		})
	}
}

// A gatewayProcess is the gateway run by the test binary in a process of
// its own (see mainEnv), so that it can die as a process does.
type gatewayProcess struct {
	name   string
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:port
	client *http.Client
	stdout *readyWriter
	stderr *syncBuffer
	done   chan struct{} // closed once the process has been waited for
	err    error         // of Wait, once done is closed
}

// startGatewayProcess runs the gateway with args on a free loopback port,
// in a process of its own, and waits until it listens. The process is
// stopped, or killed, when the test ends, if not before.
func startGatewayProcess(t *testing.T, name string, args ...string) *gatewayProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	p := &gatewayProcess{
		name:   name,
		cmd:    exec.Command(exe, append([]string{"-listen", "127.0.0.1:0"}, args...)...),
		client: &http.Client{Transport: tr},
		stdout: &readyWriter{ready: make(chan string, 1)},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), mainEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = waitTime
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		tr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("%s's log:\n%s", p.name, p.stderr.String())
		}
	})
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case p.base = <-p.stdout.ready:
	case <-p.done:
		t.Fatalf("%s exited before listening: %v\n%s", name, p.err, p.stderr.String())
	case <-timer.C:
		t.Fatalf("%s never printed its listening address", name)
	}
	return p
}

// stop sends SIGTERM and returns how the process exited; one that has not
// exited after waitTime is killed.
func (p *gatewayProcess) stop(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit after SIGTERM", p.name)
	}
	return p.err
}

// kill kills the process with SIGKILL, which it cannot catch: it leaves
// nothing behind, tells no one, and waits for it.
func (p *gatewayProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Fatalf("%s did not die of SIGKILL", p.name)
	}
}

// waitLog waits until the process has logged a line that holds every one
// of parts, and returns it. Its log is read as it comes: it is looked at
// again until then.
func (p *gatewayProcess) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if line := p.logLine(parts...); line != "" {
			return line
		}
		select {
		case <-tick.C:
		case <-timer.C:
			t.Fatalf("%s never logged a line with %q:\n%s", p.name, parts, p.stderr.String())
		}
	}
}

// logLine is the first line of the log that holds every one of parts, ""
// when there is none.
func (p *gatewayProcess) logLine(parts ...string) string {
	log := p.stderr.String()
	// The last line may not have come whole yet.
	log = log[:strings.LastIndexByte(log, '\n')+1]
	for _, line := range strings.Split(log, "\n") {
		ok := line != ""
		for _, part := range parts {
			ok = ok && strings.Contains(line, part)
		}
		if ok {
			return line
		}
	}
	return ""
}

// An sseClient is an SSE stream of a gateway, read in a goroutine of its
// own, frame by frame, so that the test can wait on several at once.
type sseClient struct {
	name   string
	frames chan string // closed at the end of the stream
	err    error       // why it ended, once frames is closed
}

// follow opens the SSE stream at path and reads its first frame. The stream
// stays open until the test ends.
func (p *gatewayProcess) follow(t *testing.T, name, path string) *sseClient {
	t.Helper()
	return followURL(t, p.client, name, p.base+path)
}

// followURL is follow for any URL, with client.
func followURL(t *testing.T, client *http.Client, name, url string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sseClient{name: name, frames: make(chan string, 1024)}
	stop, ended := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		cancel()
		resp.Body.Close()
		<-ended
	})
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("%s: %s: %d %s", name, url, resp.StatusCode, ct)
	}
	go func() {
		defer close(ended)
		defer close(c.frames)
		r := gqlpushtest.NewSSEReader(bufio.NewReader(resp.Body))
		for {
			f, err := r.Next()
			if err != nil {
				c.err = err
				return
			}
			select {
			case c.frames <- f.Raw:
			case <-stop:
				return
			}
		}
	}()
	if f := c.next(t); f != comment {
		t.Fatalf("%s: first frame %q, want %q", name, f, comment)
	}
	return c
}

// next returns the client's next frame, heartbeats included.
func (c *sseClient) next(t *testing.T) string {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatalf("%s: the stream ended (%v)", c.name, c.err)
		}
		return f
	case <-timer.C:
		t.Fatalf("%s: no frame", c.name)
	}
	return ""
}

// rest reads the stream to its end.
func (c *sseClient) rest(t *testing.T) string {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	var b strings.Builder
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return b.String()
			}
			b.WriteString(f)
		case <-timer.C:
			t.Fatalf("%s: the stream did not end; so far %q", c.name, b.String())
		}
	}
}

// boundedCtx is a context that ends after waitTime, or with the test.
func boundedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	t.Cleanup(cancel)
	return ctx
}

// A clusterResult is a result frame of the cluster test: its event id and
// the content of its message.
type clusterResult struct {
	token   string
	seq     uint64
	content string
}

var resultFrame = regexp.MustCompile(`^id: ([a-z2-7]{16})\.([0-9]+)\ndata: \{"data":\{"gql_messageCreated":\{"id":"[0-9]+","content":"([^"]*)"\}\}\}\n\n$`)

// result reads a result frame: anything else, a reset, an error or the end
// included, fails the test.
func (c *sseClient) result(t *testing.T) clusterResult {
	t.Helper()
	for {
		f := c.next(t)
		if f == comment {
			continue // a heartbeat
		}
		return parseResult(t, c.name, f)
	}
}

func parseResult(t *testing.T, name, f string) clusterResult {
	t.Helper()
	m := resultFrame.FindStringSubmatch(f)
	if m == nil {
		t.Fatalf("%s: got %q, want a result", name, f)
	}
	seq, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return clusterResult{token: m[1], seq: seq, content: m[3]}
}

// until reads results up to the one with content, and returns it.
func (c *sseClient) until(t *testing.T, content string) clusterResult {
	t.Helper()
	for {
		if r := c.result(t); r.content == content {
			return r
		}
	}
}

// TestClusterFailover runs three gateway processes of one cluster, on a NATS
// server with JetStream, in front of one upstream. A client on each gets
// every result, in order, with the same ids, while the upstream holds one
// subscription, the first gateway's. That gateway is killed with SIGKILL
// while results are posted: the clients of the two others keep their
// streams, with no reset and no error, and once one of them has taken the
// subscription over (after the lease, 2s) they get results again, in order,
// nothing twice, their ids going on increasing, the same ids on both; the
// upstream holds one subscription again. The survivors shut down cleanly,
// and no gateway prints the cluster's password.
func TestClusterFailover(t *testing.T) {
	const user, password = "gw", "pw-c1u5t3r-7e2a9b4d"
	ns := startNATS(t, server.Options{JetStream: true, StoreDir: t.TempDir(), Username: user, Password: password})
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	ops := writeFiles(t, t.TempDir(), chatOps)
	clusterURL := "nats://" + user + ":" + password + "@" + natsHostPort(ns)

	var gws []*gatewayProcess
	for i := range 3 {
		name := fmt.Sprint("gw", i)
		gws = append(gws, startGatewayProcess(t, name, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-drain", "-1s",
			"-cluster", clusterURL, "-cluster-name", "chat", "-cluster-instance", name, "-cluster-lease", "2s"))
	}
	for i, g := range gws {
		g.waitLog(t, `msg="running as an instance of a cluster"`, fmt.Sprintf("instance=gw%d cluster=chat lease=2s", i))
	}
	const path = "/operations/Messages?wg_sse=true"
	took := `msg="cluster: took a key" operation=Messages`

	// The first gateway a client comes to takes the subscription.
	first := gws[0].follow(t, "client of gw0", path)
	if err := up.WaitSubscriptions(boundedCtx(t), 1); err != nil {
		t.Fatalf("the upstream holds %d subscriptions, want 1", up.Subscriptions())
	}
	gws[0].waitLog(t, took, "instance=gw0")
	clients := []*sseClient{first, gws[1].follow(t, "client of gw1", path), gws[2].follow(t, "client of gw2", path)}

	// Every client reads the cluster's stream once it has a result: what is
	// posted after the mark reaches all of them.
	for i, c := range clients {
		ctx := boundedCtx(t)
		tick := time.NewTicker(20 * time.Millisecond)
		for got := false; !got; {
			up.Chat.Post("", fmt.Sprint("warm", i))
			select {
			case f, ok := <-c.frames:
				if !ok {
					t.Fatalf("%s: the stream ended (%v)", c.name, c.err)
				}
				if f != comment {
					parseResult(t, c.name, f)
					got = true
				}
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("%s has no result", c.name)
			}
		}
		tick.Stop()
	}
	up.Chat.Post("", "mark")
	for _, c := range clients {
		c.until(t, "mark")
	}
	if n, conns := up.Subscriptions(), up.Conns(); n != 1 || len(conns) != 1 {
		t.Fatalf("the upstream holds %d subscriptions on %d connections, want 1 on 1", n, len(conns))
	}
	for _, g := range gws[1:] {
		if line := g.logLine(took); line != "" {
			t.Fatalf("%s took the subscription too: %s", g.name, line)
		}
	}
	for _, content := range []string{"a", "b", "c"} {
		up.Chat.Post("", content)
	}
	var ids []clusterResult
	for i, c := range clients {
		for j, content := range []string{"a", "b", "c"} {
			r := c.result(t)
			if r.content != content {
				t.Fatalf("%s: result %d is %q, want %q", c.name, j, r.content, content)
			}
			if i == 0 {
				if j > 0 && (r.token != ids[j-1].token || r.seq <= ids[j-1].seq) {
					t.Fatalf("%s: id %s.%d after %s.%d", c.name, r.token, r.seq, ids[j-1].token, ids[j-1].seq)
				}
				ids = append(ids, r)
			} else if r.token != ids[j].token || r.seq != ids[j].seq {
				t.Fatalf("%s: %q has the id %s.%d, %s.%d on gw0", c.name, content, r.token, r.seq, ids[j].token, ids[j].seq)
			}
		}
	}

	// The owner dies mid-stream: results are posted all along, before and
	// after. Those posted before the new owner subscribed are lost; every
	// other one comes once, in order.
	b, c := clients[1], clients[2]
	last := map[*sseClient]clusterResult{b: ids[2], c: ids[2]}
	after := map[*sseClient]int{b: -1, c: -1} // the last N of "after N" seen
	check := func(cl *sseClient, f string, ok bool) {
		t.Helper()
		if !ok {
			t.Fatalf("%s: the stream ended (%v)", cl.name, cl.err)
		}
		if f == comment {
			return // a heartbeat
		}
		r := parseResult(t, cl.name, f)
		n, err := strconv.Atoi(strings.TrimPrefix(r.content, "after "))
		if err != nil || !strings.HasPrefix(r.content, "after ") {
			t.Fatalf("%s: got %q, want an after N", cl.name, r.content)
		}
		if prev := last[cl]; r.token != prev.token || r.seq <= prev.seq || n <= after[cl] {
			t.Fatalf("%s: %q, id %s.%d, after %q, id %s.%d: out of order, or twice", cl.name, r.content, r.token, r.seq, prev.content, prev.token, prev.seq)
		}
		last[cl], after[cl] = r, n
	}
	// post posts "after N" every 50ms, reading the clients meanwhile,
	// until both have seen an N of least or more.
	n := 0
	post := func(least int, what string) {
		t.Helper()
		ctx := boundedCtx(t)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for after[b] < least || after[c] < least {
			select {
			case f, ok := <-b.frames:
				check(b, f, ok)
			case f, ok := <-c.frames:
				check(c, f, ok)
			case <-tick.C:
				up.Chat.Post("", fmt.Sprint("after ", n))
				n++
			case <-ctx.Done():
				t.Fatalf("%s: gw1's client has seen up to %d, gw2's %d, of %d posted\ngw1's log:\n%s\ngw2's log:\n%s",
					what, after[b], after[c], n, gws[1].stderr.String(), gws[2].stderr.String())
			}
		}
	}
	post(2, "before the owner died")
	gws[0].kill(t)
	first.rest(t) // the connection is gone with the process
	// What was posted from now on can only come through a new owner.
	post(n, "after the owner died")

	// One of the two has taken the subscription over.
	var owners []string
	for _, g := range gws[1:] {
		if line := g.logLine(took); line != "" {
			owners = append(owners, g.name)
		}
	}
	if len(owners) != 1 {
		t.Errorf("%v took the subscription over, want one of gw1 and gw2", owners)
	}

	// From now on both get everything, with the same ids.
	finals := []string{"f0", "f1", "f2", "f3", "f4"}
	for _, content := range finals {
		up.Chat.Post("", content)
	}
	var finalIDs []clusterResult
	for i, cl := range []*sseClient{b, c} {
		for j, content := range finals {
			var r clusterResult
			for {
				f := cl.next(t)
				if f == comment {
					continue
				}
				if r = parseResult(t, cl.name, f); strings.HasPrefix(r.content, "after ") {
					check(cl, f, true) // posted before, still on its way
					continue
				}
				break
			}
			prev := last[cl]
			if r.content != content || r.token != prev.token || r.seq <= prev.seq {
				t.Fatalf("%s: %q, id %s.%d, after %q, id %s.%d: want %q, with a later id", cl.name, r.content, r.token, r.seq, prev.content, prev.token, prev.seq, content)
			}
			last[cl] = r
			if i == 0 {
				finalIDs = append(finalIDs, r)
			} else if r != finalIDs[j] {
				t.Errorf("%s: %+v, gw1's client %+v", cl.name, r, finalIDs[j])
			}
		}
	}
	if err := up.WaitSubscriptions(boundedCtx(t), 1); err != nil {
		t.Errorf("the upstream holds %d subscriptions, want 1", up.Subscriptions())
	}
	if conns := up.Conns(); len(conns) != 2 {
		t.Errorf("the upstream had %d connections, want 2: gw0's and the new owner's", len(conns))
	}

	// The survivors shut down cleanly: their clients get the end frame, the
	// processes exit 0 (with no data race under -race).
	for i, g := range gws[1:] {
		if err := g.stop(t); err != nil {
			t.Errorf("%s exited with %v\n%s", g.name, err, g.stderr.String())
		}
		if rest := withoutHeartbeats(clients[i+1].rest(t)); rest != shutdownErr+completeEvt {
			t.Errorf("%s: the stream ended with %q, want %q", clients[i+1].name, rest, shutdownErr+completeEvt)
		}
	}
	if err := up.WaitSubscriptions(boundedCtx(t), 0); err != nil {
		t.Errorf("the upstream still holds %d subscriptions", up.Subscriptions())
	}
	for _, g := range gws {
		out := g.stdout.String() + g.stderr.String()
		for what, bad := range map[string]string{"the cluster's password": password, "a data race": "DATA RACE", "a panic": "panic:"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s printed %s:\n%s", g.name, what, out)
			}
		}
	}
	var exit *exec.ExitError
	if !errors.As(gws[0].err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("gw0 ended with %v, want SIGKILL", gws[0].err)
	}
}

// TestClusterCredentials: the gateway joins a cluster whose NATS server
// wants credentials, given by -cluster-creds or in the URL; with none, or
// wrong ones, its streams end with UPSTREAM_UNAVAILABLE at the reconnect
// limit. No seed, JWT or password shows in anything the gateway prints or
// logs.
func TestClusterCredentials(t *testing.T) {
	ops := writeFiles(t, t.TempDir(), chatOps)
	// stream opens the stream of messages, gets a message posted once the
	// upstream has its subscription, and stops the gateway.
	stream := func(t *testing.T, up *gqlpushtest.Server, g *gateway) {
		t.Helper()
		c := followURL(t, g.client, "client", g.base+"/operations/Messages?wg_sse=true")
		if err := up.WaitSubscriptions(boundedCtx(t), 1); err != nil {
			t.Fatalf("the upstream holds %d subscriptions, want 1", up.Subscriptions())
		}
		// The stream may start reading the cluster's stream after the
		// first posts: they are posted until one comes.
		ctx := boundedCtx(t)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for got := false; !got; {
			up.Chat.Post("", "hello")
			select {
			case f, ok := <-c.frames:
				if !ok {
					t.Fatalf("the stream ended (%v)", c.err)
				}
				if r := parseResult(t, c.name, f); r.content != "hello" {
					t.Fatalf("got %q, want hello", f)
				}
				got = true
			case <-tick.C:
			case <-ctx.Done():
				t.Fatal("no result")
			}
		}
		if err := g.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		// Results posted meanwhile may come before the end.
		rest := withoutHeartbeats(c.rest(t))
		for strings.HasPrefix(rest, "id: ") {
			_, rest, _ = strings.Cut(rest, "\n\n")
		}
		if rest != shutdownErr+completeEvt {
			t.Errorf("stream ended with %q, want %q", rest, shutdownErr+completeEvt)
		}
	}
	unavailableEnd := func(t *testing.T, g *gateway) {
		t.Helper()
		s := g.open(t, "/operations/Messages?wg_sse=true")
		rest := withoutHeartbeats(s.rest(t))
		if !strings.HasPrefix(rest, "data: {\"errors\":[") || !strings.Contains(rest, unavailable) || !strings.HasSuffix(rest, "\n\n"+completeEvt) {
			t.Errorf("stream ended with %q, want an error frame with %s, then %q", rest, unavailable, completeEvt)
		}
		if err := g.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
	}

	t.Run("creds", func(t *testing.T) {
		ns, acc := startOperatorNATS(t, true)
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-cluster", ns.ClientURL(), "-cluster-creds", acc.creds)
		stream(t, up, g)
		checkNoSecrets(t, g, acc.seed, acc.jwt)

		// Without them, the server lets the gateway in nowhere.
		g = startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-cluster", ns.ClientURL(), "-reconnect-limit", "100ms")
		unavailableEnd(t, g)
	})

	t.Run("password", func(t *testing.T) {
		const user, password, wrong = "gw", "pw-5e1c0a9d7b3f", "pw-wrong-2b8e4d6c"
		ns := startNATS(t, server.Options{JetStream: true, StoreDir: t.TempDir(), Username: user, Password: password})
		up := gqlpushtest.NewServer(nil)
		t.Cleanup(up.Close)
		g := startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-cluster", "nats://"+user+":"+password+"@"+natsHostPort(ns))
		stream(t, up, g)
		checkNoSecrets(t, g, password)

		g = startGateway(t, "-operations", ops, "-upstream", "gql="+up.URL, "-heartbeat", "1h", "-cluster", "nats://"+user+":"+wrong+"@"+natsHostPort(ns), "-reconnect-limit", "100ms")
		unavailableEnd(t, g)
		checkNoSecrets(t, g, wrong)
	})
}
