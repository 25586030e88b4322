package collector

import (
	"cmp"
	"encoding/binary"
	"errors"
	"slices"

	"github.com/axiomhq/hyperloglog"

	"github.com/linkpop/linkpop/link"
)

// Breakdown dimensions of a rollup, in their stored order.
const (
	dimReferrers = iota
	dimCountries
	dimDevices
	dimBrowsers
	dimOS
	dimEdges
	numDims
)

// OtherKey is the breakdown key that sums the clicks of the keys a rollup
// no longer lists one by one (see Config.BreakdownLimit). Totals stay
// exact; only the ranking past the limit is lost.
const OtherKey = "(other)"

// UnknownCountry is the country key of a click whose country is unknown.
const UnknownCountry = "ZZ"

// rollup is the aggregate of one link over one interval (a minute, an
// hour or a day): counts, a HyperLogLog sketch of the visitors, and the
// breakdowns.
type rollup struct {
	clicks, bots uint64
	// est is the sketch's estimate as stored (so a series needs no
	// sketch); encode refreshes it.
	est  uint64
	hll  *hyperloglog.Sketch // nil: no visitor
	dims [numDims]map[string]uint64
}

var errBadRollup = errors.New("collector: corrupt rollup")

const rollupVersion = 1

func newSketch() *hyperloglog.Sketch {
	sk, err := hyperloglog.NewSketch(link.HLLPrecision, true)
	if err != nil {
		panic(err) // the precision is a constant in range
	}
	return sk
}

// newSum returns an empty rollup whose sketch is dense: merging many
// sparse sketches into a dense one costs one pass over each, merging
// them into a sparse one re-sorts its growing list again and again.
func newSum() *rollup {
	sk, err := hyperloglog.NewSketch(link.HLLPrecision, false)
	if err != nil {
		panic(err)
	}
	return &rollup{hll: sk}
}

func (r *rollup) addDim(d int, key string, n uint64) {
	if r.dims[d] == nil {
		r.dims[d] = make(map[string]uint64, 4)
	}
	r.dims[d][key] += n
}

// merge adds o into r.
func (r *rollup) merge(o *rollup) error {
	r.clicks += o.clicks
	r.bots += o.bots
	if o.hll != nil {
		if r.hll == nil {
			r.hll = o.hll.Clone()
		} else if err := r.hll.Merge(o.hll); err != nil {
			return err
		}
	}
	for d := range o.dims {
		for k, n := range o.dims[d] {
			r.addDim(d, k, n)
		}
	}
	return nil
}

// uniques is the sketch's estimate, 0 without visitors.
func (r *rollup) uniques() uint64 {
	if r.hll == nil {
		return 0
	}
	return r.hll.Estimate()
}

// bound keeps at most limit keys in every breakdown: the largest ones,
// with the rest summed under OtherKey (which counts as one of the limit).
func (r *rollup) bound(limit int) {
	for d := range r.dims {
		m := r.dims[d]
		if len(m) <= limit {
			continue
		}
		kcs := sortedCounts(m)
		keep := make(map[string]uint64, limit)
		var other uint64
		for i, kc := range kcs {
			if i < limit-1 && kc.Key != OtherKey {
				keep[kc.Key] = kc.Count
			} else {
				other += kc.Count
			}
		}
		keep[OtherKey] += other
		r.dims[d] = keep
	}
}

// KeyCount is one entry of a breakdown.
type KeyCount struct {
	Key   string
	Count uint64
}

// sortedCounts lists m by count descending, then key ascending.
func sortedCounts(m map[string]uint64) []KeyCount {
	out := make([]KeyCount, 0, len(m))
	for k, n := range m {
		out = append(out, KeyCount{k, n})
	}
	slices.SortFunc(out, func(a, b KeyCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return out
}

// encode appends the stored form of r to dst: a version byte, clicks,
// bots, the uniques estimate, the sketch (length-prefixed, empty without visitors) and each
// breakdown as a count of (key, clicks) pairs.
func (r *rollup) encode(dst []byte) ([]byte, error) {
	dst = append(dst, rollupVersion)
	dst = binary.AppendUvarint(dst, r.clicks)
	dst = binary.AppendUvarint(dst, r.bots)
	r.est = r.uniques()
	dst = binary.AppendUvarint(dst, r.est)
	if r.hll == nil {
		dst = binary.AppendUvarint(dst, 0)
	} else {
		b, err := r.hll.MarshalBinary()
		if err != nil {
			return nil, err
		}
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	for d := range r.dims {
		m := r.dims[d]
		dst = binary.AppendUvarint(dst, uint64(len(m)))
		for k, n := range m {
			dst = binary.AppendUvarint(dst, uint64(len(k)))
			dst = append(dst, k...)
			dst = binary.AppendUvarint(dst, n)
		}
	}
	return dst, nil
}

// decodeRollup reads what encode wrote. withSketch false skips the
// sketch (a query that needs only counts), withDims false the
// breakdowns.
func decodeRollup(b []byte, withSketch, withDims bool) (*rollup, error) {
	var r rollup
	est, err := r.addEncoded(b, withSketch, withDims)
	if err != nil {
		return nil, err
	}
	r.est = est
	return &r, nil
}

// addEncoded adds the rollup encode wrote in b into r (as decodeRollup
// and merge would, without a rollup and maps of its own for b) and
// returns the estimate stored in b.
func (r *rollup) addEncoded(b []byte, withSketch, withDims bool) (est uint64, err error) {
	if len(b) == 0 || b[0] != rollupVersion {
		return 0, errBadRollup
	}
	b = b[1:]
	var ok bool
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			ok = false
			return 0
		}
		b = b[n:]
		return v
	}
	ok = true
	clicks, bots, est := uv(), uv(), uv()
	hl := uv()
	if !ok || hl > uint64(len(b)) {
		return 0, errBadRollup
	}
	r.clicks += clicks
	r.bots += bots
	if hl > 0 && withSketch {
		sk := newSketch()
		if err := sk.UnmarshalBinary(b[:hl]); err != nil {
			return 0, errBadRollup
		}
		if r.hll == nil {
			r.hll = sk
		} else if err := r.hll.Merge(sk); err != nil {
			return 0, err
		}
	}
	b = b[hl:]
	if !withDims {
		return est, nil
	}
	for d := range r.dims {
		n := uv()
		if !ok || n > uint64(len(b)) {
			return 0, errBadRollup
		}
		if n > 0 && r.dims[d] == nil {
			r.dims[d] = make(map[string]uint64, n)
		}
		for range n {
			kl := uv()
			if !ok || kl > uint64(len(b)) {
				return 0, errBadRollup
			}
			k := b[:kl]
			b = b[kl:]
			c := uv()
			if !ok {
				return 0, errBadRollup
			}
			r.dims[d][string(k)] += c
		}
	}
	return est, nil
}

// counts is the value of a totals key: clicks and bots.
type counts struct{ clicks, bots uint64 }

func (c counts) encode(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, c.clicks)
	return binary.AppendUvarint(dst, c.bots)
}

func decodeCounts(b []byte) (counts, error) {
	c, n := binary.Uvarint(b)
	if n <= 0 {
		return counts{}, errBadRollup
	}
	bo, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return counts{}, errBadRollup
	}
	return counts{c, bo}, nil
}
