package collector

import (
	"cmp"
	"encoding/binary"
	"slices"
	"strings"
	"time"
)

// TopKeys is how many keys a stats answer lists per breakdown.
const TopKeys = 20

// Point is one interval of a series.
type Point struct {
	T       time.Time
	Clicks  uint64
	Uniques uint64
	Bots    uint64
}

// LinkStats is what the collector answers for one link and range; the
// origin encodes it as the API's stats object (client.Stats).
type LinkStats struct {
	Code     string
	From     time.Time
	To       time.Time
	Interval string
	Clicks   uint64
	Uniques  uint64
	Bots     uint64
	Series   []Point
	// Breakdowns, top TopKeys by clicks, descending.
	Referrers []KeyCount
	Countries []KeyCount
	Devices   []KeyCount
	Browsers  []KeyCount
	OS        []KeyCount
	Edges     []KeyCount
	Completeness
}

// Completeness says how far the stats are final.
type Completeness struct {
	// CompleteThrough: every click answered before it by every edge the
	// collector counts (see Store.Completeness) is in the stats. Null
	// before any edge reported.
	CompleteThrough *time.Time
	// IncompleteEdges are the edges whose clicks of the range may not all
	// be in yet.
	IncompleteEdges []string
}

// LinkCount is one entry of the top links.
type LinkCount struct {
	Code    string
	Clicks  uint64
	Uniques uint64
	Bots    uint64
}

// TopLinks is what the collector answers for GET /v1/stats; the origin
// encodes it as client.TopLinks.
type TopLinks struct {
	From            time.Time
	To              time.Time
	Clicks          uint64
	Bots            uint64
	Links           []LinkCount
	CompleteThrough *time.Time
}

// Totals are a link's running totals since its first click.
type Totals struct {
	T       time.Time
	Clicks  uint64
	Uniques uint64
	Bots    uint64
}

func top(m map[string]uint64) []KeyCount {
	kcs := sortedCounts(m)
	if len(kcs) > TopKeys {
		kcs = kcs[:TopKeys]
	}
	return kcs
}

// LinkStats answers the stats of one code over r. Intervals without
// clicks are zeros; so are minute and hour intervals past retention.
func (s *Store) LinkStats(code string, r Range) (*LinkStats, error) {
	// Completeness first: a commit landing during the scan may then add
	// clicks the answer does not claim, never claim clicks it lacks.
	st := &LinkStats{Code: code, From: r.From, To: r.To, Interval: r.Interval.String(), Completeness: s.Completeness(r.To)}
	n := r.Buckets()
	st.Series = make([]Point, n)
	step := int64(r.Interval.Duration() / time.Second)
	from := r.From.Unix()
	for i := range st.Series {
		st.Series[i].T = time.Unix(from+int64(i)*step, 0).UTC()
	}
	var sum rollup
	lo := rollupKey(nil, r.Interval, code, from)
	hi := rollupKey(nil, r.Interval, code, r.To.Unix())
	err := s.scan(lo, hi, func(k, v []byte) error {
		bucket := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
		ro, err := decodeRollup(v, false, true)
		if err != nil {
			return err
		}
		p := &st.Series[(bucket-from)/step]
		p.Clicks, p.Bots, p.Uniques = ro.clicks, ro.bots, ro.est
		return sum.merge(ro)
	})
	if err != nil {
		return nil, err
	}
	st.Clicks, st.Bots = sum.clicks, sum.bots
	if st.Uniques, err = s.uniquesOver(code, r); err != nil {
		return nil, err
	}
	st.Referrers, st.Countries, st.Devices = top(sum.dims[dimReferrers]), top(sum.dims[dimCountries]), top(sum.dims[dimDevices])
	st.Browsers, st.OS, st.Edges = top(sum.dims[dimBrowsers]), top(sum.dims[dimOS]), top(sum.dims[dimEdges])
	return st, nil
}

// uniquesOver estimates the distinct visitors of code over r by merging
// the fewest sketches that cover it exactly: whole days from the day
// rollups, the rest from hours, and (for a minute range) the rest from
// minutes. A 30-day range merges 30 day sketches, not 720 hour ones.
func (s *Store) uniquesOver(code string, r Range) (uint64, error) {
	sum := newSum()
	var cover func(lvl Interval, from, to int64) error
	cover = func(lvl Interval, from, to int64) error {
		if from >= to {
			return nil
		}
		d := int64(lvl.Duration() / time.Second)
		a, b := lvl.floor(from+d-1), lvl.floor(to)
		if lvl == r.Interval || (a < b && lvl > r.Interval) {
			if lvl == r.Interval {
				a, b = from, to
			}
			if err := s.mergeSketches(sum, code, lvl, a, b); err != nil {
				return err
			}
			if lvl == r.Interval {
				return nil
			}
			if err := cover(lvl-1, from, a); err != nil {
				return err
			}
			return cover(lvl-1, b, to)
		}
		return cover(lvl-1, from, to)
	}
	if err := cover(Day, r.From.Unix(), r.To.Unix()); err != nil {
		return 0, err
	}
	return sum.uniques(), nil
}

// mergeSketches merges into sum the sketches of code's lvl rollups in
// [from, to).
func (s *Store) mergeSketches(sum *rollup, code string, lvl Interval, from, to int64) error {
	return s.scan(rollupKey(nil, lvl, code, from), rollupKey(nil, lvl, code, to), func(_, v []byte) error {
		ro, err := decodeRollup(v, true, false)
		if err != nil {
			return err
		}
		if ro.hll == nil {
			return nil
		}
		return sum.hll.Merge(ro.hll)
	})
}

// TopLinks answers the links with the most clicks over r, at most limit,
// by clicks descending (then code), with the range's totals over all
// links.
func (s *Store) TopLinks(r Range, limit int) (*TopLinks, error) {
	out := &TopLinks{From: r.From, To: r.To, Links: []LinkCount{}, CompleteThrough: s.Completeness(r.To).CompleteThrough} // before the scan, as in LinkStats
	per := map[string]counts{}
	lo := indexKey(nil, r.Interval, r.From.Unix(), "")
	hi := indexKey(nil, r.Interval, r.To.Unix(), "")
	err := s.scan(lo, hi, func(k, v []byte) error {
		c, err := decodeCounts(v)
		if err != nil {
			return err
		}
		code := string(k[10:])
		t := per[code]
		t.clicks += c.clicks
		t.bots += c.bots
		per[code] = t
		out.Clicks += c.clicks
		out.Bots += c.bots
		return nil
	})
	if err != nil {
		return nil, err
	}
	links := make([]LinkCount, 0, len(per))
	for code, c := range per {
		links = append(links, LinkCount{Code: code, Clicks: c.clicks, Bots: c.bots})
	}
	slices.SortFunc(links, func(a, b LinkCount) int {
		if c := cmp.Compare(b.Clicks, a.Clicks); c != 0 {
			return c
		}
		return strings.Compare(a.Code, b.Code)
	})
	if len(links) > limit {
		links = links[:limit]
	}
	for i := range links {
		if links[i].Uniques, err = s.uniquesOver(links[i].Code, r); err != nil {
			return nil, err
		}
	}
	out.Links = links
	return out, nil
}

// Totals are code's clicks and bots since its first click, and its
// uniques over all its day rollups.
func (s *Store) Totals(code string) (Totals, error) {
	t := Totals{T: s.o.Now().UTC()}
	_, err := s.get(totalKey(code), func(v []byte) error {
		c, err := decodeCounts(v)
		t.Clicks, t.Bots = c.clicks, c.bots
		return err
	})
	if err != nil {
		return t, err
	}
	sum := newSum()
	err = s.mergeSketches(sum, code, Day, 0, 1<<62)
	t.Uniques = sum.uniques()
	return t, err
}

// Clicks is code's click count since its first click (for max_visits).
func (s *Store) Clicks(code string) (uint64, error) {
	var n uint64
	_, err := s.get(totalKey(code), func(v []byte) error {
		c, err := decodeCounts(v)
		n = c.clicks
		return err
	})
	return n, err
}

// Completeness computes complete_through and incomplete_edges for a
// query ending at to, from the edges' flush-through marks. The frontier
// is the newest mark of any edge. An edge whose mark is more than
// RetireAfter behind the frontier is retired: it no longer holds
// complete_through back. complete_through is the oldest mark among the
// other edges (the frontier if every edge is retired). An edge is listed
// as incomplete when its mark is more than StaleAfter behind both the
// frontier and to, retired or not, until it is ForgetAfter behind the
// frontier. Marks are the edges' clocks: a collector that was down does
// not retire anybody.
func (s *Store) Completeness(to time.Time) Completeness {
	s.emu.RLock()
	defer s.emu.RUnlock()
	c := Completeness{IncompleteEdges: []string{}}
	if len(s.edges) == 0 {
		return c
	}
	var frontier int64
	for _, es := range s.edges {
		frontier = max(frontier, es.through)
	}
	retire := frontier - s.o.RetireAfter.Milliseconds()
	forget := frontier - s.o.ForgetAfter.Milliseconds()
	stale := min(frontier, to.UnixMilli()) - s.o.StaleAfter.Milliseconds()
	complete := frontier
	for name, es := range s.edges {
		if es.through >= retire {
			complete = min(complete, es.through)
		}
		if es.through < stale && es.through >= forget {
			c.IncompleteEdges = append(c.IncompleteEdges, name)
		}
	}
	slices.Sort(c.IncompleteEdges)
	t := time.UnixMilli(complete).UTC()
	c.CompleteThrough = &t
	return c
}
