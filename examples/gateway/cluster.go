package main

import (
	"cmp"
	"crypto/rand"
	"log/slog"
	"strings"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/nats-io/nats.go"
)

// minClusterDuration is the shortest -cluster-lease and -resume-max-age:
// the lease lives in a JetStream key-value bucket whose TTL is the lease,
// and results in a stream whose MaxAge is -resume-max-age, and JetStream
// refuses either below 100ms. gqlpush would only find out when the first
// stream needs the cluster, and fail every key then.
const minClusterDuration = 100 * time.Millisecond

// instanceLen is the length of a random instance name: as long as the
// tokens of gqlpush's event ids.
const instanceLen = 16

// clusterFlags are the raw values of the cluster flags.
type clusterFlags struct {
	url      string
	name     string
	instance string
	creds    string
	lease    time.Duration
	maxAge   time.Duration
}

// clusterOnly are the flags that mean something with -cluster alone.
var clusterOnly = []string{"cluster-name", "cluster-instance", "cluster-lease", "resume-max-age", "cluster-creds"}

// checkCluster checks the cluster flags and sets c.cluster from them; it
// stays nil without -cluster. set holds the names of the flags given on the
// command line. What gqlpush checks itself (the URL, the names, negative
// durations) is left to it, and reported under the flag by handlerError;
// messages never quote the URL, which may hold credentials.
func (c *config) checkCluster(cf clusterFlags, set map[string]bool) error {
	if !set["cluster"] {
		for _, f := range clusterOnly {
			if set[f] {
				return usagef("-%s: only with -cluster, which names the NATS server of the cluster", f)
			}
		}
		return nil
	}
	if strings.TrimSpace(cf.url) == "" {
		return usagef("-cluster: no URL; name the NATS server of the cluster, as nats://HOST:4222")
	}
	if !c.hasGraphQL() {
		return usagef("-cluster: every -upstream is a NATS upstream, which NATS shares itself; a cluster shares the subscriptions of GraphQL upstreams")
	}
	if set["cluster-name"] && cf.name == "" {
		return usagef("-cluster-name: empty; leave the flag out for %s", gqlpush.DefaultClusterName)
	}
	if set["cluster-instance"] && cf.instance == "" {
		return usagef("-cluster-instance: empty; leave the flag out for a random name")
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"-cluster-lease", cf.lease}, {"-resume-max-age", cf.maxAge}} {
		// Zero is gqlpush's default, and negative gqlpush's to refuse.
		if d.v > 0 && d.v < minClusterDuration {
			return usagef("%s %v: JetStream keeps nothing for less than %v; 0 means the default", d.flag, d.v, minClusterDuration)
		}
	}
	cl := &gqlpush.Cluster{URL: cf.url, Name: cf.name, Instance: cf.instance, Lease: cf.lease, MaxAge: cf.maxAge}
	if cl.Instance == "" {
		// gqlpush would pick one too, but the log names it.
		cl.Instance = strings.ToLower(rand.Text()[:instanceLen])
	}
	if set["cluster-creds"] {
		what := "-cluster-creds " + cf.creds
		if err := c.checkCreds(what, cf.creds); err != nil {
			return err
		}
		cl.NATSOptions = []nats.Option{nats.UserCredentials(cf.creds)}
	}
	c.cluster = cl
	return nil
}

// logCluster says, at startup, which instance of which cluster the gateway
// is, with the durations in force; never the URL, which may hold
// credentials.
func (c *config) logCluster(log *slog.Logger) {
	cl := c.cluster
	if cl == nil {
		return
	}
	log.Info("running as an instance of a cluster", "instance", cl.Instance,
		"cluster", cmp.Or(cl.Name, gqlpush.DefaultClusterName),
		"lease", cmp.Or(cl.Lease, gqlpush.DefaultClusterLease),
		"resume_max_age", cmp.Or(cl.MaxAge, gqlpush.DefaultResumeMaxAge))
}
