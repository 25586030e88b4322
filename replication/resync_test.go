package replication_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// TestConsumerResync loses records behind the consumer's back (one
// deleted, one rolled back), then resyncs: the replica is rewound to 0,
// the whole stream is replayed, and the replica holds the stream's state
// again.
func TestConsumerResync(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	want := map[string]uint64{}
	for i := range 20 {
		code := fmt.Sprintf("code-%02d", i)
		e.publish(code, 1)
		e.publish(code, 2)
		want[code] = 2
	}
	r := e.start(a)
	e.converge(r, a, want)
	before := len(a.seen())
	damage(t, a)

	r.Resync()
	wait.For(t, 15*time.Second, "replica repaired by the replay", func() bool {
		return mapsEqual(a.revisions(t), want)
	})
	e.converge(r, a, want)
	if n := a.rewindCount(); n != 1 {
		t.Fatalf("rewinds = %d, want 1", n)
	}
	seen := a.seen()
	replay := seen[before:]
	if len(replay) != 20 || !slices.IsSorted(replay) || replay[0] != seen[0] {
		t.Fatalf("replay applied %v, want the 20 compacted messages from the first one (first run: %v)", replay, seen[:before])
	}
	if got := r.metric("linkpop_replication_resyncs_total"); got != "1" {
		t.Fatalf("resyncs_total = %q, want 1", got)
	}
	if s := r.Status(); !s.Bootstrapped || s.ConsumerRecreations != 0 {
		t.Fatalf("status after resync: %+v (a resync is not a rebuild)", s)
	}
}

// TestConsumerResyncBeforeRun resyncs a replica that is at the stream's
// end before Run starts: Run rewinds it and replays.
func TestConsumerResyncBeforeRun(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	want := map[string]uint64{}
	for i := range 5 {
		code := fmt.Sprintf("code-%02d", i)
		e.publish(code, 1)
		want[code] = 1
	}
	r := e.start(a)
	e.converge(r, a, want)
	r.stop(t)
	damage(t, a)

	c, err := replication.NewConsumer(e.nc, replication.ConsumerConfig{
		Stream: e.cfg, Applier: a, Metrics: metrics.NewSet(), Logger: testLogger(t),
		PollInterval: 100 * time.Millisecond, Heartbeat: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Resync()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wait.For(t, 15*time.Second, "replica repaired by the replay", func() bool {
		return mapsEqual(a.revisions(t), want)
	})
	if n := a.rewindCount(); n != 1 {
		t.Fatalf("rewinds = %d, want 1", n)
	}
}

// damage deletes code-03 and rolls code-01 back to revision 1 with
// another URL, behind the consumer's back.
func damage(t *testing.T, a *pebbleApplier) {
	t.Helper()
	before := a.revisions(t)
	if before["code-01"] < 1 || before["code-03"] < 1 {
		t.Fatalf("damage needs code-01 and code-03 in the replica: %v", before)
	}
	if err := a.db.Delete([]byte("rec/code-03"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	old := change("code-01", 1).Record
	old.URL = "https://example.com/rolled-back"
	rec, err := link.MarshalRecord(&old)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.db.Set([]byte("rec/code-01"), rec, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.revisions(t)["code-03"]; ok {
		t.Fatal("damage did not delete code-03")
	}
}

func (a *pebbleApplier) rewindCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rewinds
}
