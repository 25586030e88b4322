package collector

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// model is the plain Go reference the collector's answers must equal.
type model struct {
	// per level, code, bucket
	buckets [numLevels]map[string]map[int64]*modelBucket
	total   map[string]counts
	edges   map[string]int64 // edge -> newest through
}

type modelBucket struct {
	clicks, bots uint64
	visitors     map[uint64]struct{}
	dims         [numDims]map[string]uint64
}

func newModel() *model {
	m := &model{total: map[string]counts{}, edges: map[string]int64{}}
	for i := range m.buckets {
		m.buckets[i] = map[string]map[int64]*modelBucket{}
	}
	return m
}

func (m *model) add(b *linkpb.ClickBatch) {
	m.edges[b.Edge] = max(m.edges[b.Edge], b.ThroughUnixMs)
	for _, lm := range b.Links {
		t := m.total[lm.Code]
		t.clicks += lm.Clicks
		t.bots += lm.Bots
		m.total[lm.Code] = t
		for lvl := Minute; lvl < numLevels; lvl++ {
			byCode := m.buckets[lvl][lm.Code]
			if byCode == nil {
				byCode = map[int64]*modelBucket{}
				m.buckets[lvl][lm.Code] = byCode
			}
			bk := lvl.floor(lm.MinuteUnix)
			mb := byCode[bk]
			if mb == nil {
				mb = &modelBucket{visitors: map[uint64]struct{}{}}
				for d := range mb.dims {
					mb.dims[d] = map[string]uint64{}
				}
				byCode[bk] = mb
			}
			mb.clicks += lm.Clicks
			mb.bots += lm.Bots
			for _, v := range lm.Visitors {
				mb.visitors[v] = struct{}{}
			}
			for d, kcs := range [...][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
				for _, kc := range kcs {
					k := kc.Key
					if d == dimCountries && k == "" {
						k = UnknownCountry
					}
					mb.dims[d][k] += kc.Count
				}
			}
			if lm.Clicks > 0 {
				mb.dims[dimEdges][b.Edge] += lm.Clicks
			}
		}
	}
}

// stats is what LinkStats must answer, uniques as the exact distinct
// count.
func (m *model) stats(code string, r Range) (clicks, bots uint64, visitors int, series []Point, dims [numDims]map[string]uint64) {
	vis := map[uint64]struct{}{}
	for d := range dims {
		dims[d] = map[string]uint64{}
	}
	step := int64(r.Interval.Duration() / time.Second)
	for t := r.From.Unix(); t < r.To.Unix(); t += step {
		p := Point{T: time.Unix(t, 0).UTC()}
		if mb := m.buckets[r.Interval][code][t]; mb != nil {
			p.Clicks, p.Bots, p.Uniques = mb.clicks, mb.bots, uint64(len(mb.visitors))
			clicks += mb.clicks
			bots += mb.bots
			maps.Copy(vis, mb.visitors)
			for d := range dims {
				for k, n := range mb.dims[d] {
					dims[d][k] += n
				}
			}
		}
		series = append(series, p)
	}
	return clicks, bots, len(vis), series, dims
}

// gen makes random click batches.
type gen struct {
	rng      *rand.Rand
	codes    []string
	base     int64 // first minute, Unix seconds
	minutes  int
	visitors uint64 // visitor hash space
}

var (
	referrers = []string{"", "news.ycombinator.com", "t.co", "www.google.com", "example.org", "lobste.rs"}
	countries = []string{"", "DE", "US", "FR", "JP", "BR"}
	devices   = []string{"desktop", "mobile", "tablet", "other"}
	browsers  = []string{"Chrome", "Firefox", "Safari", "Edge"}
	oses      = []string{"Windows", "macOS", "Linux", "Android", "iOS"}
)

// batch returns a batch of edge's instance with seq, through the given
// mark, with up to n random LinkMinutes.
func (g *gen) batch(edge, instance string, seq uint64, through int64, n int) *linkpb.ClickBatch {
	b := &linkpb.ClickBatch{Edge: edge, Instance: instance, Seq: seq, ThroughUnixMs: through}
	seen := map[[2]int64]bool{}
	for range g.rng.IntN(n + 1) {
		ci := g.rng.IntN(len(g.codes))
		mi := int64(g.rng.IntN(g.minutes))
		if seen[[2]int64{int64(ci), mi}] {
			continue
		}
		seen[[2]int64{int64(ci), mi}] = true
		lm := &linkpb.LinkMinute{Code: g.codes[ci], MinuteUnix: g.base + 60*mi}
		clicks := uint64(g.rng.IntN(40))
		lm.Bots = uint64(g.rng.IntN(4))
		vis := map[uint64]bool{}
		for range clicks {
			vis[mix(g.rng.Uint64N(g.visitors))] = true
		}
		lm.Clicks = clicks
		for v := range vis {
			lm.Visitors = append(lm.Visitors, v)
		}
		slices.Sort(lm.Visitors)
		split := func(keys []string, total uint64) []*linkpb.KeyCount {
			out := map[string]uint64{}
			for range total {
				out[keys[g.rng.IntN(len(keys))]]++
			}
			var kcs []*linkpb.KeyCount
			for _, k := range slices.Sorted(maps.Keys(out)) {
				kcs = append(kcs, &linkpb.KeyCount{Key: k, Count: out[k]})
			}
			return kcs
		}
		lm.Referrers = split(referrers, clicks)
		lm.Countries = split(countries, clicks)
		lm.Devices = split(devices, clicks)
		if lm.Bots > 0 {
			lm.Devices = append(lm.Devices, &linkpb.KeyCount{Key: "bot", Count: lm.Bots})
		}
		lm.Browsers = split(browsers, clicks)
		lm.Os = split(oses, clicks)
		if lm.Clicks+lm.Bots == 0 {
			continue
		}
		b.Links = append(b.Links, lm)
	}
	return b
}

func codesN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("code%03d", i)
	}
	return out
}

func applyAll(t testing.TB, s *Store, bs ...*linkpb.ClickBatch) []replication.ClickVerdict {
	t.Helper()
	msgs := make([]replication.ClickMsg, len(bs))
	for i, b := range bs {
		msgs[i].Batch = b
	}
	if err := s.ApplyClicks(msgs); err != nil {
		t.Fatal(err)
	}
	out := make([]replication.ClickVerdict, len(msgs))
	for i := range msgs {
		out[i] = msgs[i].Verdict
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runCollector runs c until the returned function is called; that
// function stops it and fails the test if Run returned an error.
func runCollector(t testing.TB, c *Collector) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var stopped bool
	return func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector Run: %v", err)
		}
	}
}

// mix is splitmix64's finalizer: visitor ids become uniformly
// distributed 64-bit hashes, like the edge's keyed hashes (HyperLogLog
// needs that; a multiplied counter is not).
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
