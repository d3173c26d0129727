package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// maxCredsBytes bounds what is read of a -nats-creds file: a user JWT and
// its seed take a few KiB.
const maxCredsBytes = 64 << 10

// isNATS reports whether an -upstream URL makes a NATS upstream, as gqlpush
// tells them apart: a nats:// or tls:// URL, or a comma-separated list
// whose first URL is one. Any other URL is a GraphQL server's.
func isNATS(rawURL string) bool {
	scheme, _, _ := strings.Cut(rawURL, "://")
	scheme = strings.ToLower(scheme)
	return scheme == "nats" || scheme == "tls"
}

// hasGraphQL reports whether some upstream is a GraphQL server: the flags
// for the WebSocket handshake have something to apply to.
func (c *config) hasGraphQL() bool {
	for _, u := range c.upstreams {
		if !isNATS(u.URL) {
			return true
		}
	}
	return false
}

// applyForwardHeaders gives the -forward-header names to every GraphQL
// upstream. A NATS upstream has no handshake to carry them; the flag with no
// GraphQL upstream at all is refused, as it could only be a mistake.
func (c *config) applyForwardHeaders(names []string) error {
	if len(names) == 0 {
		return nil
	}
	if !c.hasGraphQL() {
		return usagef("-forward-header %s: every -upstream is a NATS upstream, and NATS takes no forwarded headers", names[0])
	}
	for i := range c.upstreams {
		if !isNATS(c.upstreams[i].URL) {
			c.upstreams[i].ForwardHeaders = names
		}
	}
	return nil
}

// applyNATSCreds reads the -nats-creds values, NAME=FILE or =FILE, and
// gives each NATS upstream named its credentials file. The file is checked
// now, so that a wrong path or a wrong file stops the gateway at startup
// rather than failing every connect; nats.go reads it again at each connect,
// so that it can be replaced in place.
func (c *config) applyNATSCreds(values []string) error {
	given := map[string]bool{}
	for _, v := range values {
		name, file, ok := strings.Cut(v, "=")
		if !ok {
			return usagef("-nats-creds %q: want NAME=FILE, or =FILE for the unnamed upstream", v)
		}
		what := "-nats-creds " + v
		if given[name] {
			return usagef("%s: a second -nats-creds for %s", what, upstreamLabel(name))
		}
		given[name] = true
		i := upstreamIndex(c.upstreams, name)
		if i < 0 {
			if name == "" {
				return usagef("%s: no -upstream is unnamed", what)
			}
			return usagef("%s: no -upstream is named %q", what, name)
		}
		if !isNATS(c.upstreams[i].URL) {
			return usagef("%s: upstream %s is not a NATS upstream: its URL is not nats:// or tls://", what, upstreamLabel(name))
		}
		if err := c.checkCreds(what, file); err != nil {
			return err
		}
		c.upstreams[i].NATSOptions = []nats.Option{nats.UserCredentials(file)}
	}
	return nil
}

// checkCreds checks that file is a NATS credentials file, as nsc and
// jwt.FormatUserConfig write them: a user JWT and the user's nkey seed.
// Messages never quote the file's content. A file that others may read gets
// a warning, as the -jwt-secret-file does.
func (c *config) checkCreds(what, file string) error {
	if file == "" {
		return usagef("%s: no FILE; name the credentials file", what)
	}
	if strings.HasPrefix(file, "~") || strings.Contains(file, "$") {
		// nats.go expands them in the path it reads the JWT from, but
		// not in the one it reads the seed from: the two would differ.
		return usagef("%s: give the path with ~ and $ expanded", what)
	}
	f, err := os.Open(file)
	if err != nil {
		return usagef("%s: %v", what, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return usagef("%s: %v", what, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		// A pipe would be read here, and empty at the first connect.
		return usagef("%s: not a regular file; NATS reads it again at every connect", what)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCredsBytes+1))
	if err != nil {
		return usagef("%s: %v", what, unwrapPath(err))
	}
	defer clear(b) // it holds the seed
	if len(b) > maxCredsBytes {
		return usagef("%s: larger than %d KiB, not a credentials file", what, maxCredsBytes>>10)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return usagef("%s: no user nkey seed (%v); want a credentials file with a user JWT and its seed", what, err)
	}
	kp.Wipe()
	// Without the decoration, nats.go would send the whole file as the
	// JWT.
	if token, _ := nkeys.ParseDecoratedJWT(b); strings.Count(token, ".") != 2 {
		return usagef("%s: no user JWT; want a credentials file with a user JWT and its seed", what)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("%s: readable by group or others (mode %v); chmod 600 it", what, fi.Mode().Perm()))
	}
	return nil
}
