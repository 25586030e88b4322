package replica

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

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

// TestHotCodesByFrequency: HotCodes ranks by hit count, DecayHot halves
// the counts so recent reads outrank old ones, and the cut at n keeps the
// most read.
func TestHotCodesByFrequency(t *testing.T) {
	r := open(t, Options{HotCacheEntries: 100})
	var recs []link.Record
	for i := range 10 {
		recs = append(recs, record(fmt.Sprintf("code%02d", i), uint64(i+1)))
	}
	mustApply(t, r, batchOf(10, recs...))
	read := func(code string, times int) {
		t.Helper()
		for range times {
			if _, ok, err := r.Lookup([]byte(code)); !ok || err != nil {
				t.Fatal(code, ok, err)
			}
		}
	}
	for i := range 10 {
		read(fmt.Sprintf("code%02d", i), 1) // cached, hit count 0
	}
	read("code03", 9)
	read("code07", 5)
	read("code01", 2)
	if hot := r.HotCodes(3); !slices.Equal(hot, []string{"code03", "code07", "code01"}) {
		t.Fatalf("by frequency: %v", hot)
	}
	if hot := r.HotCodes(100); len(hot) != 10 || hot[0] != "code03" {
		t.Fatalf("all: %v", hot)
	}
	// Three halvings: code03 9 → 1, code07 5 → 0; code05 read twice now.
	r.DecayHot()
	r.DecayHot()
	r.DecayHot()
	read("code05", 3)
	if hot := r.HotCodes(2); !slices.Equal(hot, []string{"code05", "code03"}) {
		t.Fatalf("after decay: %v", hot)
	}
}

// TestWarmRacesApply: an entry Warm read before a commit of the same
// code does not reach the hot cache, and the codes after it are still
// loaded (from a store read after the commit).
func TestWarmRacesApply(t *testing.T) {
	r := open(t, Options{FS: vfs.NewMem(), HotCacheEntries: 100})
	codes := []string{"aaa", "bbb", "ccc", "ddd"}
	var recs []link.Record
	for _, c := range codes {
		recs = append(recs, record(c, 1))
	}
	mustApply(t, r, batchOf(4, recs...))
	r.afterDiskRead = func() {
		r.afterDiskRead = nil
		mustApply(t, r, batchOf(5, record("aaa", 5), record("ccc", 5)))
	}
	if n, err := r.Warm(context.Background(), codes); err != nil || n != 4 {
		t.Fatalf("Warm = %d, %v", n, err)
	}
	if r.afterDiskRead != nil {
		t.Fatal("Warm did not read the store")
	}
	for _, c := range codes[1:] {
		if !r.hot.Contains(c) {
			t.Errorf("%s not loaded", c)
		}
	}
	for c, want := range map[string]uint64{"aaa": 5, "bbb": 1, "ccc": 5, "ddd": 1} {
		if got := revisionOf(t, r, c); got != want {
			t.Errorf("%s: revision %d, want %d", c, got, want)
		}
	}
}

// BenchmarkWarm loads a 200,000-code hot set (the default WarmEntries),
// shuffled, from a replica of 1,000,000 links on disk into a cold hot
// cache: the time a restarted edge spends warming before it serves.
// cpu-ns/code is the process's CPU time (user + system) per code, the
// figure that survives a loaded machine.
func BenchmarkWarm(b *testing.B) {
	const links, n = 1_000_000, 200_000
	dir := b.TempDir()
	r := open(b, Options{Dir: dir, HotCacheEntries: n})
	codes := make([]string, 0, links)
	for start := 0; start < links; start += 10000 {
		recs := make([]link.Record, 0, 10000)
		for i := start; i < start+10000; i++ {
			c := fmt.Sprintf("w%07d", i)
			codes = append(codes, c)
			recs = append(recs, record(c, uint64(i+1)))
		}
		mustApply(b, r, batchOf(uint64(start+10000), recs...))
	}
	if err := r.Close(); err != nil {
		b.Fatal(err)
	}
	// A hot set is in order of heat, not of code.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(codes), func(i, j int) { codes[i], codes[j] = codes[j], codes[i] })
	codes = codes[:n]
	// "iterator" is Warm; "get" is what Warm did before, for the ratio:
	// the same sorted chunks read by Lookup, one Pebble Get per code.
	for _, m := range []struct {
		name string
		warm func(r *Replica) (int, error)
	}{
		{"iterator", func(r *Replica) (int, error) { return r.Warm(context.Background(), codes) }},
		{"get", func(r *Replica) (int, error) { return warmByGet(r, codes) }},
	} {
		b.Run(m.name, func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				r := open(b, Options{Dir: dir, HotCacheEntries: n})
				b.StartTimer()
				c0 := cpuTime()
				got, err := m.warm(r)
				cpu += cpuTime() - c0
				if err != nil || got != n {
					b.Fatal(got, err)
				}
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/code")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/n, "cpu-ns/code")
		})
	}
}

// warmByGet is the former Warm: sorted chunks of 16,384 codes, each read
// by Lookup (a Pebble Get per code).
func warmByGet(r *Replica, codes []string) (int, error) {
	n := 0
	for start := 0; start < len(codes); start += 16384 {
		chunk := slices.Clone(codes[start:min(start+16384, len(codes))])
		slices.Sort(chunk)
		for _, c := range chunk {
			_, found, err := r.Lookup([]byte(c))
			if err != nil {
				return n, err
			}
			if found {
				n++
			}
		}
	}
	return n, nil
}
