package store

import (
	"math/rand/v2"
	"testing"
)

// TestOutboxIndexMatchesSet drives the span index with random adds and
// deletes (front-heavy like the relay, and arbitrary) and compares it
// with a plain set after every step.
func TestOutboxIndexMatchesSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x outboxIndex
	live := map[uint64]int64{}
	next := uint64(1)
	at := int64(0)
	lowest := uint64(1)
	for step := 0; step < 20000; step++ {
		switch op := rng.IntN(10); {
		case op < 5: // a group commit of 1-8 entries sharing a time
			at++
			for n := 1 + rng.IntN(8); n > 0; n-- {
				x.add(next, at)
				live[next] = at
				next++
			}
		case op < 8: // the relay deletes a prefix
			lo := x.lowest(next - 1)
			for n := rng.IntN(12); n > 0; n-- {
				x.remove(lo)
				delete(live, lo)
				lo++
			}
		default: // an arbitrary delete, possibly of a gone revision
			rev := 1 + rng.Uint64N(next)
			x.remove(rev)
			delete(live, rev)
		}
		if x.live != len(live) {
			t.Fatalf("step %d: index holds %d, set %d", step, x.live, len(live))
		}
		if len(live) == 0 {
			if x.lowest(next-1) != next {
				t.Fatalf("step %d: empty index lowest %d, want %d", step, x.lowest(next-1), next)
			}
			continue
		}
		// Deletes only remove and adds only go above, so the lowest
		// live revision never decreases.
		for _, ok := live[lowest]; !ok; _, ok = live[lowest] {
			lowest++
		}
		lo := lowest
		if x.lowest(next-1) != lo || x.oldest() != live[lo] {
			t.Fatalf("step %d: lowest %d at %d, want %d at %d", step, x.lowest(next-1), x.oldest(), lo, live[lo])
		}
	}
	// Every span is non-empty, ordered, and their sizes sum to live.
	sum := 0
	for i, sp := range x.spans[x.head:] {
		if sp.first > sp.last || (i > 0 && x.spans[x.head+i-1].last >= sp.first) {
			t.Fatalf("bad span %d: %+v", i, sp)
		}
		sum += int(sp.last - sp.first + 1)
	}
	if sum != x.live {
		t.Fatalf("spans hold %d, live %d", sum, x.live)
	}
}
