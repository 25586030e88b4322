package collector

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// TestMergeOperandsThroughCompaction: groups of batches are committed as
// merge operands (one per key and group), read back while the operands
// sit in memtables, after they were flushed into overlapping sstables,
// and after a full compaction merged them: every answer equals the model.
// Batches of one group touch the same keys (the in-group sum), and a
// LinkMinute whose referrers exceed the breakdown limit takes the
// rollup path instead of the direct encoding.
func TestMergeOperandsThroughCompaction(t *testing.T) {
	base := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC).Unix()
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), BreakdownLimit: 8, Now: func() time.Time { return time.Unix(base, 0).Add(6 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := &gen{rng: rand.New(rand.NewPCG(7, 8)), codes: codesN(6), base: base, minutes: 150, visitors: 400}
	m := newModel()
	seq := uint64(0)
	for round := range 3 {
		for range 10 {
			var group []*linkpb.ClickBatch
			for range 4 {
				seq++
				b := g.batch("e1", "i", seq, (base+int64(seq)*60)*1000, 8)
				m.add(b)
				group = append(group, b)
			}
			applyAll(t, st, group...)
		}
		switch round {
		case 0:
			checkModel(t, st, m, g) // operands in the memtable
			if err := st.Flush(); err != nil {
				t.Fatal(err)
			}
		case 1:
			checkModel(t, st, m, g) // operands over memtable and sstables
			if _, err := st.TableBytes(true); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkModel(t, st, m, g)
	if _, err := st.TableBytes(true); err != nil {
		t.Fatal(err)
	}
	checkModel(t, st, m, g)

	// More referrers than the limit: the rollup keeps 8 keys, (other)
	// included, and the total.
	seq++
	lm := &linkpb.LinkMinute{Code: "wide", MinuteUnix: base, Clicks: 20}
	for i := range 20 {
		lm.Referrers = append(lm.Referrers, &linkpb.KeyCount{Key: string(rune('a' + i)), Count: 1})
	}
	applyAll(t, st, &linkpb.ClickBatch{Edge: "e1", Instance: "i", Seq: seq, Links: []*linkpb.LinkMinute{lm}})
	r, err := ParseRange(time.Unix(base, 0).Format(time.RFC3339), time.Unix(base+60, 0).Format(time.RFC3339), "minute", time.Unix(base, 0))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := st.LinkStats("wide", r)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, kc := range ls.Referrers {
		sum += kc.Count
	}
	if ls.Clicks != 20 || len(ls.Referrers) != 8 || sum != 20 {
		t.Fatalf("wide link: clicks %d, referrers %v", ls.Clicks, ls.Referrers)
	}
}

// TestOpenSetOnlyStore: a store written before the merge operator (its
// OPTIONS name Pebble's default merger; its values were Set) opens, its
// counts read as they were, and new clicks add to them.
func TestOpenSetOnlyStore(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(totalKey("old"), counts{clicks: 41, bots: 2}.encode(nil), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	applyAll(t, st, &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1,
		Links: []*linkpb.LinkMinute{{Code: "old", MinuteUnix: time.Now().Unix() / 60 * 60, Clicks: 1}}})
	if n, err := st.Clicks("old"); err != nil || n != 42 {
		t.Fatalf("clicks %d, %v; want 42", n, err)
	}
}
