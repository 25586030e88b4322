package collector

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/linkpop/linkpop/client"
)

// Partitioning. Several collectors split the links between them by code:
// collector i of n keeps the rollups of the codes with PartitionOf(code,
// n) == i. Each reads the whole click stream through its own durable
// consumer and applies its codes' entries of every batch, so it sees
// every edge's sequence and flush-through marks, and a link's stats live
// whole on one collector: the origin routes a link's query to it and
// merges only the top links (disjoint code sets, so the global top N is
// among the partitions' top N; totals add). See the README, "Running
// several collectors".

// MaxPartitions bounds the number of collector partitions.
const MaxPartitions = 256

// PartitionOf is the partition of code among n: FNV-1a (32 bit) of the
// code modulo n. It is part of the stored layout: a collector's rollups
// are the codes it returns for it, so it never changes.
func PartitionOf(code string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(code))
	return int(h.Sum32() % uint32(n))
}

// ErrPartitionUnavailable is a stats query that a collector partition
// could not answer (unreachable, refused the token, or answered for
// another partition). The origin answers it 503 unavailable.
var ErrPartitionUnavailable = errors.New("collector partition unavailable")

// Source answers the stats queries of the API: a Store (one collector),
// a Remote (one partition over HTTP) or Partitions (several, merged).
type Source interface {
	// LinkStats answers the stats of one code over r.
	LinkStats(code string, r Range) (*LinkStats, error)
	// TopLinks answers the links with the most clicks over r.
	TopLinks(r Range, limit int) (*TopLinks, error)
	// Totals are code's running totals since its first click.
	Totals(code string) (Totals, error)
	// Clicks is code's click count since its first click (Totals'
	// clicks, without the uniques: for max_visits).
	Clicks(code string) (uint64, error)
	// Watch signals (coalesced) when code's clicks may have changed,
	// until stop is called.
	Watch(code string) (ch <-chan struct{}, stop func())
}

var (
	_ Source = (*Store)(nil)
	_ Source = (*Remote)(nil)
	_ Source = (*Partitions)(nil)
)

// Partitions is the stats of n collector partitions, each a Source
// holding the codes PartitionOf assigns it.
type Partitions struct {
	parts []Source
}

// NewPartitions returns the Source over parts; parts[i] is partition i
// of len(parts).
func NewPartitions(parts ...Source) (*Partitions, error) {
	if len(parts) == 0 || len(parts) > MaxPartitions {
		return nil, fmt.Errorf("collector: %d partitions; want 1 to %d", len(parts), MaxPartitions)
	}
	return &Partitions{parts: parts}, nil
}

func (p *Partitions) of(code string) Source { return p.parts[PartitionOf(code, len(p.parts))] }

// LinkStats asks the partition that holds code.
func (p *Partitions) LinkStats(code string, r Range) (*LinkStats, error) {
	return p.of(code).LinkStats(code, r)
}

// Totals asks the partition that holds code.
func (p *Partitions) Totals(code string) (Totals, error) { return p.of(code).Totals(code) }

// Clicks asks the partition that holds code.
func (p *Partitions) Clicks(code string) (uint64, error) { return p.of(code).Clicks(code) }

// Watch watches code on the partition that holds it.
func (p *Partitions) Watch(code string) (<-chan struct{}, func()) { return p.of(code).Watch(code) }

// TopLinks asks every partition (at once) for its top limit links and
// merges them: the codes are disjoint, so the top limit of the union is
// exact; clicks and bots add; complete_through is the oldest of the
// partitions' (null while any has none). One partition failing fails the
// answer.
func (p *Partitions) TopLinks(r Range, limit int) (*TopLinks, error) {
	tops := make([]*TopLinks, len(p.parts))
	errs := make([]error, len(p.parts))
	var wg sync.WaitGroup
	for i, src := range p.parts {
		wg.Go(func() { tops[i], errs[i] = src.TopLinks(r, limit) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := &TopLinks{From: r.From, To: r.To, Links: []LinkCount{}}
	for _, t := range tops {
		out.Clicks += t.Clicks
		out.Bots += t.Bots
		out.Links = append(out.Links, t.Links...)
	}
	// A partition that has heard from no edge vouches for nothing.
	if !slices.ContainsFunc(tops, func(t *TopLinks) bool { return t.CompleteThrough == nil }) {
		ct := *tops[0].CompleteThrough
		for _, t := range tops[1:] {
			if t.CompleteThrough.Before(ct) {
				ct = *t.CompleteThrough
			}
		}
		out.CompleteThrough = &ct
	}
	sortLinks(out.Links)
	if len(out.Links) > limit {
		out.Links = out.Links[:limit]
	}
	return out, nil
}

// sortLinks orders links by clicks descending, then code.
func sortLinks(links []LinkCount) {
	slices.SortFunc(links, func(a, b LinkCount) int {
		if c := cmp.Compare(b.Clicks, a.Clicks); c != 0 {
			return c
		}
		return strings.Compare(a.Code, b.Code)
	})
}

// API is the stats object of the v1 API (client.Stats, the one
// definition) for st: breakdowns and incomplete_edges are arrays, never
// null.
func (st *LinkStats) API() client.Stats {
	out := client.Stats{
		Code: st.Code, From: st.From, To: st.To, Interval: st.Interval,
		Clicks: st.Clicks, Uniques: st.Uniques, Bots: st.Bots,
		Series:          make([]client.StatsPoint, len(st.Series)),
		Referrers:       apiCounts(st.Referrers),
		Countries:       apiCounts(st.Countries),
		Devices:         apiCounts(st.Devices),
		Browsers:        apiCounts(st.Browsers),
		OS:              apiCounts(st.OS),
		Edges:           apiCounts(st.Edges),
		CompleteThrough: st.CompleteThrough,
		IncompleteEdges: st.IncompleteEdges,
	}
	for i, p := range st.Series {
		out.Series[i] = client.StatsPoint{T: p.T, Clicks: p.Clicks, Uniques: p.Uniques, Bots: p.Bots}
	}
	if out.IncompleteEdges == nil {
		out.IncompleteEdges = []string{}
	}
	return out
}

func apiCounts(kcs []KeyCount) []client.StatsCount {
	out := make([]client.StatsCount, len(kcs))
	for i, kc := range kcs {
		out[i] = client.StatsCount{Key: kc.Key, Clicks: kc.Count}
	}
	return out
}

// linkStatsOf reads back what LinkStats.API wrote (a partition's answer).
func linkStatsOf(a client.Stats) *LinkStats {
	st := &LinkStats{
		Code: a.Code, From: a.From, To: a.To, Interval: a.Interval,
		Clicks: a.Clicks, Uniques: a.Uniques, Bots: a.Bots,
		Series:    make([]Point, len(a.Series)),
		Referrers: countsOf(a.Referrers), Countries: countsOf(a.Countries), Devices: countsOf(a.Devices),
		Browsers: countsOf(a.Browsers), OS: countsOf(a.OS), Edges: countsOf(a.Edges),
		Completeness: Completeness{CompleteThrough: a.CompleteThrough, IncompleteEdges: a.IncompleteEdges},
	}
	for i, p := range a.Series {
		st.Series[i] = Point{T: p.T, Clicks: p.Clicks, Uniques: p.Uniques, Bots: p.Bots}
	}
	return st
}

func countsOf(scs []client.StatsCount) []KeyCount {
	out := make([]KeyCount, len(scs))
	for i, sc := range scs {
		out[i] = KeyCount{Key: sc.Key, Count: sc.Clicks}
	}
	return out
}

// API is GET /v1/stats's answer (client.TopLinks) for t.
func (t *TopLinks) API() client.TopLinks {
	out := client.TopLinks{
		From: t.From, To: t.To, Clicks: t.Clicks, Bots: t.Bots,
		Links:           make([]client.TopLink, len(t.Links)),
		CompleteThrough: t.CompleteThrough,
	}
	for i, l := range t.Links {
		out.Links[i] = client.TopLink{Code: l.Code, Clicks: l.Clicks, Uniques: l.Uniques, Bots: l.Bots}
	}
	return out
}

func topLinksOf(a client.TopLinks) *TopLinks {
	t := &TopLinks{From: a.From, To: a.To, Clicks: a.Clicks, Bots: a.Bots, CompleteThrough: a.CompleteThrough, Links: make([]LinkCount, len(a.Links))}
	for i, l := range a.Links {
		t.Links[i] = LinkCount{Code: l.Code, Clicks: l.Clicks, Uniques: l.Uniques, Bots: l.Bots}
	}
	return t
}

// API is the live stream's event (client.LiveClicks) for t.
func (t Totals) API() client.LiveClicks {
	return client.LiveClicks{T: t.T, Clicks: t.Clicks, Uniques: t.Uniques, Bots: t.Bots}
}

func totalsOf(a client.LiveClicks) Totals {
	return Totals{T: a.T, Clicks: a.Clicks, Uniques: a.Uniques, Bots: a.Bots}
}

// partitionName is how a partition names itself: "i/n".
func partitionName(i, n int) string { return fmt.Sprintf("%d/%d", i, n) }

// remoteWatchEvery is how often a Remote's Watch polls the totals.
const remoteWatchEvery = time.Second
