package collector

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// TestStatsNotAheadOfCounts: while batches of one click each commit,
// every LinkStats and TopLinks answer counts at least the clicks of the
// batches its complete_through covers. Fails when complete_through is read
// after the counts (a commit in between made it claim clicks the answer
// lacks).
func TestStatsNotAheadOfCounts(t *testing.T) {
	st, err := OpenStore(StoreOptions{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC().Truncate(time.Minute)
	base := now.UnixMilli()
	const batches = 3000
	var wg sync.WaitGroup
	var applyErr error
	stop := make(chan struct{})
	wg.Go(func() {
		for i := uint64(1); i <= batches; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Batch i carries one click and marks base+i ms.
			msgs := []replication.ClickMsg{{Batch: &linkpb.ClickBatch{Edge: "e", Instance: "1", Seq: i, ThroughUnixMs: base + int64(i),
				Links: []*linkpb.LinkMinute{{Code: "x", MinuteUnix: now.Unix(), Clicks: 1}}}}}
			if applyErr = st.ApplyClicks(msgs); applyErr != nil || msgs[0].Verdict != replication.ClickApplied {
				return
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
		if applyErr != nil {
			t.Errorf("apply: %v", applyErr)
		}
	}()
	r := Range{From: now.Add(-time.Hour), To: now.Add(time.Hour), Interval: Minute}
	deadline := time.Now().Add(time.Minute)
	for covered := uint64(0); covered < batches; {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute complete_through covers %d of %d batches", covered, batches)
		}
		ls, err := st.LinkStats("x", r)
		if err != nil {
			t.Fatal(err)
		}
		top, err := st.TopLinks(r, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []struct {
			name   string
			ct     *time.Time
			clicks uint64
		}{{"LinkStats", ls.CompleteThrough, ls.Clicks}, {"TopLinks", top.CompleteThrough, top.Clicks}} {
			if a.ct == nil {
				continue
			}
			covered = uint64(a.ct.UnixMilli() - base)
			if a.clicks < covered {
				t.Fatalf("%s: complete_through covers %d batches of one click, the answer counts %d", a.name, covered, a.clicks)
			}
		}
	}
}
