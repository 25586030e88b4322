package replica

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// benchRecords returns n records with distinct 7-character codes and a
// realistic URL, revisions from first.
func benchRecords(n int, first uint64) []link.Record {
	recs := make([]link.Record, n)
	for i := range recs {
		code := make([]byte, link.DefaultCodeLen)
		v := uint64(i) + first
		for j := range code {
			code[j] = link.Base62[v%62]
			v /= 62
		}
		rev := first + uint64(i)
		recs[i] = link.Record{
			Code:      string(code),
			URL:       fmt.Sprintf("https://www.example.com/articles/2026/01/some-longer-slug-for-a-realistic-url-%d?utm_source=newsletter&utm_medium=email", rev),
			Redirect:  302,
			Status:    link.StatusActive,
			CreatedAt: t0,
			UpdatedAt: t0,
			Revision:  rev,
			Tags:      []string{"campaign"},
		}
	}
	return recs
}

// applyAll applies recs in batches of size, sequences from 1, and returns
// the time spent in Apply.
func applyAll(tb testing.TB, r *Replica, recs []link.Record, size int) time.Duration {
	var spent time.Duration
	for i := 0; i < len(recs); i += size {
		end := min(i+size, len(recs))
		b := replication.Batch{Through: uint64(end)}
		for j := i; j < end; j++ {
			b.Changes = append(b.Changes, change(uint64(j+1), recs[j]))
		}
		start := time.Now()
		mustApply(tb, r, b)
		spent += time.Since(start)
	}
	return spent
}

// cpuTime returns the CPU time this process has used, background Pebble
// work included: a figure less sensitive than wall time to a shared
// machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchLookup(b *testing.B, codes [][]byte, want bool) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, ok, err := benchReplica.Lookup(codes[i%len(codes)]); ok != want || err != nil {
			b.Fatalf("lookup %s: %v, %v", codes[i%len(codes)], ok, err)
		}
		i++
	}
}

var benchReplica *Replica

// setupLookup opens a replica on disk holding 100,000 links.
func setupLookup(b *testing.B, o Options) []link.Record {
	b.Helper()
	o.Dir = b.TempDir()
	benchReplica = open(b, o)
	recs := benchRecords(100_000, 1)
	applyAll(b, benchReplica, recs, 1000)
	return recs
}

func codesOf(recs []link.Record) [][]byte {
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = []byte(r.Code)
	}
	return out
}

func BenchmarkLookupHot(b *testing.B) {
	recs := setupLookup(b, Options{})[:10_000]
	codes := codesOf(recs)
	for _, c := range codes {
		benchReplica.Lookup(c)
	}
	benchLookup(b, codes, true)
}

func BenchmarkLookupUnknown(b *testing.B) {
	setupLookup(b, Options{})
	// Codes of the same shape the replica does not hold.
	codes := codesOf(benchRecords(10_000, 1_000_000_000))
	benchLookup(b, codes, false)
	b.ReportMetric(float64(lookups(benchReplica.set, "bloom"))/float64(b.N), "bloom/op")
}

func BenchmarkLookupDisk(b *testing.B) {
	recs := setupLookup(b, Options{HotCacheEntries: 1})
	benchLookup(b, codesOf(recs), true)
	b.ReportMetric(float64(lookups(benchReplica.set, "disk_hit"))/float64(b.N), "disk/op")
}

func BenchmarkApplyBatch1000(b *testing.B) {
	r := open(b, Options{Dir: b.TempDir()})
	recs := benchRecords(1000*b.N, 1)
	b.ReportAllocs()
	b.ResetTimer()
	spent := applyAll(b, r, recs, 1000)
	b.ReportMetric(float64(len(recs))/spent.Seconds(), "records/s")
}

// BenchmarkApplyUpdates1000 applies batches of updates to codes the replica
// holds, so every change reads the held revision from Pebble.
func BenchmarkApplyUpdates1000(b *testing.B) {
	r := open(b, Options{Dir: b.TempDir()})
	const held = 100_000
	applyAll(b, r, benchRecords(held, 1), 1000)
	recs := make([]link.Record, 0, 1000*b.N)
	for len(recs) < 1000*b.N {
		for _, rec := range benchRecords(held, 1) {
			rec.Revision += uint64(held + len(recs))
			recs = append(recs, rec)
			if len(recs) == cap(recs) {
				break
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	spent := applyAll(b, r, recs, 1000)
	b.ReportMetric(float64(len(recs))/spent.Seconds(), "records/s")
}

// BenchmarkBootstrap1M applies one million links to a fresh replica in
// batches of 1000, as a new edge replaying the stream does, then reopens
// it twice: with the bloom filter Close saved, and scanning every code.
func BenchmarkBootstrap1M(b *testing.B) {
	const n = 1_000_000
	recs := benchRecords(n, 1)
	for b.Loop() {
		dir := b.TempDir()
		r, err := Open(Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		cpu := cpuTime()
		spent := applyAll(b, r, recs, 1000)
		cpu = cpuTime() - cpu
		if st := r.Stats(); st.Links != n {
			b.Fatalf("links = %d, want %d", st.Links, n)
		}
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		r, err = Open(Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		reopen := time.Since(start)
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		// Without the saved bloom filter Open scans every code.
		if err := os.Remove(filepath.Join(dir, bloomFileName)); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		r, err = Open(Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		rescan := time.Since(start)
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(n/spent.Seconds(), "records/s")
		b.ReportMetric(spent.Seconds(), "apply-s")
		b.ReportMetric(cpu.Seconds(), "cpu-s")
		b.ReportMetric(reopen.Seconds(), "reopen-s")
		b.ReportMetric(rescan.Seconds(), "rescan-s")
	}
}

// BenchmarkReplay applies LINKPOP_REPLAY_N (default 1,000,000) created
// links to a fresh replica in batches of 8192 without syncing, then one
// synced batch, each with the count of the messages still pending, as
// the consumer applies a fresh edge's replay (it syncs once a second),
// and reports the wall and CPU seconds (Pebble's background flushes and
// compactions included; the reopen out of the bulk-load settings after
// the last batch too), then waits until Pebble has no compaction debt
// left and reports that too (settle-s; cpu-ns/link-settled counts the
// replay's CPU and the settling's). Then it looks up twice as many distinct codes as
// the hot cache holds (at most every code), so the hot cache is full,
// and reports their time, CPU per lookup (each a first touch: a Pebble
// read) and the block cache's hit ratio, and the process's RSS per
// million links held: the records are made batch by batch, so the
// process holds little else than the replica.
func BenchmarkReplay(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("LINKPOP_REPLAY_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("LINKPOP_REPLAY_N=%q: want a positive integer", s)
		}
		n = v
	}
	// LINKPOP_REPLAY_BULK_PENDING and LINKPOP_REPLAY_BULK_MEMTABLE set
	// Options.BulkPending and BulkMemTableBytes, to compare settings.
	var o Options
	for env, dst := range map[string]*int64{"LINKPOP_REPLAY_BULK_PENDING": &o.BulkPending, "LINKPOP_REPLAY_BULK_MEMTABLE": &o.BulkMemTableBytes} {
		if s := os.Getenv(env); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				b.Fatalf("%s=%q: %v", env, s, err)
			}
			*dst = v
		}
	}
	for b.Loop() {
		o.Dir = b.TempDir()
		r, err := Open(o)
		if err != nil {
			b.Fatal(err)
		}
		cpu, start := cpuTime(), time.Now()
		const size = 8192
		for i := 0; i < n; i += size {
			end := min(i+size, n)
			bt := replication.Batch{Through: uint64(end), NoSync: end < n, Pending: uint64(n - end)}
			for j, rec := range benchRecords(end-i, uint64(i+1)) {
				bt.Changes = append(bt.Changes, change(uint64(i+j+1), rec))
			}
			mustApply(b, r, bt)
		}
		spent, cpu := time.Since(start), cpuTime()-cpu
		rssReplayed := rssBytes()
		// What the replay left to compact (bulk-load settings defer
		// it) is done after it, while the edge serves: measured until
		// Pebble has no compaction debt and none running.
		m := r.db.Metrics()
		sublevels, debt := m.Levels[0].Sublevels, m.Compact.EstimatedDebt
		settleCPU, settleStart := cpuTime(), time.Now()
		for time.Since(settleStart) < 10*time.Minute {
			if m := r.db.Metrics(); m.Compact.EstimatedDebt == 0 && m.Compact.NumInProgress == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		settleSpent, settleCPU := time.Since(settleStart), cpuTime()-settleCPU
		lookupCPU, lookupStart := cpuTime(), time.Now()
		code := make([]byte, link.DefaultCodeLen)
		for i := range min(n, 2*DefaultHotCacheEntries) {
			v := uint64(i) + 1
			for j := range code {
				code[j] = link.Base62[v%62]
				v /= 62
			}
			if _, ok, err := r.Lookup(code); !ok || err != nil {
				b.Fatalf("lookup %s: %v %v", code, ok, err)
			}
		}
		lookupSpent, lookupCPU := time.Since(lookupStart), cpuTime()-lookupCPU
		looked := min(n, 2*DefaultHotCacheEntries)
		bc := r.db.Metrics().BlockCache
		st := r.Stats()
		rssFull := rssBytes()
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(spent.Seconds(), "apply-s")
		b.ReportMetric(cpu.Seconds(), "cpu-s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/link")
		b.ReportMetric(float64(sublevels), "l0-sublevels")
		b.ReportMetric(float64(debt)/(1<<20), "compact-debt-MiB")
		b.ReportMetric(settleSpent.Seconds(), "settle-s")
		b.ReportMetric(float64((cpu+settleCPU).Nanoseconds())/float64(n), "cpu-ns/link-settled")
		b.ReportMetric(float64(st.HotEntries), "hot-entries")
		b.ReportMetric(lookupSpent.Seconds(), "lookup-s")
		b.ReportMetric(float64(lookupCPU.Nanoseconds())/float64(looked), "lookup-cpu-ns/op")
		b.ReportMetric(float64(bc.Hits)/float64(max(1, bc.Hits+bc.Misses)), "block-cache-hit-ratio")
		b.ReportMetric(float64(rssReplayed)/float64(n), "rss-MB/Mlinks-replayed")
		b.ReportMetric(float64(rssFull)/float64(n), "rss-MB/Mlinks-hot-full")
	}
}

// rssBytes is the process's resident set (VmRSS), 0 if unknown.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
