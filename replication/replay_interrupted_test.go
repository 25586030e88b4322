package replication_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// TestReplayInterrupted stops a fresh edge replica's replay of the stream
// in the middle, while the replica runs with its bulk-load settings: by
// closing it, and by a crash (the store as a power loss would leave it:
// only what was synced). Either way the reopened replica is consistent,
// holding exactly the stream's state at its position, at or beyond the
// consumer's Applied, and the replay it resumes ends with the stream's
// digest, in steady-state settings.
func TestReplayInterrupted(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "crash"}[crash], func(t *testing.T) {
			leaktest.Check(t)
			testReplayInterrupted(t, crash)
		})
	}
}

func testReplayInterrupted(t *testing.T, crash bool) {
	e := newEnv(t)
	// Creates of 1,500 codes, then updates of every third one, so the
	// state at a position depends on which messages it covers.
	type msg struct {
		code string
		rev  uint64
	}
	var msgs []msg
	for i := range 1500 {
		msgs = append(msgs, msg{fmt.Sprintf("code-%04d", i), uint64(i + 1)})
	}
	for i := 0; i < 1500; i += 3 {
		msgs = append(msgs, msg{fmt.Sprintf("code-%04d", i), uint64(1500 + i + 1)})
	}
	seqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		seqs[i] = e.publish(m.code, m.rev)
	}
	// digestAt is the stream's state through position pos. The
	// compacted stream keeps the latest message of each code, so a
	// replica at pos holds, for every code, the newest of its messages
	// the stream still holds at or below pos.
	last := seqs[len(seqs)-1]
	latest := map[string]uint64{}
	for i, m := range msgs {
		latest[m.code] = seqs[i]
	}
	digestAt := func(pos uint64) (sum, count uint64) {
		for i, m := range msgs {
			if seqs[i] <= pos && latest[m.code] == seqs[i] {
				sum += link.DigestTerm(m.code, m.rev)
				count++
			}
		}
		return sum, count
	}

	fs := vfs.NewCrashableMem()
	set := metrics.NewSet()
	openReplica := func(fs vfs.FS) *replica.Replica {
		t.Helper()
		r, err := replica.Open(replica.Options{FS: fs, Dir: "replica", Metrics: set, BulkPending: 100,
			MemTableBytes: 256 << 10, BulkMemTableBytes: 1 << 20, HotCacheEntries: 100, NegativeCacheEntries: 100})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	bulk := func() string {
		return metricValue(set, "linkpop_replica_bulk_load")
	}
	rep := openReplica(fs)
	// The replay is held once it applied a third of the stream, and
	// interrupted there.
	g := &gate{Replica: rep, at: last / 3, reached: make(chan struct{}), release: make(chan struct{})}
	run := e.startWith(g, func(c *replication.ConsumerConfig) { c.BatchSize = 16 })
	select {
	case <-g.reached:
	case <-time.After(15 * time.Second):
		t.Fatal("the replay did not reach a third of the stream")
	}
	if got := bulk(); got != "1" {
		t.Errorf("bulk_load = %q during the replay, want 1", got)
	}
	applied := run.Status().Applied
	var reopenFS vfs.FS = fs
	if crash {
		reopenFS = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	}
	run.cancel()
	close(g.release)
	run.stop(t)
	if err := rep.Close(); err != nil {
		t.Fatal(err)
	}

	rep = openReplica(reopenFS)
	defer rep.Close()
	pos, err := rep.Position()
	if err != nil {
		t.Fatal(err)
	}
	if pos < applied || pos >= last {
		t.Fatalf("reopened at position %d, want in [%d, %d): at or beyond Applied, mid-replay", pos, applied, last)
	}
	t.Logf("interrupted with Applied %d; reopened at position %d of %d", applied, pos, last)
	wantSum, wantCount := digestAt(pos)
	if sum, count, err := rep.Digest(); err != nil || sum != wantSum || count != wantCount {
		t.Fatalf("reopened at %d: digest %x of %d links, %v; want the stream's at %d: %x of %d", pos, sum, count, err, pos, wantSum, wantCount)
	}

	run = e.startWith(rep, func(c *replication.ConsumerConfig) { c.BatchSize = 16 })
	wait.For(t, 15*time.Second, fmt.Sprintf("applied through %d", last), func() bool {
		return run.Status().Applied == last
	})
	run.stop(t)
	wantSum, wantCount = digestAt(last)
	if sum, count, err := rep.Digest(); err != nil || sum != wantSum || count != wantCount {
		t.Fatalf("after the resumed replay: digest %x of %d links, %v; want the stream's %x of %d", sum, count, err, wantSum, wantCount)
	}
	if got := bulk(); got != "0" {
		t.Errorf("bulk_load = %q once caught up, want 0", got)
	}
}

// gate is a Replica whose Apply holds, once it applied a batch through
// at or beyond at, until release is closed.
type gate struct {
	*replica.Replica
	at               uint64
	reached, release chan struct{}
	once             sync.Once
}

func (g *gate) Apply(b replication.Batch) error {
	err := g.Replica.Apply(b)
	if b.Through >= g.at {
		g.once.Do(func() { close(g.reached) })
		<-g.release
	}
	return err
}
