package main

import (
	"crypto/tls"
	"net/http"
)

// tlsFlags are the flags of how the gateway serves: -tls-cert and
// -tls-key, and -h2c.
type tlsFlags struct {
	cert, key string
	h2c       bool
}

// checkTLS loads the certificate and key that -tls-cert and -tls-key name,
// given both or neither; -h2c goes without them, since over TLS HTTP/2 is
// offered already.
func (c *config) checkTLS(tf tlsFlags) error {
	switch {
	case tf.cert == "" && tf.key == "":
		c.h2c = tf.h2c
		return nil
	case tf.cert == "":
		return usagef("-tls-key: only with -tls-cert")
	case tf.key == "":
		return usagef("-tls-cert: needs -tls-key, the certificate's private key")
	case tf.h2c:
		return usagef("-h2c: only without -tls-cert: over TLS, HTTP/2 is offered already")
	}
	cert, err := tls.LoadX509KeyPair(tf.cert, tf.key)
	if err != nil {
		return usagef("-tls-cert %s, -tls-key %s: %v", tf.cert, tf.key, err)
	}
	c.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return nil
}

// protocols are what the gateway speaks: HTTP/1.1, and HTTP/2 over TLS,
// or in cleartext (h2c) with -h2c, for a proxy in front that speaks it.
// Streams over HTTP/2 run through the ResponseWriter, many on one
// connection: a browser's six connections per origin over HTTP/1.1 stop
// limiting how many streams a page can follow.
func (c *config) protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(c.tls != nil)
	p.SetUnencryptedHTTP2(c.h2c)
	return &p
}

// scheme is the scheme of the gateway's URLs.
func (c *config) scheme() string {
	if c.tls != nil {
		return "https"
	}
	return "http"
}
