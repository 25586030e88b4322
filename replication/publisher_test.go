package replication_test

import (
	"context"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

func TestPublishDedupAndCompaction(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := replication.NewPublisher(nc, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c := &link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
		Code: "abc", URL: "https://example.com/", Redirect: 302, Status: link.StatusActive,
		CreatedAt: now, UpdatedAt: now, Revision: 1}}
	seq1, dup, err := p.Publish(ctx, c)
	if err != nil || dup {
		t.Fatalf("first publish: seq=%d dup=%v err=%v", seq1, dup, err)
	}
	seq2, dup, err := p.Publish(ctx, c)
	if err != nil || !dup || seq2 != seq1 {
		t.Fatalf("re-publish: seq=%d dup=%v err=%v, want seq %d dup", seq2, dup, err, seq1)
	}
	c.Record.Revision, c.Op = 2, link.OpUpdate
	seq3, _, err := p.Publish(ctx, c)
	if err != nil || seq3 <= seq1 {
		t.Fatalf("update publish: seq=%d err=%v", seq3, err)
	}
	last, err := p.LastSequence(ctx)
	if err != nil || last != seq3 {
		t.Fatalf("last seq = %d, %v; want %d", last, err, seq3)
	}
}
