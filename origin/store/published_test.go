package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/wait"
)

// TestMarkPublished: a waiter for revision r returns once the relay
// marks r published (the stream acknowledged it), before its outbox entry
// is deleted; marking an earlier revision does not release it; a waiter
// for a revision marked before a Discard gets nil (it is in the stream),
// one past the mark ErrDiscarded. OutboxFrom reads past what is in
// flight.
func TestMarkPublished(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	var recs []uint64
	for i := range 5 {
		r := mustCreate(t, s, CreateRequest{URL: "https://example.com/" + string(rune('a'+i))})
		recs = append(recs, r.Revision)
	}
	if got, err := s.OutboxFrom(recs[2], 10); err != nil || len(got) != 3 || got[0].Revision != recs[2] {
		t.Fatalf("OutboxFrom(%d): %v %v", recs[2], got, err)
	}
	wait := func(rev uint64) <-chan error {
		c := make(chan error, 1)
		go func() { c <- s.WaitPublished(ctx, rev, 0) }()
		return c
	}
	w := wait(recs[2])
	s.MarkPublished(recs[1], 0)
	select {
	case err := <-w:
		t.Fatalf("released by a mark below its revision: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.MarkPublished(recs[2], 0)
	select {
	case err := <-w:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not released by the mark of its revision")
	}
	if depth, _ := s.OutboxStats(); depth != 5 {
		t.Fatalf("outbox depth %d: the mark must not delete", depth)
	}
	s.SetReadOnly(true)
	if _, _, err := s.Discard(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitPublished(ctx, recs[2], 0); err != nil {
		t.Fatalf("marked, then discarded: %v, want nil (it is in the stream)", err)
	}
	if err := s.WaitPublished(ctx, recs[4], 0); !errors.Is(err, ErrDiscarded) {
		t.Fatalf("past the mark, discarded: %v, want ErrDiscarded", err)
	}
}

// waiting returns how many WaitPublished calls are registered.
func waiting(s *Store) int {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return len(s.waiters)
}

// TestWaitPublishedWakesOnlyTheAnswered: with a waiter per revision, each
// mark releases exactly the waiters at or below it and leaves the others
// registered (none is woken to look again); a waiter whose entry is
// deleted unmarked is released by the delete's commit; a cancelled one is
// forgotten; Close releases the rest with ErrClosed.
func TestWaitPublishedWakesOnlyTheAnswered(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	var revs []uint64
	for i := range 8 {
		r := mustCreate(t, s, CreateRequest{URL: "https://example.com/w/" + string(rune('a'+i))})
		revs = append(revs, r.Revision)
	}
	results := make([]chan error, len(revs))
	for i, rev := range revs {
		results[i] = make(chan error, 1)
		go func() { results[i] <- s.WaitPublished(ctx, rev, 0) }()
	}
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { cancelled <- s.WaitPublished(cctx, revs[7]+1000, 0) }()
	wait.For(t, 10*time.Second, "every waiter registered", func() bool { return waiting(s) == len(revs)+1 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	wait.For(t, 10*time.Second, "the cancelled waiter forgotten", func() bool { return waiting(s) == len(revs) })

	released := func(i int) {
		t.Helper()
		select {
		case err := <-results[i]:
			if err != nil {
				t.Fatalf("waiter %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d not released", i)
		}
	}
	for _, upTo := range []int{0, 2, 3} {
		s.MarkPublished(revs[upTo], 0)
		if got, want := waiting(s), len(revs)-1-upTo; got != want {
			t.Fatalf("after marking %d: %d waiters registered, want %d", revs[upTo], got, want)
		}
	}
	for i := range 4 {
		released(i)
	}
	// Deleted without a mark (published by an earlier relay): released by
	// the delete's commit.
	if err := s.OutboxDelete(revs[:6]...); err != nil {
		t.Fatal(err)
	}
	released(4)
	released(5)
	if got := waiting(s); got != 2 {
		t.Fatalf("after the delete: %d waiters, want 2", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{6, 7} {
		if err := <-results[i]; !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter %d after Close: %v, want ErrClosed", i, err)
		}
	}
}

// TestWaitPublishedWithin: a wait that runs out of time returns
// context.DeadlineExceeded and leaves no waiter behind; one already
// answered returns at once whatever the time given; a later mark still
// answers a new waiter.
func TestWaitPublishedWithin(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	r1 := mustCreate(t, s, CreateRequest{URL: "https://example.com/a"}).Revision
	r2 := mustCreate(t, s, CreateRequest{URL: "https://example.com/b"}).Revision
	s.MarkPublished(r1, 0)
	if err := s.WaitPublishedWithin(ctx, r1, 0, time.Nanosecond); err != nil {
		t.Fatalf("published already: %v", err)
	}
	if err := s.WaitPublishedWithin(ctx, r2, 0, time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not published: %v, want DeadlineExceeded", err)
	}
	s.pubMu.Lock()
	left := len(s.waiters)
	s.pubMu.Unlock()
	if left != 0 {
		t.Fatalf("%d waiters left after the timeout", left)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitPublishedWithin(ctx, r2, 0, time.Hour) }()
	wait.For(t, 10*time.Second, "the waiter registered", func() bool {
		s.pubMu.Lock()
		defer s.pubMu.Unlock()
		return len(s.waiters) == 1
	})
	s.MarkPublished(r2, 0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
