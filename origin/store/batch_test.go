package store

import (
	"context"
	"errors"
	"fmt"
	"testing"

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
	res, err := s.CreateBatch(ctx, reqs)
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
