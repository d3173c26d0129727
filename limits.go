package gqlpush

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// limits caps open streams: in all, for anonymous callers, and per caller.
// A subscription kept by ResumeGrace is charged to a caller as well (see
// charge). The counts move only under the lock, and each acquire or charge
// is undone by exactly one call of the function it returns.
type limits struct {
	max, perMax, anonMax int // 0: no cap

	mu    sync.Mutex
	total int
	anon  int
	per   map[string]int // streams and charges by caller
}

// acquire takes a stream for the caller key. A refusal says whether the
// caller's own cap refused it (byCaller): then the caller may make room
// by giving up a subscription charged to it.
func (l *limits) acquire(key string, anonymous bool) (release func(), byCaller bool, herr *httpError) {
	if l.max == 0 && l.perMax == 0 && l.anonMax == 0 {
		return func() {}, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max, anonymous && l.anonMax > 0 && l.anon >= l.anonMax:
		return nil, false, errTooManyStreams
	case l.perMax > 0 && l.per[key] >= l.perMax:
		return nil, true, errTooManyStreams
	}
	l.total++
	if anonymous {
		l.anon++
	}
	l.per[key]++
	return l.releaser(key, anonymous, true), false, nil
}

// charge counts a kept subscription against key's cap, whatever the count:
// the stream that leaves it is about to give its own place back.
func (l *limits) charge(key string) (release func()) {
	if l.perMax == 0 {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.per[key]++
	return l.releaser(key, false, false)
}

func (l *limits) releaser(key string, anonymous, stream bool) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if stream {
				l.total--
			}
			if anonymous {
				l.anon--
			}
			if l.per[key]--; l.per[key] == 0 {
				delete(l.per, key)
			}
		})
	}
}

// limitKey names whose streams a request counts against: the principal's
// subject, or, for anonymous callers, their address; an IPv6 address by its
// /64, the block one host or one customer usually holds whole.
func (h *Handler) limitKey(r *http.Request, p *Principal) string {
	if p != nil && p.Subject != "" {
		return "sub:" + p.Subject
	}
	var host string
	if h.cfg.ClientAddress != nil {
		host = h.cfg.ClientAddress(r)
	} else {
		var err error
		if host, _, err = net.SplitHostPort(r.RemoteAddr); err != nil {
			host = r.RemoteAddr
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.Is6() {
			p, _ := a.WithZone("").Prefix(64)
			return "addr:" + p.String()
		}
		return "addr:" + a.String()
	}
	return "addr:" + host
}

// ForwardedAddress returns a Config.ClientAddress for a server behind
// proxies: it reads the caller's address from the header the proxies append
// to (X-Forwarded-For: client, proxy1, proxy2), trusting only the proxies
// in trusted. Read from the right, as nginx's real_ip_recursive does, the
// address is the first one not in a trusted range: what a client wrote
// itself, to the left of its own address, is never taken. A request that
// does not come from a trusted proxy is named by its RemoteAddr, whatever
// the header says; so is one whose header is malformed. With no trusted
// range, the header is never read.
//
// List only proxies that append the address of whoever connects to them,
// and only addresses nothing else can connect from: a request from a trusted
// address names its client as it likes (with 127.0.0.1 trusted, so does any
// process on the machine).
func ForwardedAddress(header string, trusted []netip.Prefix) func(r *http.Request) string {
	header = http.CanonicalHeaderKey(header)
	trusted = slices.Clone(trusted)
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap().WithZone("") // a prefix contains no zoned address
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		remote, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			remote = r.RemoteAddr
		}
		ra, err := netip.ParseAddr(remote)
		if err != nil || !isTrusted(ra) {
			return remote
		}
		var hops []string
		for _, v := range r.Header.Values(header) {
			hops = append(hops, strings.Split(v, ",")...)
		}
		client := remote
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := hopAddr(hops[i])
			if !ok {
				return remote // not an address: trust nothing to its left
			}
			client = a.String()
			if !isTrusted(a) {
				break
			}
		}
		// The first untrusted hop from the right; or, when every hop is a
		// trusted proxy, the leftmost, where the request came from.
		return client
	}
}

// hopAddr reads one entry of X-Forwarded-For: an address, or an address and
// a port, as some proxies write.
func hopAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
