package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear, as HdrHistogram is: values below
// 2·subCount nanoseconds have a bucket each; above, every power of two is cut
// into subCount buckets. With subCount 128 a bucket is at most 1/128 of its
// values wide, so a quantile read at a bucket's midpoint is within 0.4% of
// the true one. Every int64 fits: no value is clamped.
const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) * subCount
	histShards = 8 // recording goroutines spread over this many copies
)

// bucketOf returns the bucket of a value in nanoseconds.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2*subCount {
		return int(u)
	}
	e := bits.Len64(u) - (subBits + 1) // u>>e is in [subCount, 2·subCount)
	return (e+1)*subCount + int(u>>e) - subCount
}

// bucketMid returns the middle of a bucket's range, in nanoseconds.
func bucketMid(i int) int64 {
	if i < 2*subCount {
		return int64(i)
	}
	e := i/subCount - 1
	m := uint64(i%subCount + subCount)
	lo := m << e
	return int64(lo + (uint64(1)<<e)/2)
}

// A histogram records latencies without allocating, from any goroutine.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

func (h *histogram) record(v int64) {
	h.counts[bucketOf(v)].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// A histSet is a histogram in shards, so that goroutines on different cores
// seldom add to the same cache line. A client records into shard id%histShards.
type histSet struct {
	shards [histShards]histogram
}

func newHistSet() *histSet { return new(histSet) }

func (s *histSet) record(shard int, v int64) {
	s.shards[shard%histShards].record(v)
}

// A latency summary; every duration is in microseconds.
type latency struct {
	Samples uint64  `json:"samples"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	MaxUs   float64 `json:"max_us"`
}

// summary merges the shards. It returns nil when nothing was recorded.
func (s *histSet) summary() *latency {
	var (
		counts [numBuckets]uint64
		total  uint64
		maxV   int64
	)
	for i := range s.shards {
		sh := &s.shards[i]
		for b := range counts {
			n := sh.counts[b].Load()
			counts[b] += n
			total += n
		}
		maxV = max(maxV, sh.max.Load())
	}
	if total == 0 {
		return nil
	}
	q := func(p float64) float64 {
		rank := uint64(p*float64(total) + 0.999999) // ceil
		rank = max(rank, 1)
		var seen uint64
		for b, n := range counts {
			seen += n
			if seen >= rank {
				return us(min(bucketMid(b), maxV))
			}
		}
		return us(maxV)
	}
	return &latency{Samples: total, P50us: q(0.50), P99us: q(0.99), MaxUs: us(maxV)}
}

func us(ns int64) float64 { return float64(ns) / float64(time.Microsecond) }

// A histDump is a histogram's buckets that hold something, by index, and
// its largest value: what a clients process sends its parent, which adds
// the dumps of all of them into one histSet and reads the quantiles of the
// whole. Buckets are the same in every process of one binary, so adding
// them is exact.
type histDump struct {
	Buckets map[int]uint64 `json:"buckets"`
	MaxNs   int64          `json:"max_ns"`
}

// dump merges the shards into a histDump.
func (s *histSet) dump() histDump {
	d := histDump{Buckets: map[int]uint64{}}
	for i := range s.shards {
		sh := &s.shards[i]
		for b := range sh.counts {
			if n := sh.counts[b].Load(); n > 0 {
				d.Buckets[b] += n
			}
		}
		d.MaxNs = max(d.MaxNs, sh.max.Load())
	}
	return d
}

// add adds a dump to the first shard. Buckets out of range are ignored.
func (s *histSet) add(d histDump) {
	sh := &s.shards[0]
	for b, n := range d.Buckets {
		if b >= 0 && b < numBuckets {
			sh.counts[b].Add(n)
		}
	}
	for {
		m := sh.max.Load()
		if d.MaxNs <= m || sh.max.CompareAndSwap(m, d.MaxNs) {
			return
		}
	}
}
