package gqlpush_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// A persisted subscription served over HTTP, in front of an upstream
// GraphQL server reached over WebSocket.
func Example() {
	upstream := gqlpushtest.NewServer(nil) // a GraphQL server with a countdown subscription
	defer upstream.Close()

	op, err := gqlpush.ParseOperation("Countdown", `
		subscription Countdown($from: Int! = 3) {
		  gql_countdown(from: $from)
		}`)
	if err != nil {
		panic(err)
	}
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: []*gqlpush.Operation{op},
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: upstream.URL, Schema: gqlpushtest.ChatSchema}},
		Prefix:     "/operations/",
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close(context.Background())

	for _, query := range []string{"from=2", "wg_subscribe_once=true"} {
		resp, err := http.Get(srv.URL + "/operations/Countdown?" + query)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("?%s (%s):\n%s", query, resp.Header.Get("Content-Type"), body)
		if !strings.HasSuffix(string(body), "\n") {
			fmt.Println()
		}
		fmt.Println("--")
	}
	// Output:
	// ?from=2 (application/json):
	// {"data":{"gql_countdown":2}}
	//
	// {"data":{"gql_countdown":1}}
	//
	// --
	// ?wg_subscribe_once=true (application/json):
	// {"data":{"gql_countdown":3}}
	// --
}
