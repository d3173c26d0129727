package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// defaultClientIPHeader is the header -trusted-proxy reads by default: the
// one proxies append the address they got a request from to.
const defaultClientIPHeader = "X-Forwarded-For"

// checkLimits checks -max-conns, which is the gateway's own, and the flags
// that say which address an anonymous caller counts by. The caps gqlpush
// enforces (-max-streams and the like) are left to it: see handlerError.
// set holds the names of the flags given on the command line, proxies the
// -trusted-proxy values.
func (c *config) checkLimits(set map[string]bool, proxies []string) error {
	if c.maxConns < 0 {
		return usagef("-max-conns %d: must not be negative (0 sets no cap)", c.maxConns)
	}
	if c.maxConns > 0 && c.maxStreams > c.maxConns {
		// Not refused: a deployment that set -max-streams before -max-conns
		// existed keeps starting. But the operator should know.
		c.warnings = append(c.warnings, fmt.Sprintf("-max-streams %d is more than -max-conns %d: every stream holds a connection, so streams past %d are refused by closing their connection, without a 429; raise -max-conns",
			c.maxStreams, c.maxConns, c.maxConns))
	}

	for _, v := range proxies {
		p, err := parseTrustedProxy(v)
		if err != nil {
			return err
		}
		if p.Bits() == 0 {
			c.warnings = append(c.warnings, fmt.Sprintf("-trusted-proxy %s: trusts every address, so a caller counts by whatever address it writes in the header itself", v))
		}
		c.trustedProxies = append(c.trustedProxies, p)
	}
	if set["client-ip-header"] {
		if !httpguts.ValidHeaderFieldName(c.clientIPHeader) {
			return usagef("-client-ip-header %q: not a header name", c.clientIPHeader)
		}
		if c.maxStreamsPerPrincipal == 0 {
			return usagef("-client-ip-header %s: only counts callers for -max-streams-per-principal, which sets no cap", c.clientIPHeader)
		}
		if len(c.trustedProxies) == 0 {
			return usagef("-client-ip-header %s: without -trusted-proxy any client can forge the header and count as any address; name the proxies that set it with -trusted-proxy", c.clientIPHeader)
		}
	}
	if len(c.trustedProxies) > 0 {
		if c.maxStreamsPerPrincipal == 0 {
			return usagef("-trusted-proxy %s: only names callers for -max-streams-per-principal, which sets no cap", proxies[0])
		}
		if c.clientIPHeader == "" {
			c.clientIPHeader = defaultClientIPHeader
		}
		c.clientIPHeader = http.CanonicalHeaderKey(c.clientIPHeader)
	}
	return nil
}

// parseTrustedProxy reads a -trusted-proxy value: a CIDR prefix, or a bare
// address for that one host. An IPv4-mapped IPv6 value is taken for the
// IPv4 one it maps, as gqlpush compares addresses unmapped; a zone is
// refused, as prefixes have none.
func parseTrustedProxy(v string) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(v, "/") {
		p, err = netip.ParsePrefix(v)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(v); err == nil && a.Zone() == "" {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || !p.IsValid() {
		return netip.Prefix{}, usagef("-trusted-proxy %q: not an address or a CIDR prefix like 10.0.0.0/8 or 2001:db8::/32", v)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
