package main

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestShop checks the make-believe shop over many steps: orders are numbered
// in turn, go through their statuses in order (or are cancelled early), stop
// changing once delivered or cancelled, and add up.
func TestShop(t *testing.T) {
	for seed := range uint64(20) {
		s := newShop(rand.New(rand.NewPCG(seed, 0)))
		now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		last := map[string]string{} // status by order id
		next := firstOrder
		for range 300 {
			now = now.Add(time.Second)
			o := s.step(now)
			prev, seen := last[o.ID]
			switch {
			case !seen:
				if o.ID != strconv.Itoa(next) || o.Status != lifecycle[0] {
					t.Fatalf("seed %d: new order %s %s, want %d %s", seed, o.ID, o.Status, next, lifecycle[0])
				}
				next++
			case prev == cancelled || prev == lifecycle[len(lifecycle)-1]:
				t.Fatalf("seed %d: order %s changed to %s after %s", seed, o.ID, o.Status, prev)
			case o.Status == cancelled:
				if i := slices.Index(lifecycle, prev); i > 1 {
					t.Fatalf("seed %d: order %s cancelled once %s", seed, o.ID, prev)
				}
			default:
				if i := slices.Index(lifecycle, prev); o.Status != lifecycle[i+1] {
					t.Fatalf("seed %d: order %s went from %s to %s", seed, o.ID, prev, o.Status)
				}
			}
			last[o.ID] = o.Status
			if !o.UpdatedAt.Equal(now) {
				t.Fatalf("seed %d: order %s updated at %v, want %v", seed, o.ID, o.UpdatedAt, now)
			}
			if len(s.open) > maxOpen {
				t.Fatalf("seed %d: %d orders in flight, want at most %d", seed, len(s.open), maxOpen)
			}
			cents := 0
			for _, it := range o.Items {
				if it.Qty < 1 {
					t.Fatalf("seed %d: order %s has %d of %s", seed, o.ID, it.Qty, it.SKU)
				}
				cents += it.Qty * int(it.Price.Amount*100+0.5)
			}
			if len(o.Items) == 0 || o.Total != eur(cents) {
				t.Fatalf("seed %d: order %s totals %+v for %+v", seed, o.ID, o.Total, o.Items)
			}
		}
		// Orders do end.
		if next-firstOrder <= maxOpen {
			t.Errorf("seed %d: only %d orders in 300 steps", seed, next-firstOrder)
		}
	}
}
