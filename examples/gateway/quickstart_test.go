package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// quickStart is the gateway's command of the quick start, run from the root
// of the repository, as the package doc and the -h text give it.
const quickStart = "go run ./examples/gateway -upstream gql=ws://127.0.0.1:9991/graphql -schema gql=examples/gateway/chat.graphql -operations examples/gateway/operations"

// quickStartUpstream is the upstream URL of quickStart: the chat upstream
// that go run ./examples/demo serves.
const quickStartUpstream = "ws://127.0.0.1:9991/graphql"

// TestChatSchemaFile: chat.graphql, the schema of the quick start, is the
// SDL of the demo's chat upstream, less the leading newline of the Go
// string.
func TestChatSchemaFile(t *testing.T) {
	b, err := os.ReadFile("chat.graphql")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(gqlpushtest.ChatSchema, "\n"); string(b) != want {
		t.Errorf("chat.graphql is not gqlpushtest.ChatSchema; copy it again. Got:\n%s\nwant:\n%s", b, want)
	}
}

// TestSampleOperations: the sample operations load, and bind to the chat
// upstream checked against chat.graphql.
func TestSampleOperations(t *testing.T) {
	cfg, err := parseConfig([]string{"-upstream", "gql=" + quickStartUpstream, "-schema", "gql=chat.graphql", "-operations", "operations"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, op := range cfg.operations {
		names = append(names, op.Name())
	}
	if want := []string{"Countdown", "MessageCount", "Messages", "Room"}; !slices.Equal(names, want) {
		t.Errorf("operations %q, want %q", names, want)
	}
	if cfg.upstreams[0].Schema != strings.TrimPrefix(gqlpushtest.ChatSchema, "\n") {
		t.Error("the upstream's schema is not chat.graphql")
	}
	h, err := gqlpush.NewHandler(cfg.handlerConfig())
	if err != nil {
		t.Fatalf("the sample operations do not bind to chat.graphql: %v", cfg.handlerError(err, false))
	}
	// It holds nothing yet.
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestQuickStartDoc: the package doc and the -h text give quickStart, whose
// upstream is where the demo serves its chat by default, and the gateway
// listens on another port by default, so that both run side by side.
func TestQuickStartDoc(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "\n//\t"+quickStart+"\n") {
		t.Errorf("the package doc does not give the quick start:\n\t%s", quickStart)
	}
	if !strings.Contains(usageHead, "\n  "+quickStart+"\n") {
		t.Errorf("the -h text does not give the quick start:\n\t%s", quickStart)
	}
	if !strings.Contains(string(src), "http://"+defaultListen+"/operations/Messages?wg_sse=true") {
		t.Errorf("the package doc's quick start does not follow the gateway at its default address %s", defaultListen)
	}

	demo := demoDefaultListen(t)
	if want := "ws://" + demo + "/graphql"; quickStartUpstream != want {
		t.Errorf("the quick start's upstream is %s; the demo serves its chat at %s", quickStartUpstream, want)
	}
	if !strings.Contains(quickStart, " gql="+quickStartUpstream+" ") {
		t.Errorf("the quick start does not name the upstream %s", quickStartUpstream)
	}
	if defaultListen == demo {
		t.Errorf("the gateway listens on %s by default, as the demo does", defaultListen)
	}
}

// demoDefaultListen reads the constant defaultListen of examples/demo.
func demoDefaultListen(t *testing.T) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "demo", "main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name != "defaultListen" || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					return v
				}
			}
		}
	}
	t.Fatal("examples/demo/main.go has no string constant defaultListen")
	return ""
}

// TestQuickStart runs the gateway as the quick start does, from the root of
// the repository with quickStart's flags, but for the address it listens on
// and the upstream: the in-process chat rather than the demo's. It streams
// from each sample operation.
func TestQuickStart(t *testing.T) {
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	args := strings.Fields(quickStart)
	if !slices.Equal(args[:3], []string{"go", "run", "./examples/gateway"}) {
		t.Fatalf("quickStart %q does not run the gateway", quickStart)
	}
	args = args[3:]
	i := slices.Index(args, "gql="+quickStartUpstream)
	if i < 0 {
		t.Fatalf("quickStart %q has no -upstream gql=%s", quickStart, quickStartUpstream)
	}
	args[i] = "gql=" + up.URL
	t.Chdir(filepath.Join("..", ".."))
	g := startGateway(t, append(args, "-heartbeat", "1h")...)

	resp, body := g.get(t, "/operations/Countdown?wg_subscribe_once=true&from=3")
	if want := `{"data":{"gql_countdown":3}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("Countdown: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	// The schema checks variables.
	resp, body = g.get(t, "/operations/Countdown?wg_subscribe_once=true&from=three")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":"BAD_USER_INPUT"`) {
		t.Errorf("Countdown from three: %d %q, want 400 BAD_USER_INPUT", resp.StatusCode, body)
	}

	// The Countdown's subscription may still be ending upstream: the two
	// counted next must be the streams'.
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := up.WaitSubscriptions(ctx, 0); err != nil {
		t.Fatalf("the upstream still runs %d subscriptions", up.Subscriptions())
	}
	all := g.openOK(t, "/operations/Messages?wg_sse=true", nil)
	room := g.openOK(t, "/operations/Room?wg_sse=true&room="+gqlpushtest.DefaultRoom, nil)
	if err := up.WaitSubscriptions(ctx, 2); err != nil {
		t.Fatalf("the upstream runs %d subscriptions, want 2", up.Subscriptions())
	}
	up.Chat.Post("", "hello")
	want := "id: TOKEN1.0\n" + `data: {"data":{"gql_messageCreated":{"id":"1","content":"hello","room":"general"}}}` + "\n\n"
	if f := all.dataFrame(t); normIDs(f) != want {
		t.Errorf("Messages: got %q, want %q", f, want)
	}
	if f := room.dataFrame(t); normIDs(f) != want {
		t.Errorf("Room: got %q, want %q", f, want)
	}
}

// TestFieldFlags checks the table from gqlpush's fields to the gateway's
// flags: every row names a field of gqlpush.Config or gqlpush.Upstream, or
// of gqlpush.Cluster as "Cluster.Field", and a flag of the gateway, and
// every field the flags set has a row.
func TestFieldFlags(t *testing.T) {
	var usage bytes.Buffer
	if _, err := parseConfig([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	flags := helpFlags(usage.String())
	configType, upstreamType, clusterType := reflect.TypeFor[gqlpush.Config](), reflect.TypeFor[gqlpush.Upstream](), reflect.TypeFor[gqlpush.Cluster]()
	table := fieldFlags()
	for field, name := range table {
		if f, ok := strings.CutPrefix(field, "Cluster."); ok {
			if _, in := clusterType.FieldByName(f); !in {
				t.Errorf("%s: not a field of gqlpush.Cluster", field)
			}
		} else {
			_, inConfig := configType.FieldByName(field)
			_, inUpstream := upstreamType.FieldByName(field)
			if inConfig == inUpstream {
				t.Errorf("%s: a field of gqlpush.Config %v, of gqlpush.Upstream %v: want one of them", field, inConfig, inUpstream)
			}
		}
		if _, ok := flags[strings.TrimPrefix(name, "-")]; !ok {
			t.Errorf("%s: the gateway has no flag %s", field, name)
		}
	}

	dir := writeFiles(t, t.TempDir(), map[string]string{"chat.graphql": gqlpushtest.ChatSchema})
	ops := writeFiles(t, filepath.Join(dir, "ops"), chatOps)
	cfg, err := parseConfig([]string{"-operations", ops, "-upstream", "gql=ws://127.0.0.1:1/graphql", "-schema", "gql=" + filepath.Join(dir, "chat.graphql"),
		"-protocol", "graphql-ws", "-heartbeat", "1s", "-queue", "1", "-queue-bytes", "1", "-write-timeout", "1s", "-reconnect-limit", "1s",
		"-resume-frames", "1", "-resume-grace", "1s", "-once-timeout", "1s", "-drain", "1s",
		"-live-interval", "1s", "-query-timeout", "1s", "-max-response-bytes", "1",
		"-max-streams", "9", "-max-streams-per-principal", "1", "-max-anonymous-streams", "1", "-max-subscriptions", "1", "-max-upstream-conns", "1",
		"-forward-header", "X-Tenant", "-cors-origin", "https://app.example.com", "-trusted-proxy", "10.0.0.0/8",
		"-cluster", "nats://127.0.0.1:4", "-cluster-name", "c", "-cluster-instance", "i", "-cluster-lease", "1s", "-resume-max-age", "1s",
		"-cluster-creds", someNATSUser(t).creds}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	hc := cfg.handlerConfig()
	checkFields := func(v reflect.Value, prefix string, own ...string) {
		t.Helper()
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || v.Field(i).IsZero() || slices.Contains(own, f.Name) {
				continue
			}
			if _, ok := table[prefix+f.Name]; !ok {
				t.Errorf("%s.%s is set by a flag, and has no row in fieldFlags", v.Type(), f.Name)
			}
		}
	}
	// Prefix is the gateway's constant; gqlpush refuses no ClientAddress;
	// the fields of Cluster have rows of their own.
	checkFields(reflect.ValueOf(hc), "", "Prefix", "ClientAddress", "Cluster")
	for _, u := range hc.Upstreams {
		checkFields(reflect.ValueOf(u), "")
	}
	if hc.Cluster == nil {
		t.Fatal("-cluster set no Cluster")
	}
	checkFields(reflect.ValueOf(*hc.Cluster), "Cluster.")
}

// TestHandlerError: a setting gqlpush refuses is a usage error named after
// its flag, that still says which kind of problem it is; one no flag sets
// is the gateway's own failure.
func TestHandlerError(t *testing.T) {
	cfg := &config{}
	err := cfg.handlerError(&gqlpush.ConfigError{Field: "QueueSize", Err: gqlpush.ErrNegative}, false)
	if code := exitCode(err, io.Discard); code != 2 {
		t.Errorf("QueueSize: exit status %d, want 2", code)
	}
	if want := "-queue: gqlpush: Config.QueueSize is negative"; err.Error() != want {
		t.Errorf("QueueSize: %q, want %q", err, want)
	}
	if !errors.Is(err, gqlpush.ErrNegative) {
		t.Errorf("QueueSize: %v is not gqlpush.ErrNegative", err)
	}
	err = cfg.handlerError(&gqlpush.ConfigError{Field: "Prefix", Err: gqlpush.ErrInvalid, Detail: "does not start with /"}, false)
	if code := exitCode(err, io.Discard); code != 1 {
		t.Errorf("Prefix: exit status %d, want 1: no flag sets it", code)
	}
}
