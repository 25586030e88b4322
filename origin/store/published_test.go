package store

import (
	"context"
	"errors"
	"testing"
	"time"
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
