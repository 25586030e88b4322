package collector

import (
	"fmt"
	"io"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// mergerName names the rollup store's merge operator on disk: Pebble
// refuses to open a store with another one.
const mergerName = "linkpop.collector.rollups.v1"

// newMerger is the rollup store's Pebble merge operator. A commit writes
// each rollup, index and totals key of its group as a merge operand (the
// group's own sums), never reading the stored value: adding up is left to
// reads and compactions, which merge the operands they meet. Rollups
// merge as rollup.merge does (counts add, sketches merge, breakdowns add
// and are bounded to limit keys); index and totals values add their
// counts. The merge is associative and commutative; only which keys a
// bounded breakdown ranks one by one past the limit depends on the order
// (its totals do not).
func newMerger(limit int) *pebble.Merger {
	return &pebble.Merger{
		Name: mergerName,
		Merge: func(key, value []byte) (pebble.ValueMerger, error) {
			if len(key) == 0 {
				return nil, fmt.Errorf("%w: merge of an empty key", errBadRollup)
			}
			switch key[0] {
			case pfxRollup:
				// The first operand is kept as it is: a key with one
				// operand (most of them, once compacted) is answered
				// without decoding it.
				return &rollupMerger{limit: limit, first: append([]byte(nil), value...)}, nil
			case pfxIndex, pfxTotal:
				c, err := decodeCounts(value)
				return &countsMerger{c: c}, err
			}
			return nil, fmt.Errorf("%w: merge of key %q", errBadRollup, key)
		},
	}
}

// rollupMerger adds rollup operands.
type rollupMerger struct {
	limit int
	first []byte  // the only operand so far, undecoded
	sum   *rollup // the sum, once a second operand came
}

func (m *rollupMerger) add(v []byte) error {
	if m.sum == nil {
		r, err := decodeRollup(m.first, true, true)
		if err != nil {
			return err
		}
		m.sum, m.first = r, nil
	}
	r, err := decodeRollup(v, true, true)
	if err != nil {
		return err
	}
	return m.sum.merge(r)
}

func (m *rollupMerger) MergeNewer(v []byte) error { return m.add(v) }
func (m *rollupMerger) MergeOlder(v []byte) error { return m.add(v) }

func (m *rollupMerger) Finish(bool) ([]byte, io.Closer, error) {
	if m.sum == nil {
		return m.first, nil, nil
	}
	m.sum.bound(m.limit)
	b, err := m.sum.encode(nil)
	return b, nil, err
}

// countsMerger adds counts operands (index and totals keys).
type countsMerger struct{ c counts }

func (m *countsMerger) add(v []byte) error {
	c, err := decodeCounts(v)
	m.c.clicks += c.clicks
	m.c.bots += c.bots
	return err
}

func (m *countsMerger) MergeNewer(v []byte) error { return m.add(v) }
func (m *countsMerger) MergeOlder(v []byte) error { return m.add(v) }

func (m *countsMerger) Finish(bool) ([]byte, io.Closer, error) {
	return m.c.encode(nil), nil, nil
}

// adoptSetOnlyStore handles a store written before the merge operator:
// its OPTIONS files name Pebble's default merger, and it holds no merge
// operand (that code only wrote Sets), so its data reads the same with
// newMerger. Removing the OPTIONS files lets it open with the new
// merger (Pebble writes a new OPTIONS file at open). It reports whether
// it changed anything; err is what Open answered.
func adoptSetOnlyStore(fs vfs.FS, dir string, err error) bool {
	if err == nil || !strings.Contains(err.Error(), `merger name from file "`+pebble.DefaultMerger.Name+`"`) {
		return false
	}
	names, lerr := fs.List(dir)
	if lerr != nil {
		return false
	}
	removed := false
	for _, n := range names {
		if strings.HasPrefix(n, "OPTIONS-") {
			if fs.Remove(fs.PathJoin(dir, n)) == nil {
				removed = true
			}
		}
	}
	return removed
}
