package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/replication"
)

// TestFence: two origin leaders publish to one R3 stream through their
// own chains. The old one (epoch 1) has published; the new one (epoch 2)
// appends its barrier expecting the tail it caught up to, then publishes.
// The old chain's next window, which expects the old tail, lands nothing,
// and every later try fails with ErrFenced instead of re-anchoring on the
// new leader's messages (which a chain without epochs would do). The
// same code at the same revision from both leaders is never taken for a
// duplicate. A barrier expecting a stale tail is refused, and a publisher
// without an epoch is never fenced.
func TestFence(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func() *replication.Publisher {
		nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: c.URLs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		p, err := replication.NewPublisher(nc, replication.StreamConfig{Name: "FENCE", Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldP, newP := dial(), dial()
	if err := oldP.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	oldP.SetEpoch(1)
	oldC := replication.NewChain(oldP, nil)
	ev := func(code string, rev uint64) replication.Event {
		return replication.Event{Code: code, Revision: rev, Data: encoded(t, code, rev)}
	}
	if n, err := oldC.Publish(ctx, []replication.Event{ev("a", 1), ev("b", 2)}, nil); n != 2 || err != nil {
		t.Fatalf("old leader: %d, %v", n, err)
	}
	tail, err := newP.Tail(ctx)
	if err != nil || tail.Seq != 2 || tail.Epoch != 1 {
		t.Fatalf("tail %+v, %v", tail, err)
	}
	if _, err := newP.AppendBarrier(ctx, 2, tail.Seq-1); !errors.Is(err, replication.ErrWrongLastSequence) {
		t.Fatalf("barrier on a stale tail: %v, want ErrWrongLastSequence", err)
	}
	bar, err := newP.AppendBarrier(ctx, 2, tail.Seq)
	if err != nil || bar != 3 {
		t.Fatalf("barrier: %d, %v", bar, err)
	}
	newP.SetEpoch(2)
	newC := replication.NewChain(newP, nil)
	if n, err := newC.Publish(ctx, []replication.Event{ev("c", 3)}, nil); n != 1 || err != nil {
		t.Fatalf("new leader: %d, %v", n, err)
	}
	// The old leader still believes the tail is 2: its window is refused.
	n, err := oldC.Publish(ctx, []replication.Event{ev("c", 3), ev("d", 4)}, nil)
	if n != 0 || !errors.Is(err, replication.ErrWrongLastSequence) {
		t.Fatalf("deposed leader's window: %d, %v; want 0 and ErrWrongLastSequence", n, err)
	}
	for range 3 {
		n, err = oldC.Publish(ctx, []replication.Event{ev("c", 3), ev("d", 4)}, nil)
		if n != 0 || !errors.Is(err, replication.ErrFenced) {
			t.Fatalf("deposed leader after re-reading the tail: %d, %v; want 0 and ErrFenced", n, err)
		}
	}
	if tail, err := newP.Tail(ctx); err != nil || tail.Seq != 4 || tail.Epoch != 2 || tail.MsgID != "c:3@2" {
		t.Fatalf("tail after the deposed leader's tries: %+v, %v (want c from epoch 2 at 4)", tail, err)
	}
	// Without an epoch (a single origin), the same tail is no fence.
	plain := dial()
	if n, err := replication.NewChain(plain, nil).Publish(ctx, []replication.Event{ev("e", 5)}, nil); n != 1 || err != nil {
		t.Fatalf("publisher without an epoch: %d, %v", n, err)
	}
}
