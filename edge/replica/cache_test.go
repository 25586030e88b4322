package replica

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// randomCode returns a code of the given length from rng.
func randomCode(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = link.Base62[rng.IntN(len(link.Base62))]
	}
	return string(b)
}

func TestUnknownCodesAnsweredByBloom(t *testing.T) {
	leaktest.Check(t)
	set := metrics.NewSet()
	r := open(t, Options{FS: vfs.NewMem(), Metrics: set, BloomMinCapacity: 10_000})
	var recs []link.Record
	for i := range 1000 {
		recs = append(recs, record(fmt.Sprintf("k%06d", i), uint64(i+1)))
	}
	mustApply(t, r, batchOf(1000, recs...))

	rng := rand.New(rand.NewPCG(1, 2))
	const n = 10_000
	for range n {
		if _, ok, err := r.Lookup([]byte(randomCode(rng, 9))); ok || err != nil {
			t.Fatalf("random code found: %v, %v", ok, err)
		}
	}
	bloomed, disk := lookups(set, "bloom"), lookups(set, "disk_miss")
	if bloomed+disk+lookups(set, "negative") != n {
		t.Errorf("bloom %d + disk %d + negative %d != %d lookups", bloomed, disk, lookups(set, "negative"), n)
	}
	// 1000 codes in a filter sized for 10,000: false positives are far
	// below 1%.
	if bloomed < n*99/100 {
		t.Errorf("only %d of %d unknown codes answered by the bloom filter (%d went to disk)", bloomed, n, disk)
	}
	if got := r.Stats().NegativeEntries; uint64(got) > disk {
		t.Errorf("negative cache holds %d entries, more than the %d disk misses", got, disk)
	}
}

// bloomFalsePositive returns an absent code the bloom filter lets through,
// as a false positive would, so the lookup reaches Pebble.
func bloomFalsePositive(t *testing.T, r *Replica, code string) string {
	t.Helper()
	if _, ok, _ := r.Get(code); ok {
		t.Fatalf("%s is held", code)
	}
	r.bloom.Load().add(code)
	return code
}

func TestNegativeCacheClearedByCreate(t *testing.T) {
	leaktest.Check(t)
	set := metrics.NewSet()
	r := open(t, Options{FS: vfs.NewMem(), Metrics: set})
	var recs []link.Record
	for i := range 2000 {
		recs = append(recs, record(fmt.Sprintf("k%06d", i), uint64(i+1)))
	}
	mustApply(t, r, batchOf(2000, recs...))
	code := bloomFalsePositive(t, r, "falsepos1")

	for range 3 {
		if _, ok, err := r.Lookup([]byte(code)); ok || err != nil {
			t.Fatalf("absent code found: %v, %v", ok, err)
		}
	}
	if d, neg := lookups(set, "disk_miss"), lookups(set, "negative"); d != 1 || neg != 2 {
		t.Fatalf("disk misses %d, negative hits %d; want 1 and 2", d, neg)
	}

	mustApply(t, r, batchOf(2001, record(code, 5000)))
	if got := revisionOf(t, r, code); got != 5000 {
		t.Errorf("created code: revision %d right after Apply, want 5000", got)
	}
	// Put clears it too.
	code2 := bloomFalsePositive(t, r, "falsepos2")
	revisionOf(t, r, code2)
	if _, err := r.Put(record(code2, 5001)); err != nil {
		t.Fatal(err)
	}
	if got := revisionOf(t, r, code2); got != 5001 {
		t.Errorf("put code: revision %d right after Put, want 5001", got)
	}
}

func TestLookupAllocations(t *testing.T) {
	r := open(t, Options{FS: vfs.NewMem()})
	mustApply(t, r, batchOf(1, record("hot", 1)))
	revisionOf(t, r, "hot")
	absent := bloomFalsePositive(t, r, "falsepos")
	revisionOf(t, r, absent) // negative-cached

	f := func(code string, want bool) {
		t.Helper()
		b := []byte(code)
		allocs := testing.AllocsPerRun(1000, func() {
			if _, ok, _ := r.Lookup(b); ok != want {
				t.Fatalf("lookup %s: found %v", code, ok)
			}
		})
		if allocs != 0 {
			t.Errorf("lookup %s: %v allocations, want 0", code, allocs)
		}
	}
	f("hot", true)       // hot cache
	f(absent, false)     // negative cache
	f("unknown1", false) // bloom
}

func TestBloomGrowsAndKeepsEveryCode(t *testing.T) {
	leaktest.Check(t)
	fs := vfs.NewMem()
	// A hot cache of one entry makes every lookup consult the filter.
	o := Options{FS: fs, BloomMinCapacity: 1, HotCacheEntries: 1}
	r := open(t, o)
	first := r.Stats().BloomBits
	var codes []string
	seq := uint64(0)
	for b := range 30 {
		var recs []link.Record
		for i := range 200 {
			code := fmt.Sprintf("g%02d_%04d", b, i)
			codes = append(codes, code)
			seq++
			recs = append(recs, record(code, seq))
		}
		mustApply(t, r, batchOf(seq, recs...))
	}
	// 6000 codes into a filter first sized for 1024: at least two rebuilds.
	st := r.Stats()
	if st.BloomBits < 4*first || st.Links != 6000 {
		t.Fatalf("bloom %d bits (first %d) for %d links: did not grow", st.BloomBits, first, st.Links)
	}
	check := func(r *Replica) {
		t.Helper()
		for _, code := range codes {
			if _, ok, err := r.Lookup([]byte(code)); !ok || err != nil {
				t.Fatalf("%s not found after bloom growth: %v", code, err)
			}
		}
	}
	check(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = open(t, o)
	if got := r.Stats().BloomBits; got != st.BloomBits || r.bloomSource != "saved" {
		t.Errorf("reopened bloom has %d bits from %s, want the saved %d bits", got, r.bloomSource, st.BloomBits)
	}
	check(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Without the saved filter, Open sizes one for twice the codes.
	if err := fs.Remove(fs.PathJoin("replica", bloomFileName)); err != nil {
		t.Fatal(err)
	}
	r = open(t, o)
	if got := r.Stats().BloomBits; r.bloomSource != "scan" || got < uint64(2*6000*bloomBitsPerKey) {
		t.Errorf("rescanned bloom has %d bits from %s, want room for twice the 6000 links", got, r.bloomSource)
	}
	check(r)
}

func TestBloomFalsePositiveRate(t *testing.T) {
	const n = 100_000
	b := newBloom(n)
	for i := range n {
		b.add(fmt.Sprintf("in%07d", i))
	}
	for i := range n {
		if !b.mayContain(fmt.Sprintf("in%07d", i)) {
			t.Fatalf("in%07d added but not contained", i)
		}
	}
	fp := 0
	for i := range n {
		if b.mayContain(fmt.Sprintf("out%07d", i)) {
			fp++
		}
	}
	// Filled to capacity the filter should stay near 1%.
	if rate := float64(fp) / n; rate > 0.02 {
		t.Errorf("false positive rate %.4f at capacity, want about 0.01", rate)
	}
}

// TestLookupCoherentWithApply hammers Lookup while Apply raises revisions,
// creates codes that were cached as absent, and the hot cache evicts: once
// Apply has returned, no Lookup may see an older revision.
func TestLookupCoherentWithApply(t *testing.T) {
	leaktest.Check(t)
	const (
		codes   = 64
		readers = 4
		rounds  = 300
	)
	// A hot cache smaller than the code set keeps readers going to Pebble
	// and racing their cache inserts with Apply.
	r := open(t, Options{FS: vfs.NewMem(), HotCacheEntries: 16, NegativeCacheEntries: 16})
	// Widen the window between a reader's Pebble read and its cache insert.
	r.afterDiskRead = runtime.Gosched
	names := make([]string, codes)
	for i := range names {
		names[i] = fmt.Sprintf("c%03d", i)
	}
	// floor[i] is the revision of names[i] some Apply has returned with;
	// 0 while it does not exist. Odd codes start absent.
	floor := make([]atomic.Uint64, codes)
	var seq, rev uint64
	var recs []link.Record
	for i := 0; i < codes; i += 2 {
		rev++
		recs = append(recs, record(names[i], rev))
	}
	seq = uint64(len(recs))
	mustApply(t, r, batchOf(seq, recs...))
	for i := 0; i < codes; i += 2 {
		floor[i].Store(uint64(i/2 + 1))
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for w := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for !stop.Load() {
				i := rng.IntN(codes)
				want := floor[i].Load()
				e, ok, err := r.Lookup([]byte(names[i]))
				var got uint64
				if ok {
					got = e.Revision
				}
				if err != nil || got < want {
					errs <- fmt.Errorf("%s: lookup revision %d (found %v, err %v) after Apply returned with %d", names[i], got, ok, err, want)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < rounds && len(errs) == 0; round++ {
		var b replication.Batch
		touched := map[int]uint64{}
		for range 1 + rng.IntN(8) {
			i := rng.IntN(codes)
			rev++
			seq++
			b.Changes = append(b.Changes, change(seq, record(names[i], rev)))
			touched[i] = rev
		}
		b.Through = seq
		if round%50 == 0 {
			// A put in between, as the lagging-miss fallback does.
			i := rng.IntN(codes)
			rev++
			if _, err := r.Put(record(names[i], rev)); err != nil {
				t.Fatal(err)
			}
			floor[i].Store(rev)
		}
		mustApply(t, r, b)
		for i, v := range touched {
			floor[i].Store(v)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReadBeforeCommitNotCached applies a change between a reader's Pebble
// read and its cache insert, for a held code and for an absent one: the
// reader's old answer must not be cached over the change.
func TestReadBeforeCommitNotCached(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	mustApply(t, r, batchOf(1, record("abc", 1)))
	bloomFalsePositive(t, r, "newcode")

	f := func(code string, rev uint64, wantBefore uint64) {
		t.Helper()
		r.afterDiskRead = func() {
			r.afterDiskRead = nil
			mustApply(t, r, batchOf(rev, record(code, rev)))
		}
		// This lookup read Pebble before the Apply committed.
		if got := revisionOf(t, r, code); got != wantBefore {
			t.Fatalf("%s: racing lookup saw revision %d, want %d", code, got, wantBefore)
		}
		if r.afterDiskRead != nil {
			t.Fatalf("%s: lookup did not read Pebble", code)
		}
		if got := revisionOf(t, r, code); got != rev {
			t.Errorf("%s: revision %d after Apply returned, want %d", code, got, rev)
		}
	}
	f("abc", 2, 1)     // held: the old entry must not reach the hot cache
	f("newcode", 3, 0) // absent: "absent" must not reach the negative cache
}
