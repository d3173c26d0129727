module github.com/gqlpush/gqlpush

go 1.25.0

require (
	github.com/coder/websocket v1.8.15
	github.com/graph-gophers/graphql-go v1.11.0
	github.com/vektah/gqlparser/v2 v2.5.64
	go.uber.org/goleak v1.3.0
)

require github.com/agnivade/levenshtein v1.2.2 // indirect
