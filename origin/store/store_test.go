package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// clock is a settable fake time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func openMem(t *testing.T, o Options) *Store {
	t.Helper()
	if o.FS == nil && o.Dir == "" {
		o.FS = vfs.NewMem()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func mustCreate(t *testing.T, s *Store, req CreateRequest) link.Record {
	t.Helper()
	rec, replayed, err := s.Create(context.Background(), req)
	if err != nil || replayed {
		t.Fatalf("create %+v: replayed=%v err=%v", req, replayed, err)
	}
	return rec
}

func sameRecord(t *testing.T, got, want link.Record) {
	t.Helper()
	g, _ := link.MarshalRecord(&got)
	w, _ := link.MarshalRecord(&want)
	if string(g) != string(w) || !got.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("record\n got %+v\nwant %+v", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	f := func(o Options, want string) {
		t.Helper()
		err := o.Validate()
		if want == "" {
			if err != nil {
				t.Fatalf("%+v: unexpected %v", o, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: err %v, want it to mention %q", o, err, want)
		}
	}
	f(Options{Dir: "x"}, "")
	f(Options{FS: vfs.NewMem()}, "")
	f(Options{}, "dir: required")
	f(Options{Dir: "x", CodeLength: 2}, "code length")
	f(Options{Dir: "x", CodeLength: 65}, "code length")
	f(Options{Dir: "x", IdempotencyTTL: time.Hour}, "idempotency ttl")
	f(Options{Dir: "x", IdempotencyTTL: -1}, "idempotency ttl")
	f(Options{Dir: "x", MaxBatch: -1}, "max batch")
	f(Options{Dir: "x", MemTableBytes: 4 << 30}, "memtable")
	// Every bad field is reported at once.
	err := (&Options{CodeLength: 1, MaxBatch: -1}).Validate()
	for _, w := range []string{"dir", "code length", "max batch"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("joined error %v lacks %q", err, w)
		}
	}
}

func TestCreateGetUpdateDisable(t *testing.T) {
	leaktest.Check(t)
	clk := newClock()
	s := openMem(t, Options{Now: clk.Now})
	ctx := context.Background()

	r1 := mustCreate(t, s, CreateRequest{URL: "https://example.com/a", Tags: []string{"x"}})
	if len(r1.Code) != link.DefaultCodeLen || r1.Revision != 1 || r1.Redirect != 302 ||
		r1.Status != link.StatusActive || !r1.CreatedAt.Equal(clk.Now()) || r1.CreatedAt != r1.UpdatedAt {
		t.Fatalf("random create: %+v", r1)
	}
	got, err := s.Get(r1.Code)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, got, r1)

	exp := clk.Now().Add(time.Hour)
	r2 := mustCreate(t, s, CreateRequest{Code: "my-link", URL: "https://example.com/b", Redirect: 301, ExpiresAt: exp})
	if r2.Code != "my-link" || r2.Revision != 2 || r2.Redirect != 301 || !r2.ExpiresAt.Equal(exp) {
		t.Fatalf("custom create: %+v", r2)
	}
	if _, _, err := s.Create(ctx, CreateRequest{Code: "my-link", URL: "https://example.com/c"}); !errors.Is(err, link.ErrCodeTaken) {
		t.Fatalf("duplicate custom code: %v", err)
	}

	clk.Advance(time.Second)
	u := "https://example.com/b2"
	r2u, err := s.Update(ctx, UpdateRequest{Code: "my-link", URL: &u, ExpiresAt: &time.Time{}, IfRevision: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r2u.URL != u || r2u.Revision != 3 || !r2u.ExpiresAt.IsZero() || !r2u.UpdatedAt.Equal(clk.Now()) ||
		!r2u.CreatedAt.Equal(r2.CreatedAt) || r2u.Redirect != 301 {
		t.Fatalf("update: %+v", r2u)
	}
	if _, err := s.Update(ctx, UpdateRequest{Code: "my-link", URL: &u, IfRevision: 2}); !errors.Is(err, link.ErrRevisionMismatch) {
		t.Fatalf("stale If-Match: %v", err)
	}
	// Nothing changes: no new revision.
	same, err := s.Update(ctx, UpdateRequest{Code: "my-link", URL: &u, Tags: &[]string{}})
	if err != nil || same.Revision != 3 || s.Revision() != 3 {
		t.Fatalf("no-op update: %+v %v (store revision %d)", same, err, s.Revision())
	}
	tags := []string{"a", "b"}
	r2t, err := s.Update(ctx, UpdateRequest{Code: "my-link", Tags: &tags})
	if err != nil || r2t.Revision != 4 || !slices.Equal(r2t.Tags, tags) {
		t.Fatalf("tags update: %+v %v", r2t, err)
	}
	if _, err := s.Update(ctx, UpdateRequest{Code: "nope", URL: &u}); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}

	if _, err := s.Disable(ctx, "my-link", 3); !errors.Is(err, link.ErrRevisionMismatch) {
		t.Fatalf("disable with stale revision: %v", err)
	}
	d, err := s.Disable(ctx, "my-link", 4)
	if err != nil || d.Status != link.StatusDisabled || d.Revision != 5 {
		t.Fatalf("disable: %+v %v", d, err)
	}
	d2, err := s.Disable(ctx, "my-link", 0)
	if err != nil || d2.Revision != 5 || s.Revision() != 5 {
		t.Fatalf("disable twice: %+v %v", d2, err)
	}
	if _, err := s.Disable(ctx, "nope", 0); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
	// A disabled link keeps its code forever.
	if _, _, err := s.Create(ctx, CreateRequest{Code: "my-link", URL: "https://example.com/d"}); !errors.Is(err, link.ErrCodeTaken) {
		t.Fatalf("reuse of a disabled code: %v", err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if s.Links() != 2 {
		t.Fatalf("links = %d, want 2", s.Links())
	}

	// The outbox holds one event per revision, in order, matching what
	// was committed.
	entries, err := s.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	wantOps := []link.Op{link.OpCreate, link.OpCreate, link.OpUpdate, link.OpUpdate, link.OpDisable}
	if len(entries) != len(wantOps) {
		t.Fatalf("outbox has %d entries, want %d", len(entries), len(wantOps))
	}
	for i, e := range entries {
		c, err := link.UnmarshalChange(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Revision != uint64(i+1) || c.Record.Revision != e.Revision || c.Op != wantOps[i] ||
			c.Record.Code != e.Code || !c.CommittedAt.Equal(e.CommittedAt) {
			t.Fatalf("outbox[%d] = rev %d code %s op %v record %+v", i, e.Revision, e.Code, c.Op, c.Record)
		}
	}
	last, _ := link.UnmarshalChange(entries[4].Data)
	sameRecord(t, last.Record, d)
}

func TestRefusesUnreadableRecords(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	f := func(req CreateRequest, want error, field string) {
		t.Helper()
		_, _, err := s.Create(ctx, req)
		if !errors.Is(err, want) || link.ErrorField(err) != field {
			t.Fatalf("%+v: err %v, want %v on %q", req, err, want, field)
		}
	}
	f(CreateRequest{Code: "a b", URL: "https://example.com/"}, link.ErrInvalidCode, "code")
	f(CreateRequest{URL: "ftp://example.com/"}, link.ErrURLSchemeNotAllowed, "url")
	f(CreateRequest{URL: "https://example.com/\\x"}, link.ErrInvalidURL, "url")
	f(CreateRequest{URL: "https://example.com/", Redirect: 303}, link.ErrInvalidRedirect, "redirect")
	f(CreateRequest{URL: "https://example.com/", Tags: []string{"a", "a"}}, link.ErrInvalidTags, "tags")
	r := mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
	bad := 999
	if _, err := s.Update(ctx, UpdateRequest{Code: r.Code, Redirect: &bad}); !errors.Is(err, link.ErrInvalidRedirect) {
		t.Fatalf("bad redirect update: %v", err)
	}
	if s.Revision() != 1 {
		t.Fatalf("refused requests committed: revision %d", s.Revision())
	}
}

func TestRandomCodesAvoidReserved(t *testing.T) {
	// With a 3-symbol alphabet-sized space blocked by reservation, every
	// draw must still be a free, unreserved code.
	s := openMem(t, Options{CodeLength: 3, Reserved: link.NewReserved([]string{"aaa"})})
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		r := mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
		if len(r.Code) != 3 || seen[r.Code] || strings.EqualFold(r.Code, "aaa") {
			t.Fatalf("draw %d: code %q (seen %v)", i, r.Code, seen[r.Code])
		}
		seen[r.Code] = true
	}
}

func TestList(t *testing.T) {
	s := openMem(t, Options{})
	var want []string
	for i := 0; i < 23; i++ {
		code := fmt.Sprintf("c%03d", 22-i)
		mustCreate(t, s, CreateRequest{Code: code, URL: "https://example.com/" + code})
		want = append(want, code)
	}
	slices.Sort(want)
	f := func(limit int, pages int) {
		t.Helper()
		var got []string
		cursor, n := "", 0
		for {
			recs, next, err := s.List(cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			n++
			for _, r := range recs {
				got = append(got, r.Code)
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if !slices.Equal(got, want) || n != pages {
			t.Fatalf("limit %d: %d pages %v, want %d pages %v", limit, n, got, pages, want)
		}
	}
	f(7, 4)
	f(23, 1)
	f(22, 2)
	f(1, 23)
	f(0, 1) // default limit
	if _, _, err := s.List("!!not-base64", 5); !errors.Is(err, ErrInvalidCursor) || link.ErrorCode(err) != "invalid_cursor" {
		t.Fatalf("bad cursor: %v", err)
	}
	empty := openMem(t, Options{})
	if recs, next, err := empty.List("", 10); err != nil || len(recs) != 0 || next != "" {
		t.Fatalf("empty list: %v %q %v", recs, next, err)
	}
}

func TestCustomCodeRace(t *testing.T) {
	s := openMem(t, Options{})
	const n = 64
	var wins, taken atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Create(context.Background(), CreateRequest{Code: "contested", URL: fmt.Sprintf("https://example.com/%d", i)})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, link.ErrCodeTaken):
				taken.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || taken.Load() != n-1 {
		t.Fatalf("wins %d, taken %d; want 1 and %d", wins.Load(), taken.Load(), n-1)
	}
	if s.Revision() != 1 || s.Links() != 1 {
		t.Fatalf("revision %d, links %d after the race", s.Revision(), s.Links())
	}
}

// holdWriter makes the writer, once it has the first request of a batch,
// wait until queued more requests are waiting in the channel, so the
// test knows exactly what one group holds.
func holdWriter(s *Store, queued int) {
	var once sync.Once
	s.hookBatch = func() {
		once.Do(func() {
			for len(s.reqs) < queued {
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestGroupCommitBatches(t *testing.T) {
	// A real disk, so every group pays a real fsync.
	s := openMem(t, Options{Dir: t.TempDir()})
	const n = 64
	holdWriter(s, n-1)
	revs := make([]uint64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _, err := s.Create(context.Background(), CreateRequest{URL: "https://example.com/"})
			if err != nil {
				t.Error(err)
			}
			revs[i] = r.Revision
		}()
	}
	wg.Wait()
	if c := s.Commits(); c >= n {
		t.Fatalf("%d commits for %d concurrent creates: no group commit", c, n)
	}
	slices.Sort(revs)
	for i, r := range revs {
		if r != uint64(i+1) {
			t.Fatalf("revisions %v are not 1..%d", revs, n)
		}
	}
	if depth, _ := s.OutboxStats(); depth != n {
		t.Fatalf("outbox depth %d, want %d", depth, n)
	}
}

func TestCancelBeforePickupDrops(t *testing.T) {
	s := openMem(t, Options{})
	release, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.hookBatch = func() { once.Do(func() { close(held); <-release }) }
	// The first create occupies the writer.
	firstDone := make(chan error, 1)
	go func() {
		_, _, err := s.Create(context.Background(), CreateRequest{Code: "first", URL: "https://example.com/"})
		firstDone <- err
	}()
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	secondDone := make(chan error, 1)
	go func() {
		_, _, err := s.Create(ctx, CreateRequest{Code: "second", URL: "https://example.com/"})
		secondDone <- err
	}()
	wait.For(t, 5*time.Second, "second request queued", func() bool { return len(s.reqs) == 1 })
	cancel()
	if err := <-secondDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled create: %v", err)
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	// Let the writer reach the abandoned request, then prove it was
	// dropped: a later create is the second revision, and "second" is free.
	if _, _, err := s.Create(context.Background(), CreateRequest{Code: "third", URL: "https://example.com/"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("second"); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("abandoned create was committed: %v", err)
	}
	if s.Revision() != 2 {
		t.Fatalf("revision %d, want 2", s.Revision())
	}
}

func TestIdempotency(t *testing.T) {
	clk := newClock()
	s := openMem(t, Options{Now: clk.Now})
	ctx := context.Background()
	h1, h2 := [32]byte{1}, [32]byte{2}
	idem := func(scope, key string, h [32]byte) *Idempotency {
		return &Idempotency{Scope: scope, Key: key, RequestHash: h}
	}

	first := mustCreate(t, s, CreateRequest{URL: "https://example.com/", Idem: idem("k1", "abc", h1)})
	clk.Advance(time.Minute)
	again, replayed, err := s.Create(ctx, CreateRequest{URL: "https://example.com/", Idem: idem("k1", "abc", h1)})
	if err != nil || !replayed {
		t.Fatalf("replay: replayed=%v err=%v", replayed, err)
	}
	sameRecord(t, again, first)
	if s.Revision() != 1 {
		t.Fatalf("replay committed a revision: %d", s.Revision())
	}
	if _, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/other", Idem: idem("k1", "abc", h2)}); !errors.Is(err, link.ErrIdempotencyKeyReused) {
		t.Fatalf("key reused with another request: %v", err)
	}
	// Keys are scoped by API key.
	other := mustCreate(t, s, CreateRequest{URL: "https://example.com/other", Idem: idem("k2", "abc", h2)})
	if other.Code == first.Code {
		t.Fatal("another scope replayed the first scope's key")
	}
	// The snapshot survives later changes to the link: a replay gives the
	// first response.
	u := "https://example.com/changed"
	if _, err := s.Update(ctx, UpdateRequest{Code: first.Code, URL: &u}); err != nil {
		t.Fatal(err)
	}
	again, replayed, err = s.Create(ctx, CreateRequest{URL: "https://example.com/", Idem: idem("k1", "abc", h1)})
	if err != nil || !replayed {
		t.Fatalf("replay after update: %v %v", replayed, err)
	}
	sameRecord(t, again, first)

	// Two requests with one key in the same group: one creates, the
	// other replays it; a third with another hash is refused.
	holdWriter(s, 2)
	type out struct {
		rec      link.Record
		replayed bool
		err      error
	}
	outs := make(chan out, 3)
	for _, h := range [][32]byte{h1, h1, h2} {
		go func() {
			r, rp, err := s.Create(ctx, CreateRequest{URL: "https://example.com/", Idem: idem("k1", "batch", h)})
			outs <- out{r, rp, err}
		}()
	}
	var created, replays, reused int
	codes := map[string]bool{}
	for i := 0; i < 3; i++ {
		o := <-outs
		switch {
		case errors.Is(o.err, link.ErrIdempotencyKeyReused):
			reused++
		case o.err != nil:
			t.Fatal(o.err)
		case o.replayed:
			replays++
			codes[o.rec.Code] = true
		default:
			created++
			codes[o.rec.Code] = true
		}
	}
	// Whichever hash won the race, exactly one create happened; the
	// other requests replayed or were refused accordingly.
	if created != 1 || len(codes) != 1 || replays+reused != 2 {
		t.Fatalf("same key in one group: created %d replays %d reused %d codes %v", created, replays, reused, codes)
	}

	// Expiry: after the TTL the key is free again even before a sweep,
	// and the sweep then removes only expired records.
	clk.Advance(DefaultIdempotencyTTL)
	fresh := mustCreate(t, s, CreateRequest{URL: "https://example.com/new", Idem: idem("k1", "abc", h2)})
	if fresh.Code == first.Code {
		t.Fatal("expired key replayed")
	}
	n, err := s.SweepIdempotency(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// k2/abc and k1/batch expired; the first k1/abc's index entry went
	// when its key was reused, and the new k1/abc record stays.
	if n != 2 {
		t.Fatalf("sweep removed %d records, want 2", n)
	}
	if _, replayed, err := s.Create(ctx, CreateRequest{URL: "https://example.com/new", Idem: idem("k1", "abc", h2)}); err != nil || !replayed {
		t.Fatalf("sweep removed a live record: replayed=%v err=%v", replayed, err)
	}
	if _, replayed, err := s.Create(ctx, CreateRequest{URL: "https://example.com/", Idem: idem("k2", "abc", h1)}); err != nil || replayed {
		t.Fatalf("swept key not reusable: replayed=%v err=%v", replayed, err)
	}
	clk.Advance(DefaultIdempotencyTTL)
	if n, err := s.SweepIdempotency(ctx); err != nil || n != 2 {
		t.Fatalf("second sweep: %d %v, want 2 (k1/abc, k2/abc)", n, err)
	}
	if n := countPrefix(t, s, idemPrefix) + countPrefix(t, s, expiryPrefix); n != 0 {
		t.Fatalf("%d idempotency keys left after everything expired", n)
	}
}

func countPrefix(t *testing.T, s *Store, prefix []byte) int {
	t.Helper()
	upper := append(slices.Clone(prefix[:len(prefix)-1]), prefix[len(prefix)-1]+1)
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.SeekGE(prefix); it.Valid() && string(it.Key()) < string(upper); it.Next() {
		n++
	}
	return n
}

func TestAPIKeys(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	k := APIKey{ID: "key1", Name: "ci", Scopes: []string{"links:write"}, Hash: [32]byte{9}, RateLimit: 5, Burst: 10}
	if err := s.PutAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	got, err := s.APIKeyByHash(k.Hash)
	if err != nil || got.ID != "key1" || got.Name != "ci" || !slices.Equal(got.Scopes, k.Scopes) ||
		got.RateLimit != 5 || got.Burst != 10 || got.CreatedAt.IsZero() || got.Revoked() {
		t.Fatalf("by hash: %+v %v", got, err)
	}
	if _, err := s.APIKeyByHash([32]byte{7}); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	if err := s.PutAPIKey(ctx, APIKey{ID: "key2", Hash: k.Hash}); !errors.Is(err, ErrKeyHashInUse) {
		t.Fatalf("duplicate hash: %v", err)
	}
	// Rotating a key's secret drops the old hash.
	k.Hash = [32]byte{10}
	if err := s.PutAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := s.APIKeyByHash([32]byte{9}); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("old hash still resolves: %v", err)
	}
	if err := s.PutAPIKey(ctx, APIKey{ID: "key0", Hash: [32]byte{9}}); err != nil {
		t.Fatal(err)
	}
	keys, err := s.APIKeys()
	if err != nil || len(keys) != 2 || keys[0].ID != "key0" || keys[1].ID != "key1" {
		t.Fatalf("list: %+v %v", keys, err)
	}
	r, err := s.RevokeAPIKey(ctx, "key1")
	if err != nil || !r.Revoked() {
		t.Fatalf("revoke: %+v %v", r, err)
	}
	r2, err := s.RevokeAPIKey(ctx, "key1")
	if err != nil || !r2.RevokedAt.Equal(r.RevokedAt) {
		t.Fatalf("revoke twice: %+v %v", r2, err)
	}
	if got, err := s.APIKeyByHash([32]byte{10}); err != nil || !got.Revoked() {
		t.Fatalf("revoked key by hash: %+v %v", got, err)
	}
	if _, err := s.RevokeAPIKey(ctx, "nope"); !errors.Is(err, link.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if err := s.PutAPIKey(ctx, APIKey{Hash: [32]byte{1}}); err == nil {
		t.Fatal("key without id accepted")
	}
}

func TestOutboxDeleteAndNotify(t *testing.T) {
	clk := newClock()
	s := openMem(t, Options{Now: clk.Now})
	if depth, oldest := s.OutboxStats(); depth != 0 || !oldest.IsZero() {
		t.Fatalf("empty stats: %d %v", depth, oldest)
	}
	var times []time.Time
	for i := 0; i < 10; i++ {
		r := mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
		times = append(times, r.CreatedAt)
		clk.Advance(time.Second)
	}
	select {
	case <-s.OutboxNotify():
	default:
		t.Fatal("no outbox notification after commits")
	}
	if depth, oldest := s.OutboxStats(); depth != 10 || !oldest.Equal(times[0]) {
		t.Fatalf("stats: %d %v", depth, oldest)
	}
	if err := s.OutboxDelete(1, 2, 3, 5, 99); err != nil {
		t.Fatal(err)
	}
	if depth, oldest := s.OutboxStats(); depth != 6 || !oldest.Equal(times[3]) {
		t.Fatalf("stats after delete: %d %v", depth, oldest)
	}
	entries, err := s.Outbox(3)
	if err != nil {
		t.Fatal(err)
	}
	var revs []uint64
	for _, e := range entries {
		revs = append(revs, e.Revision)
	}
	if !slices.Equal(revs, []uint64{4, 6, 7}) {
		t.Fatalf("outbox after delete: %v", revs)
	}
	if err := s.OutboxDelete(4, 6, 7, 8, 9, 10); err != nil {
		t.Fatal(err)
	}
	if depth, _ := s.OutboxStats(); depth != 0 {
		t.Fatalf("depth %d after deleting everything", depth)
	}
	if entries, err := s.Outbox(10); err != nil || len(entries) != 0 {
		t.Fatalf("outbox not empty: %v %v", entries, err)
	}
	// New entries after a drained outbox are found.
	r := mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
	if entries, err := s.Outbox(10); err != nil || len(entries) != 1 || entries[0].Revision != r.Revision {
		t.Fatalf("outbox after refill: %v %v", entries, err)
	}
}

func TestReopen(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var recs []link.Record
	for i := 0; i < 20; i++ {
		recs = append(recs, mustCreate(t, s, CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i)}))
	}
	u := "https://example.com/updated"
	up, err := s.Update(ctx, UpdateRequest{Code: recs[3].Code, URL: &u})
	if err != nil {
		t.Fatal(err)
	}
	recs[3] = up
	dis, err := s.Disable(ctx, recs[4].Code, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs[4] = dis
	if err := s.PutAPIKey(ctx, APIKey{ID: "k", Hash: [32]byte{3}}); err != nil {
		t.Fatal(err)
	}
	idemRec := mustCreate(t, s, CreateRequest{URL: "https://example.com/idem", Idem: &Idempotency{Scope: "k", Key: "x", RequestHash: [32]byte{4}}})
	if err := s.OutboxDelete(1, 2, 3, 4, 5); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	depth, oldest := s.OutboxStats()
	before, err := s.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("create after close: %v", err)
	}
	if _, err := s.Get(recs[0].Code); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if _, err := s.Outbox(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("outbox after close: %v", err)
	}
	if err := s.OutboxDelete(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("outbox delete after close: %v", err)
	}
	if s.DiskUsage() != 0 {
		t.Fatal("disk usage after close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	s = openMem(t, Options{Dir: dir})
	if s.Revision() != rev || s.Links() != 21 {
		t.Fatalf("reopened: revision %d links %d, want %d and 21", s.Revision(), s.Links(), rev)
	}
	d2, o2 := s.OutboxStats()
	if d2 != depth || !o2.Equal(oldest) {
		t.Fatalf("reopened outbox stats %d %v, want %d %v", d2, o2, depth, oldest)
	}
	after, err := s.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("reopened outbox has %d entries, want %d", len(after), len(before))
	}
	for i := range after {
		if after[i].Revision != before[i].Revision || string(after[i].Data) != string(before[i].Data) ||
			!after[i].CommittedAt.Equal(before[i].CommittedAt) || after[i].Code != before[i].Code {
			t.Fatalf("outbox[%d] differs after reopen", i)
		}
	}
	for _, want := range recs {
		got, err := s.Get(want.Code)
		if err != nil {
			t.Fatal(err)
		}
		sameRecord(t, got, want)
	}
	if k, err := s.APIKeyByHash([32]byte{3}); err != nil || k.ID != "k" {
		t.Fatalf("api key after reopen: %+v %v", k, err)
	}
	if r, replayed, err := s.Create(ctx, CreateRequest{URL: "https://example.com/idem", Idem: &Idempotency{Scope: "k", Key: "x", RequestHash: [32]byte{4}}}); err != nil || !replayed {
		t.Fatalf("idempotency after reopen: %v %v", replayed, err)
	} else {
		sameRecord(t, r, idemRec)
	}
	next := mustCreate(t, s, CreateRequest{URL: "https://example.com/next"})
	if next.Revision != rev+1 {
		t.Fatalf("revision after reopen %d, want %d", next.Revision, rev+1)
	}
	sum, n, err := s.Digest()
	if err != nil || n != 22 || sum == 0 {
		t.Fatalf("digest: %d %d %v", sum, n, err)
	}
}

func TestDiskUsageAndMetrics(t *testing.T) {
	s := openMem(t, Options{Dir: t.TempDir()})
	mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
	if s.DiskUsage() == 0 {
		t.Fatal("disk usage 0")
	}
	var b strings.Builder
	s.o.Metrics.WritePrometheus(&b)
	for _, m := range []string{"linkpop_store_commit_batch_size_bucket", "linkpop_store_commit_duration_seconds_bucket",
		"linkpop_store_disk_bytes", "linkpop_store_revision 1", "linkpop_store_links 1"} {
		if !strings.Contains(b.String(), m) {
			t.Fatalf("metrics lack %q:\n%s", m, b.String())
		}
	}
}
