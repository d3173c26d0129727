package gqlpushjwt

import "time"

// WithJWKSTimeout returns cfg with JWKSTimeout replaced by d, so that a test
// of a key set server that never answers ends soon.
func WithJWKSTimeout(cfg Config, d time.Duration) Config {
	cfg.jwksTimeout = d
	return cfg
}
