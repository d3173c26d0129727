package gqlpush

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster makes Handlers in many processes act as one, on NATS JetStream.
// For each key (an operation, its variables, what is forwarded upstream),
// one instance of the cluster, its owner, subscribes upstream and
// publishes every result to the key's subject in the cluster's stream;
// every instance with clients for the key reads that subject and serves
// them. Event ids are the stream's sequences, so a client resumes on any
// instance. The owner holds a lease in the cluster's key-value bucket,
// renewed while any instance has clients for the key; when it dies, an
// instance with clients takes the key over once the lease has expired.
//
// It applies to GraphQL (WebSocket) upstreams; NATS upstreams are shared by
// NATS itself.
type Cluster struct {
	// NATS is a connection of the application's to the cluster's NATS
	// server, which gqlpush never closes; or URL (nats:// or tls://),
	// which gqlpush dials with NATSOptions.
	NATS        *nats.Conn
	URL         string
	NATSOptions []nats.Option

	// Name names the cluster, its stream and its bucket: letters,
	// digits, '-' and '_'. Zero means DefaultClusterName.
	Name string
	// Instance names this instance in the bucket: letters, digits, '-'
	// and '_'. Zero means a random name.
	Instance string
	// Lease is how long a key's owner holds it without renewing: how soon
	// another instance takes over from one that died. Zero means
	// DefaultClusterLease.
	Lease time.Duration
	// MaxAge is how long the stream keeps a result for clients to resume
	// from (it keeps at most ResumeFrames of each key); at least Lease.
	// Zero means DefaultResumeMaxAge.
	MaxAge time.Duration
}

// Defaults of a Cluster.
const (
	DefaultClusterName  = "gqlpush"
	DefaultClusterLease = 5 * time.Second
	DefaultResumeMaxAge = 5 * time.Minute
)

var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// withDefaults checks c and fills in its defaults.
func (c Cluster) withDefaults() (Cluster, error) {
	bad := func(field string, kind error, detail string) error {
		return &ConfigError{Field: "Cluster." + field, Err: kind, Detail: detail}
	}
	switch {
	case c.NATS != nil && c.URL != "":
		return c, bad("URL", ErrConflict, "is set with NATS: one or the other")
	case c.NATS == nil && c.URL == "":
		return c, bad("URL", ErrRequired, "or NATS is required")
	}
	if c.NATS == nil {
		for _, raw := range strings.Split(c.URL, ",") {
			pu, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || pu.Host == "" || (pu.Scheme != "nats" && pu.Scheme != "tls") {
				return c, bad("URL", ErrInvalid, "is not a list of nats:// or tls:// URLs with a host")
			}
		}
	}
	if c.Name == "" {
		c.Name = DefaultClusterName
	}
	if !clusterNameRE.MatchString(c.Name) {
		return c, bad("Name", ErrInvalid, "may hold only letters, digits, '-' and '_'")
	}
	if c.Instance == "" {
		c.Instance = newToken()
	}
	if !clusterNameRE.MatchString(c.Instance) {
		return c, bad("Instance", ErrInvalid, "may hold only letters, digits, '-' and '_'")
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{{"Lease", &c.Lease, DefaultClusterLease}, {"MaxAge", &c.MaxAge, DefaultResumeMaxAge}} {
		switch {
		case *d.v < 0:
			return c, bad(d.field, ErrNegative, "is negative")
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 100*time.Millisecond:
			return c, bad(d.field, ErrInvalid, "is under 100ms, the least JetStream keeps anything for")
		}
	}
	if c.MaxAge < c.Lease {
		// An owner tries a publish again for up to a lease: what it
		// stored meanwhile must still be there for it to find.
		return c, bad("MaxAge", ErrConflict, "is shorter than Lease: a result could age out of the stream while its owner still retries it")
	}
	return c, nil
}

// A cluster is a Handler's part in its Cluster: the connection to its NATS,
// and the keys this instance reads or owns.
type cluster struct {
	cfg    *Config
	set    Cluster
	prefix string      // of the keys' subjects: "<name>.r."
	conn   *natsSource // the connection; the keys' readers and replays
	b      *natsBinding
	ctx    context.Context // ends with close
	cancel context.CancelFunc
	// quit bounds what is asked on the way out (a lease given up, an
	// interest deleted): it ends when close's context does.
	quit    context.Context
	quitNow context.CancelFunc

	setupMu sync.Mutex
	kv      jetstream.KeyValue // once the stream and the bucket are there
	stream  jetstream.Stream
	doubted bool      // a request to the bucket failed since checked
	checked time.Time // when the bucket and the stream were last asked for

	mu     sync.Mutex
	keys   map[string]*clusterKey // by digest
	closed bool
	wg     sync.WaitGroup // the keys' runners
}

func newCluster(cfg *Config) *cluster {
	set := *cfg.Cluster
	up := &upstream{name: "cluster", label: "cluster", nats: &natsUpstream{conn: set.NATS, url: set.URL, opts: set.NATSOptions}}
	ctx, cancel := context.WithCancel(context.Background())
	quit, quitNow := context.WithCancel(context.Background())
	conn := newNATSSource(cfg, up)
	conn.quiet = true
	return &cluster{
		cfg: cfg, set: set, prefix: set.Name + ".r.",
		conn:   conn,
		b:      &natsBinding{raw: true, observer: cfg.Observer, field: &natsField{stream: set.Name}},
		ctx:    ctx,
		cancel: cancel,
		quit:   quit, quitNow: quitNow,
		keys: make(map[string]*clusterKey),
	}
}

// setup makes sure the cluster's stream and bucket are there, with this
// instance's settings, and returns the bucket.
func (c *cluster) setup(ctx context.Context) (jetstream.KeyValue, jetstream.Stream, error) {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	if c.kv != nil && c.doubted && time.Since(c.checked) >= c.set.Lease/3 {
		c.doubted, c.checked = false, time.Now()
		if c.gone(ctx) {
			c.conn.logs.warn(logFailed, "cluster: the stream or the bucket is gone; made again")
			c.kv, c.stream = nil, nil
		}
	}
	if c.kv != nil {
		return c.kv, c.stream, nil
	}
	s := c.conn
	if err := s.run(); err != nil {
		return nil, nil, err
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if s.dead != nil {
		return nil, nil, s.dead
	}
	want := jetstream.StreamConfig{
		Name:              c.set.Name,
		Subjects:          []string{c.prefix + ">"},
		MaxMsgsPerSubject: int64(max(c.cfg.ResumeFrames, 1)) + 1, // and the end or an owner's marker
		MaxAge:            c.set.MaxAge,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
	}
	c.compare(ctx, want)
	st, err := s.js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return nil, nil, err
	}
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  c.set.Name,
		TTL:     c.set.Lease,
		History: 1,
		// On file, so that it outlives a restart of NATS: a bucket in
		// memory is gone after one, and every request to it goes
		// unanswered.
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, nil, err
	}
	c.kv, c.stream = kv, st
	return kv, st, nil
}

// compare warns when the cluster's stream or bucket was made with other
// settings than this instance's: every instance of a cluster needs the
// same Lease, MaxAge and ResumeFrames, or the last to start decides for
// all (a deploy that changes them is under way, or one is misconfigured).
// Called with setupMu held.
func (c *cluster) compare(ctx context.Context, want jetstream.StreamConfig) {
	js := c.conn.js
	var differ []string
	if st, err := js.Stream(ctx, want.Name); err == nil {
		had := st.CachedInfo().Config
		if had.MaxAge != want.MaxAge {
			differ = append(differ, "MaxAge "+had.MaxAge.String())
		}
		if had.MaxMsgsPerSubject != want.MaxMsgsPerSubject {
			differ = append(differ, "ResumeFrames "+strconv.FormatInt(had.MaxMsgsPerSubject-1, 10))
		}
	}
	if kv, err := js.KeyValue(ctx, want.Name); err == nil {
		if st, err := kv.Status(ctx); err == nil && st.TTL() != c.set.Lease {
			differ = append(differ, "Lease "+st.TTL().String())
		}
	}
	if len(differ) > 0 {
		c.cfg.Logger.Warn("cluster: another instance runs with other settings; every instance of a cluster needs the same, and this one's now apply",
			"cluster", c.set.Name, "theirs", strings.Join(differ, ", "))
	}
}

// bucket is the cluster's bucket, once setup has found it.
func (c *cluster) bucket() jetstream.KeyValue {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	return c.kv
}

// doubt is told that a request to the bucket failed: setup then asks,
// at most once a turn, whether the bucket and the stream are still there
// (deleted by hand, say: a request to a bucket that is gone goes
// unanswered rather than refused), and makes them again if not.
func (c *cluster) doubt() {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	c.doubted = true
}

// gone reports whether the stream or the bucket setup found is gone.
// Called with setupMu held.
func (c *cluster) gone(ctx context.Context) bool {
	js := c.conn.js
	if _, err := js.KeyValue(ctx, c.set.Name); errors.Is(err, jetstream.ErrBucketNotFound) {
		return true
	}
	_, err := js.Stream(ctx, c.set.Name)
	return errors.Is(err, jetstream.ErrStreamNotFound)
}

// digest names a key in the cluster: the same on every instance, and
// holding no variable value or forwarded header.
func clusterDigest(req *openRequest) string {
	h := keyHash(req.ep, req.forwardDigest, req.canonVars)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h)[:32])
}

// A clusterSource is the source of a GraphQL upstream in a cluster: it
// reads each key from the cluster's stream, and subscribes upstream, with
// inner, for the keys this instance owns.
type clusterSource struct {
	c     *cluster
	inner source
}

var _ replayer = (*clusterSource)(nil)

func (cs *clusterSource) open(req *openRequest, r receiver) (handle, error) {
	c := cs.c
	k, err := c.key(req, cs.inner)
	if err != nil {
		return nil, err
	}
	ch := &clusterHandle{k: k}
	ch.ns = &natsSub{src: c.conn, r: clusterReceiver{r, ch}, b: c.b, op: req.ep.op.name, subjects: []string{k.subject}, released: k.signal}
	if _, err := c.conn.start(ch.ns); err != nil {
		ch.done()
		return nil, err
	}
	k.mu.Lock()
	if !ch.over {
		k.local[ch] = struct{}{}
	}
	k.mu.Unlock()
	return ch, nil
}

func (cs *clusterSource) replay(ctx context.Context, req *openRequest, after uint64) (replayReader, bool, error) {
	return cs.c.conn.replayOf(ctx, cs.c.b, req.ep.op.name, nil, []string{cs.c.prefix + clusterDigest(req)}, after)
}

// The cluster itself is closed once, by the Handler; its sources are
// views of it.
func (cs *clusterSource) close(context.Context) error { return nil }
func (cs *clusterSource) conns() int                  { return 0 }

// A clusterHandle is a local reader of a key.
type clusterHandle struct {
	k     *clusterKey
	ns    *natsSub
	once  sync.Once
	begun bool // its reader knows where it starts; guarded by k.mu
	over  bool // done: a late begin counts for nothing; guarded by k.mu
}

func (ch *clusterHandle) close() {
	ch.ns.close()
	ch.done()
}

// done tells the key, once, that this reader is over.
func (ch *clusterHandle) done() {
	ch.once.Do(func() { ch.k.unread(ch) })
}

// clusterReceiver passes on what a key's reader reads, and tells the key
// when the reader ends.
type clusterReceiver struct {
	receiver
	ch *clusterHandle
}

func (r clusterReceiver) end(e ending) {
	r.ch.done()
	r.receiver.end(e)
}

// begin tells the key that one more reader knows where it starts: results
// published from now on reach it.
func (r clusterReceiver) begin() {
	k := r.ch.k
	k.mu.Lock()
	if !r.ch.begun && !r.ch.over {
		r.ch.begun = true
		k.begun++
	}
	k.mu.Unlock()
	k.signal()
	r.receiver.begin()
}

// A clusterKey is a key this instance reads or owns, and the goroutine that
// keeps its interest and its lease in the bucket.
type clusterKey struct {
	c        *cluster
	inner    source
	digest   string
	subject  string
	leaseKey string // "l.<digest>"
	mineKey  string // "i.<digest>.<instance>": this instance's interest
	wake     chan struct{}

	mu         sync.Mutex
	readers    int
	begun      int          // readers that know where they start
	req        *openRequest // of the latest reader: what an owner subscribes with
	local      map[*clusterHandle]struct{}
	refused    time.Time  // when this instance last took the key and could not serve it; the runner's own
	owner      *ownership // while this instance owns it
	interested bool       // mineKey is in the bucket
	exited     bool       // its runner is over: the cluster makes a new one
}

// key returns the key of req, counting one more reader; its runner starts
// with it.
func (c *cluster) key(req *openRequest, inner source) (*clusterKey, error) {
	d := clusterDigest(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	k := c.keys[d]
	if k == nil || k.exited {
		k = &clusterKey{
			c: c, inner: inner, digest: d, subject: c.prefix + d,
			leaseKey: "l." + d, mineKey: "i." + d + "." + c.set.Instance,
			wake: make(chan struct{}, 1), local: make(map[*clusterHandle]struct{}),
		}
		c.keys[d] = k
		c.wg.Add(1)
		go k.run()
	}
	k.mu.Lock()
	k.readers++
	k.req = req
	k.mu.Unlock()
	k.signal()
	return k, nil
}

func (k *clusterKey) unread(ch *clusterHandle) {
	k.mu.Lock()
	k.readers--
	if ch.begun {
		k.begun--
	}
	ch.over = true
	delete(k.local, ch)
	k.mu.Unlock()
	k.signal()
}

func (k *clusterKey) signal() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// run keeps the key's state in the bucket, a third of a lease apart and
// whenever something changes, until this instance neither reads nor owns
// it.
func (k *clusterKey) run() {
	c := k.c
	defer c.wg.Done()
	tick := time.NewTicker(c.set.Lease / 3)
	defer tick.Stop()
	// A request of the runner's waits no longer than half a lease: an
	// answer later than that is of no use to the lease, and the runner
	// asks again at its next turn.
	wait := min(c.cfg.AckTimeout, max(c.set.Lease/2, 100*time.Millisecond))
	for {
		ctx, cancel := context.WithTimeout(c.ctx, wait)
		if kv, st, err := c.setup(ctx); err == nil {
			k.step(ctx, kv, st)
		} else if c.ctx.Err() == nil {
			c.conn.logs.warn(logFailed, "the cluster's stream or bucket cannot be had", "err", logText(err))
		}
		cancel()
		if k.over() {
			return
		}
		select {
		case <-tick.C:
		case <-k.wake:
		case <-c.ctx.Done():
			k.leave()
			return
		}
	}
}

// over reports that the runner is done: no reader, no ownership, no
// interest left in the bucket. The key then leaves the cluster's map.
func (k *clusterKey) over() bool {
	c := k.c
	c.mu.Lock()
	defer c.mu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.readers > 0 || k.owner != nil || k.interested {
		return false
	}
	k.exited = true
	if c.keys[k.digest] == k {
		delete(c.keys, k.digest)
	}
	return true
}

// step brings the bucket up to date with the key: this instance's
// interest, and its lease, renewed, given up or taken.
func (k *clusterKey) step(ctx context.Context, kv jetstream.KeyValue, st jetstream.Stream) {
	k.mu.Lock()
	readers, begun, o, req, interested := k.readers, k.begun, k.owner, k.req, k.interested
	k.mu.Unlock()
	switch {
	case readers > 0:
		if _, err := kv.Put(ctx, k.mineKey, nil); err == nil {
			interested = true
		} else {
			k.c.doubt()
		}
	case interested:
		if err := kv.Delete(ctx, k.mineKey); err == nil || errors.Is(err, jetstream.ErrKeyNotFound) {
			interested = false
		}
	}
	k.mu.Lock()
	k.interested = interested
	k.mu.Unlock()

	if o != nil {
		// An end still queued is published first, under the lease.
		stopped, fenced, done := o.state()
		if stopped && (done || fenced) {
			k.drop(o, !fenced, fenced)
			return
		}
		rev, err := kv.Update(ctx, k.leaseKey, []byte(k.c.set.Instance), o.rev)
		if err != nil {
			var api *jetstream.APIError
			lost := errors.Is(err, jetstream.ErrKeyNotFound) || errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
			// An owner that could not renew its lease for as long as it
			// lasts may have been replaced: it lets go.
			if lost || time.Since(o.renewedAt()) >= k.c.set.Lease {
				k.c.cfg.Logger.Warn("cluster: a key's lease was lost", "operation", o.op, "err", logText(err))
				k.drop(o, false, true)
			}
			return // else it is tried again at the next turn, within the lease
		}
		o.setRev(rev)
		if !stopped && readers == 0 && !k.wanted(ctx, kv) {
			k.drop(o, true, false)
		}
		return
	}
	// A key is taken only once a reader here knows where it starts: what
	// the new owner publishes first reaches it; and not for a lease after
	// this instance could not serve it, so that its marks do not push
	// results out of what the stream keeps of the key.
	if begun == 0 || req == nil || time.Since(k.refused) < k.c.set.Lease {
		return
	}
	rev, err := kv.Create(ctx, k.leaseKey, []byte(k.c.set.Instance))
	if err != nil {
		return // another instance owns it, or the bucket cannot be reached
	}
	k.take(ctx, kv, st, rev, req)
}

// wanted reports whether any instance has readers of the key, or the
// bucket cannot tell.
func (k *clusterKey) wanted(ctx context.Context, kv jetstream.KeyValue) bool {
	l, err := kv.ListKeysFiltered(ctx, "i."+k.digest+".*")
	if err != nil {
		return true
	}
	defer l.Stop()
	for range l.Keys() {
		return true
	}
	// The list ends, with no error, when ctx does too: then it cannot
	// tell.
	return ctx.Err() != nil
}

// take makes this instance the key's owner: it marks the subject, so that
// an owner before it that comes back can no longer publish, and
// subscribes upstream.
func (k *clusterKey) take(ctx context.Context, kv jetstream.KeyValue, st jetstream.Stream, rev uint64, req *openRequest) {
	c := k.c
	var last, lastN uint64
	failover := false
	m, err := st.GetLastMsgForSubject(ctx, k.subject)
	switch {
	case err == nil:
		last, lastN = m.Sequence, clusterResultNumber(m.Header)
		// A result or a taking mark last: its owner did not give it up.
		kind, _ := clusterMsgKind(m.Header, m.Data)
		failover = kind == clusterResult || kind == clusterMark
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		kv.Delete(ctx, k.leaseKey, jetstream.LastRevision(rev))
		return
	}
	o := &ownership{k: k, rev: rev, renewed: time.Now(), last: last, n: lastN, op: req.ep.op.name, st: st, kv: kv,
		// The random part keeps ids apart from an ownership of the same
		// revision in a bucket made again, which JetStream would take
		// for a duplicate within its window.
		id: c.set.Instance + "." + strconv.FormatUint(rev, 10) + "." + newToken()}
	o.ctx, o.cancel = context.WithCancel(c.quit)
	if err := o.send(ctx, &nats.Msg{Subject: k.subject, Header: nats.Header{clusterOwnerHeader: {c.set.Instance}}}); err != nil {
		o.cancel()
		kv.Delete(ctx, k.leaseKey, jetstream.LastRevision(rev))
		return
	}
	k.mu.Lock()
	k.owner = o
	k.mu.Unlock()
	c.cfg.Logger.Info("cluster: took a key", "operation", o.op, "instance", c.set.Instance, "failover", failover)
	c.cfg.Observer.clusterKeyTaken(o.op, failover)
	hd, err := k.inner.open(req, o)
	if err != nil {
		var herr *httpError
		e := endUpstreamGone
		if errors.As(err, &herr) {
			e = endWith(probUpstreamGone, herr.message())
		}
		switch {
		case errors.Is(err, errClosed):
			// This instance shuts down: another takes the key over.
			k.drop(o, true, false)
		case errors.Is(err, errTooManyUpstreamConns):
			// This instance's own limit: its readers end, as a single
			// instance's would, and the key is given back for another
			// instance to serve its own.
			k.refused = time.Now()
			k.drop(o, true, false)
			k.endLocal(e, err)
		default:
			// Every instance's readers hear of it, as from the upstream.
			o.end(e)
		}
		return
	}
	o.mu.Lock()
	o.hd = hd
	stopped := o.stopped
	o.mu.Unlock()
	if stopped {
		k.signal() // ended while it opened: the runner lets it go
	}
}

// endLocal ends this instance's readers of the key, and only them.
func (k *clusterKey) endLocal(e ending, err error) {
	k.mu.Lock()
	local := make([]*clusterHandle, 0, len(k.local))
	for ch := range k.local {
		local = append(local, ch)
	}
	k.mu.Unlock()
	for _, ch := range local {
		ch.ns.fail(e, "cluster: this instance could not subscribe upstream for its readers", err)
	}
}

// drop lets go of an ownership: its upstream subscription, and, when the
// lease is still this instance's (release), the lease, then a mark that
// says so, at which instances with readers of the key take it over at
// once. lost is for the Observer: the key was taken from this instance.
func (k *clusterKey) drop(o *ownership, release, lost bool) {
	ctx, cancel := k.c.conn.whileUp(k.c.quit, k.c.cfg.AckTimeout)
	defer cancel()
	o.cancel() // a publish under way, or being tried again, stops
	o.mu.Lock()
	o.stopped = true
	o.queue, o.queued = nil, 0
	hd := o.hd
	o.hd = nil
	o.mu.Unlock()
	if hd != nil {
		hd.close()
	}
	k.mu.Lock()
	if k.owner == o {
		k.owner = nil
	}
	k.mu.Unlock()
	// The lease goes before the mark: an instance that takes the key in
	// between fences the mark, which then says nothing new.
	if kv := k.c.bucket(); release && kv != nil && kv.Delete(ctx, k.leaseKey, jetstream.LastRevision(o.rev)) == nil {
		o.sendMu.Lock()
		o.sendSynced(ctx, &nats.Msg{Subject: k.subject, Header: nats.Header{clusterReleasedHeader: {k.c.set.Instance}}})
		o.sendMu.Unlock()
	}
	k.c.cfg.Observer.clusterKeyReleased(o.op, lost)
}

// leave is the runner's last act when the cluster closes: it publishes
// what the upstream sent before it stopped, gives up the key, so that
// another instance takes it over at once, and this instance's interest.
func (k *clusterKey) leave() {
	k.mu.Lock()
	o, interested := k.owner, k.interested
	k.interested = false
	k.mu.Unlock()
	if o != nil {
		o.finish()
		k.drop(o, true, false)
	}
	if kv := k.c.bucket(); interested && kv != nil {
		ctx, cancel := k.c.conn.whileUp(k.c.quit, k.c.cfg.AckTimeout)
		defer cancel()
		kv.Delete(ctx, k.mineKey)
	}
}

// finish stops the ownership's upstream subscription, and waits for the
// results it queued to be published, while NATS is up and for as long as
// the cluster's close allows. It is called by the key's runner.
func (o *ownership) finish() {
	o.mu.Lock()
	o.stopped = true
	hd := o.hd
	o.hd = nil
	o.mu.Unlock()
	if hd != nil {
		hd.close()
	}
	ctx, cancel := o.k.c.conn.whileUp(o.k.c.quit, o.k.c.cfg.AckTimeout)
	defer cancel()
	for {
		if _, _, done := o.state(); done {
			return
		}
		select {
		case <-o.k.wake: // sendAll is done, or something else changed
		case <-ctx.Done():
			return
		}
	}
}

// Headers of the cluster's own messages on a key's subject: the end of the
// subscription (the Reason; the errors frame in the body), and the marks an
// owner leaves when it takes a key and when it gives it up.
const (
	clusterFromHeader     = "Gqlpush-From" // the ownership that published it
	clusterNumberHeader   = "Gqlpush-N"    // a result's number in its key: 1, 2, … across owners
	clusterEndHeader      = "Gqlpush-End"
	clusterOwnerHeader    = "Gqlpush-Owner"
	clusterReleasedHeader = "Gqlpush-Released"
)

// errClusterGap is what the log is told when a reader finds results of its
// key gone from the stream before it read them.
var errClusterGap = errors.New("results numbered in between are not in the stream")

// errReplayGap is what a replay of a cluster's key returns when a result
// was pushed out of the stream before the replay read it.
var errReplayGap = errors.New("cluster: results were lost in the stream before the replay read them")

// clusterResultNumber is the number of the key's last result as of a
// message: 0 for none, or a message of an older version.
func clusterResultNumber(h nats.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(clusterNumberHeader), 10, 64)
	return n
}

type clusterKind uint8

const (
	clusterResult   clusterKind = iota
	clusterEnd                  // the upstream subscription ended
	clusterMark                 // an owner took the key
	clusterReleased             // an owner gave it up
)

// clusterMsgKind tells a key's message apart: a result, the end (and
// which), or a mark to skip.
func clusterMsgKind(h nats.Header, data []byte) (clusterKind, ending) {
	if reason := h.Get(clusterEndHeader); reason != "" {
		for p := range problems {
			if p > 0 && problems[p].reason == Reason(reason) {
				e := ending{why: problem(p)}
				if len(data) > 0 && json.Valid(data) {
					e.errors = json.RawMessage(data)
				}
				return clusterEnd, e
			}
		}
		return clusterEnd, endUpstreamGone
	}
	if h.Get(clusterOwnerHeader) != "" {
		return clusterMark, ending{}
	}
	if h.Get(clusterReleasedHeader) != "" {
		return clusterReleased, ending{}
	}
	return clusterResult, ending{}
}

// An ownership is this instance's hold on a key: the receiver of its
// upstream subscription, which publishes to the key's subject. Each
// publish expects the subject's last sequence to be the one before: an
// owner that another has replaced fails, and stops.
//
// The upstream's reader must not wait for NATS: results are queued, and a
// goroutine of the ownership's publishes them in turn.
type ownership struct {
	k  *clusterKey
	op string

	id     string           // names this ownership on what it publishes: instance, lease revision, a random part
	st     jetstream.Stream // the cluster's
	kv     jetstream.KeyValue
	sendMu sync.Mutex // held across a publish: one at a time, in order
	last   uint64     // the subject's last sequence, as this owner left it; guarded by sendMu
	n      uint64     // the number of the key's last result; guarded by sendMu
	sent   uint64     // messages published, for their ids; guarded by sendMu

	mu      sync.Mutex
	rev     uint64    // of the lease
	renewed time.Time // when it was taken or last renewed
	hd      handle    // its upstream subscription
	queue   []*nats.Msg
	queued  int  // bytes in queue
	sending bool // a goroutine publishes the queue
	stopped bool // nothing more is queued
	fenced  bool // stopped because another instance owns the key now
	failed  bool // stopped because a result could not be published

	// ctx ends when the ownership is dropped, or the cluster's close
	// gives up: a publish under way, or being tried again, stops.
	ctx    context.Context
	cancel context.CancelFunc
}

var _ receiver = (*ownership)(nil)

// errClusterBehind is what the Observer is told when results come faster
// than the cluster takes them.
var errClusterBehind = errors.New("the cluster's stream falls behind the upstream: results dropped")

// state reports whether the ownership is over, and whether it was
// replaced; done is false while its queue is still being published.
func (o *ownership) state() (stopped, fenced, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stopped, o.fenced, !o.sending
}

func (o *ownership) setRev(rev uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rev, o.renewed = rev, time.Now()
}

func (o *ownership) revision() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rev
}

func (o *ownership) renewedAt() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.renewed
}

// send publishes m after the last message this owner knows of, marked as
// this owner's, with an id that JetStream keeps it once by. A result is
// numbered once; a mark or an end carries the number of the last result
// as of each try. Called with sendMu held, or before o is shared.
func (o *ownership) send(ctx context.Context, m *nats.Msg) error {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	kind, _ := clusterMsgKind(m.Header, nil)
	if m.Header.Get(clusterFromHeader) == "" {
		o.sent++
		m.Header.Set(clusterFromHeader, o.id)
		m.Header.Set(jetstream.MsgIDHeader, o.id+"."+strconv.FormatUint(o.sent, 10))
		if kind == clusterResult {
			o.n++
			m.Header.Set(clusterNumberHeader, strconv.FormatUint(o.n, 10))
		}
	}
	if kind != clusterResult {
		m.Header.Set(clusterNumberHeader, strconv.FormatUint(o.n, 10))
	}
	ack, err := o.k.c.conn.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(o.last))
	if err != nil {
		return err
	}
	o.last = ack.Sequence
	return nil
}

// errFenced is what sendSynced returns when another owner has published to
// the key's subject since this one.
var errFenced = errors.New("cluster: another instance owns the key")

// sendSynced sends m and, when JetStream refuses it for the subject's last
// sequence, finds out why: this owner's own messages moved the subject on
// (one stored though its acknowledgement was lost, perhaps m itself, or
// all of them aged out), and m goes again unless it is stored already; or
// another owner's did, and it returns errFenced. Called with sendMu held.
func (o *ownership) sendSynced(ctx context.Context, m *nats.Msg) error {
	err := o.send(ctx, m)
	for try := 0; try < 3 && isWrongLast(err); try++ {
		stored, again, rerr := o.resync(ctx, m)
		switch {
		case rerr != nil:
			return rerr // it cannot tell: as a publish whose outcome is unknown
		case stored:
			return nil
		case !again:
			return errFenced
		}
		err = o.send(ctx, m)
	}
	if isWrongLast(err) {
		return errFenced
	}
	return err
}

// resync reads the subject's last message after a refusal for its
// sequence: stored reports that it is m, again that m may go after it,
// neither that another owner published since. An error means it cannot
// tell. Called with sendMu held.
func (o *ownership) resync(ctx context.Context, m *nats.Msg) (stored, again bool, err error) {
	last, err := o.st.GetLastMsgForSubject(ctx, o.k.subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Aged out, or never more than marks since another took the
		// key: only the lease tells.
		e, err := o.kv.Get(ctx, o.k.leaseKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return false, false, nil
		case err != nil:
			return false, false, err
		case e.Revision() != o.revision():
			return false, false, nil
		}
		o.last = 0
		return false, true, nil
	case err != nil:
		return false, false, err
	case last.Header.Get(clusterFromHeader) != o.id:
		return false, false, nil
	}
	// A result stored though send gave up on it keeps its number.
	o.last, o.n = last.Sequence, max(o.n, clusterResultNumber(last.Header))
	if last.Header.Get(jetstream.MsgIDHeader) == m.Header.Get(jetstream.MsgIDHeader) {
		return true, false, nil
	}
	return false, true, nil
}

// enqueue queues m to publish, within the queue's bounds unless always.
// Called with o.mu held.
func (o *ownership) enqueue(m *nats.Msg, always bool) {
	c := o.k.c
	if !always && (len(o.queue) >= max(c.cfg.QueueSize, 1) || o.queued+len(m.Data) > max(c.cfg.QueueBytes, 1)) {
		c.conn.logs.warn(logFailed, "cluster: results come faster than its stream takes them; dropped", "operation", o.op)
		c.cfg.Observer.clusterError(o.op, errClusterBehind)
		return
	}
	o.queue = append(o.queue, m)
	o.queued += len(m.Data)
	if !o.sending {
		o.sending = true
		c.wg.Add(1)
		go o.sendAll()
	}
}

// sendAll publishes the queue, in order, until it is empty or the key is
// another's, or a result could not be published for a whole lease.
func (o *ownership) sendAll() {
	c := o.k.c
	defer c.wg.Done()
	for {
		o.mu.Lock()
		if len(o.queue) == 0 || o.fenced || o.failed {
			o.sending = false
			stopped := o.stopped
			o.mu.Unlock()
			if stopped {
				o.k.signal() // the runner lets the key go
			}
			return
		}
		m := o.queue[0]
		o.queue[0] = nil
		o.queue = o.queue[1:]
		o.queued -= len(m.Data)
		o.mu.Unlock()

		o.sendMu.Lock()
		out, err := o.sendOne(m)
		o.sendMu.Unlock()
		switch out {
		case sendFenced:
			// Another instance owns the key now.
			o.mu.Lock()
			o.stopped, o.fenced = true, true
			o.queue, o.queued = nil, 0
			o.mu.Unlock()
		case sendFailed:
			c.cfg.Logger.Warn("cluster: a result could not be published for a whole lease; the key is given up", "operation", o.op, "err", logText(err))
			o.mu.Lock()
			o.stopped, o.failed = true, true
			o.queue, o.queued = nil, 0
			o.mu.Unlock()
		case sendAbandoned:
			o.mu.Lock()
			o.queue, o.queued = nil, 0
			o.mu.Unlock()
		}
	}
}

// What became of a message sendOne was given.
type sendOutcome uint8

const (
	sent          sendOutcome = iota // stored, or refused for good and dropped
	sendFenced                       // another instance owns the key now
	sendFailed                       // not stored for a whole lease: the key is given up
	sendAbandoned                    // the ownership is dropped, or the cluster closes
)

// isWrongLast reports whether JetStream refused a publish because the
// subject's last sequence was not the one expected.
func isWrongLast(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// sendOne publishes m, a message of the queue. A publish whose outcome is
// unknown (its acknowledgement lost, NATS unreachable) is sent again under
// the same message id, which JetStream stores once by, until the
// ownership is dropped or a lease has gone by: a result numbered but
// never stored would end every reader for the gap. So is one that
// JetStream refuses for now (unavailable, 503). A publish that it refuses
// for good (too large, say) is not stored: the next result takes its
// number. It reports what became of m, and the error it gave up on.
// Called with sendMu held.
func (o *ownership) sendOne(m *nats.Msg) (sendOutcome, error) {
	c := o.k.c
	var since time.Time
	pause := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(o.ctx, c.cfg.AckTimeout)
		err := o.sendSynced(ctx, m)
		cancel()
		var api *jetstream.APIError
		switch {
		case err == nil:
			return sent, nil
		case errors.Is(err, errFenced):
			return sendFenced, nil
		case errors.As(err, &api) && api.Code < 500 || errors.Is(err, nats.ErrMaxPayload):
			o.unnumber(m)
			c.conn.logs.warn(logFailed, "cluster: a result was refused by its stream; dropped", "operation", o.op, "err", logText(err))
			c.cfg.Observer.clusterError(o.op, err)
			return sent, nil
		case o.ctx.Err() != nil:
			o.unnumber(m)
			return sendAbandoned, nil
		}
		if since.IsZero() {
			since = time.Now()
			c.conn.logs.warn(logFailed, "cluster: publishing a result failed; trying again", "operation", o.op, "err", logText(err))
			c.cfg.Observer.clusterError(o.op, err)
		}
		if time.Since(since) >= c.set.Lease {
			o.unnumber(m) // unless resync finds it stored after all
			return sendFailed, err
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-o.ctx.Done():
		}
		t.Stop()
		if o.ctx.Err() != nil {
			o.unnumber(m)
			return sendAbandoned, nil
		}
		pause = min(2*pause, time.Second)
	}
}

// unnumber takes back the number send gave m, a result that was not
// stored: the next result takes it. Called with sendMu held.
func (o *ownership) unnumber(m *nats.Msg) {
	if kind, _ := clusterMsgKind(m.Header, nil); kind == clusterResult && clusterResultNumber(m.Header) == o.n {
		o.n--
	}
}

func (o *ownership) publish(raw []byte, _ uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.stopped {
		o.enqueue(&nats.Msg{Subject: o.k.subject, Data: bytes.Clone(raw)}, false)
	}
	return nil
}

// end publishes, after the results before it, the end of the upstream
// subscription for every instance's readers, unless this instance only
// shuts down (another takes the key over); then the runner gives the key
// up.
func (o *ownership) end(e ending) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return
	}
	o.stopped = true
	if e.why != probShutdown {
		o.enqueue(&nats.Msg{Subject: o.k.subject, Header: nats.Header{clusterEndHeader: {string(e.why.reason())}}, Data: e.errors}, true)
	}
	o.k.signal()
}

func (o *ownership) begin() {}

// close gives up every key, closes the connection gqlpush dialled, and
// waits for the cluster's goroutines.
func (c *cluster) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		c.quitNow() // what is still asked on the way out is given up
		<-done
	}
	c.quitNow()
	return c.conn.close(ctx)
}

func (c *cluster) conns() int { return 0 }
