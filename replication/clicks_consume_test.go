package replication_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// slowApplier holds its first group until released, as a big group on a
// loaded machine does.
type slowApplier struct {
	release chan struct{}
	groups  atomic.Int64
	msgs    atomic.Int64
	biggest atomic.Int64
}

func (a *slowApplier) ApplyClicks(msgs []replication.ClickMsg) error {
	if a.groups.Add(1) == 1 {
		<-a.release
	}
	a.msgs.Add(int64(len(msgs)))
	if n := int64(len(msgs)); n > a.biggest.Load() {
		a.biggest.Store(n)
	}
	for i := range msgs {
		msgs[i].Verdict = replication.ClickApplied
	}
	return nil
}

// clickStream starts an embedded JetStream server with the click stream
// and returns a connection to it and a context of a minute.
func clickStream(t *testing.T) (*nats.Conn, context.Context) {
	t.Helper()
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := replication.EnsureClickStreamConn(ctx, nc, replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return nc, ctx
}

// TestClickConsumerSlowApply: a group that takes longer than StallTimeout
// to apply while more batches wait is work, not a stall: the session is
// not rebuilt; and GroupMaxBytes bounds a group.
func TestClickConsumerSlowApply(t *testing.T) {
	nc, ctx := clickStream(t)
	const n = 20
	visitors := make([]uint64, 1000) // about 8 KB a batch
	for i := range visitors {
		visitors[i] = uint64(i)
	}
	for i := 1; i <= n; i++ {
		b := &linkpb.ClickBatch{Edge: "e1", Instance: "i1", Seq: uint64(i), ThroughUnixMs: int64(i) * 1000,
			Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: 1000, Visitors: visitors}}}
		if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
			t.Fatal(err)
		}
	}
	app := &slowApplier{release: make(chan struct{})}
	cons, err := replication.NewClickConsumer(nc, replication.ClickConsumerConfig{Applier: app, BatchSize: 4,
		GroupMaxBytes: 12 << 10, StallTimeout: 100 * time.Millisecond, PollInterval: 20 * time.Millisecond, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(rctx) }()
	wait.For(t, 30*time.Second, "the first group in the applier", func() bool { return app.groups.Load() == 1 })
	// The watcher (every 20 ms) sees batches pending and none received
	// for twenty stall timeouts while the first group is applied.
	held := time.Now()
	wait.For(t, 30*time.Second, "twenty stall timeouts with batches pending", func() bool {
		return time.Since(held) > 20*100*time.Millisecond && cons.Status().Pending > 0
	})
	close(app.release)
	wait.For(t, 30*time.Second, "every batch applied", func() bool { return app.msgs.Load() == n })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := cons.Status().Rebuilds; r != 0 {
		t.Fatalf("%d session rebuilds while a group was being applied", r)
	}
	if b := app.biggest.Load(); b > 2 {
		t.Fatalf("a group of %d batches of 8 KB, past GroupMaxBytes (12 KB)", b)
	}
}

// pipeApplier is a ClickPreparer whose first commit waits until the
// next group has been prepared: it finishes only if the consumer
// prepares while it commits.
type pipeApplier struct {
	mu        sync.Mutex
	prepared  []uint64 // first seq of each prepared group, in order
	committed []uint64
	second    chan struct{} // closed by the second prepare
}

func (a *pipeApplier) ApplyClicks([]replication.ClickMsg) error {
	return errors.New("ApplyClicks called on a ClickPreparer")
}

func (a *pipeApplier) PrepareClicks(msgs []replication.ClickMsg) (func() error, error) {
	for i := range msgs {
		msgs[i].Verdict = replication.ClickApplied
	}
	a.mu.Lock()
	a.prepared = append(a.prepared, msgs[0].Batch.Seq)
	if len(a.prepared) == 2 {
		close(a.second)
	}
	a.mu.Unlock()
	seq := msgs[0].Batch.Seq
	return func() error {
		a.mu.Lock()
		first := len(a.committed) == 0
		a.mu.Unlock()
		if first {
			select {
			case <-a.second:
			case <-time.After(30 * time.Second):
				return errors.New("the next group was not prepared while the first committed")
			}
		}
		a.mu.Lock()
		a.committed = append(a.committed, seq)
		a.mu.Unlock()
		return nil
	}, nil
}

// TestClickConsumerPipelines: with a ClickPreparer the consumer prepares
// the next group while the previous one commits, and commits them all,
// once each, in the order of the prepares.
func TestClickConsumerPipelines(t *testing.T) {
	nc, ctx := clickStream(t)
	const n = 6
	for i := 1; i <= n; i++ {
		b := &linkpb.ClickBatch{Edge: "e1", Instance: "i1", Seq: uint64(i), ThroughUnixMs: int64(i) * 1000,
			Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: 60, Clicks: 1}}}
		if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
			t.Fatal(err)
		}
	}
	app := &pipeApplier{second: make(chan struct{})}
	cons, err := replication.NewClickConsumer(nc, replication.ClickConsumerConfig{Applier: app, BatchSize: 1, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(rctx) }()
	wait.For(t, 40*time.Second, "every group committed", func() bool {
		app.mu.Lock()
		defer app.mu.Unlock()
		return len(app.committed) >= n
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if !slices.Equal(app.committed, app.prepared) || len(app.committed) != n {
		t.Fatalf("committed %v, prepared %v", app.committed, app.prepared)
	}
	for i, seq := range app.committed {
		if seq != uint64(i+1) {
			t.Fatalf("committed %v, want seqs 1..%d in order", app.committed, n)
		}
	}
}
