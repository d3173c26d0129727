package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// shopSchema is the schema of a NATS upstream: its subscription field names
// the subject that feeds it.
const shopSchema = `type Query { x: Int }
type Order { id: ID! status: String! }
type Subscription { orderUpdated(id: ID!): Order! @natsSubscribe(subjects: ["orders.{{ args.id }}.updated"]) }
`

// shopFiles are the operations (under ops/) and the schema of a NATS
// upstream named shop.
var shopFiles = map[string]string{
	"ops/OrderUpdated.graphql": "subscription ($id: ID!) { shop_orderUpdated(id: $id) { id status } }\n",
	"shop.graphql":             shopSchema,
}

// orderFrame is the SSE result frame of a message {"id":"7","status":...}
// on the upstream shop, its id normalised by normIDs.
func orderFrame(seq int, status string) string {
	return fieldFrame("shop_orderUpdated", seq, status)
}

// fieldFrame is orderFrame for the root field field.
func fieldFrame(field string, seq int, status string) string {
	return "id: TOKEN1." + strconv.Itoa(seq) + "\n" + `data: {"data":{"` + field + `":{"id":"7","status":"` + status + `"}}}` + "\n\n"
}

// unavailable is the error frame of a stream whose upstream is lost for
// good, as far as the frame's code: the message varies with the cause.
const unavailable = `"extensions":{"code":"UPSTREAM_UNAVAILABLE"}}]}`

// startNATS starts a NATS server on a loopback port of its own with opts
// (Host, Port and logging are set here), until the test ends.
func startNATS(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(waitTime) {
		t.Fatal("the NATS server did not start")
	}
	return ns
}

// natsHostPort is where ns listens, host:port.
func natsHostPort(ns *server.Server) string {
	return ns.Addr().(*net.TCPAddr).String()
}

// natsPublisher connects to ns to publish, until the test ends.
func natsPublisher(t *testing.T, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// publish publishes data on subject and waits until the server has it, so
// that what follows comes after it.
func publish(t *testing.T, nc *nats.Conn, subject, data string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(waitTime); err != nil {
		t.Fatal(err)
	}
}

// gatewaySubs lists the subjects the gateway's NATS connections (gqlpush
// names them "gqlpush") are subscribed to, sorted.
func gatewaySubs(t *testing.T, ns *server.Server) []string {
	t.Helper()
	cz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, c := range cz.Conns {
		if c.Name == "gqlpush" {
			subs = append(subs, c.Subs...)
		}
	}
	slices.Sort(subs)
	return subs
}

// waitGatewaySubs waits until the gateway's NATS subscriptions are want.
// The server tells no one when a subscription arrives: it is asked again
// until then.
func waitGatewaySubs(t *testing.T, ns *server.Server, want ...string) {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got := gatewaySubs(t, ns)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-tick.C:
		case <-timer.C:
			t.Fatalf("the gateway is subscribed to %q on NATS, want %q", got, want)
		}
	}
}

// startShopGateway runs the gateway with the NATS upstream shop at url,
// and args, and opens the stream of order 7, its first frame read.
func startShopGateway(t *testing.T, url string, args ...string) (*gateway, *stream) {
	t.Helper()
	return startNATSGateway(t, "shop", url, args...)
}

// startNATSGateway is startShopGateway for the upstream name, "" for an
// unnamed one.
func startNATSGateway(t *testing.T, name, url string, args ...string) (*gateway, *stream) {
	t.Helper()
	field := "orderUpdated"
	if name != "" {
		field = name + "_" + field
	}
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"ops/OrderUpdated.graphql": "subscription ($id: ID!) { " + field + "(id: $id) { id status } }\n",
		"schema.graphql":           shopSchema,
	})
	g := startGateway(t, append([]string{"-operations", filepath.Join(dir, "ops"),
		"-upstream", name + "=" + url, "-schema", name + "=" + filepath.Join(dir, "schema.graphql"), "-heartbeat", "1h"}, args...)...)
	return g, openOrder(t, g)
}

// openOrder opens the SSE stream of order 7 and reads its first frame.
func openOrder(t *testing.T, g *gateway) *stream {
	t.Helper()
	s := g.open(t, "/operations/OrderUpdated?id=7&wg_sse=true")
	if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", s.resp.StatusCode, ct)
	}
	if f := s.frame(t); f != comment {
		t.Fatalf("first frame %q, want %q", f, comment)
	}
	return s
}

// TestNATSEndToEnd runs the gateway in front of a NATS upstream and a
// GraphQL one at once: messages published on the order's subject reach the
// stream as results, those of another order do not, and -protocol and
// -forward-header, which name no upstream, apply to the GraphQL one alone.
func TestNATSEndToEnd(t *testing.T) {
	ns := startNATS(t, server.Options{})
	pub := natsPublisher(t, ns)
	up := gqlpushtest.NewServer(nil)
	t.Cleanup(up.Close)
	dir := writeFiles(t, t.TempDir(), shopFiles)
	writeFiles(t, dir, map[string]string{"ops/Countdown.graphql": chatOps["Countdown.graphql"]})
	g := startGateway(t, "-operations", filepath.Join(dir, "ops"),
		"-upstream", "shop="+ns.ClientURL(), "-schema", "shop="+filepath.Join(dir, "shop.graphql"),
		"-upstream", "gql="+up.URL, "-protocol", "graphql-ws", "-forward-header", "X-Tenant",
		"-heartbeat", "1h")

	s := openOrder(t, g)
	waitGatewaySubs(t, ns, "orders.7.updated")
	// Published in this order on one connection, they arrive in this
	// order: had the other order's message reached the stream, it would
	// come first.
	publish(t, pub, "orders.8.updated", `{"id":"8","status":"new"}`)
	publish(t, pub, "orders.7.updated", `{"status":"shipped","id":7,"total":3}`)
	publish(t, pub, "orders.7.updated", `{"id":"7","status":"delivered"}`)
	names := idNames{}
	for i, status := range []string{"shipped", "delivered"} {
		if f := names.norm(s.dataFrame(t)); f != orderFrame(i, status) {
			t.Fatalf("frame %d: got %q, want %q", i, f, orderFrame(i, status))
		}
	}

	// The GraphQL upstream, beside it, speaks the bare -protocol.
	resp, body := g.do(t, http.MethodGet, "/operations/Countdown?wg_subscribe_once=true&from=2", http.Header{"X-Tenant": {"acme"}})
	if want := `{"data":{"gql_countdown":2}}`; resp.StatusCode != http.StatusOK || body != want {
		t.Fatalf("Countdown: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if conns := up.Conns(); len(conns) != 1 || conns[0].Subprotocol != gqlpushtest.ProtocolLegacyWS || conns[0].Header.Get("X-Tenant") != "acme" {
		t.Errorf("the GraphQL upstream's connections: %+v, want one speaking %s with X-Tenant: acme", conns, gqlpushtest.ProtocolLegacyWS)
	}

	// SIGTERM: the stream gets its end frame, and the subscription leaves
	// NATS.
	if err := g.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if rest := withoutHeartbeats(s.rest(t)); rest != shutdownErr+completeEvt {
		t.Errorf("stream ended with %q, want %q", rest, shutdownErr+completeEvt)
	}
	waitGatewaySubs(t, ns)
	log := g.stderr.String()
	if !strings.Contains(log, "gateway listening") || !strings.Contains(log, "shop") {
		t.Errorf("the log does not tell the upstream shop:\n%s", log)
	}
	checkNoSecrets(t, g, ns.ClientURL())
}

// TestNATSURLCredentials: user and password, or a token, in the URL's user
// info (nats.go reads them there) let the gateway in; with a wrong password
// the stream ends with UPSTREAM_UNAVAILABLE at the reconnect limit. No
// password or token shows in anything the gateway prints or logs.
func TestNATSURLCredentials(t *testing.T) {
	const (
		user     = "gw"
		password = "pw-9f3c1e7a55d2b8"
		token    = "tok-4b6d0a9e21c7f3"
	)
	users := startNATS(t, server.Options{Username: user, Password: password})
	tokens := startNATS(t, server.Options{Authorization: token})

	// nobody is an address where no server listens, listed beside the
	// server's: nats.go tries the servers of a list in random order.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name     string
		upstream string // its name
		ns       *server.Server
		url      string
		secrets  []string
		pub      nats.Option
	}{
		{name: "user and password", upstream: "shop", ns: users, url: "nats://" + user + ":" + password + "@" + natsHostPort(users),
			secrets: []string{password}, pub: nats.UserInfo(user, password)},
		{name: "token", upstream: "shop", ns: tokens, url: "nats://" + token + "@" + natsHostPort(tokens),
			secrets: []string{token}, pub: nats.Token(token)},
		{name: "a list of servers", upstream: "shop", ns: users, url: "nats://" + user + ":" + password + "@" + nobody + ",nats://" + user + ":" + password + "@" + natsHostPort(users),
			secrets: []string{password}, pub: nats.UserInfo(user, password)},
		// gqlpush names an unnamed upstream by its host in logs.
		{name: "unnamed upstream", upstream: "", ns: users, url: "nats://" + user + ":" + password + "@" + natsHostPort(users),
			secrets: []string{password}, pub: nats.UserInfo(user, password)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := natsPublisher(t, tc.ns, tc.pub)
			g, s := startNATSGateway(t, tc.upstream, tc.url)
			waitGatewaySubs(t, tc.ns, "orders.7.updated")
			publish(t, pub, "orders.7.updated", `{"id":"7","status":"shipped"}`)
			field := "orderUpdated"
			if tc.upstream != "" {
				field = tc.upstream + "_" + field
			}
			if f, want := normIDs(s.dataFrame(t)), fieldFrame(field, 0, "shipped"); f != want {
				t.Fatalf("got %q, want %q", f, want)
			}
			if err := g.stop(t); err != nil {
				t.Fatalf("run: %v", err)
			}
			s.rest(t)
			checkNoSecrets(t, g, tc.secrets...)
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		const wrong = "pw-wrong-0d9e8c7b6a"
		g, s := startShopGateway(t, "nats://"+user+":"+wrong+"@"+natsHostPort(users), "-reconnect-limit", "100ms")
		rest := withoutHeartbeats(s.rest(t))
		if !strings.HasPrefix(rest, "data: {\"errors\":[") || !strings.Contains(rest, unavailable) || !strings.HasSuffix(rest, "\n\n"+completeEvt) {
			t.Errorf("stream ended with %q, want an error frame with %s, then %q", rest, unavailable, completeEvt)
		}
		if err := g.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		checkNoSecrets(t, g, wrong)
	})
}

// natsUser is a user of a NATS account, and its credentials file.
type natsUser struct {
	creds string // the file, readable by its owner alone
	jwt   string
	seed  string
}

// newNATSUser makes a user of account, the account's key pair, and writes
// its credentials file, as nsc generate creds does, into a temporary
// directory.
func newNATSUser(t *testing.T, account nkeys.KeyPair) natsUser {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = "gateway"
	token, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "gateway.creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return natsUser{creds: file, jwt: token, seed: string(seed)}
}

// startOperatorNATS starts a NATS server in operator mode, with
// decentralised JWT authentication as nsc sets it up: one account besides
// the system account, whose JWTs an in-memory resolver holds, and a user of
// that account; with js, the account may use JetStream.
func startOperatorNATS(t *testing.T, js bool) (*server.Server, natsUser) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	opPub, err := operator.PublicKey()
	must(err)
	account, err := nkeys.CreateAccount()
	must(err)
	accPub, err := account.PublicKey()
	must(err)
	system, err := nkeys.CreateAccount()
	must(err)
	sysPub, err := system.PublicKey()
	must(err)

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "test"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(operator)
	must(err)
	oc, err = jwt.DecodeOperatorClaims(opJWT)
	must(err)

	resolver := &server.MemAccResolver{}
	for _, a := range []struct {
		name, pub string
		js        bool
	}{{"shop", accPub, js}, {"SYS", sysPub, false}} {
		ac := jwt.NewAccountClaims(a.pub)
		ac.Name = a.name
		if a.js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		accJWT, err := ac.Encode(operator)
		must(err)
		must(resolver.Store(a.pub, accJWT))
	}
	opts := server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver, SystemAccount: sysPub}
	if js {
		opts.JetStream, opts.StoreDir = true, t.TempDir()
	}
	ns := startNATS(t, opts)
	return ns, newNATSUser(t, account)
}

// someNATSUser is a user of an account no server knows: its credentials
// file is well formed.
func someNATSUser(t *testing.T) natsUser {
	t.Helper()
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	return newNATSUser(t, account)
}

// TestNATSCreds: with -nats-creds, the gateway connects to a server in
// operator mode as the user of the credentials file, and streams what
// others publish in its account; without it, the server lets it in nowhere.
// The seed and the JWT show in nothing the gateway prints or logs.
func TestNATSCreds(t *testing.T) {
	ns, acc := startOperatorNATS(t, false)
	pub := natsPublisher(t, ns, nats.UserCredentials(acc.creds))

	t.Run("with -nats-creds", func(t *testing.T) {
		g, s := startShopGateway(t, ns.ClientURL(), "-nats-creds", "shop="+acc.creds)
		waitGatewaySubs(t, ns, "orders.7.updated")
		publish(t, pub, "orders.7.updated", `{"id":"7","status":"shipped"}`)
		if f := normIDs(s.dataFrame(t)); f != orderFrame(0, "shipped") {
			t.Fatalf("got %q, want %q", f, orderFrame(0, "shipped"))
		}
		if err := g.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
		if rest := withoutHeartbeats(s.rest(t)); rest != shutdownErr+completeEvt {
			t.Errorf("stream ended with %q, want %q", rest, shutdownErr+completeEvt)
		}
		if strings.Contains(g.stderr.String(), "level=WARN") {
			t.Errorf("warnings logged:\n%s", g.stderr.String())
		}
		checkNoSecrets(t, g, acc.seed, acc.jwt)
	})

	t.Run("without", func(t *testing.T) {
		g, s := startShopGateway(t, ns.ClientURL(), "-reconnect-limit", "100ms")
		rest := withoutHeartbeats(s.rest(t))
		if !strings.Contains(rest, unavailable) || !strings.HasSuffix(rest, "\n\n"+completeEvt) {
			t.Errorf("stream ended with %q, want an error frame with %s, then %q", rest, unavailable, completeEvt)
		}
		if err := g.stop(t); err != nil {
			t.Fatalf("run: %v", err)
		}
	})
}

// TestNATSFlagsToConfig checks what the flags set on NATS upstreams beside
// GraphQL ones, and that gqlpush takes it.
func TestNATSFlagsToConfig(t *testing.T) {
	dir := writeFiles(t, t.TempDir(), shopFiles)
	writeFiles(t, dir, map[string]string{"ops/Countdown.graphql": chatOps["Countdown.graphql"]})
	creds := someNATSUser(t).creds
	cfg, err := parseConfig([]string{"-operations", filepath.Join(dir, "ops"),
		"-upstream", "shop=tls://gw:secret@127.0.0.1:1,tls://127.0.0.1:2", "-schema", "shop=" + filepath.Join(dir, "shop.graphql"), "-nats-creds", "shop=" + creds,
		"-upstream", "gql=ws://127.0.0.1:3/graphql",
		"-upstream", "NATS://127.0.0.1:4", "-schema", "=" + filepath.Join(dir, "shop.graphql"),
		"-protocol", "graphql-ws", "-forward-header", "X-Tenant"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	hc := cfg.handlerConfig()
	if len(hc.Upstreams) != 3 {
		t.Fatalf("upstreams %+v", hc.Upstreams)
	}
	shop, gql, unnamed := hc.Upstreams[0], hc.Upstreams[1], hc.Upstreams[2]
	if shop.URL != "tls://gw:secret@127.0.0.1:1,tls://127.0.0.1:2" || shop.Protocol != "" || shop.ForwardHeaders != nil || len(shop.NATSOptions) != 1 || shop.Schema != shopSchema {
		t.Errorf("shop: %+v, want the URL list as given, its schema and one NATS option, no protocol, no forwarded header", shop)
	}
	if gql.Protocol != gqlpush.ProtocolLegacyWS || !slices.Equal(gql.ForwardHeaders, []string{"X-Tenant"}) || gql.NATSOptions != nil {
		t.Errorf("gql: %+v, want graphql-ws, X-Tenant forwarded, no NATS option", gql)
	}
	if unnamed.Protocol != "" || unnamed.ForwardHeaders != nil || unnamed.NATSOptions != nil {
		t.Errorf("unnamed: %+v, want no protocol, no forwarded header, no NATS option", unnamed)
	}
	if len(cfg.warnings) > 0 {
		t.Errorf("warnings %q, want none", cfg.warnings)
	}
	// gqlpush takes it; nothing is dialled before a stream needs it.
	h, err := gqlpush.NewHandler(hc)
	if err != nil {
		t.Fatal(cfg.handlerError(err, false))
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A bare -protocol that no GraphQL upstream takes, as each has a
	// -protocol of its own, is never checked: the operator is told.
	cfg, err = parseConfig([]string{"-operations", filepath.Join(dir, "ops"),
		"-upstream", "shop=nats://127.0.0.1:1", "-upstream", "gql=ws://127.0.0.1:3/graphql",
		"-protocol", "graphql-sse", "-protocol", "gql=auto"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := "-protocol graphql-sse: every GraphQL upstream has a -protocol of its own, so this one applies to none"; len(cfg.warnings) != 1 || cfg.warnings[0] != want {
		t.Errorf("warnings %q, want %q", cfg.warnings, want)
	}

	// A credentials file others may read works, with a warning.
	if err := os.Chmod(creds, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = parseConfig([]string{"-operations", filepath.Join(dir, "ops"),
		"-upstream", "shop=nats://127.0.0.1:1", "-upstream", "gql=ws://127.0.0.1:3/graphql", "-nats-creds", "shop=" + creds}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := "-nats-creds shop=" + creds + ": readable by group or others (mode -rw-r--r--); chmod 600 it"; len(cfg.warnings) != 1 || cfg.warnings[0] != want {
		t.Errorf("warnings %q, want %q", cfg.warnings, want)
	}
}

// TestNATSConfigErrors: mistakes in the flags of NATS upstreams, or in what
// they name, are usage errors under the flag that gave them, found before
// the gateway listens or connects, and show no URL credential.
func TestNATSConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	dir := writeFiles(t, t.TempDir(), shopFiles)
	ops, schema := filepath.Join(dir, "ops"), filepath.Join(dir, "shop.graphql")
	acc := someNATSUser(t)
	b, err := os.ReadFile(acc.creds)
	if err != nil {
		t.Fatal(err)
	}
	seedOnly := filepath.Join(dir, "seed.nk")
	if err := os.WriteFile(seedOnly, []byte(acc.seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jwtOnly := filepath.Join(dir, "user.jwt")
	jwtPart, _, _ := strings.Cut(string(b), "************************* IMPORTANT")
	if err := os.WriteFile(jwtOnly, []byte(jwtPart), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.creds")
	const shop = "shop=nats://gw:hunter2@127.0.0.1:1" // never dialled
	base := []string{"-operations", ops, "-upstream", shop, "-schema", "shop=" + schema}
	with := func(args ...string) []string { return append(slices.Clone(base), args...) }

	tests := []struct {
		name string
		args []string
		want []string // in the message
	}{
		{name: "creds for unknown upstream", args: with("-nats-creds", "other="+acc.creds),
			want: []string{"-nats-creds other=" + acc.creds + `: no -upstream is named "other"`}},
		{name: "creds for missing unnamed upstream", args: with("-nats-creds", "="+acc.creds),
			want: []string{"-nats-creds =" + acc.creds + ": no -upstream is unnamed"}},
		{name: "creds for a GraphQL upstream", args: with("-upstream", "gql=ws://127.0.0.1:2/graphql", "-nats-creds", "gql="+acc.creds),
			want: []string{"-nats-creds gql=" + acc.creds + ": upstream gql is not a NATS upstream: its URL is not nats:// or tls://"}},
		{name: "creds without name", args: with("-nats-creds", acc.creds),
			want: []string{`-nats-creds "` + acc.creds + `": want NAME=FILE`}},
		{name: "two creds for one upstream", args: with("-nats-creds", "shop="+acc.creds, "-nats-creds", "shop="+acc.creds),
			want: []string{"-nats-creds shop=" + acc.creds + ": a second -nats-creds for shop"}},
		{name: "creds file missing", args: with("-nats-creds", "shop="+missing),
			want: []string{"-nats-creds shop=" + missing + ": no such file or directory"}},
		{name: "creds file empty name", args: with("-nats-creds", "shop="),
			want: []string{"-nats-creds shop=: no FILE"}},
		{name: "creds file a directory", args: with("-nats-creds", "shop="+dir),
			want: []string{"-nats-creds shop=" + dir + ": not a regular file"}},
		{name: "creds file not creds", args: with("-nats-creds", "shop="+schema),
			want: []string{"-nats-creds shop=" + schema + ": no user nkey seed"}},
		{name: "creds file a seed alone", args: with("-nats-creds", "shop="+seedOnly),
			want: []string{"-nats-creds shop=" + seedOnly + ": no user JWT"}},
		{name: "creds file a JWT alone", args: with("-nats-creds", "shop="+jwtOnly),
			want: []string{"-nats-creds shop=" + jwtOnly + ": no user nkey seed"}},
		{name: "creds path to expand", args: with("-nats-creds", "shop=$HOME/gateway.creds"),
			want: []string{"-nats-creds shop=$HOME/gateway.creds: give the path with ~ and $ expanded"}},
		// What gqlpush refuses is reported under the flag that gave it.
		{name: "protocol of a NATS upstream", args: with("-protocol", "shop=graphql-ws"),
			want: []string{`-protocol: gqlpush: upstream "shop": Protocol is for GraphQL upstreams; this one is a NATS upstream`}},
		{name: "protocol with NATS upstreams alone", args: with("-protocol", "graphql-ws"),
			want: []string{"-protocol graphql-ws: every -upstream is a NATS upstream"}},
		{name: "forward header with NATS upstreams alone", args: with("-forward-header", "X-Tenant"),
			want: []string{"-forward-header X-Tenant: every -upstream is a NATS upstream, and NATS takes no forwarded headers"}},
		{name: "NATS upstream without schema", args: []string{"-operations", ops, "-upstream", shop},
			want: []string{`-schema: gqlpush: upstream "shop": Schema is required for a NATS upstream`}},
		{name: "NATS URL with a bad port", args: []string{"-operations", ops, "-upstream", "shop=nats://gw:hunter2@127.0.0.1:port", "-schema", "shop=" + schema},
			want: []string{`-upstream: gqlpush: upstream "shop": URL is not a list of nats:// or tls:// URLs with a host`}},
		{name: "NATS URL list with another scheme", args: []string{"-operations", ops, "-upstream", "nats://hunter2@127.0.0.1:1,ws://hunter2@127.0.0.1:2", "-schema", "=" + schema},
			want: []string{`-upstream: gqlpush: upstream #1: URL is not a list of nats:// or tls:// URLs with a host`}},
		{name: "a subject naming no argument", args: []string{"-operations", ops, "-upstream", shop, "-schema", "shop=" + writeFiles(t, filepath.Join(dir, "bad"), map[string]string{"shop.graphql": "type Query { x: Int }\ntype Subscription {\n  a(id: ID): Int @natsSubscribe(subjects: [\"a.{{ args.nope }}\"])\n}\n"}) + "/shop.graphql"},
			want: []string{`-schema: gqlpush: upstream "shop": Schema ` + filepath.Join(dir, "bad", "shop.graphql") + `:3:45: @natsSubscribe on a: subject "a.{{ args.nope }}": the field has no argument "nope"`}},
		{name: "operation for no field of the NATS upstream", args: []string{"-operations", writeFiles(t, filepath.Join(dir, "other"), map[string]string{"Nope.graphql": "subscription { shop_nope { id } }\n"}), "-upstream", shop, "-schema", "shop=" + schema},
			want: []string{"Nope.graphql:1:16", "nope"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkUsageError(t, busy.Addr().String(), tc.args, tc.want, []string{"hunter2", acc.seed})
		})
	}
}
