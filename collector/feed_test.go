package collector

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// TestClickFeed: the feed answers each commit's codes once after the
// cursor, in commit order, pages on commit boundaries, says when a
// reader lost commits (first read, another run, overflow), and a read
// waiting for a commit returns when one is added.
func TestClickFeed(t *testing.T) {
	f := newClickFeed()
	read := func(cur FeedCursor) FeedPage {
		t.Helper()
		p, _ := f.read(cur)
		return p
	}
	p := read(FeedCursor{})
	if p.Complete || len(p.Codes) != 0 || p.Cursor.Epoch != f.epoch || p.Cursor.Seq != 0 {
		t.Fatalf("first read of an empty feed: %+v", p)
	}
	cur := p.Cursor
	if p := read(cur); !p.Complete || len(p.Codes) != 0 {
		t.Fatalf("read at the head: %+v", p)
	}
	f.add([]string{"a", "b"})
	f.add(nil) // a commit without clicks is not a commit of the feed
	f.add([]string{"b", "c"})
	p = read(cur)
	if !p.Complete || !slices.Equal(p.Codes, []string{"a", "b", "c"}) || p.Cursor.Seq != 2 {
		t.Fatalf("after two commits: %+v", p)
	}
	if p := read(FeedCursor{Epoch: f.epoch, Seq: 1}); !p.Complete || !slices.Equal(p.Codes, []string{"b", "c"}) {
		t.Fatalf("after the first commit: %+v", p)
	}
	if p := read(FeedCursor{Epoch: "another-run", Seq: 1}); p.Complete || !slices.Equal(p.Codes, []string{"a", "b", "c"}) {
		t.Fatalf("a cursor of another run reads everything, incomplete: %+v", p)
	}
	if p := read(FeedCursor{Epoch: f.epoch, Seq: 99}); p.Complete {
		t.Fatalf("a cursor past the head is of another run: %+v", p)
	}

	// Pages end on a commit boundary past FeedPageMax.
	head := read(cur).Cursor
	big := make([]string, FeedPageMax-1)
	for i := range big {
		big[i] = fmt.Sprintf("p%d", i)
	}
	f.add(big)
	f.add([]string{"x1", "x2"})
	f.add([]string{"y"})
	p = read(head)
	if !p.Complete || len(p.Codes) != FeedPageMax+1 || p.Cursor.Seq != head.Seq+2 {
		t.Fatalf("page: %d codes, cursor %d (head %d)", len(p.Codes), p.Cursor.Seq, head.Seq)
	}
	if p := read(p.Cursor); !p.Complete || !slices.Equal(p.Codes, []string{"y"}) {
		t.Fatalf("next page: %+v", p)
	}

	// Overflow: a reader behind the dropped commits is told.
	old := read(FeedCursor{Epoch: f.epoch, Seq: 1})
	if !old.Complete {
		t.Fatal("nothing dropped yet")
	}
	for i := 0; i < FeedCapacity/1000+1; i++ {
		codes := make([]string, 1000)
		for j := range codes {
			codes[j] = fmt.Sprintf("o%d-%d", i, j)
		}
		f.add(codes)
	}
	if p := read(FeedCursor{Epoch: f.epoch, Seq: 1}); p.Complete {
		t.Fatal("a reader behind the dropped commits reads Complete")
	}
	if len(f.entries) > FeedCapacity {
		t.Fatalf("feed holds %d entries, capacity %d", len(f.entries), FeedCapacity)
	}
	if p := read(FeedCursor{Epoch: f.epoch, Seq: f.seq - 1}); !p.Complete || len(p.Codes) != 1000 {
		t.Fatalf("a recent reader: complete %v, %d codes", p.Complete, len(p.Codes))
	}
}

// TestClickedWaits: Store.Clicked at the head waits for the next commit
// that counts clicks, and returns an empty page after its wait.
func TestClickedWaits(t *testing.T) {
	s, err := OpenStore(StoreOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	p, err := s.Clicked(ctx, FeedCursor{}, time.Second)
	if err != nil || p.Complete {
		t.Fatalf("first read: %+v, %v", p, err)
	}
	cur := p.Cursor
	if p, err := s.Clicked(ctx, cur, 20*time.Millisecond); err != nil || len(p.Codes) != 0 || !p.Complete {
		t.Fatalf("a read with nothing new: %+v, %v", p, err)
	}
	got := make(chan FeedPage, 1)
	go func() {
		p, _ := s.Clicked(ctx, cur, time.Minute)
		got <- p
	}()
	now := time.Now()
	applyAll(t, s, &linkpb.ClickBatch{Edge: "edge-a", Instance: "i1", Seq: 1, ThroughUnixMs: now.UnixMilli(), Links: []*linkpb.LinkMinute{
		{Code: "bots-only", MinuteUnix: now.Unix() / 60 * 60, Bots: 2},
		{Code: "clicked", MinuteUnix: now.Unix() / 60 * 60, Clicks: 3, Visitors: []uint64{1, 2}},
	}})
	select {
	case p := <-got:
		// Bots are not clicks: max_visits counts clicks.
		if !p.Complete || !slices.Equal(p.Codes, []string{"clicked"}) {
			t.Fatalf("woken read: %+v", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a waiting read was not woken by the commit")
	}
}
