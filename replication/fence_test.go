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

// TestFencePipelinedWindow: a message of another writer lands while a
// chain's window is in flight, so the window's first event is refused and
// the ones after it, each expecting the position after its predecessor's,
// land one place further on. With a lease that message is a new leader's
// barrier: the deposed chain's next anchor must fail with ErrFenced
// although the stream's last message is its own (epoch 1), and must never
// count the refused event as stored. Without a lease (a stray writer), the
// anchor must skip only the events that are in the stream, so the refused
// one is sent again and nothing is lost.
func TestFencePipelinedWindow(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(name, prefix string) *replication.Publisher {
		nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: c.URLs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		p, err := replication.NewPublisher(nc, replication.StreamConfig{Name: name, SubjectPrefix: prefix, Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ev := func(code string, rev uint64) replication.Event {
		return replication.Event{Code: code, Revision: rev, Data: encoded(t, code, rev)}
	}
	// sendWindow sends events pipelined on an anchored chain after
	// intrude has appended to the stream, and takes the answers: the
	// first is refused, the rest land.
	sendWindow := func(ch *replication.Chain, events []replication.Event, intrude func()) {
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
		for i, s := range sent {
			err := s.Wait(ctx)
			if i == 0 && !errors.Is(err, replication.ErrWrongLastSequence) {
				t.Fatalf("first event of the window: %v, want ErrWrongLastSequence", err)
			}
			if i > 0 && err != nil {
				t.Fatalf("event %d of the window: %v (it lands after the intruder)", i, err)
			}
		}
	}

	t.Run("lease", func(t *testing.T) {
		oldP, newP := dial("FENCEW", "fencew"), dial("FENCEW", "fencew")
		if err := oldP.EnsureStream(ctx); err != nil {
			t.Fatal(err)
		}
		oldP.SetEpoch(1)
		oldC := replication.NewChain(oldP, nil)
		if n, err := oldC.Publish(ctx, []replication.Event{ev("a", 1)}, nil); n != 1 || err != nil {
			t.Fatalf("old leader: %d, %v", n, err)
		}
		window := []replication.Event{ev("b", 2), ev("c", 3), ev("d", 4)}
		sendWindow(oldC, window, func() {
			if _, err := newP.AppendBarrier(ctx, 2, 1); err != nil {
				t.Fatal(err)
			}
		})
		for range 2 {
			n, err := oldC.Publish(ctx, window, nil)
			if !errors.Is(err, replication.ErrFenced) {
				t.Fatalf("deposed leader re-anchoring after the barrier: %d stored, %v; want ErrFenced", n, err)
			}
			if n != 0 {
				t.Fatalf("deposed leader counted %d events as stored after the barrier", n)
			}
		}
		// c and d landed after the barrier, never acknowledged: the new
		// leader anchors on d (epoch 1) and counts it.
		newP.SetEpoch(2)
		newC := replication.NewChain(newP, nil)
		if n, err := newC.Publish(ctx, []replication.Event{ev("e", 2)}, nil); n != 1 || err != nil {
			t.Fatalf("new leader: %d, %v", n, err)
		}
		if got := newC.StaleTails(); got != 1 {
			t.Fatalf("new leader's StaleTails = %d, want 1 (it anchored on the deposed leader's d)", got)
		}
		if got := oldC.StaleTails(); got != 0 {
			t.Fatalf("deposed leader's StaleTails = %d, want 0", got)
		}
	})

	t.Run("stray writer", func(t *testing.T) {
		p, stray := dial("STRAY", "stray"), dial("STRAY", "stray")
		if err := p.EnsureStream(ctx); err != nil {
			t.Fatal(err)
		}
		ch := replication.NewChain(p, nil)
		if n, err := ch.Publish(ctx, []replication.Event{ev("a", 1)}, nil); n != 1 || err != nil {
			t.Fatalf("first: %d, %v", n, err)
		}
		window := []replication.Event{ev("b", 2), ev("c", 3), ev("d", 4)}
		sendWindow(ch, window, func() {
			if _, _, err := stray.PublishRaw(ctx, "x", 1, encoded(t, "x", 1)); err != nil {
				t.Fatal(err)
			}
		})
		var done []int
		n, err := ch.Publish(ctx, window, func(i int) { done = append(done, i) })
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
