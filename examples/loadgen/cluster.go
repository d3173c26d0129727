package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterName names the cluster's stream and bucket on the NATS server.
const clusterName = "loadgen"

// A member is one gateway of the cluster phase.
type member struct {
	gw       *gatewayProc
	instance string
}

// exitedMember returns a gateway of the cluster that is gone, or nil.
func (e *env) exitedMember() *member {
	for _, m := range e.members {
		if m.gw.exited() {
			return m
		}
	}
	return nil
}

// stopMembers stops the cluster's gateways, all at once (each gives its keys
// up on the NATS server as it goes), records how each exited, and returns
// an error for those that had exited before.
func (e *env) stopMembers() error {
	errs := make([]error, len(e.members))
	exits := make([]string, len(e.members))
	var wg sync.WaitGroup
	for i, m := range e.members {
		wg.Go(func() {
			exits[i], errs[i] = stopChild(m.gw, "gateway "+m.instance)
		})
	}
	wg.Wait()
	var gws []gatewayInfo
	switch {
	case e.rep.Cluster != nil:
		gws = e.rep.Cluster.Gateways
	case e.rep.Scale != nil:
		gws = e.rep.Scale.Gateways
	}
	for i := range e.members {
		if i < len(gws) {
			gws[i].Exit = exits[i]
		}
	}
	return errors.Join(errs...)
}

// cluster runs fanout on the gateway setup started, stops it, and runs the
// same clients and rate on -cluster-size gateways that act as one cluster
// on a NATS server with JetStream, in front of the same upstream.
func (e *env) cluster(ctx context.Context) error {
	info := &clusterInfo{Name: clusterName}
	e.rep.Cluster = info
	up, ok := e.up.(*inProcessUpstream)
	if !ok || e.gw == nil || e.pub == nil {
		return errors.New("cluster needs its own gateway and the in-process GraphQL upstream")
	}

	// Phase 1: fanout, as the fanout scenario runs it.
	e.logf("phase 1: fanout on one gateway")
	subs0, _, _ := e.upstreamReceived()
	err := e.steady(ctx, false)
	fanout := e.phase("fanout: 1 gateway", 1)
	info.Fanout = fanout
	if subs, _, ok := e.upstreamReceived(); ok {
		fanout.Subscribes = ptr(subs - subs0)
	}
	if err != nil {
		return fmt.Errorf("fanout: %w", err)
	}
	// The report's own figures are the cluster's, once counted.
	e.rep.Clients, e.rep.Lost, e.rep.OOO, e.rep.Upstream.Subscriptions = nil, nil, nil, nil
	exit, crashed := stopChild(e.gw, "the gateway")
	e.rep.Gateway.Exit = exit
	e.gw, e.pid = nil, 0
	if crashed != nil {
		return crashed
	}
	// The fanout gateway's upstream subscription ends with it: the
	// cluster's must be counted alone.
	if err := waitUntil(ctx, e.cfg.settle, 20*time.Millisecond, func() bool { return up.subscriptions() == 0 }); err != nil {
		return fmt.Errorf("the fanout gateway's upstream subscription outlived it: %d running after -settle: %w", up.subscriptions(), err)
	}
	// The cluster's clients count sequence numbers from 0 again.
	e.pubCancel()
	<-e.pub.done
	e.pub = newPublisher(e.up, []string{""})
	var pctx context.Context
	pctx, e.pubCancel = context.WithCancel(context.Background())
	go e.pub.run(pctx)

	// Phase 2: the cluster.
	size := e.cfg.clusterSize
	e.logf("phase 2: a cluster of %d gateways", size)
	js, err := startJetStream()
	if err != nil {
		return fmt.Errorf("start the NATS server: %w", err)
	}
	e.js, info.NATS = js, js.url
	e.logf("in-process NATS server with JetStream at %s", js.url)
	perGateway := uint64(e.cfg.clients/size+1) + 256
	addrs := make([]string, size)
	for i := range size {
		inst := fmt.Sprintf("g%d", i+1)
		profile := ""
		if e.cfg.gatewayProfile != "" {
			profile = e.cfg.gatewayProfile + "." + inst
		}
		flags := append(e.cfg.gatewayFlags("-upstream", up.url, profile),
			"-cluster", js.url, "-cluster-name", clusterName, "-cluster-instance", inst)
		gw, err := startGateway(ctx, "gateway "+inst, flags, e.log)
		if err != nil {
			return fmt.Errorf("gateway %s: %w", inst, err)
		}
		e.members = append(e.members, &member{gw: gw, instance: inst})
		gi := gatewayInfo{Instance: inst, URL: "http://" + gw.addr, PID: gw.pid, Child: true}
		if lim, err := procFileLimit(gw.pid); err == nil {
			gi.FileLimit = &lim
			if uint64(lim) < perGateway {
				return fmt.Errorf("gateway %s needs about %d open files and its limit is %d: raise it", inst, perGateway, lim)
			}
		}
		info.Gateways = append(info.Gateways, gi)
		addrs[i] = gw.addr
		e.logf("gateway %s (child, pid %d) at http://%s", inst, gw.pid, gw.addr)
	}
	if e.cfg.gatewayLatency {
		e.rep.note("-gateway-latency: the gateway's own latency is measured in the fanout phase only")
	}

	n := e.cfg.clients
	shared, _ := e.cfg.operations()
	targets := make([]string, n)
	for i := range targets {
		targets[i] = opsPrefix + shared + "?wg_sse=true"
	}
	cl := &phaseInfo{Window: fmt.Sprintf("cluster: %d gateways", size), Gateways: size}
	info.Cluster = cl
	subs0, _, _ = e.upstreamReceived()
	defer func() {
		if subs, _, ok := e.upstreamReceived(); ok {
			cl.Subscribes = ptr(subs - subs0)
		}
	}()
	f := newFleetOver(ctx, addrs, true)
	defer f.close()
	defer e.recordClients(f)
	defer func() { cl.Clients, cl.Lost, cl.OOO = e.rep.Clients, e.rep.Lost, e.rep.OOO }()
	if err := e.openFleet(ctx, f, targets, nil); err != nil {
		return err
	}
	// Before the first post: the owner subscribed upstream, and every
	// gateway reads the stream from its end (its consumer exists once it
	// has asked where the stream ends), so that each gets every result.
	ready := func() bool {
		if up.subscriptions() < 1 {
			return false
		}
		c, err := js.consumers(ctx)
		return err == nil && c >= size
	}
	if err := waitUntil(ctx, e.cfg.settle, 20*time.Millisecond, ready); err != nil {
		c, _ := js.consumers(ctx)
		return fmt.Errorf("waiting for 1 upstream subscription (%d) and %d readers of the stream (%d): %w", up.subscriptions(), size, c, err)
	}
	if err := e.pub.set(ctx, e.cfg.rate); err != nil {
		return err
	}
	if err := e.sleep(ctx, e.cfg.warmup, nil); err != nil {
		return err
	}
	w, err := e.measure(ctx, f, cl.Window, e.cfg.duration, float64(n)*e.cfg.rate, nil)
	if err != nil {
		return err
	}
	cl.Subscriptions = e.upstreamSubs()
	e.rep.Upstream.Subscriptions = cl.Subscriptions
	if c, err := js.consumers(ctx); err == nil {
		info.Consumers = &c
	}
	if owner, err := js.owner(ctx); err == nil {
		info.Owner = owner
		for _, g := range w.Gateways {
			g.Owner = g.Instance == owner
		}
	} else {
		e.rep.note("the key's owner is unknown: %v", err)
	}
	if fw := e.windowNamed(fanout.Window); fw != nil && fw.CPUPerEvent != nil && w.CPUPerEvent != nil && *fw.CPUPerEvent > 0 {
		info.CPURatio = ptr(*w.CPUPerEvent / *fw.CPUPerEvent)
	}
	return e.finishLoss(ctx, f)
}

// phase names the last window, if the phase got one, and returns the
// phase's figures as the scenario left them in the report.
func (e *env) phase(window string, gateways int) *phaseInfo {
	ph := &phaseInfo{Gateways: gateways, Clients: e.rep.Clients, Lost: e.rep.Lost, OOO: e.rep.OOO, Subscriptions: e.rep.Upstream.Subscriptions}
	if k := len(e.rep.Windows); k > 0 {
		e.rep.Windows[k-1].Name = window
		ph.Window = window
	}
	return ph
}

func (e *env) windowNamed(name string) *window {
	for _, w := range e.rep.Windows {
		if w.Name == name {
			return w
		}
	}
	return nil
}

// A jetStreamServer is the cluster's NATS server, with JetStream, in
// process; and a connection of loadgen's that asks it about the cluster's
// stream and bucket.
type jetStreamServer struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string // JetStream's store, removed by close
	url string
}

// startJetStream starts a NATS server with JetStream on a loopback port of
// its own choosing, its store in a new temporary directory.
func startJetStream() (_ *jetStreamServer, err error) {
	dir, err := os.MkdirTemp("", "loadgen-jetstream-")
	if err != nil {
		return nil, err
	}
	s := &jetStreamServer{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.ns, err = server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: dir,
	})
	if err != nil {
		s.ns = nil
		return nil, err
	}
	s.ns.Start()
	if !s.ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("the NATS server did not accept connections within 10s")
	}
	s.url = s.ns.ClientURL()
	if s.nc, err = nats.Connect(s.url, nats.Name("loadgen"), nats.NoReconnect()); err != nil {
		s.nc = nil
		return nil, fmt.Errorf("connect to the NATS server: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, err
	}
	return s, nil
}

// consumers counts the consumers of the cluster's stream: a reader of the
// key per gateway with clients.
func (s *jetStreamServer) consumers(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, clusterName)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.Consumers, nil
}

// owner returns the instance that holds the lease of the cluster's one key
// (its bucket's key l.<digest>).
func (s *jetStreamServer) owner(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, clusterName)
	if err != nil {
		return "", err
	}
	l, err := kv.ListKeysFiltered(ctx, "l.*")
	if err != nil {
		return "", err
	}
	defer l.Stop()
	var owners []string
	for k := range l.Keys() {
		ent, err := kv.Get(ctx, k)
		if err != nil {
			return "", err
		}
		owners = append(owners, string(ent.Value()))
	}
	if len(owners) != 1 {
		return "", fmt.Errorf("%d leases in the bucket (%q), want 1", len(owners), owners)
	}
	return owners[0], nil
}

// close closes the connection, then the server, waits for the server's
// goroutines, and removes the store.
func (s *jetStreamServer) close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	os.RemoveAll(s.dir)
}
