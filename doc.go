// Package gqlpush turns persisted GraphQL subscriptions into plain HTTP
// streams.
package gqlpush
