package gqlpush

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var benchResult = json.RawMessage(`{"data":{"gql_messageCreated":{"id":"12345","content":"a message of ordinary length, a sentence or two","sentAt":"1764140000000000000"}}}`)

var benchMessage = []byte(`{"id":"17","type":"next","payload":` + string(benchResult) + `}`)

// BenchmarkReadEvent measures what is done once per upstream event, whatever
// the number of subscribers: the message decoded, the result compacted and
// framed.
func BenchmarkReadEvent(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchMessage)))
	for b.Loop() {
		m, err := scanMessage(benchMessage)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := frameEvent(m.payload, "0123456789abcdef", 42); err != nil {
			b.Fatal(err)
		}
	}
}

// discard is a ResponseWriter that drops what it is given, as a fast client.
type discard struct {
	header http.Header
	n      atomic.Int64
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Write(p []byte) (int, error) { d.n.Add(int64(len(p))); return len(p), nil }
func (d *discard) Flush()                      {}

// BenchmarkFanout publishes events to one shared subscription with n
// subscribers, each with its own writer goroutine, as the handler runs them,
// writing to a client that takes everything at once. One op is one event
// delivered to every subscriber: allocs/op staying flat as n grows is the
// proof that nothing is allocated per subscriber.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			cfg := &Config{QueueSize: 1 << 30, QueueBytes: 1 << 40, ResumeFrames: DefaultResumeFrames, WriteTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)}
			h := newHub(cfg, &limits{})
			ep := &endpoint{op: &Operation{name: "Bench"}}
			sh := &shared{h: h, key: subKey{ep: ep}, token: newToken()}
			req := &request{ep: ep, sse: true}
			var (
				wg        sync.WaitGroup
				delivered atomic.Int64
				all       = make(chan struct{})
				total     = int64(n) * int64(b.N)
			)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range n {
				s := &subscriber{sh: sh, wake: make(chan struct{}, 1)}
				sh.subs = append(sh.subs, s)
				w := &discard{header: http.Header{}}
				st := &stream{sink: &httpSink{w: w, rc: http.NewResponseController(w)}, req: req, timeout: time.Minute}
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]*event, 0, 64)
					for {
						select {
						case <-ctx.Done():
							return
						case <-s.wake:
						}
						buf, _ = s.take(buf[:0])
						k, _ := st.events(buf)
						clear(buf)
						if k > 0 && delivered.Add(int64(k)) == total {
							close(all)
						}
					}
				}()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				sh.publish(benchResult, 0)
			}
			<-all
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/delivery")
			cancel()
			wg.Wait()
		})
	}
}
