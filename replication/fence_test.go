package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	if err != nil || bar != 2+replication.BarrierSpan {
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
	if tail, err := newP.Tail(ctx); err != nil || tail.Seq != bar+1 || tail.Epoch != 2 || tail.MsgID != "c:3@2" {
		t.Fatalf("tail after the deposed leader's tries: %+v, %v (want c from epoch 2 at %d)", tail, err, bar+1)
	}
	// Without an epoch (a single origin), the same tail is no fence.
	plain := dial()
	if n, err := replication.NewChain(plain, nil).Publish(ctx, []replication.Event{ev("e", 5)}, nil); n != 1 || err != nil {
		t.Fatalf("publisher without an epoch: %d, %v", n, err)
	}
}

// TestFencePipelinedWindow: a message of another writer lands while a
// chain's window is in flight, taking the place the window's first event
// expected. With a lease that is a new leader's barrier, an atomic batch
// of BarrierSpan messages: every event of the deposed leader's window is
// refused, its next anchor fails with ErrFenced and counts nothing as
// stored. On a stream without atomic batches the barrier is one message:
// the events behind the refused one land after it, one place further on;
// the deposed chain must still be fenced (the last message is its own,
// the barrier subject says epoch 2) and never count them, and the new
// leader counts anchoring on one (StaleTails). Without a lease (a stray
// writer), the anchor must skip only the events that are in the stream,
// so the refused one is sent again and nothing is lost.
func TestFencePipelinedWindow(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var js jetstream.JetStream
	dial := func(name, prefix string) *replication.Publisher {
		nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: c.URLs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if js, err = jetstream.New(nc); err != nil {
			t.Fatal(err)
		}
		p, err := replication.NewPublisher(nc, replication.StreamConfig{Name: name, SubjectPrefix: prefix, Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ev := func(code string, rev uint64) replication.Event {
		return replication.Event{Code: code, Revision: rev, Data: encoded(t, code, rev)}
	}
	// sendWindow anchors ch, lets intrude append to the stream, sends
	// events pipelined and returns each one's answer.
	sendWindow := func(ch *replication.Chain, events []replication.Event, intrude func()) []error {
		t.Helper()
		if _, err := ch.Anchor(ctx, events); err != nil {
			t.Fatal(err)
		}
		intrude()
		var sent []*replication.Sent
		for _, e := range events {
			s, err := ch.Send(e)
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, s)
		}
		errs := make([]error, len(sent))
		for i, s := range sent {
			errs[i] = s.Wait(ctx)
		}
		return errs
	}
	window := []replication.Event{ev("b", 2), ev("c", 3), ev("d", 4)}
	deposed := func(t *testing.T, name, prefix string, atomic bool) {
		oldP, newP := dial(name, prefix), dial(name, prefix)
		if err := oldP.EnsureStream(ctx); err != nil {
			t.Fatal(err)
		}
		if !atomic {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.CachedInfo().Config
			cfg.AllowAtomicPublish = false
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
		}
		oldP.SetEpoch(1)
		oldC := replication.NewChain(oldP, nil)
		if n, err := oldC.Publish(ctx, []replication.Event{ev("a", 1)}, nil); n != 1 || err != nil {
			t.Fatalf("old leader: %d, %v", n, err)
		}
		var bar uint64
		errs := sendWindow(oldC, window, func() {
			var err error
			bar, err = newP.AppendBarrier(ctx, 2, 1)
			if atomic && err != nil || !atomic && !errors.Is(err, replication.ErrBarrierNotAtomic) {
				t.Fatalf("barrier (atomic %v): %d, %v", atomic, bar, err)
			}
		})
		if want := uint64(1 + replication.BarrierSpan); atomic && bar != want {
			t.Fatalf("atomic barrier ends at %d, want %d", bar, want)
		}
		for i, err := range errs {
			if (atomic || i == 0) && !errors.Is(err, replication.ErrWrongLastSequence) {
				t.Fatalf("deposed leader's event %d after the barrier: %v, want ErrWrongLastSequence", i, err)
			}
			if !atomic && i > 0 && err != nil {
				t.Fatalf("event %d after a one-message barrier: %v (it lands one place on)", i, err)
			}
		}
		for range 2 {
			n, err := oldC.Publish(ctx, window, nil)
			if !errors.Is(err, replication.ErrFenced) || n != 0 {
				t.Fatalf("deposed leader re-anchoring after the barrier: %d stored, %v; want 0 and ErrFenced", n, err)
			}
		}
		newP.SetEpoch(2)
		newC := replication.NewChain(newP, nil)
		if n, err := newC.Publish(ctx, []replication.Event{ev("e", 2)}, nil); n != 1 || err != nil {
			t.Fatalf("new leader: %d, %v", n, err)
		}
		want := uint64(0)
		if !atomic {
			want = 1 // it anchored on the deposed leader's d
		}
		if got := newC.StaleTails(); got != want {
			t.Fatalf("new leader's StaleTails = %d, want %d", got, want)
		}
		tail, err := newP.Tail(ctx)
		if err != nil || tail.Epoch != 2 || tail.MsgID != "e:2@2" {
			t.Fatalf("tail %+v, %v; want e from epoch 2", tail, err)
		}
		if atomic && tail.Seq != bar+1 {
			t.Fatalf("new leader's first event at %d, want right after the barrier (%d): something landed in between", tail.Seq, bar)
		}
		// A second barrier of the same epoch (a takeover whose first
		// answer was lost appends another after it) lands.
		if bar2, err := newP.AppendBarrier(ctx, 2, tail.Seq); atomic && (err != nil || bar2 != tail.Seq+replication.BarrierSpan) {
			t.Fatalf("second barrier of epoch 2: %d, %v; want %d", bar2, err, tail.Seq+replication.BarrierSpan)
		}
	}
	t.Run("lease", func(t *testing.T) { deposed(t, "FENCEW", "fencew", true) })
	t.Run("lease, one-message barrier", func(t *testing.T) { deposed(t, "FENCE1", "fence1", false) })

	t.Run("stray writer", func(t *testing.T) {
		p, stray := dial("STRAY", "stray"), dial("STRAY", "stray")
		if err := p.EnsureStream(ctx); err != nil {
			t.Fatal(err)
		}
		ch := replication.NewChain(p, nil)
		if n, err := ch.Publish(ctx, []replication.Event{ev("a", 1)}, nil); n != 1 || err != nil {
			t.Fatalf("first: %d, %v", n, err)
		}
		errs := sendWindow(ch, window, func() {
			if _, _, err := stray.PublishRaw(ctx, "x", 1, encoded(t, "x", 1)); err != nil {
				t.Fatal(err)
			}
		})
		if !errors.Is(errs[0], replication.ErrWrongLastSequence) || errs[1] != nil || errs[2] != nil {
			t.Fatalf("window after a stray message: %v; want the first refused, the others landed", errs)
		}
		n, err := ch.Publish(ctx, window, nil)
		if n != len(window) || err != nil {
			t.Fatalf("after the stray message: %d, %v", n, err)
		}
		// b was refused: it must be in the stream now, as must c and d.
		for _, e := range window {
			if _, found, err := p.LastFor(ctx, e.Code); err != nil || !found {
				t.Fatalf("%s rev %d is not in the stream (found %v, %v): a refused event was counted as stored", e.Code, e.Revision, found, err)
			}
		}
	})
}
