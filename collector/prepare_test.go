package collector

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// TestPrepareWhileCommitting: the consumer prepares a group while the
// one before it is not committed yet. The second group is decided
// against the first (a redelivery of the first's batch in it is a
// duplicate), nothing is visible or reported applied before its commit,
// and after both commits every count equals the model. A commit out of
// the order of the prepares breaks the store: that commit and every
// later prepare and commit fail, and after a reopen the store holds
// exactly what was committed before.
func TestPrepareWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC).Unix()
	g := &gen{rng: rand.New(rand.NewPCG(7, 8)), codes: codesN(6), base: base, minutes: 90, visitors: 400}
	var bs []*linkpb.ClickBatch
	for i := 1; i <= 6; i++ {
		bs = append(bs, g.batch("e", "i", uint64(i), (base+int64(i)*60)*1000, 20))
	}
	m := newModel()
	msgs := func(bs ...*linkpb.ClickBatch) []replication.ClickMsg {
		out := make([]replication.ClickMsg, len(bs))
		for i, b := range bs {
			out[i].Batch = b
		}
		return out
	}
	verdicts := func(ms []replication.ClickMsg, want ...replication.ClickVerdict) {
		t.Helper()
		for i := range ms {
			if ms[i].Verdict != want[i] {
				t.Fatalf("message %d: verdict %d, want %d", i, ms[i].Verdict, want[i])
			}
		}
	}
	const applied, dup = replication.ClickApplied, replication.ClickDuplicate

	g1 := msgs(bs[0], bs[1])
	c1, err := st.PrepareClicks(g1)
	if err != nil {
		t.Fatal(err)
	}
	verdicts(g1, applied, applied)
	g2 := msgs(bs[1], bs[2]) // bs[1] again: the first group has it
	c2, err := st.PrepareClicks(g2)
	if err != nil {
		t.Fatal(err)
	}
	verdicts(g2, dup, applied)
	if n := st.LastSeq("e", "i"); n != 0 {
		t.Fatalf("LastSeq %d before any commit", n)
	}
	checkModel(t, st, m, g) // nothing yet
	if err := c1(); err != nil {
		t.Fatal(err)
	}
	m.add(bs[0])
	m.add(bs[1])
	checkModel(t, st, m, g)
	if err := c2(); err != nil {
		t.Fatal(err)
	}
	m.add(bs[2])
	checkModel(t, st, m, g)
	if n := st.LastSeq("e", "i"); n != 3 {
		t.Fatalf("LastSeq %d after the commits, want 3", n)
	}

	// Out of order: the fourth batch's group is committed before the
	// third's.
	c3, err := st.PrepareClicks(msgs(bs[3]))
	if err != nil {
		t.Fatal(err)
	}
	c4, err := st.PrepareClicks(msgs(bs[4]))
	if err != nil {
		t.Fatal(err)
	}
	if err := c4(); err == nil {
		t.Fatal("a commit out of order succeeded")
	}
	if err := c3(); err == nil {
		t.Fatal("a commit after the store broke succeeded")
	}
	if _, err := st.PrepareClicks(msgs(bs[5])); err == nil {
		t.Fatal("a prepare after the store broke succeeded")
	}
	checkModel(t, st, m, g)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := st.LastSeq("e", "i"); n != 3 {
		t.Fatalf("LastSeq %d after the reopen, want 3", n)
	}
	checkModel(t, st, m, g)
	// The batches never committed apply now, once.
	got := applyAll(t, st, bs[3], bs[4], bs[5], bs[4])
	if got[0] != applied || got[1] != applied || got[2] != applied || got[3] != dup {
		t.Fatalf("verdicts after the reopen %v", got)
	}
	for _, b := range bs[3:] {
		m.add(b)
	}
	checkModel(t, st, m, g)
}
