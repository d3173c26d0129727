package gqlpush

import "time"

// WithJWKSTimeout returns cfg with JWKSTimeout replaced by d, so that a test
// of a key set server that never answers ends soon.
func WithJWKSTimeout(cfg JWTConfig, d time.Duration) JWTConfig {
	cfg.jwksTimeout = d
	return cfg
}
