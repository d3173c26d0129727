package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"go.uber.org/goleak"
)

// mainEnv makes the test binary run the gateway's main, with the arguments
// it is given, instead of the tests: TestClusterFailover runs gateways in
// processes of their own, to kill one.
const mainEnv = "GQLPUSH_GATEWAY_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main() // exits
	}
	goleak.VerifyTestMain(m)
}

// waitTime bounds every wait. It is generous on purpose: the tests wait for
// events, never for durations, and must pass on a slow, loaded machine.
const waitTime = 30 * time.Second

// Frames of the wire format.
const (
	comment     = ":\n\n"
	completeEvt = "event: complete\ndata: \n\n"
	shutdownErr = `data: {"errors":[{"message":"server shutting down","extensions":{"code":"SHUTTING_DOWN"}}]}` + "\n\n"
)

// eventID matches the id line of an SSE result: the token that names the
// shared subscription (16 lowercase base32 characters), a dot, and the
// sequence number of the result, from 0.
var eventID = regexp.MustCompile(`(?m)^id: ([a-z2-7]{16})\.([0-9]+)$`)

// idNames normalises event ids so that frames compare byte for byte: each
// token becomes TOKEN1, TOKEN2, … in the order it first appears, and the
// sequence number stays. Frames normalised by one idNames show whether they
// share a token. Anything but a well-formed id is left as it is, and so
// fails the comparison.
type idNames map[string]string

func (n idNames) norm(s string) string {
	return eventID.ReplaceAllStringFunc(s, func(line string) string {
		m := eventID.FindStringSubmatch(line)
		name, ok := n[m[1]]
		if !ok {
			name = fmt.Sprintf("TOKEN%d", len(n)+1)
			n[m[1]] = name
		}
		return "id: " + name + "." + m[2]
	})
}

// normIDs normalises the ids of one response.
func normIDs(s string) string { return idNames{}.norm(s) }

// eventIDOf returns the raw id of a result frame, for Last-Event-ID.
func eventIDOf(t *testing.T, frame string) string {
	t.Helper()
	m := eventID.FindStringSubmatch(frame)
	if m == nil {
		t.Fatalf("frame %q has no id line", frame)
	}
	return m[1] + "." + m[2]
}

// writeFiles writes files (slash paths relative to dir) and returns dir.
func writeFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConfigErrors(t *testing.T) {
	// Every case also asks to listen on an address that is taken: a case that
	// got as far as listening would fail with a listen error (status 1),
	// not with the usage error (status 2) it must report first.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tmp := t.TempDir()
	good := writeFiles(t, filepath.Join(tmp, "good"), map[string]string{
		"Messages.graphql": "subscription { gql_messageCreated { id } }\n",
	})
	broken := writeFiles(t, filepath.Join(tmp, "broken"), map[string]string{
		"Good.graphql":        "subscription { gql_messageCreated { id } }\n",
		"chat/Broken.graphql": "# a mutation is not served\nmutation {\n  gql_postMessage(content: \"x\") { id }\n}\n",
	})
	unrouted := writeFiles(t, filepath.Join(tmp, "unrouted"), map[string]string{
		"Other.graphql": "subscription {\n  other_messageCreated { id }\n}\n",
	})
	invalid := writeFiles(t, filepath.Join(tmp, "invalid"), map[string]string{
		"Nope.graphql": "subscription {\n  gql_messageCreated { id nope }\n}\n",
	})
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	schema := filepath.Join(writeFiles(t, filepath.Join(tmp, "schema"), map[string]string{"chat.graphql": gqlpushtest.ChatSchema}), "chat.graphql")
	missing := filepath.Join(tmp, "missing.graphql")
	const up = "gql=ws://127.0.0.1:1/graphql" // never dialled

	tests := []struct {
		name    string
		args    []string
		want    []string // in the message
		notWant string
	}{
		{name: "unknown flag", args: []string{"-bogus", "-operations", good, "-upstream", up},
			want: []string{"flag provided but not defined: -bogus"}},
		{name: "bad duration", args: []string{"-heartbeat", "soon", "-operations", good, "-upstream", up},
			want: []string{`invalid value "soon" for flag -heartbeat`}},
		{name: "positional argument", args: []string{"-operations", good, "-upstream", up, "extra"},
			want: []string{`unexpected argument "extra"`}},
		{name: "missing -operations", args: []string{"-upstream", up},
			want: []string{"-operations DIR is required"}},
		{name: "missing -upstream", args: []string{"-operations", good},
			want: []string{"-upstream [NAME=]URL is required"}},
		// What gqlpush refuses is reported under the flag that gave it,
		// in gqlpush's words.
		{name: "http upstream", args: []string{"-operations", good, "-upstream", "gql=http://127.0.0.1/graphql"},
			want: []string{`-upstream: gqlpush: upstream "gql": URL has the scheme "http", not ws or wss`}},
		{name: "upstream password stays out", args: []string{"-operations", good, "-upstream", "https://user:hunter2@example.com/graphql?token=abc123"},
			want: []string{`-upstream: gqlpush: upstream #1: URL has the scheme "https"`}, notWant: "hunter2"},
		{name: "upstream query stays out", args: []string{"-operations", good, "-upstream", "gql=ftp://example.com/graphql?token=abc123"},
			want: []string{`-upstream: gqlpush: upstream "gql": URL has the scheme "ftp"`}, notWant: "abc123"},
		{name: "upstream without host", args: []string{"-operations", good, "-upstream", "gql=ws:///graphql"},
			want: []string{`-upstream: gqlpush: upstream "gql": URL is not an absolute URL`}},
		{name: "upstream without scheme", args: []string{"-operations", good, "-upstream", "127.0.0.1:8080/graphql"},
			want: []string{"-upstream: gqlpush: upstream #1: URL is not an absolute URL"}},
		{name: "upstream with a bad port", args: []string{"-operations", good, "-upstream", "gql=ws://user:hunter2@h:port/graphql"},
			want: []string{`-upstream: gqlpush: upstream "gql": URL is not an absolute URL`}, notWant: "hunter2"},
		{name: "upstream without URL", args: []string{"-operations", good, "-upstream", "gql="},
			want: []string{`-upstream: gqlpush: upstream "gql": URL is required`}},
		{name: "upstream bad name", args: []string{"-operations", good, "-upstream", "my-api=ws://127.0.0.1:1/graphql"},
			want: []string{`-upstream: gqlpush: upstream "my-api": Name is not letters, digits and underscores`}},
		{name: "duplicate upstream names", args: []string{"-operations", good, "-upstream", up, "-upstream", "gql=ws://127.0.0.1:2/graphql"},
			want: []string{`-upstream: gqlpush: upstream "gql": Name is another upstream's too`}},
		{name: "two unnamed upstreams", args: []string{"-operations", good, "-upstream", up, "-upstream", "ws://127.0.0.1:2/graphql", "-upstream", "=ws://127.0.0.1:3/graphql"},
			want: []string{"-upstream: gqlpush: upstream #3: Name is empty, as another upstream's is"}},
		{name: "schema for unknown upstream", args: []string{"-operations", good, "-upstream", up, "-schema", "other=" + schema},
			want: []string{"-schema other=", `no -upstream is named "other"`}},
		{name: "schema for missing unnamed upstream", args: []string{"-operations", good, "-upstream", up, "-schema", "=" + schema},
			want: []string{"no -upstream is unnamed"}},
		{name: "schema without name", args: []string{"-operations", good, "-upstream", up, "-schema", schema},
			want: []string{"want NAME=FILE"}},
		{name: "two schemas for one upstream", args: []string{"-operations", good, "-upstream", up, "-schema", "gql=" + schema, "-schema", "gql=" + schema},
			want: []string{"a second schema for gql"}},
		{name: "unreadable schema", args: []string{"-operations", good, "-upstream", up, "-schema", "gql=" + missing},
			want: []string{"-schema gql=", missing, "no such file"}},
		{name: "invalid schema", args: []string{"-operations", good, "-upstream", up, "-schema", "gql=" + filepath.Join(good, "Messages.graphql")},
			want: []string{`-schema: gqlpush: upstream "gql": Schema `}},
		{name: "operations dir missing", args: []string{"-operations", filepath.Join(tmp, "nowhere"), "-upstream", up},
			want: []string{"-operations", filepath.Join(tmp, "nowhere"), "no such file"}},
		{name: "operations dir is a file", args: []string{"-operations", schema, "-upstream", up},
			want: []string{schema, "not a directory"}},
		{name: "operations dir empty", args: []string{"-operations", empty, "-upstream", up},
			want: []string{"no *.graphql files"}},
		{name: "broken operation", args: []string{"-operations", broken, "-upstream", up},
			want: []string{filepath.Join(broken, "chat", "Broken.graphql") + ":2:1", "operation is a mutation: only subscriptions and queries are served"}},
		{name: "operation for no upstream", args: []string{"-operations", unrouted, "-upstream", up},
			want: []string{filepath.Join(unrouted, "Other.graphql") + ":2:3", "other_messageCreated names no configured upstream"}},
		{name: "operation invalid against schema", args: []string{"-operations", invalid, "-upstream", up, "-schema", "gql=" + schema},
			want: []string{filepath.Join(invalid, "Nope.graphql") + ":2:", "nope"}},

		{name: "unknown protocol", args: []string{"-operations", good, "-upstream", up, "-protocol", "graphql-mqtt"},
			want: []string{`-protocol: gqlpush: upstream "gql": Protocol "graphql-mqtt" is not auto, graphql-transport-ws, graphql-ws or graphql-sse`}},
		{name: "unknown protocol of an upstream", args: []string{"-operations", good, "-upstream", "ws://127.0.0.1:2/graphql", "-upstream", up, "-protocol", "gql=websocket"},
			want: []string{`-protocol: gqlpush: upstream "gql": Protocol "websocket" is not`}},
		{name: "unknown protocol of the unnamed upstream", args: []string{"-operations", good, "-upstream", up, "-upstream", "ws://127.0.0.1:2/graphql", "-protocol", "=graphql-mqtt"},
			want: []string{`-protocol: gqlpush: upstream #2: Protocol "graphql-mqtt" is not`}},
		{name: "protocol not in lower case", args: []string{"-operations", good, "-upstream", up, "-protocol", "gql=Auto"},
			want: []string{`-protocol: gqlpush: upstream "gql": Protocol "Auto" is not`}},
		{name: "empty protocol", args: []string{"-operations", good, "-upstream", up, "-protocol", ""},
			want: []string{"-protocol : no PROTOCOL; leave the flag out for auto"}},
		{name: "empty protocol of an upstream", args: []string{"-operations", good, "-upstream", up, "-protocol", "gql="},
			want: []string{"-protocol gql=: no PROTOCOL"}},
		{name: "protocol for unknown upstream", args: []string{"-operations", good, "-upstream", up, "-protocol", "other=graphql-ws"},
			want: []string{"-protocol other=graphql-ws", `no -upstream is named "other"`}},
		{name: "protocol for missing unnamed upstream", args: []string{"-operations", good, "-upstream", up, "-protocol", "=graphql-ws"},
			want: []string{"-protocol =graphql-ws", "no -upstream is unnamed"}},
		{name: "two protocols for one upstream", args: []string{"-operations", good, "-upstream", up, "-protocol", "gql=auto", "-protocol", "gql=graphql-ws"},
			want: []string{"-protocol gql=graphql-ws: a second -protocol for gql"}},
		{name: "two protocols for every upstream", args: []string{"-operations", good, "-upstream", up, "-protocol", "graphql-ws", "-protocol", "auto"},
			want: []string{"-protocol auto: a second -protocol for every upstream"}},
		{name: "queue not a number", args: []string{"-operations", good, "-upstream", up, "-queue", "many"},
			want: []string{`invalid value "many" for flag -queue`}},
		{name: "queue too large", args: []string{"-operations", good, "-upstream", up, "-queue", "99999999999999999999"},
			want: []string{`invalid value "99999999999999999999" for flag -queue`, "out of range"}},
		{name: "negative queue", args: []string{"-operations", good, "-upstream", up, "-queue", "-1"},
			want: []string{"-queue: gqlpush: Config.QueueSize is negative"}},
		{name: "negative queue bytes", args: []string{"-operations", good, "-upstream", up, "-queue-bytes", "-1"},
			want: []string{"-queue-bytes: gqlpush: Config.QueueBytes is negative"}},
		{name: "queue bytes not a number", args: []string{"-operations", good, "-upstream", up, "-queue-bytes", "1MiB"},
			want: []string{`invalid value "1MiB" for flag -queue-bytes`}},
		{name: "negative max conns", args: []string{"-operations", good, "-upstream", up, "-max-conns", "-1"},
			want: []string{"-max-conns -1: must not be negative (0 sets no cap)"}},
		{name: "write timeout without unit", args: []string{"-operations", good, "-upstream", up, "-write-timeout", "10"},
			want: []string{`invalid value "10" for flag -write-timeout`}},
		{name: "negative write timeout", args: []string{"-operations", good, "-upstream", up, "-write-timeout", "-1s"},
			want: []string{"-write-timeout: gqlpush: Config.WriteTimeout is negative"}},
		{name: "negative once timeout", args: []string{"-operations", good, "-upstream", up, "-once-timeout", "-1s"},
			want: []string{"-once-timeout: gqlpush: Config.OnceTimeout is negative"}},
		{name: "once timeout without unit", args: []string{"-operations", good, "-upstream", up, "-once-timeout", "30"},
			want: []string{`invalid value "30" for flag -once-timeout`}},
		{name: "reconnect limit not a duration", args: []string{"-operations", good, "-upstream", up, "-reconnect-limit", "forever"},
			want: []string{`invalid value "forever" for flag -reconnect-limit`}},
		{name: "resume frames not an integer", args: []string{"-operations", good, "-upstream", up, "-resume-frames", "1.5"},
			want: []string{`invalid value "1.5" for flag -resume-frames`}},
		{name: "resume grace without unit", args: []string{"-operations", good, "-upstream", up, "-resume-grace", "5"},
			want: []string{`invalid value "5" for flag -resume-grace`}},
		{name: "negative resume grace", args: []string{"-operations", good, "-upstream", up, "-resume-grace", "-2s"},
			want: []string{"-resume-grace: gqlpush: Config.ResumeGrace is negative"}},
		{name: "drain not a duration", args: []string{"-operations", good, "-upstream", up, "-drain", "1x"},
			want: []string{`invalid value "1x" for flag -drain`}},
		{name: "tls key without cert", args: []string{"-operations", good, "-upstream", up, "-tls-key", schema},
			want: []string{"-tls-key: only with -tls-cert"}},
		{name: "tls cert without key", args: []string{"-operations", good, "-upstream", up, "-tls-cert", schema},
			want: []string{"-tls-cert: needs -tls-key"}},
		{name: "tls files missing", args: []string{"-operations", good, "-upstream", up, "-tls-cert", filepath.Join(tmp, "nowhere.pem"), "-tls-key", filepath.Join(tmp, "nowhere.key")},
			want: []string{"-tls-cert " + filepath.Join(tmp, "nowhere.pem"), "no such file"}},
		{name: "tls files not PEM", args: []string{"-operations", good, "-upstream", up, "-tls-cert", schema, "-tls-key", schema},
			want: []string{"-tls-cert " + schema, "PEM"}},
		{name: "h2c with tls", args: []string{"-operations", good, "-upstream", up, "-h2c", "-tls-cert", schema, "-tls-key", schema},
			want: []string{"-h2c: only without -tls-cert"}},
		{name: "metrics without port", args: []string{"-operations", good, "-upstream", up, "-metrics", "localhost"},
			want: []string{`-metrics "localhost": want HOST:PORT`}},
		{name: "metrics on the listen address", args: []string{"-operations", good, "-upstream", up, "-metrics", busy.Addr().String()},
			want: []string{"-metrics " + busy.Addr().String() + ": the same address as -listen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var notWant []string
			if tc.notWant != "" {
				notWant = []string{tc.notWant}
			}
			checkUsageError(t, busy.Addr().String(), tc.args, tc.want, notWant)
		})
	}
}

// checkUsageError runs the gateway with args, asking it to listen on busy,
// an address that is taken: a run that got as far as listening would fail
// with a listen error (status 1), not with the usage error (status 2) it
// must report first. The message must hold every want and no notWant, and
// nothing else may be printed or logged.
func checkUsageError(t *testing.T, busy string, args, want, notWant []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	var stdout, stderr, report bytes.Buffer
	args = append([]string{"-listen", busy}, args...)
	err := run(ctx, args, &stdout, &stderr)
	if code := exitCode(err, &report); code != 2 {
		t.Fatalf("exit status %d, want 2; error: %v", code, err)
	}
	msg := report.String()
	if !strings.HasPrefix(msg, "gateway: ") {
		t.Errorf("message %q does not start with gateway: ", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not contain %q", msg, w)
		}
	}
	for _, w := range notWant {
		if strings.Contains(msg, w) {
			t.Errorf("message %q contains %q", msg, w)
		}
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout %q, want nothing (no listening line, no usage)", stdout.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr %q, want nothing logged", stderr.String())
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 {
		t.Fatalf("exit status %d (%v), want 0", code, err)
	}
	for _, w := range []string{"usage: gateway", "-listen ADDR", "-upstream [NAME=]URL", "-operations DIR", "-schema NAME=FILE", "-heartbeat",
		"-protocol [NAME=]PROTOCOL", "-metrics ADDR", "http://ADDR/metrics", "-queue N", "-write-timeout D", "-reconnect-limit D",
		"-resume-frames N", "-resume-grace D", "-once-timeout D", "-drain D",
		"-jwt-secret-file FILE", "-jwks URL|FILE", "-jwt-issuer ISS", "-jwt-audience AUD", "-jwt-leeway D", "-auth-cookie NAME", "-roles-claim NAME",
		"-forward-header NAME", "-max-streams N", "-max-streams-per-principal N", "-cors-origin ORIGIN", "-client-ip-header NAME",
		"-queue-bytes N", "-max-conns N", "-max-anonymous-streams N", "-max-subscriptions N", "-max-upstream-conns N", "-trusted-proxy CIDR",
		"request heads (64 KiB)", "wg_subscribe_once", "exp plus -jwt-leeway", quickStart,
		"-nats-creds NAME=FILE", "nats://", "tls://", "@natsSubscribe",
		"-cluster URL", "-cluster-name NAME", "-cluster-instance NAME", "-cluster-lease D", "-resume-max-age D", "-cluster-creds FILE", "Last-Event-ID",
		"-tls-cert FILE", "-tls-key FILE", "-h2c", "-live-interval D", "-query-timeout D", "-max-response-bytes N"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("usage does not mention %q:\n%s", w, stdout.String())
		}
	}
	// The defaults shown are the library's.
	flags := helpFlags(stdout.String())
	for name, want := range map[string]string{
		"listen":          `(default "127.0.0.1:9992")`,
		"once-timeout":    fmt.Sprintf("(default %v)", gqlpush.DefaultOnceTimeout),
		"jwt-leeway":      fmt.Sprintf("(default %v)", gqlpushjwt.DefaultLeeway),
		"heartbeat":       fmt.Sprintf("(default %v)", gqlpush.DefaultHeartbeat),
		"queue":           fmt.Sprintf("(default %d)", gqlpush.DefaultQueueSize),
		"write-timeout":   fmt.Sprintf("(default %v)", gqlpush.DefaultWriteTimeout),
		"reconnect-limit": fmt.Sprintf("(default %v)", gqlpush.DefaultReconnectLimit),
		"resume-frames":   fmt.Sprintf("(default %d)", gqlpush.DefaultResumeFrames),
		"drain":           fmt.Sprintf("(default %v)", gqlpush.DefaultDrainWindow),
		"protocol":        "Default auto.",
		"resume-grace":    "0 (the default) stops it at once",
		"metrics":         "empty serves none",
		"auth-cookie":     fmt.Sprintf("(default %q)", gqlpushjwt.DefaultCookie),
		"roles-claim":     fmt.Sprintf("(default %q)", gqlpushjwt.DefaultRolesClaim),
		"max-streams":     "0 sets no cap",
		"cors-origin":     "* is refused",
		"queue-bytes":     fmt.Sprintf("(default %d)", gqlpush.DefaultQueueBytes),
		"max-conns":       "(default 10000)",
		// What an operator must read before naming a header or a proxy.
		"client-ip-header":      "without trusted proxies, anyone can write any address in it",
		"trusted-proxy":         "rightmost address",
		"max-upstream-conns":    "With -forward-header",
		"max-anonymous-streams": "at most -max-streams",
		"max-subscriptions":     "0 sets no cap",
		// What an operator must know of NATS upstreams.
		"upstream":   "nats://USER:PASSWORD@HOST",
		"nats-creds": "so it can be replaced in place",
		"schema":     "required for a NATS upstream",
		// What an operator must know of a cluster.
		"cluster":          "JetStream",
		"cluster-name":     fmt.Sprintf("(default %q)", gqlpush.DefaultClusterName),
		"cluster-instance": "by default a random",
		"cluster-lease":    fmt.Sprintf("(default %v)", gqlpush.DefaultClusterLease),
		"resume-max-age":   fmt.Sprintf("(default %v)", gqlpush.DefaultResumeMaxAge),
		"cluster-creds":    "as for -nats-creds",
	} {
		text, ok := flags[name]
		if !ok {
			t.Errorf("usage has no -%s", name)
			continue
		}
		if !strings.Contains(text, want) {
			t.Errorf("-%s: %q does not say %q", name, text, want)
		}
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr %q, want nothing", stderr.String())
	}
}

// helpFlags splits the flag list of the usage text by flag name.
func helpFlags(usage string) map[string]string {
	flags := map[string]string{}
	name := ""
	for _, line := range strings.Split(usage, "\n") {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(rest, " ")
		}
		if name != "" {
			flags[name] += line + "\n"
		}
	}
	return flags
}

// TestParseUpstream checks how an -upstream value splits into a name and a
// URL; what gqlpush makes of them is TestConfigErrors's.
func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in, name, url string
	}{
		{"ws://127.0.0.1:8080/graphql", "", "ws://127.0.0.1:8080/graphql"},
		{"gql=ws://127.0.0.1:8080/graphql", "gql", "ws://127.0.0.1:8080/graphql"},
		{"=wss://api.example.com/graphql", "", "wss://api.example.com/graphql"},
		{"wss://api.example.com/graphql?token=a=b", "", "wss://api.example.com/graphql?token=a=b"},
		{"api_2=wss://api.example.com/graphql?token=t", "api_2", "wss://api.example.com/graphql?token=t"},
		{"gql=", "gql", ""},
		{"", "", ""},
		{"127.0.0.1:8080/graphql", "", "127.0.0.1:8080/graphql"},
	}
	for _, tc := range tests {
		u := parseUpstream(tc.in)
		if u.Name != tc.name || u.URL != tc.url {
			t.Errorf("%q: got name %q URL %q, want %q %q", tc.in, u.Name, u.URL, tc.name, tc.url)
		}
	}
}

// TestEndToEnd runs the gateway in front of the in-process upstream, with a
// named and an unnamed upstream (the same server twice), streams, and shuts
// it down as SIGTERM would, with a stream open.
func TestEndToEnd(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"ops/Messages.graphql":       "subscription Messages {\n  messageCreated { id content }\n}\n",
		"ops/chat/Countdown.graphql": "subscription ($from: Int!) { gql_countdown(from: $from) }\n",
		"chat.graphql":               gqlpushtest.ChatSchema,
	})
	schema := filepath.Join(dir, "chat.graphql")
	g := startGateway(t,
		"-operations", filepath.Join(dir, "ops"),
		"-upstream", up.URL, "-schema", "="+schema,
		"-upstream", "gql="+up.URL, "-schema", "gql="+schema,
		"-heartbeat", "50ms")

	resp, body := g.get(t, "/healthz")
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("/healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}
	resp, body = g.get(t, "/operations/Nope")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"NOT_FOUND"`) {
		t.Errorf("unknown operation: %d %q, want 404 NOT_FOUND", resp.StatusCode, body)
	}
	// The schema checks variables per request.
	resp, body = g.get(t, "/operations/chat/Countdown?from=three")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":"BAD_USER_INPUT"`) {
		t.Errorf("bad variable: %d %q, want 400 BAD_USER_INPUT", resp.StatusCode, body)
	}
	resp, body = g.get(t, "/operations/chat/Countdown?wg_subscribe_once=true&from=3")
	if want := `{"data":{"gql_countdown":3}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("once: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("once: Content-Type %q", ct)
	}
	resp, body = g.get(t, "/operations/chat/Countdown?wg_sse=true&from=2")
	want := "id: TOKEN1.0\n" + `data: {"data":{"gql_countdown":2}}` + "\n\n" +
		"id: TOKEN1.1\n" + `data: {"data":{"gql_countdown":1}}` + "\n\n" +
		completeEvt
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, comment) || normIDs(withoutHeartbeats(body)) != want {
		t.Errorf("countdown: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	// A one-shot SSE stream has no id: there is nothing to resume.
	resp, body = g.get(t, "/operations/chat/Countdown?wg_sse=true&wg_subscribe_once=true&from=5")
	want = `data: {"data":{"gql_countdown":5}}` + "\n\n" + completeEvt
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, comment) || withoutHeartbeats(body) != want {
		t.Errorf("once, SSE: %d %q, want 200 %q", resp.StatusCode, body, want)
	}

	s := g.open(t, "/operations/Messages?wg_sse=true")
	if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", s.resp.StatusCode, ct)
	}
	if f := s.frame(t); f != comment {
		t.Fatalf("first frame %q, want %q", f, comment)
	}
	// Nothing is posted yet: the next frame is the heartbeat of -heartbeat.
	if f := s.frame(t); f != comment {
		t.Fatalf("second frame %q, want the heartbeat %q", f, comment)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 1); err != nil {
		t.Fatalf("upstream runs %d subscriptions, want 1", up.Subscriptions())
	}
	up.Chat.Post("", "hello")
	want = "id: TOKEN1.0\n" + `data: {"data":{"messageCreated":{"id":"1","content":"hello"}}}` + "\n\n"
	if f := s.dataFrame(t); normIDs(f) != want {
		t.Fatalf("got %q, want %q", f, want)
	}

	// SIGTERM: the open stream gets its end frame, run returns nil.
	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if rest := withoutHeartbeats(s.rest(t)); rest != shutdownErr+completeEvt {
		t.Errorf("stream ended with %q, want %q", rest, shutdownErr+completeEvt)
	}
	if err := up.WaitSubscriptions(ctx, 0); err != nil {
		t.Errorf("upstream still runs %d subscriptions", up.Subscriptions())
	}
	log := g.stderr.String()
	for _, w := range []string{"gateway listening", "shutting down", "gateway stopped"} {
		if !strings.Contains(log, w) {
			t.Errorf("log does not mention %q:\n%s", w, log)
		}
	}
	if strings.Contains(log, up.URL) {
		t.Errorf("log holds the upstream URL:\n%s", log)
	}
}

// withoutHeartbeats removes every comment frame: the first frame of a
// stream and the heartbeats, which come whenever the stream is idle.
func withoutHeartbeats(s string) string {
	var b strings.Builder
	for _, f := range strings.SplitAfter(s, "\n\n") {
		if f != comment {
			b.WriteString(f)
		}
	}
	return b.String()
}

// A gateway is run serving in the background of a test.
type gateway struct {
	base    string // http://127.0.0.1:port
	metrics string // http://127.0.0.1:port/metrics, with -metrics
	client  *http.Client
	stdout  *readyWriter
	stderr  *syncBuffer

	cancel  context.CancelFunc
	done    chan error // run's result
	stopped bool
	err     error
}

// startGateway runs the gateway with args on a free loopback port and waits
// until it listens. It is stopped when the test ends, if not before.
func startGateway(t *testing.T, args ...string) *gateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &http.Transport{}
	g := &gateway{
		client: &http.Client{Transport: tr},
		stderr: &syncBuffer{},
		cancel: cancel,
		done:   make(chan error, 1),
	}
	out := &readyWriter{ready: make(chan string, 1)}
	g.stdout = out
	args = append([]string{"-listen", "127.0.0.1:0"}, args...)
	go func() { g.done <- run(ctx, args, out, g.stderr) }()
	t.Cleanup(func() {
		if err := g.stop(t); err != nil {
			t.Errorf("run: %v", err)
		}
		tr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.stderr.String())
		}
	})
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case g.base = <-out.ready:
		g.metrics = out.metricsURL()
	case err := <-g.done:
		g.stopped, g.err = true, err
		t.Fatalf("run returned before listening: %v\n%s", err, g.stderr.String())
	case <-timer.C:
		t.Fatal("the gateway never printed its listening address")
	}
	return g
}

// stop cancels run's context, as SIGTERM does, and returns its error.
func (g *gateway) stop(t *testing.T) error {
	t.Helper()
	if g.stopped {
		return g.err
	}
	g.cancel()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	select {
	case g.err = <-g.done:
		g.stopped = true
	case <-timer.C:
		t.Fatal("run did not return after its context ended")
	}
	return g.err
}

func (g *gateway) request(t *testing.T, ctx context.Context, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// get makes a request and reads the whole response.
func (g *gateway) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	resp := g.request(t, ctx, path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v (so far %q)", path, err, b)
	}
	return resp, string(b)
}

// A stream is one open streaming response.
type stream struct {
	resp   *http.Response
	br     *bufio.Reader
	cancel context.CancelFunc
}

// open starts a streaming request; the client leaves when the test ends or
// on close.
func (g *gateway) open(t *testing.T, path string) *stream {
	t.Helper()
	return g.openWith(t, path, nil)
}

// openWith is open with request headers, such as Last-Event-ID.
func (g *gateway) openWith(t *testing.T, path string, header http.Header) *stream {
	t.Helper()
	return g.openIn(t, context.Background(), path, header)
}

// openIn is openWith in ctx, whose values (an httptrace.ClientTrace, say)
// the request carries.
func (g *gateway) openIn(t *testing.T, parent context.Context, path string, header http.Header) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(parent, waitTime)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+path, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := g.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &stream{resp: resp, br: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	return s
}

// close leaves: the connection closes under the response.
func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// frame reads one frame, up to and including its blank line.
func (s *stream) frame(t *testing.T) string {
	t.Helper()
	f, err := gqlpushtest.NewSSEReader(s.br).Next() // reads through s.br, which rest reads too
	if err != nil {
		t.Fatalf("read frame: %v (so far %q)", err, f.Raw)
	}
	return f.Raw
}

// dataFrame reads the next frame that is not a heartbeat.
func (s *stream) dataFrame(t *testing.T) string {
	t.Helper()
	for {
		if f := s.frame(t); f != comment {
			return f
		}
	}
}

// rest reads the stream to its end.
func (s *stream) rest(t *testing.T) string {
	t.Helper()
	b, err := io.ReadAll(s.br)
	if err != nil {
		t.Fatalf("read to the end: %v (so far %q)", err, b)
	}
	return string(b)
}

// readyWriter is run's stdout: it hands over the base URL of the first
// "listening on" line, and keeps the URL of a "metrics on" line before it.
type readyWriter struct {
	ready chan string // cap 1

	mu      sync.Mutex
	buf     bytes.Buffer
	sent    bool
	metrics string
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.sent {
		return len(p), nil
	}
	for _, line := range strings.Split(w.buf.String(), "\n") {
		if u, ok := strings.CutPrefix(line, "metrics on "); ok && strings.HasSuffix(u, "/metrics") {
			w.metrics = u
		}
		u, ok := strings.CutPrefix(line, "listening on ")
		if ok && strings.HasSuffix(u, prefix) {
			w.sent = true
			w.ready <- strings.TrimSuffix(u, prefix)
			break
		}
	}
	return len(p), nil
}

// String returns what was written.
func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// metricsURL is the URL of the "metrics on" line printed before the
// listening line, "" when there was none.
func (w *readyWriter) metricsURL() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.metrics
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// jsonField reads one top-level field of a JSON object, for messages.
func jsonField(raw json.RawMessage, field string) string {
	var m map[string]json.RawMessage
	json.Unmarshal(raw, &m)
	return string(m[field])
}
