package replica

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func record(code string, rev uint64) link.Record {
	return link.Record{
		Code:      code,
		URL:       fmt.Sprintf("https://example.com/%s/%d", code, rev),
		Redirect:  302,
		Status:    link.StatusActive,
		CreatedAt: t0,
		UpdatedAt: t0.Add(time.Duration(rev) * time.Second),
		Revision:  rev,
	}
}

func change(seq uint64, rec link.Record) replication.Entry {
	op := link.OpUpdate
	if rec.Status == link.StatusDisabled {
		op = link.OpDisable
	}
	return replication.Entry{Seq: seq, Change: link.Change{Op: op, Record: rec, CommittedAt: rec.UpdatedAt}}
}

// batchOf makes a batch of records with consecutive sequences ending at
// through.
func batchOf(through uint64, recs ...link.Record) replication.Batch {
	b := replication.Batch{Through: through}
	for i, rec := range recs {
		b.Changes = append(b.Changes, change(through-uint64(len(recs)-1-i), rec))
	}
	return b
}

func open(t testing.TB, o Options) *Replica {
	t.Helper()
	if o.Dir == "" && o.FS == nil {
		o.Dir = t.TempDir()
	}
	r, err := Open(o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func mustApply(t testing.TB, r *Replica, b replication.Batch) {
	t.Helper()
	if err := r.Apply(b); err != nil {
		t.Fatalf("apply through %d: %v", b.Through, err)
	}
}

// revisionOf looks code up and returns the revision found, 0 if absent.
func revisionOf(t testing.TB, r *Replica, code string) uint64 {
	t.Helper()
	e, ok, err := r.Lookup([]byte(code))
	if err != nil {
		t.Fatalf("lookup %s: %v", code, err)
	}
	if !ok {
		return 0
	}
	return e.Revision
}

func counter(s *metrics.Set, name string) uint64 {
	return s.GetOrCreateCounter(name).Get()
}

func lookups(s *metrics.Set, result string) uint64 {
	return counter(s, `linkpop_replica_lookups_total{result="`+result+`"}`)
}

func TestOptionsValidate(t *testing.T) {
	f := func(o Options, want string) {
		t.Helper()
		err := o.Validate()
		if want == "" {
			if err != nil {
				t.Errorf("%+v: unexpected error %v", o, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want it to mention %q", o, err, want)
		}
	}
	f(Options{Dir: "x"}, "")
	f(Options{FS: vfs.NewMem()}, "")
	f(Options{}, "dir: required")
	f(Options{Dir: "x", BlockCacheBytes: -1}, "block cache bytes")
	f(Options{Dir: "x", HotCacheEntries: -1}, "hot cache entries")
	f(Options{Dir: "x", NegativeCacheEntries: -1}, "negative cache entries")
	f(Options{Dir: "x", MemTableBytes: 4 << 30}, "memtable bytes")
	f(Options{Dir: "x", BloomMinCapacity: -1}, "bloom min capacity")
	// Every bad field is reported at once.
	f(Options{HotCacheEntries: -1, NegativeCacheEntries: -1}, "dir: required\nhot cache entries: -1 is negative\nnegative cache entries")
}

func TestEntryRedirects(t *testing.T) {
	now := t0
	f := func(e Entry, want bool) {
		t.Helper()
		if got := e.Redirects(now); got != want {
			t.Errorf("%+v.Redirects(%v) = %v, want %v", e, now, got, want)
		}
	}
	f(Entry{Status: link.StatusActive}, true)
	f(Entry{Status: link.StatusActive, ExpiresAt: now.Add(time.Millisecond)}, true)
	f(Entry{Status: link.StatusActive, ExpiresAt: now}, false)
	f(Entry{Status: link.StatusActive, ExpiresAt: now.Add(-time.Hour)}, false)
	f(Entry{Status: link.StatusDisabled}, false)
	f(Entry{Status: link.StatusDisabled, ExpiresAt: now.Add(time.Hour)}, false)
}

func TestApplyLookupGet(t *testing.T) {
	leaktest.Check(t)
	set := metrics.NewSet()
	r := open(t, Options{FS: vfs.NewMem(), Metrics: set})

	if pos, err := r.Position(); err != nil || pos != 0 {
		t.Fatalf("empty replica position = %d, %v; want 0", pos, err)
	}
	a, b := record("abc", 10), record("xyz_-9", 11)
	b.ExpiresAt = t0.Add(time.Hour)
	b.Tags = []string{"one", "two"}
	mustApply(t, r, batchOf(2, a, b))

	e, ok, err := r.Lookup([]byte("xyz_-9"))
	if err != nil || !ok {
		t.Fatalf("lookup xyz_-9: %v, %v", ok, err)
	}
	want := Entry{URL: b.URL, Redirect: 302, Status: link.StatusActive, ExpiresAt: b.ExpiresAt, Revision: 11}
	if *e != want {
		t.Errorf("entry = %+v, want %+v", *e, want)
	}
	// The second lookup is a hot-cache hit returning the same entry.
	e2, _, _ := r.Lookup([]byte("xyz_-9"))
	if e2 != e {
		t.Errorf("second lookup returned a different entry")
	}
	if got := lookups(set, "disk_hit"); got != 1 {
		t.Errorf("disk hits = %d, want 1", got)
	}
	if got := lookups(set, "hot"); got != 1 {
		t.Errorf("hot hits = %d, want 1", got)
	}

	got, ok, err := r.Get("xyz_-9")
	if err != nil || !ok {
		t.Fatalf("get: %v, %v", ok, err)
	}
	if got.URL != b.URL || got.Revision != 11 || !got.ExpiresAt.Equal(b.ExpiresAt) || strings.Join(got.Tags, ",") != "one,two" || got.Code != "xyz_-9" {
		t.Errorf("get = %+v, want %+v", got, b)
	}
	if _, ok, err := r.Get("nope"); ok || err != nil {
		t.Errorf("get unknown = %v, %v", ok, err)
	}
	if _, ok, err := r.Lookup([]byte("nope")); ok || err != nil {
		t.Errorf("lookup unknown = %v, %v", ok, err)
	}

	st := r.Stats()
	if st.Links != 2 || st.Position != 2 || st.Quarantined != 0 || st.BloomBits == 0 || st.DiskBytes == 0 {
		t.Errorf("stats = %+v", st)
	}
	if got := counter(set, "linkpop_replica_applied_total"); got != 2 {
		t.Errorf("applied_total = %d, want 2", got)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, m := range []string{"linkpop_replica_links 2", "linkpop_replica_disk_bytes ", "linkpop_replica_hot_entries "} {
		if !strings.Contains(sb.String(), m) {
			t.Errorf("metrics lack %q:\n%s", m, sb.String())
		}
	}
}

func TestStaleRevisionsIgnored(t *testing.T) {
	leaktest.Check(t)
	set := metrics.NewSet()
	r := open(t, Options{FS: vfs.NewMem(), Metrics: set})

	mustApply(t, r, batchOf(1, record("abc", 5)))
	revisionOf(t, r, "abc") // cache it

	f := func(through uint64, recs []link.Record, want uint64) {
		t.Helper()
		mustApply(t, r, batchOf(through, recs...))
		if got := revisionOf(t, r, "abc"); got != want {
			t.Errorf("after %d: revision = %d, want %d", through, got, want)
		}
		if got, _, _ := r.Get("abc"); got.Revision != want {
			t.Errorf("after %d: stored revision = %d, want %d", through, got.Revision, want)
		}
	}
	f(2, []link.Record{record("abc", 4)}, 5)                      // older
	f(3, []link.Record{record("abc", 5)}, 5)                      // equal
	f(4, []link.Record{record("abc", 7), record("abc", 6)}, 7)    // newer, then an older one in the batch
	f(6, []link.Record{record("abc", 8), record("abc", 9)}, 9)    // later and newer in the batch wins
	f(7, []link.Record{record("abc", 12), record("abc", 12)}, 12) // duplicate
	if got := counter(set, "linkpop_replica_skipped_stale_total"); got != 5 {
		t.Errorf("skipped_stale_total = %d, want 5", got)
	}
	if st := r.Stats(); st.Links != 1 || st.Position != 7 {
		t.Errorf("stats = %+v, want 1 link at position 7", st)
	}

	// A disable is applied like any newer change and keeps the record.
	d := record("abc", 13)
	d.Status = link.StatusDisabled
	mustApply(t, r, batchOf(8, d))
	e, ok, err := r.Lookup([]byte("abc"))
	if err != nil || !ok || e.Status != link.StatusDisabled || e.Redirects(t0) {
		t.Errorf("after disable: %+v, %v, %v", e, ok, err)
	}
}

func TestPositionDurableAndResettable(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	set := metrics.NewSet() // reopening on one set must work
	r := open(t, Options{Dir: dir, Metrics: set})
	mustApply(t, r, batchOf(10, record("abc", 1), record("def", 2)))
	mustApply(t, r, batchOf(20, record("ghi", 3)))
	// An empty batch (all filtered out upstream) still moves the position.
	mustApply(t, r, replication.Batch{Through: 25})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Position(); !errors.Is(err, ErrClosed) {
		t.Errorf("position after close: %v, want ErrClosed", err)
	}
	if _, _, err := r.Lookup([]byte("abc")); !errors.Is(err, ErrClosed) {
		t.Errorf("lookup after close: %v, want ErrClosed", err)
	}
	if err := r.Apply(batchOf(30, record("abc", 9))); !errors.Is(err, ErrClosed) {
		t.Errorf("apply after close: %v, want ErrClosed", err)
	}
	// One that would switch to the bulk-load settings too.
	long := batchOf(30, record("abc", 9))
	long.Pending = 1 << 40
	if err := r.Apply(long); !errors.Is(err, ErrClosed) {
		t.Errorf("apply of a long replay's batch after close: %v, want ErrClosed", err)
	}

	r = open(t, Options{Dir: dir, Metrics: set})
	if pos, err := r.Position(); err != nil || pos != 25 {
		t.Fatalf("position after reopen = %d, %v; want 25", pos, err)
	}
	for code, rev := range map[string]uint64{"abc": 1, "def": 2, "ghi": 3} {
		if got := revisionOf(t, r, code); got != rev {
			t.Errorf("%s after reopen: revision %d, want %d", code, got, rev)
		}
	}
	if st := r.Stats(); st.Links != 3 {
		t.Errorf("links after reopen = %d, want 3", st.Links)
	}

	// A stream reset replays from the start: the position goes back and
	// the replayed (older or equal) changes are no-ops.
	mustApply(t, r, batchOf(2, record("abc", 1), record("def", 2)))
	if pos, _ := r.Position(); pos != 2 {
		t.Errorf("position after reset = %d, want 2", pos)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = open(t, Options{Dir: dir, Metrics: set})
	if pos, _ := r.Position(); pos != 2 {
		t.Errorf("position after reset and reopen = %d, want 2", pos)
	}
	var sb strings.Builder
	set.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), "linkpop_replica_position 2\n") {
		t.Errorf("reopened replica does not own the gauges:\n%s", sb.String())
	}
}

// TestCrashKeepsBatches cuts the power after Apply returns: the data and
// the position of every applied batch are on "disk" together.
func TestCrashKeepsBatches(t *testing.T) {
	leaktest.Check(t)
	fs := vfs.NewCrashableMem()
	r := open(t, Options{FS: fs, Dir: "db"})
	mustApply(t, r, batchOf(3, record("abc", 1), record("def", 2), record("ghi", 3)))
	mustApply(t, r, replication.Batch{
		Changes: []replication.Entry{change(4, record("abc", 4))},
		Poison:  []replication.Poison{{Seq: 5, Subject: "links.x", Data: []byte("junk"), Err: link.ErrCorrupt}},
		Through: 5,
	})
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})

	c := open(t, Options{FS: crashed, Dir: "db"})
	if pos, _ := c.Position(); pos != 5 {
		t.Errorf("position after crash = %d, want 5", pos)
	}
	for code, rev := range map[string]uint64{"abc": 4, "def": 2, "ghi": 3} {
		if got := revisionOf(t, c, code); got != rev {
			t.Errorf("%s after crash: revision %d, want %d", code, got, rev)
		}
	}
	if st := c.Stats(); st.Links != 3 || st.Quarantined != 1 {
		t.Errorf("stats after crash = %+v", st)
	}
}

func TestQuarantine(t *testing.T) {
	leaktest.Check(t)
	set := metrics.NewSet()
	fs := vfs.NewMem()
	r := open(t, Options{FS: fs, Metrics: set})
	big := make([]byte, MaxQuarantineData+100)
	for i := range big {
		big[i] = byte(i)
	}
	b := replication.Batch{
		Changes: []replication.Entry{change(1, record("abc", 1))},
		Poison: []replication.Poison{
			{Seq: 2, Subject: "links.abc", Data: []byte{1, 2, 3}, Err: link.ErrCorrupt},
			{Seq: 3, Subject: "links.def", Data: big, Err: link.ErrUnsupportedSchema},
		},
		Through: 3,
	}
	// A change that fails validation is quarantined, not stored.
	bad := record("bad", 2)
	bad.URL = "ftp://nope"
	b.Changes = append(b.Changes, change(4, bad))
	b.Through = 4
	mustApply(t, r, b)

	if st := r.Stats(); st.Quarantined != 3 || st.Links != 1 || st.Position != 4 {
		t.Errorf("stats = %+v, want 3 quarantined, 1 link, position 4", st)
	}
	if got := counter(set, "linkpop_replica_quarantined_total"); got != 3 {
		t.Errorf("quarantined_total = %d, want 3", got)
	}
	if _, ok, _ := r.Get("bad"); ok {
		t.Errorf("invalid change was stored")
	}
	q, err := r.Quarantine(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 3 {
		t.Fatalf("quarantine holds %d messages, want 3: %+v", len(q), q)
	}
	if q[0].Seq != 2 || q[0].Subject != "links.abc" || q[0].Err != link.ErrCorrupt.Error() || string(q[0].Data) != "\x01\x02\x03" {
		t.Errorf("q[0] = %+v", q[0])
	}
	if q[1].Seq != 3 || len(q[1].Data) != MaxQuarantineData || q[1].Data[MaxQuarantineData-1] != big[MaxQuarantineData-1] {
		t.Errorf("q[1] = seq %d, %d bytes; want seq 3 truncated to %d", q[1].Seq, len(q[1].Data), MaxQuarantineData)
	}
	if q[2].Seq != 4 || !strings.Contains(q[2].Err, "url") {
		t.Errorf("q[2] = %+v", q[2])
	}
	// The invalid change is kept encoded; it decodes but fails validation.
	if _, err := link.UnmarshalChange(q[2].Data); !errors.Is(err, link.ErrCorrupt) {
		t.Errorf("q[2] data decodes with %v, want ErrCorrupt", err)
	}
	if q, _ := r.Quarantine(3, 1); len(q) != 1 || q[0].Seq != 3 {
		t.Errorf("Quarantine(3, 1) = %+v", q)
	}

	// Replaying the same sequences does not count them twice.
	mustApply(t, r, replication.Batch{Poison: b.Poison[:1], Through: 2})
	if got := counter(set, "linkpop_replica_quarantined_total"); got != 3 {
		t.Errorf("quarantined_total after replay = %d, want 3", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = open(t, Options{FS: fs, Metrics: set})
	if st := r.Stats(); st.Quarantined != 3 {
		t.Errorf("quarantined after replay and reopen = %d, want 3", st.Quarantined)
	}
}

func TestPutOnlyIfNewer(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	mustApply(t, r, batchOf(7, record("abc", 5)))
	revisionOf(t, r, "abc") // hot

	f := func(rec link.Record, wantApplied bool, wantRev uint64) {
		t.Helper()
		applied, err := r.Put(rec)
		if err != nil || applied != wantApplied {
			t.Errorf("put %s@%d = %v, %v; want %v", rec.Code, rec.Revision, applied, err, wantApplied)
		}
		if got := revisionOf(t, r, rec.Code); got != wantRev {
			t.Errorf("put %s@%d: lookup revision %d, want %d", rec.Code, rec.Revision, got, wantRev)
		}
	}
	f(record("abc", 4), false, 5)
	f(record("abc", 5), false, 5)
	f(record("abc", 6), true, 6)
	if got := revisionOf(t, r, "new"); got != 0 {
		t.Fatalf("new exists before put")
	}
	f(record("new", 3), true, 3)

	if _, err := r.Put(link.Record{Code: "x"}); !errors.Is(err, link.ErrCorrupt) {
		t.Errorf("put invalid record: %v, want ErrCorrupt", err)
	}
	if st := r.Stats(); st.Position != 7 || st.Links != 2 {
		t.Errorf("stats = %+v; put must not move the position", st)
	}
	// The stream catching up with an older revision does not undo Put.
	mustApply(t, r, batchOf(8, record("abc", 5)))
	if got := revisionOf(t, r, "abc"); got != 6 {
		t.Errorf("revision after stale stream change = %d, want 6", got)
	}
}

func TestDigest(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	if sum, n, err := r.Digest(); err != nil || sum != 0 || n != 0 {
		t.Fatalf("empty digest = %d, %d, %v", sum, n, err)
	}
	want := map[string]uint64{}
	var recs []link.Record
	for i := range 50 {
		code := fmt.Sprintf("code%03d", i)
		want[code] = uint64(i + 1)
		recs = append(recs, record(code, uint64(i+1)))
	}
	mustApply(t, r, batchOf(50, recs...))
	mustApply(t, r, batchOf(51, record("code007", 100)))
	want["code007"] = 100
	var wantSum uint64
	for code, rev := range want {
		wantSum += link.DigestTerm(code, rev)
	}
	sum, n, err := r.Digest()
	if err != nil || sum != wantSum || n != 50 {
		t.Errorf("digest = %x, %d, %v; want %x, 50", sum, n, err, wantSum)
	}
}

// TestApplyStoresMessageBytes: a change that carries its record's bytes
// (Entry.Record, as the consumer passes them) is stored as those bytes,
// not as an encoding of the decoded record; one without is encoded.
func TestApplyStoresMessageBytes(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	a, b := record("abc", 1), record("def", 2)
	raw, err := link.MarshalRecord(&a)
	if err != nil {
		t.Fatal(err)
	}
	// A field this build does not know: kept by the bytes, dropped by an
	// encoding of the decoded record.
	raw = protowire.AppendString(protowire.AppendTag(raw, 99, protowire.BytesType), "future")
	ea := change(1, a)
	ea.Record = raw
	mustApply(t, r, replication.Batch{Changes: []replication.Entry{ea, change(2, b)}, Through: 2})
	stored := func(code string) []byte {
		t.Helper()
		v, closer, err := r.db.Get(linkKey(code))
		if err != nil {
			t.Fatalf("get %s: %v", code, err)
		}
		defer closer.Close()
		return slices.Clone(v)
	}
	if got := stored("abc"); !bytes.Equal(got, raw) {
		t.Errorf("abc stored as %x, want the message's bytes %x", got, raw)
	}
	if want, _ := link.MarshalRecord(&b); !bytes.Equal(stored("def"), want) {
		t.Errorf("def stored as %x, want %x", stored("def"), want)
	}
	if got, ok, err := r.Get("abc"); err != nil || !ok || got.URL != a.URL || got.Revision != 1 {
		t.Errorf("get abc = %+v, %v, %v", got, ok, err)
	}
	if e, ok, err := r.Lookup([]byte("abc")); err != nil || !ok || e.URL != a.URL {
		t.Errorf("lookup abc = %+v, %v, %v", e, ok, err)
	}
}
