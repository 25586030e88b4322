package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/link"
)

// TestCreateBatch checks that a batch is one group commit, that a refused
// create refuses only itself, and that later creates see earlier ones.
func TestCreateBatch(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	if _, _, err := s.Create(ctx, CreateRequest{Code: "taken", URL: "https://example.com/"}); err != nil {
		t.Fatal(err)
	}
	reqs := make([]CreateRequest, 1000)
	for i := range reqs {
		reqs[i] = CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i)}
	}
	reqs[10].Code = "taken"
	reqs[20].Code, reqs[21].Code = "dup", "dup"
	before := s.Commits()
	res, err := s.CreateBatch(ctx, reqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Commits() - before; c != 1 {
		t.Fatalf("%d commits for one batch, want 1", c)
	}
	if len(res) != len(reqs) {
		t.Fatalf("%d results for %d creates", len(res), len(reqs))
	}
	var prev uint64
	for i, r := range res {
		switch i {
		case 10, 21:
			if !errors.Is(r.Err, link.ErrCodeTaken) {
				t.Errorf("item %d: %v, want code_taken", i, r.Err)
			}
			continue
		}
		if r.Err != nil {
			t.Fatalf("item %d: %v", i, r.Err)
		}
		if r.Rec.Revision <= prev {
			t.Fatalf("item %d: revision %d after %d: not in request order", i, r.Rec.Revision, prev)
		}
		prev = r.Rec.Revision
		got, err := s.Get(r.Rec.Code)
		if err != nil || got.URL != reqs[i].URL {
			t.Fatalf("item %d: stored %+v, %v", i, got, err)
		}
	}
	if n, _ := s.OutboxStats(); n != 999 {
		t.Errorf("outbox holds %d events, want one per created link (999)", n)
	}
}

// TestCreateBatchIdempotent checks a batch's one idempotency record: the
// same batch again answers every item as first answered (links, and the
// refusals) without committing, from memory and after a reopen; another
// batch under the key is refused; after the TTL the key is free and the
// sweep removes the record and its index entry.
func TestCreateBatchIdempotent(t *testing.T) {
	clk := newClock()
	fs := vfs.NewMem()
	s, err := Open(Options{FS: fs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustCreate(t, s, CreateRequest{Code: "taken", URL: "https://example.com/"})
	reqs := make([]CreateRequest, 500)
	for i := range reqs {
		reqs[i] = CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i), Tags: []string{"t"}}
	}
	reqs[3].Code, reqs[4].Code, reqs[5].Code = "taken", "mine", "mine"
	idem := &Idempotency{Scope: "k1", Key: "batch\x00b1", RequestHash: [32]byte{1}}
	first, err := s.CreateBatch(ctx, reqs, idem)
	if err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, s, idemPrefix); n != 1 {
		t.Fatalf("%d idempotency records for one batch, want 1", n)
	}
	rev := s.Revision()
	same := func(what string, got []BatchResult) {
		t.Helper()
		if len(got) != len(first) {
			t.Fatalf("%s: %d results, want %d", what, len(got), len(first))
		}
		for i := range got {
			g, f := got[i], first[i]
			if !g.Replayed || f.Replayed {
				t.Fatalf("%s item %d: replayed %v, first %v", what, i, g.Replayed, f.Replayed)
			}
			if (g.Err == nil) != (f.Err == nil) {
				t.Fatalf("%s item %d: %v, first %v", what, i, g.Err, f.Err)
			}
			if f.Err != nil {
				if !errors.Is(g.Err, link.ErrCodeTaken) || !errors.Is(f.Err, link.ErrCodeTaken) {
					t.Fatalf("%s item %d: %v, first %v", what, i, g.Err, f.Err)
				}
				continue
			}
			sameRecord(t, g.Rec, f.Rec)
		}
	}
	for _, i := range []int{3, 5} {
		if !errors.Is(first[i].Err, link.ErrCodeTaken) {
			t.Fatalf("item %d: %v, want code_taken", i, first[i].Err)
		}
	}
	clk.Advance(time.Minute)
	again, err := s.CreateBatch(ctx, reqs, idem)
	if err != nil {
		t.Fatal(err)
	}
	same("replay", again)
	if s.Revision() != rev {
		t.Fatalf("replay committed: revision %d, want %d", s.Revision(), rev)
	}
	if _, err := s.CreateBatch(ctx, reqs[:10], &Idempotency{Scope: "k1", Key: idem.Key, RequestHash: [32]byte{2}}); !errors.Is(err, link.ErrIdempotencyKeyReused) {
		t.Fatalf("another batch under the key: %v", err)
	}
	// A single create under the batch's key is another request.
	if _, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/", Idem: idem}); !errors.Is(err, link.ErrIdempotencyKeyReused) {
		t.Fatalf("single create under a batch's key: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, Options{FS: fs, Now: clk.Now})
	again, err = s.CreateBatch(ctx, reqs, idem)
	if err != nil {
		t.Fatal(err)
	}
	same("replay after reopen", again)
	if s.Revision() != rev {
		t.Fatalf("replay after reopen committed: revision %d, want %d", s.Revision(), rev)
	}

	clk.Advance(DefaultIdempotencyTTL)
	fresh, err := s.CreateBatch(ctx, reqs[:2], &Idempotency{Scope: "k1", Key: idem.Key, RequestHash: [32]byte{3}})
	if err != nil || fresh[0].Replayed || fresh[0].Err != nil || fresh[0].Rec.Code == first[0].Rec.Code {
		t.Fatalf("expired key: %+v %v", fresh, err)
	}
	clk.Advance(DefaultIdempotencyTTL)
	if _, err := s.SweepIdempotency(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, s, idemPrefix) + countPrefix(t, s, expiryPrefix); n != 0 {
		t.Fatalf("%d idempotency keys left after everything expired", n)
	}
}
