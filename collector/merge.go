package collector

import (
	"fmt"
	"io"
	"strings"
	"sync"

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
				m := rollupMergers.Get().(*rollupMerger)
				m.limit, m.sum = limit, nil
				m.first = append(m.first[:0], value...)
				return m, nil
			case pfxIndex, pfxTotal:
				c, err := decodeCounts(value)
				m := countsMergers.Get().(*countsMerger)
				m.c = c
				return m, err
			}
			return nil, fmt.Errorf("%w: merge of key %q", errBadRollup, key)
		},
	}
}

// The mergers are reused: a flush or compaction merges every rollup,
// index and totals key it writes (nearly all of them one operand), and
// a merger and its copy of the operand for each was most of what the
// store's compactions allocated. Finish hands the merger out as the
// Closer of its result, and its Close puts it back.
var (
	rollupMergers = sync.Pool{New: func() any { return new(rollupMerger) }}
	countsMergers = sync.Pool{New: func() any { return new(countsMerger) }}
)

// mergerKeep bounds the buffers a pooled merger keeps.
const mergerKeep = 64 << 10

// rollupMerger adds rollup operands.
type rollupMerger struct {
	limit int
	first []byte  // the only operand so far, undecoded (a copy)
	sum   *rollup // the sum, once a second operand came
	out   []byte  // Finish's encoding of sum
}

func (m *rollupMerger) add(v []byte) error {
	if m.sum == nil {
		m.sum = &rollup{}
		if _, err := m.sum.addEncoded(m.first, true, true); err != nil {
			return err
		}
		m.first = nil
	}
	_, err := m.sum.addEncoded(v, true, true)
	return err
}

func (m *rollupMerger) MergeNewer(v []byte) error { return m.add(v) }
func (m *rollupMerger) MergeOlder(v []byte) error { return m.add(v) }

func (m *rollupMerger) Finish(bool) ([]byte, io.Closer, error) {
	if m.sum == nil {
		return m.first, m, nil
	}
	m.sum.bound(m.limit)
	b, err := m.sum.encode(m.out[:0])
	if err != nil {
		return nil, nil, err
	}
	m.out, m.sum = b, nil
	return b, m, nil
}

// Close returns m to the pool once its result has been used.
func (m *rollupMerger) Close() error {
	if cap(m.first) <= mergerKeep && cap(m.out) <= mergerKeep {
		rollupMergers.Put(m)
	}
	return nil
}

// countsMerger adds counts operands (index and totals keys).
type countsMerger struct {
	c   counts
	out []byte
}

func (m *countsMerger) add(v []byte) error {
	c, err := decodeCounts(v)
	m.c.clicks += c.clicks
	m.c.bots += c.bots
	return err
}

func (m *countsMerger) MergeNewer(v []byte) error { return m.add(v) }
func (m *countsMerger) MergeOlder(v []byte) error { return m.add(v) }

func (m *countsMerger) Finish(bool) ([]byte, io.Closer, error) {
	m.out = m.c.encode(m.out[:0])
	return m.out, m, nil
}

// Close returns m to the pool once its result has been used.
func (m *countsMerger) Close() error {
	countsMergers.Put(m)
	return nil
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
