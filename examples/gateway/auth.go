package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gqlpush/gqlpush/gqlpushjwt"
	"golang.org/x/net/http/httpguts"
)

const (
	// minSecretBytes is the shortest HS256 secret accepted, as gqlpush
	// requires.
	minSecretBytes = 32

	// maxSecretBytes and maxJWKSBytes bound what is read of the files:
	// a flag that names the wrong file (a log, a device) fails at once.
	maxSecretBytes = 64 << 10
	maxJWKSBytes   = 1 << 20
)

// authFlags are the raw values of the authentication flags.
type authFlags struct {
	secretFile string
	jwks       string
	issuer     string
	audience   string
	cookie     string
	rolesClaim string
	leeway     time.Duration
}

// checkAuth checks the authentication flags and loads the key material they
// name into c.jwt. set holds the names of the flags given on the command
// line. Messages name files and URLs, never what the files hold, nor the
// password or query of a URL.
func (c *config) checkAuth(af authFlags, set map[string]bool) error {
	if set["jwt-secret-file"] && set["jwks"] {
		return usagef("-jwt-secret-file and -jwks: give one of them, not both")
	}
	if !set["jwt-secret-file"] && !set["jwks"] {
		for _, f := range []string{"jwt-issuer", "jwt-audience", "jwt-leeway", "auth-cookie", "roles-claim"} {
			if set[f] {
				return usagef("-%s: no tokens are verified without -jwt-secret-file or -jwks", f)
			}
		}
		return nil
	}
	if af.leeway < 0 {
		return usagef("-jwt-leeway %v: must not be negative; 0s allows no clock skew", af.leeway)
	}
	jc := &gqlpushjwt.Config{Issuer: af.issuer, Audience: af.audience, Cookie: af.cookie, RolesClaim: af.rolesClaim, Leeway: af.leeway}
	if af.leeway == 0 {
		// gqlpushjwt reads a zero Leeway as its default, and a negative
		// one as none.
		jc.Leeway = -1
	}
	if set["jwt-issuer"] && af.issuer == "" {
		return usagef("-jwt-issuer: empty; leave the flag out to accept any issuer")
	}
	if set["jwt-audience"] && af.audience == "" {
		return usagef("-jwt-audience: empty; leave the flag out to accept any audience")
	}
	if af.cookie != "-" && !httpguts.ValidHeaderFieldName(af.cookie) {
		return usagef("-auth-cookie %q: not a cookie name (- reads no cookie)", af.cookie)
	}
	if p := af.rolesClaim; p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
		return usagef("-roles-claim %q: not a claim path like roles or realm_access.roles", p)
	}
	var err error
	if set["jwt-secret-file"] {
		jc.Secret, err = c.readSecret(af.secretFile)
		c.keys, c.keysFlag = "HS256 secret from "+af.secretFile, "-jwt-secret-file "+af.secretFile
	} else {
		err = c.loadJWKS(jc, af.jwks)
	}
	if err != nil {
		return err
	}
	if af.audience == "" && jc.Secret == nil {
		c.warnings = append(c.warnings, "tokens of any audience are accepted: set -jwt-audience when the issuer serves other applications too")
	}
	c.jwt = jc
	return nil
}

// readSecret reads the HS256 secret: the file's content less one trailing
// newline, which editors and echo add. A file that others may read gets a
// warning rather than a refusal: secret volumes of Kubernetes (0644) and
// Docker (0444) are mounted readable by all, inside the container.
func (c *config) readSecret(file string) ([]byte, error) {
	what := "-jwt-secret-file " + file
	if file == "" {
		return nil, usagef("-jwt-secret-file: empty; name the file that holds the secret")
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, usagef("%s: %v", what, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, usagef("%s: %v", what, unwrapPath(err))
	}
	if fi.IsDir() {
		// A pipe is fine: -jwt-secret-file <(vault read …) keeps the
		// secret off the disk.
		return nil, usagef("%s: a directory, not a file", what)
	}
	secret, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, usagef("%s: %v", what, unwrapPath(err))
	}
	if len(secret) > maxSecretBytes {
		return nil, usagef("%s: larger than %d KiB, not a secret", what, maxSecretBytes>>10)
	}
	secret = bytes.TrimSuffix(secret, []byte("\n"))
	secret = bytes.TrimSuffix(secret, []byte("\r"))
	if len(secret) < minSecretBytes {
		return nil, usagef("%s: the secret is shorter than %d bytes; use %d random bytes or more", what, minSecretBytes, minSecretBytes)
	}
	if runtime.GOOS != "windows" && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		c.warnings = append(c.warnings, fmt.Sprintf("%s: readable by group or others (mode %v); chmod 600 it", what, fi.Mode().Perm()))
	}
	return secret, nil
}

// loadJWKS points jc at the key set of -jwks: an http(s) URL, fetched when
// the authenticator is built, or a file, read now.
func (c *config) loadJWKS(jc *gqlpushjwt.Config, v string) error {
	if v == "" {
		return usagef("-jwks: empty; give the URL or the file of a JSON Web Key Set")
	}
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil {
			// The url.Error would quote the whole URL, credentials included.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return usagef("-jwks: not a URL: %v", err)
		}
		shown := redactURL(u)
		if u.Scheme != "http" && u.Scheme != "https" {
			return usagef("-jwks %s: scheme %q is not http or https", shown, u.Scheme)
		}
		if u.Host == "" {
			return usagef("-jwks %s: the URL has no host", shown)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			c.warnings = append(c.warnings, "-jwks "+shown+": fetched over plain http, the keys can be swapped on the way; use https")
		}
		jc.JWKSURL = v
		c.keys, c.keysFlag = "JSON Web Key Set at "+shown, "-jwks "+shown
		return nil
	}
	what := "-jwks " + v
	f, err := os.Open(v)
	if err != nil {
		return usagef("%s: %v", what, unwrapPath(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return usagef("%s: %v", what, unwrapPath(err))
	}
	if len(b) > maxJWKSBytes {
		return usagef("%s: larger than %d MiB", what, maxJWKSBytes>>20)
	}
	// Decoding errors are left out: they quote the file, which may be
	// a secret named by mistake.
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if !json.Valid(b) || json.Unmarshal(b, &set) != nil {
		return usagef(`%s: not a JSON Web Key Set: want {"keys":[…]}`, what)
	}
	if len(set.Keys) == 0 {
		return usagef("%s: the key set has no keys", what)
	}
	jc.JWKS = b
	c.keys, c.keysFlag = "JSON Web Key Set from "+v, what
	return nil
}

// authenticator builds the JWTAuthenticator of the flags; it is nil, and
// closeAuth does nothing, without -jwt-secret-file and -jwks. A key set URL
// is fetched now, through a client of the gateway's own: closeAuth stops
// the refresh and closes that client's idle connections. It may be called
// more than once, and concurrently.
func (c *config) authenticator(log *slog.Logger) (a *gqlpushjwt.Authenticator, closeAuth func(), err error) {
	if c.jwt == nil {
		return nil, func() {}, nil
	}
	jc := *c.jwt
	jc.Logger = log
	tr := http.DefaultTransport.(*http.Transport).Clone()
	jc.HTTPClient = &http.Client{Transport: tr}
	a, err = gqlpushjwt.New(jc)
	if err != nil {
		tr.CloseIdleConnections()
		// gqlpush's errors hold no credentials: URLs lose their user
		// info and query.
		return nil, nil, usagef("%s: %v", c.keysFlag, err)
	}
	return a, func() {
		a.Close()
		tr.CloseIdleConnections()
	}, nil
}

// authLabel says, for the log, where the keys that verify tokens come
// from: a file, or a URL without its password and query.
func (c *config) authLabel() string {
	if c.jwt == nil {
		return "none: every caller is anonymous"
	}
	return c.keys
}

// redactURL shows u in messages and logs without what may be a credential:
// the password is masked and the query and fragment dropped.
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	return c.Redacted()
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// unwrapPath drops the *os.PathError around err: messages name the file
// themselves.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
