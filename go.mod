module github.com/gqlpush/gqlpush

go 1.25.0

require (
	github.com/coder/websocket v1.8.15
	github.com/graph-gophers/graphql-go v1.11.0
	github.com/r3labs/sse/v2 v2.10.0
	github.com/vektah/gqlparser/v2 v2.5.64
	go.uber.org/goleak v1.3.0
	gopkg.in/cenkalti/backoff.v1 v1.1.0
)

require (
	github.com/agnivade/levenshtein v1.2.2 // indirect
	github.com/tidwall/gjson v1.18.0 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.1 // indirect
	github.com/tidwall/sjson v1.2.5 // indirect
	github.com/wI2L/jsondiff v0.7.1 // indirect
	golang.org/x/net v0.0.0-20191116160921-f9c825593386 // indirect
)
