package replication_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// TestPublishAsyncUnanswered: an asynchronous publish whose ack cannot
// come fails instead of waiting for ever. A subject no one listens on
// fails at once (no responders); an event that something swallowed
// without answering fails when the connection is lost (its ack would
// never come); and the publisher keeps working after the reconnect.
func TestPublishAsyncUnanswered(t *testing.T) {
	ns := natstest.Start(t)
	ctx := context.Background()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}, ReconnectWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{Name: "GONE", SubjectPrefix: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	p, err := pub.PublishRawAsyncAt("a", 1, []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Wait(wctx); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("no stream: %v, want ErrNoStreamResponse", err)
	}

	// Something that takes the events and never answers.
	sub, err := nc.SubscribeSync("gone.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p, err = pub.PublishRawAsyncAt("b", 1, []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Ready() {
		t.Fatal("answered although nothing answers")
	}
	ns.Stop()
	if _, _, err := p.Wait(wctx); !errors.Is(err, nats.ErrDisconnected) {
		t.Fatalf("connection lost: %v, want ErrDisconnected", err)
	}
	ns.Restart()
	if err := pub.EnsureStream(wctx); err != nil {
		t.Fatal(err)
	}
	sub.Unsubscribe()
	p, err = pub.PublishRawAsyncAt("c", 1, []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _, err := p.Wait(wctx); err != nil || seq != 1 {
		t.Fatalf("after the reconnect: seq %d, %v", seq, err)
	}
}
