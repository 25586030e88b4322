package replica

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/linkpop/linkpop/link"
)

// TestDecodeEntry checks the edge's partial decode against the full one
// for every field a redirect reads.
func TestDecodeEntry(t *testing.T) {
	f := func(rec link.Record) {
		t.Helper()
		b, err := link.MarshalRecord(&rec)
		if err != nil {
			t.Fatal(err)
		}
		full, err := link.UnmarshalRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		key, got, err := decodeEntry([]byte(rec.Code), b)
		if err != nil {
			t.Fatalf("%s: %v", rec.Code, err)
		}
		if want := entryOf(&full); key != rec.Code || *got != *want {
			t.Errorf("%s: decoded %q %+v, want %+v", rec.Code, key, *got, *want)
		}
	}
	f(record("plain", 1))
	r := record("perm", 1<<40)
	r.Redirect, r.Tags = 301, []string{"a", "b"}
	f(r)
	r = record("expires", 7)
	r.Redirect, r.ExpiresAt = 308, time.UnixMilli(1_900_000_000_123).UTC()
	f(r)
	r = record("disabled", 9)
	r.Status, r.Redirect = link.StatusDisabled, 307
	f(r)
	strict := record("strict", 11)
	strict.Freshness = link.FreshnessStrict
	f(strict)
	if _, e, _ := decodeEntry([]byte("strict"), must(link.MarshalRecord(&strict))); !e.Strict {
		t.Error("strict link decoded as relaxed")
	}

	good, err := link.MarshalRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(name string, b []byte, want error) {
		t.Helper()
		if _, _, err := decodeEntry([]byte("x"), b); !errors.Is(err, want) {
			t.Errorf("%s: err %v, want %v", name, err, want)
		}
	}
	bad("truncated", good[:len(good)-1], link.ErrCorrupt)
	bad("empty", nil, link.ErrUnsupportedSchema)
	bad("version 2", append([]byte{1 << 3, 2}, good[2:]...), link.ErrUnsupportedSchema)
	bad("redirect 200", append(append([]byte(nil), good...), 4<<3, 200, 1), link.ErrCorrupt)
}

// TestHotCacheClock checks the bound, that CLOCK keeps entries read since
// the hand passed, and that removal keeps the index consistent.
func TestHotCacheClock(t *testing.T) {
	c := newHotCache(4)
	put := func(k string) {
		c.Compute(k, func(*Entry, bool) (*Entry, otter.ComputeOp) { return &Entry{URL: k}, otter.WriteOp })
	}
	has := func(k string) bool { _, ok := c.GetIfPresent(k); return ok }
	for i := range 4 {
		put(fmt.Sprint(i))
	}
	has("0")
	has("2")
	put("4") // evicts 1: 0 is referenced
	put("5") // evicts 3: 2 is referenced
	for k, want := range map[string]bool{"0": true, "1": false, "2": true, "3": false, "4": true, "5": true} {
		if has(k) != want {
			t.Errorf("%s cached %v, want %v", k, !want, want)
		}
	}
	c.Invalidate("0")
	c.ComputeIfPresent("2", func(*Entry) (*Entry, otter.ComputeOp) { return nil, otter.InvalidateOp })
	if n := c.EstimatedSize(); n != 2 {
		t.Fatalf("size %d after two removals, want 2", n)
	}
	for _, k := range []string{"4", "5"} {
		if e, ok := c.GetIfPresent(k); !ok || e.URL != k {
			t.Errorf("%s: got %v %v after removals", k, e, ok)
		}
	}
	for i := range 100 {
		put(fmt.Sprint("n", i))
	}
	if n := c.EstimatedSize(); n != 4 {
		t.Errorf("size %d, want the bound 4", n)
	}
	if z := newHotCache(0); true {
		z.Compute("a", func(*Entry, bool) (*Entry, otter.ComputeOp) { return &Entry{}, otter.WriteOp })
		if _, ok := z.GetIfPresent("a"); ok {
			t.Error("a cache of 0 entries cached")
		}
	}
	big := newHotCache(1_000_000)
	if len(big.shards) != hotShardMax {
		t.Errorf("%d shards for a million entries, want %d", len(big.shards), hotShardMax)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
