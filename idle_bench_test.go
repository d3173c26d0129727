package gqlpush_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/gqlpush/gqlpush"
	"github.com/gqlpush/gqlpush/gqlpushtest"
)

// BenchmarkIdleStreams measures what an idle stream holds: n SSE clients of
// one shared subscription over loopback, sent nothing but the opening
// comment. Its metrics are per stream, after a collection: the live heap
// and the goroutine stacks, each less what as many bare connections cost
// (both ends of a TCP connection accepted and held, with no HTTP), for the
// clients are in the same process. Memory per idle client is a figure the
// fan-out path must not raise; this is its precise, in-process form, beside
// loadgen's idle scenario, which reads a child's RSS.
func BenchmarkIdleStreams(b *testing.B) {
	const n = 2000
	up := gqlpushtest.NewServer(nil)
	defer up.Close()
	op, err := gqlpush.ParseOperation("Sub", `subscription { gql_messageCreated { id content } }`)
	if err != nil {
		b.Fatal(err)
	}
	h, err := gqlpush.NewHandler(gqlpush.Config{
		Operations: []*gqlpush.Operation{op},
		Upstreams:  []gqlpush.Upstream{{Name: "gql", URL: up.URL}},
		Prefix:     "/operations/",
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			b.Error(err)
		}
	}()
	addr := srv.Listener.Addr().String()
	var bareHeap, bareStacks, heap, stacks float64
	for b.Loop() {
		bareHeap, bareStacks = idleBareConns(b, n)
		heap, stacks = idleCost(b, n, func() []net.Conn {
			conns := make([]net.Conn, n)
			for i := range conns {
				conns[i] = openIdleStream(b, addr)
			}
			waitIdleStreams(b, h, n)
			return conns
		}, func() { waitIdleStreams(b, h, 0) })
	}
	b.ReportMetric(heap-bareHeap, "heap-B/stream")
	b.ReportMetric(stacks-bareStacks, "stack-B/stream")
	b.ReportMetric(bareHeap, "bare-heap-B/conn")
}

// idleCost returns the live heap and stack bytes per connection that open's
// connections add, and closes them; closed waits until they are gone.
func idleCost(b *testing.B, n int, open func() []net.Conn, closed func()) (heap, stacks float64) {
	b.Helper()
	heap0, stacks0 := memNow()
	conns := open()
	heap1, stacks1 := memNow()
	for _, c := range conns {
		c.Close()
	}
	closed()
	return float64(int64(heap1)-int64(heap0)) / float64(n), float64(int64(stacks1)-int64(stacks0)) / float64(n)
}

// memNow collects, then returns the live heap and the stacks in use.
func memNow() (heap, stacks uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

// idleBareConns is idleCost of n loopback connections accepted and held
// by a listener that does nothing else: one goroutine blocked in a read on
// the accepted end, as a stream's watch is.
func idleBareConns(b *testing.B, n int) (heap, stacks float64) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn)
	done := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
			go func() {
				defer func() { done <- struct{}{} }()
				c.Read(make([]byte, 1))
			}()
		}
	}()
	var held []net.Conn
	heap, stacks = idleCost(b, n, func() []net.Conn {
		conns := make([]net.Conn, n)
		for i := range conns {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = c
			held = append(held, <-accepted)
		}
		return conns
	}, func() {
		for range n {
			<-done
		}
	})
	for _, c := range held {
		c.Close()
	}
	return heap, stacks
}

// openIdleStream opens an SSE stream and reads its head and first comment,
// keeping nothing of the reading but the connection.
func openIdleStream(b *testing.B, addr string) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET /operations/Sub?wg_sse=true HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		b.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("open stream: %v %v", resp, err)
	}
	// The first chunk, ":\n\n" ("3\r\n:\n\n\r\n"): the stream has begun.
	if _, err := br.Discard(len("3\r\n:\n\n\r\n")); err != nil {
		b.Fatal(err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

func waitIdleStreams(b *testing.B, h *gqlpush.Handler, n int) {
	b.Helper()
	waitStats(b, h, fmt.Sprintf("%d streams", n), func(st gqlpush.Stats) bool { return st.Streams == n })
}
