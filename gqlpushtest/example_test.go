package gqlpushtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// serve mounts a gqlpush Handler of one operation in front of upstream, at
// /operations/, on a loopback port; stop closes it.
func serve(upstream *gqlpushtest.Server, name, src string) (url string, stop func()) {
	op, err := gqlpush.ParseOperation(name, src)
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
	return srv.URL, func() {
		h.Close(context.Background())
		srv.Close()
	}
}

// Every frame of a stream that completes: the opening comment, the results,
// the complete event.
func ExampleSSEReader() {
	upstream := gqlpushtest.NewServer(nil)
	defer upstream.Close()
	url, stop := serve(upstream, "Countdown", `subscription ($from: Int!) { gql_countdown(from: $from) }`)
	defer stop()

	resp, err := http.Get(url + "/operations/Countdown?wg_sse&from=2")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	frames := gqlpushtest.NewSSEReader(resp.Body)
	for {
		f, err := frames.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		switch {
		case f.Comment:
			fmt.Printf("comment %q\n", f.Raw)
		case f.Event != "":
			fmt.Printf("event %s, data %q\n", f.Event, f.Data)
		default:
			fmt.Printf("result %s (id set: %t)\n", f.Data, f.ID != "")
		}
	}
	// Output:
	// comment ":\n\n"
	// result {"data":{"gql_countdown":2}} (id set: true)
	// result {"data":{"gql_countdown":1}} (id set: true)
	// event complete, data ""
}

// A live stream: once the upstream runs the subscription, a message posted
// to the chat is the next event, whatever heartbeats come before it.
func ExampleSSEReader_NextEvent() {
	upstream := gqlpushtest.NewServer(nil)
	defer upstream.Close()
	url, stop := serve(upstream, "Messages", `subscription { gql_messageCreated { id content } }`)
	defer stop()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/operations/Messages?wg_sse", nil)
	if err != nil {
		panic(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	frames := gqlpushtest.NewSSEReader(resp.Body)

	if err := upstream.WaitSubscriptions(ctx, 1); err != nil {
		panic(err)
	}
	upstream.Chat.Post("", "hello")
	f, err := frames.NextEvent()
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Data)
	// Output:
	// {"data":{"gql_messageCreated":{"id":"1","content":"hello"}}}
}
