package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
)

// TestLimitedSet: the limited set names every active link with a
// max_visits and no other link the store wrote, through creates,
// patches that set and remove a limit, disables, a standby's applied
// links, and a reopen (where the scan of the links on disk rebuilds it).
func TestLimitedSet(t *testing.T) {
	leaktest.Check(t)
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, want ...string) {
		t.Helper()
		got, err := s.LimitedCodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limited codes %q, want %q", got, want)
		}
		for _, code := range []string{"capped", "free", "freed", "gone", "later", "applied", "applied-free"} {
			if got, want := s.MayBeLimited(code), slices.Contains(want, code); got != want {
				t.Fatalf("MayBeLimited(%q) = %v, want %v", code, got, want)
			}
		}
	}
	mustCreate(t, s, CreateRequest{Code: "capped", URL: "https://example.com/c", MaxVisits: 10})
	mustCreate(t, s, CreateRequest{Code: "free", URL: "https://example.com/f"})
	mustCreate(t, s, CreateRequest{Code: "freed", URL: "https://example.com/d", MaxVisits: 5})
	mustCreate(t, s, CreateRequest{Code: "gone", URL: "https://example.com/g", MaxVisits: 5})
	mustCreate(t, s, CreateRequest{Code: "later", URL: "https://example.com/l"})
	check(s, "capped", "freed", "gone")

	zero, three := uint64(0), uint64(3)
	if _, err := s.Update(ctx, UpdateRequest{Code: "freed", MaxVisits: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Disable(ctx, "gone", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, UpdateRequest{Code: "later", MaxVisits: &three}); err != nil {
		t.Fatal(err)
	}
	check(s, "capped", "later")

	// A standby applies links from the stream.
	now := time.Now().UTC().Truncate(time.Millisecond)
	applied := func(code string, rev, max uint64) link.Change {
		return link.Change{Op: link.OpCreate, Record: link.Record{Code: code, URL: "https://example.com/a", Redirect: 302,
			Status: link.StatusActive, Revision: rev, MaxVisits: max, CreatedAt: now, UpdatedAt: now}}
	}
	if err := s.ApplyLinks(ctx, 0, []link.Change{applied("applied", 100, 7), applied("applied-free", 101, 0)}); err != nil {
		t.Fatal(err)
	}
	check(s, "applied", "capped", "later")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openMem(t, Options{Dir: dir})
	check(s, "applied", "capped", "later")
}
