package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// TestWarmOnCreate: a live create goes into the hot cache while it has
// room; a replayed create (committed long ago) does not, nor does a live
// create into a full cache (it never evicts), nor an update of a code
// that is not cached.
func TestWarmOnCreate(t *testing.T) {
	r := open(t, Options{HotCacheEntries: 3})
	now := time.Now()
	create := func(seq uint64, code string, committed time.Time) {
		t.Helper()
		rec := record(code, seq)
		mustApply(t, r, replication.Batch{Through: seq, Changes: []replication.Entry{
			{Seq: seq, Change: link.Change{Op: link.OpCreate, Record: rec, CommittedAt: committed}}}})
	}
	create(1, "old", now.Add(-time.Hour))
	create(2, "live1", now)
	create(3, "live2", now)
	mustApply(t, r, batchOf(4, record("old", 4))) // an update of an uncached code
	hot := r.HotCodes(10)
	slices.Sort(hot)
	if !slices.Equal(hot, []string{"live1", "live2"}) {
		t.Fatalf("hot after creates: %v", hot)
	}
	// Make the cached entries recently read, fill the cache, then one
	// more live create must not evict.
	for _, c := range []string{"live1", "live2", "old"} {
		if _, ok, err := r.Lookup([]byte(c)); !ok || err != nil {
			t.Fatal(c, ok, err)
		}
	}
	create(5, "live3", now)
	hot = r.HotCodes(10)
	slices.Sort(hot)
	if !slices.Equal(hot, []string{"live1", "live2", "old"}) {
		t.Fatalf("a live create into a full cache evicted: %v", hot)
	}
}

// TestHotCodesAndWarm: HotCodes lists recently read codes first, and Warm
// loads held codes into the hot cache (skipping unknown and invalid
// ones) and stops when its context is done.
func TestHotCodesAndWarm(t *testing.T) {
	r := open(t, Options{HotCacheEntries: 100})
	var recs []link.Record
	for i := range 20 {
		recs = append(recs, record(fmt.Sprintf("code%02d", i), uint64(i+1)))
	}
	mustApply(t, r, batchOf(20, recs...)) // replayed: committed long ago, nothing cached
	if n := len(r.HotCodes(100)); n != 0 {
		t.Fatalf("%d codes cached after a replay", n)
	}
	n, err := r.Warm(context.Background(), []string{"code01", "code02", "nope01", "bad/code", "code03"})
	if err != nil || n != 3 {
		t.Fatalf("Warm = %d, %v", n, err)
	}
	if _, ok, _ := r.Lookup([]byte("code02")); !ok {
		t.Fatal("code02 not found")
	}
	if hot := r.HotCodes(1); !slices.Equal(hot, []string{"code02"}) {
		t.Fatalf("recently read code not first: %v", hot)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, _ := r.Warm(ctx, []string{"code05"}); n != 0 {
		t.Fatalf("Warm with a done context loaded %d", n)
	}
}

// BenchmarkWarm loads a 200,000-code hot set (the default WarmEntries),
// shuffled, from a replica of 200,000 links on disk into a cold hot
// cache: the time a restarted edge spends warming before it serves.
func BenchmarkWarm(b *testing.B) {
	const n = 200_000
	dir := b.TempDir()
	r := open(b, Options{Dir: dir, HotCacheEntries: n})
	codes := make([]string, 0, n)
	for start := 0; start < n; start += 5000 {
		recs := make([]link.Record, 0, 5000)
		for i := start; i < start+5000; i++ {
			c := fmt.Sprintf("w%07d", i)
			codes = append(codes, c)
			recs = append(recs, record(c, uint64(i+1)))
		}
		mustApply(b, r, batchOf(uint64(start+5000), recs...))
	}
	if err := r.Close(); err != nil {
		b.Fatal(err)
	}
	// A hot set is in order of heat, not of code.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(codes), func(i, j int) { codes[i], codes[j] = codes[j], codes[i] })
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		r := open(b, Options{Dir: dir, HotCacheEntries: n})
		b.StartTimer()
		got, err := r.Warm(context.Background(), codes)
		if err != nil || got != n {
			b.Fatal(got, err)
		}
		b.StopTimer()
		r.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/code")
}
