package collector

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// crashApplier commits through the store, then fails (as a process
// killed after its Pebble commit and before its acks), or fails before
// committing.
type crashApplier struct {
	s           *Store
	afterCommit bool
	groups      int // groups to pass before the crash
}

var errCrash = errors.New("simulated crash")

func (a *crashApplier) ApplyClicks(msgs []replication.ClickMsg) error {
	if a.groups > 0 {
		a.groups--
		return a.s.ApplyClicks(msgs)
	}
	if a.afterCommit {
		if err := a.s.ApplyClicks(msgs); err != nil {
			return err
		}
		// Die only after a commit that applied something: on a loaded
		// machine a slow first group outlives the 1 s AckWait, and the
		// next group can be nothing but its redeliveries (refused, and
		// then acknowledged through the first delivery), which would
		// leave nothing committed-but-unacknowledged to refuse after the
		// restart.
		applied := false
		for _, m := range msgs {
			applied = applied || m.Verdict == replication.ClickApplied
		}
		if !applied {
			return nil
		}
	}
	return errCrash
}

// TestCrashMidIngestNoDoubleCount: the collector dies after committing a
// group but before acknowledging it, and (second case) before
// committing; the store is closed and reopened and a new consumer on the
// same durable gets the unacknowledged batches again. Every click counts
// exactly once.
func TestCrashMidIngestNoDoubleCount(t *testing.T) {
	for _, afterCommit := range []bool{true, false} {
		t.Run(map[bool]string{true: "after-commit", false: "before-commit"}[afterCommit], func(t *testing.T) {
			ns := natstest.Start(t)
			ctx := ctxT(t)
			nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := replication.EnsureClickStreamConn(ctx, nc, replication.ClickStreamConfig{}); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			base := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC).Unix()
			g := &gen{rng: rand.New(rand.NewPCG(3, 4)), codes: codesN(5), base: base, minutes: 60, visitors: 300}
			m := newModel()
			var batches []*linkpb.ClickBatch
			for i := 1; i <= 40; i++ {
				for _, e := range []string{"e1", "e2"} {
					b := g.batch(e, "i", uint64(i), (base+int64(i)*60)*1000, 6)
					batches = append(batches, b)
					m.add(b)
				}
			}
			// The first half is in the stream before the first run.
			for _, b := range batches[:40] {
				if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
					t.Fatal(err)
				}
			}

			st, err := OpenStore(StoreOptions{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			cons, err := replication.NewClickConsumer(nc, replication.ClickConsumerConfig{
				Applier: &crashApplier{s: st, afterCommit: afterCommit, groups: 1}, AckWait: time.Second, BatchSize: 8,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := cons.Run(ctx); !errors.Is(err, replication.ErrClickApply) || !errors.Is(err, errCrash) {
				t.Fatalf("Run: %v, want the simulated crash", err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			// Restart: reopen the store, consume again; the rest arrives
			// meanwhile.
			set := metrics.NewSet()
			st, err = OpenStore(StoreOptions{Dir: dir, Metrics: set})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			cons, err = replication.NewClickConsumer(nc, replication.ClickConsumerConfig{Applier: st, AckWait: time.Second, BatchSize: 8, Metrics: set})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- cons.Run(rctx) }()
			for _, b := range batches[40:] {
				if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
					t.Fatal(err)
				}
			}
			wait.For(t, 30*time.Second, "every batch applied", func() bool {
				return st.LastSeq("e1", "i") == 40 && st.LastSeq("e2", "i") == 40
			})
			// Asked of the server itself: the consumer's Status is polled
			// once a second and reads zero before its first poll, which
			// passed this wait before the redelivery (1 s AckWait) of the
			// committed group came, so nothing had been refused yet.
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			wait.For(t, 30*time.Second, "nothing left to deliver or acknowledge", func() bool {
				c, err := js.Consumer(ctx, "LINKPOP_CLICKS", "linkpop-collector")
				if err != nil {
					return false
				}
				info, err := c.Info(ctx)
				return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			checkModel(t, st, m, g)
			if afterCommit && set.GetOrCreateCounter("linkpop_collector_duplicates_refused_total").Get() == 0 {
				t.Fatal("the redelivered, already committed group was not refused as duplicates")
			}
		})
	}
}

// TestGapWaitsThenFills: a batch that follows a gap is sent back until
// the missing one arrives (a redelivery after a crash can come out of
// order), then both apply in order.
func TestGapWaitsThenFills(t *testing.T) {
	ns := natstest.Start(t)
	ctx := ctxT(t)
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	set := metrics.NewSet()
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cons, err := replication.NewClickConsumer(nc, replication.ClickConsumerConfig{Applier: st, RetryDelay: 50 * time.Millisecond, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(rctx) }()
	defer func() { cancel(); <-done }()

	mk := func(seq uint64, clicks uint64) *linkpb.ClickBatch {
		return &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: seq, ThroughUnixMs: int64(seq) * 1000,
			Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: clicks}}}
	}
	for _, b := range []*linkpb.ClickBatch{mk(1, 1), mk(3, 100)} {
		if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "seq 3 sent back at least twice", func() bool {
		return set.GetOrCreateCounter("linkpop_collector_gap_retries_total").Get() >= 2
	})
	if got := st.LastSeq("e", "i"); got != 1 {
		t.Fatalf("last seq %d while 2 is missing, want 1", got)
	}
	if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, mk(2, 10)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "seq 3 applied", func() bool { return st.LastSeq("e", "i") == 3 })
	if n, _ := st.Clicks("abc"); n != 111 {
		t.Fatalf("clicks %d, want 111", n)
	}
	if set.GetOrCreateCounter("linkpop_collector_gaps_total").Get() != 0 {
		t.Fatal("a filled gap was counted as lost")
	}
}

// TestGapAcceptedAfterTimeout: a gap that outlives GapTimeout (the
// missing batches aged out of the stream) is accepted, counted and
// logged, and the edge's later batches flow again.
func TestGapAcceptedAfterTimeout(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	set := metrics.NewSet()
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), Metrics: set, GapTimeout: time.Minute, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk := func(seq uint64) *linkpb.ClickBatch {
		return &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: seq, ThroughUnixMs: int64(seq),
			Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: 1}}}
	}
	want := func(got, want []replication.ClickVerdict) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("verdicts %v, want %v", got, want)
			}
		}
	}
	A, D, R := replication.ClickApplied, replication.ClickDuplicate, replication.ClickRetry
	want(applyAll(t, st, mk(1), mk(1), mk(4)), []replication.ClickVerdict{A, D, R})
	now = now.Add(59 * time.Second)
	want(applyAll(t, st, mk(4)), []replication.ClickVerdict{R})
	now = now.Add(2 * time.Second)
	want(applyAll(t, st, mk(4), mk(5)), []replication.ClickVerdict{A, A})
	want(applyAll(t, st, mk(2)), []replication.ClickVerdict{D})
	if n, _ := st.Clicks("abc"); n != 3 {
		t.Fatalf("clicks %d, want 3", n)
	}
	if g, l := set.GetOrCreateCounter("linkpop_collector_gaps_total").Get(), set.GetOrCreateCounter("linkpop_collector_gap_batches_lost_total").Get(); g != 1 || l != 2 {
		t.Fatalf("gaps %d lost %d, want 1 and 2", g, l)
	}
}

// TestPoisonAndAdmin: an undecodable batch, and one whose subject names
// another edge, are terminated and counted, and the batches after them
// apply; the admin listener serves the metrics and health.
func TestPoisonAndAdmin(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	ctx := ctxT(t)
	set := metrics.NewSet()
	c, err := New(Config{Dir: t.TempDir(), NATS: replication.ConnConfig{URLs: []string{ns.URL()}}, Metrics: set, AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	stop := runCollector(t, c)
	defer stop()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := replication.EnsureClickStreamConn(ctx, nc, replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := replication.PublishClickData(ctx, nc, "linkpop.clicks.e", "junk", []byte("not a batch")); err != nil {
		t.Fatal(err)
	}
	other := &linkpb.ClickBatch{Edge: "other", Instance: "i", Seq: 1, Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: 50}}}
	data, _ := link.MarshalClickBatch(other)
	if err := replication.PublishClickData(ctx, nc, "linkpop.clicks.e", "wrong-subject", data); err != nil {
		t.Fatal(err)
	}
	good := &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, ThroughUnixMs: 5000, Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: 2}}}
	if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, good); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the good batch applied", func() bool { return c.LastSeq("e", "i") == 1 })
	if n, _ := c.Clicks("abc"); n != 2 {
		t.Fatalf("clicks %d, want 2 (poison counted?)", n)
	}
	if got := c.Consumer().Status().Poison; got != 2 {
		t.Fatalf("poison %d, want 2", got)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + c.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "linkpop_collector_clicks_total 2") || !strings.Contains(body, "linkpop_collector_consumer_poison_total 2") {
		t.Fatalf("/metrics %d:\n%s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"nats_connected":true`) {
		t.Fatalf("/healthz %d: %s", code, body)
	}
}
