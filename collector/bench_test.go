package collector

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// benchBatches makes n batches from 10 edges, each with entries
// LinkMinutes over codes links in one minute; every entry has clicks
// clicks and visitors distinct visitors, and a few breakdown keys.
func benchBatches(rng *rand.Rand, n, entries, links int, clicks, visitors uint64, minute int64) []*linkpb.ClickBatch {
	out := make([]*linkpb.ClickBatch, n)
	seqs := map[string]uint64{}
	kc := func(keys []string, total uint64) []*linkpb.KeyCount {
		per := total / uint64(len(keys))
		var out []*linkpb.KeyCount
		for i, k := range keys {
			c := per
			if i == 0 {
				c += total - per*uint64(len(keys))
			}
			if c > 0 {
				out = append(out, &linkpb.KeyCount{Key: k, Count: c})
			}
		}
		return out
	}
	for i := range out {
		edge := fmt.Sprintf("edge-%d", i%10)
		seqs[edge]++
		b := &linkpb.ClickBatch{Edge: edge, Instance: "i", Seq: seqs[edge], ThroughUnixMs: minute * 1000}
		used := map[int]bool{}
		for len(b.Links) < entries {
			c := rng.IntN(links)
			if used[c] {
				continue
			}
			used[c] = true
			lm := &linkpb.LinkMinute{Code: fmt.Sprintf("c%06d", c), MinuteUnix: minute, Clicks: clicks, Bots: clicks / 20}
			lm.Visitors = make([]uint64, visitors)
			for j := range lm.Visitors {
				lm.Visitors[j] = rng.Uint64()
			}
			lm.Referrers = kc([]string{"", "t.co", "news.ycombinator.com"}, clicks)
			lm.Countries = kc([]string{"US", "DE", "FR", "JP"}, clicks)
			lm.Devices = kc([]string{"desktop", "mobile"}, clicks)
			lm.Browsers = kc([]string{"Chrome", "Firefox", "Safari"}, clicks)
			lm.Os = kc([]string{"Windows", "Android", "iOS"}, clicks)
			b.Links = append(b.Links, lm)
		}
		out[i] = b
	}
	return out
}

// benchIngest applies the batches in groups of group (one Pebble commit
// each, as the consumer does) and reports clicks and batches per second.
func benchIngest(b *testing.B, batches []*linkpb.ClickBatch, group int) {
	var perBatch uint64
	for _, lm := range batches[0].Links {
		perBatch += lm.Clicks
	}
	st, err := OpenStore(StoreOptions{Dir: b.TempDir(), Now: func() time.Time { return time.Unix(batches[0].ThroughUnixMs/1000, 0) }})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	msgs := make([]replication.ClickMsg, 0, group)
	applied := 0
	next := map[string]uint64{}
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		// Renumber so every pass applies: each edge's seqs keep growing.
		bt := batches[i%len(batches)]
		next[bt.Edge]++
		bt.Seq = next[bt.Edge]
		msgs = append(msgs, replication.ClickMsg{Batch: bt})
		if len(msgs) == group || i == b.N-1 {
			if err := st.ApplyClicks(msgs); err != nil {
				b.Fatal(err)
			}
			for _, m := range msgs {
				if m.Verdict == replication.ClickApplied {
					applied++
				}
			}
			msgs = msgs[:0]
		}
	}
	el := time.Since(start).Seconds()
	cpuS := (cpuTime() - cpu).Seconds()
	if applied != b.N {
		b.Fatalf("applied %d of %d batches", applied, b.N)
	}
	b.ReportMetric(float64(uint64(b.N)*perBatch)/el, "clicks/s")
	b.ReportMetric(float64(b.N)/el, "batches/s")
	// Per CPU second of the whole process (Pebble's flushes and
	// compactions included): the figure a loaded machine does not bend.
	b.ReportMetric(float64(uint64(b.N)*perBatch)/cpuS, "clicks/cpu-s")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngestAggregated: batches of 100 LinkMinutes over 1,000
// links, 200 clicks from 20 visitors each (what an edge ships for busy
// links), 32 batches per commit.
func BenchmarkIngestAggregated(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	batches := benchBatches(rng, 256, 100, 1000, 200, 20, time.Now().Unix()/60*60)
	benchIngest(b, batches, 32)
}

// BenchmarkIngestDistinctVisitors: every click has its own visitor
// (100 LinkMinutes of 50 clicks and 50 visitors per batch).
func BenchmarkIngestDistinctVisitors(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	batches := benchBatches(rng, 256, 100, 1000, 50, 50, time.Now().Unix()/60*60)
	benchIngest(b, batches, 32)
}

// BenchmarkIngestViral: one link takes every click of every batch (one
// LinkMinute of 5,000 clicks and 500 visitors per batch): no write
// hotspot, the link costs three rollup writes per commit.
func BenchmarkIngestViral(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	batches := benchBatches(rng, 256, 1, 1, 5000, 500, time.Now().Unix()/60*60)
	benchIngest(b, batches, 32)
}

// millionClickStore fills a store with one link of 1,000,000 clicks over
// the 30 days before end (about 23 a minute, every one a distinct
// visitor), and returns it.
func millionClickStore(b *testing.B, end time.Time) *Store {
	st, err := OpenStore(StoreOptions{Dir: b.TempDir(), Now: func() time.Time { return end }, MinuteRetention: 31 * 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	start := end.Add(-30 * 24 * time.Hour).Unix()
	minutes := 30 * 24 * 60
	total := benchTotal
	var seq uint64
	var msgs []replication.ClickMsg
	var done uint64
	for m := 0; m < minutes; m++ {
		n := total * uint64(m+1) / uint64(minutes)
		clicks := n - done
		done = n
		lm := &linkpb.LinkMinute{Code: "viral", MinuteUnix: start + int64(m)*60, Clicks: clicks, Bots: 1,
			Visitors:  make([]uint64, clicks),
			Countries: []*linkpb.KeyCount{{Key: "US", Count: clicks}}, Referrers: []*linkpb.KeyCount{{Key: "t.co", Count: clicks}}}
		for i := range lm.Visitors {
			lm.Visitors[i] = rng.Uint64()
		}
		seq++
		msgs = append(msgs, replication.ClickMsg{Batch: &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: seq, Links: []*linkpb.LinkMinute{lm}}})
		if len(msgs) == 256 || m == minutes-1 {
			if err := st.ApplyClicks(msgs); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	if err := st.Flush(); err != nil {
		b.Fatal(err)
	}
	return st
}

func benchQuery(b *testing.B, from, to time.Time, iv string) {
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	st := millionClickStore(b, end)
	defer st.Close()
	r, err := ParseRange(from.Format(time.RFC3339), to.Format(time.RFC3339), iv, end)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		s, err := st.LinkStats("viral", r)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		if s.Clicks == 0 {
			b.Fatal("no clicks")
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkQuery30DaysHourly: the stats of a link with 1M clicks over 30
// days at hour interval (720 points).
func BenchmarkQuery30DaysHourly(b *testing.B) {
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	benchQuery(b, end.Add(-30*24*time.Hour), end, "hour")
}

// BenchmarkQuery1DayMinutely: the last day of the same link at minute
// interval (1,440 points).
func BenchmarkQuery1DayMinutely(b *testing.B) {
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	benchQuery(b, end.Add(-24*time.Hour), end, "minute")
}

// BenchmarkRollupBytesPerLinkDay: 200 links, each clicked in 300
// minutes of one day (3 clicks from 3 visitors each, a few breakdown
// keys); reports the stored bytes (keys and values, before Pebble's
// compression) per link-day of each level, and the sstable bytes after
// a full compaction (compressed, every level together).
func BenchmarkRollupBytesPerLinkDay(b *testing.B) {
	for b.Loop() {
		day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
		st, err := OpenStore(StoreOptions{Dir: b.TempDir(), Now: func() time.Time { return day.Add(24 * time.Hour) }})
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(5, 5))
		const links, active = 200, 300
		var seq uint64
		for m := 0; m < 1440; m += 1440 / active {
			seq++
			bt := benchBatches(rng, 1, links, links, 3, 3, day.Unix()+int64(m)*60)[0]
			bt.Seq = seq
			if err := st.ApplyClicks([]replication.ClickMsg{{Batch: bt}}); err != nil {
				b.Fatal(err)
			}
		}
		var per [numLevels]int
		for lvl := Minute; lvl < numLevels; lvl++ {
			lo := []byte{pfxRollup, levelLetter[lvl]}
			hi := []byte{pfxRollup, levelLetter[lvl] + 1}
			if err := st.scan(lo, hi, func(k, v []byte) error { per[lvl] += len(k) + len(v); return nil }); err != nil {
				b.Fatal(err)
			}
		}
		tb, err := st.TableBytes(true)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(per[Minute])/links, "minute-B/link-day")
		b.ReportMetric(float64(per[Hour])/links, "hour-B/link-day")
		b.ReportMetric(float64(per[Day])/links, "day-B/link-day")
		b.ReportMetric(float64(tb)/links, "sst-B/link-day")
		st.Close()
	}
}

var benchTotal = uint64(1_000_000)

// BenchmarkIngestDistinctCodes: what spread traffic ships: every click on
// another code of 200,000 (2,000 one-click LinkMinutes per batch), so
// nearly every rollup key is new and its read finds nothing.
func BenchmarkIngestDistinctCodes(b *testing.B) {
	rng := rand.New(rand.NewPCG(4, 4))
	batches := benchBatches(rng, 64, 2000, 200_000, 1, 1, time.Now().Unix()/60*60)
	benchIngest(b, batches, 8)
}
