package replica

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

func TestBucketDigest(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	if d, pos, err := r.BucketDigest(); err != nil || d.Count != 0 || pos != 0 {
		t.Fatalf("empty: %d links, position %d, %v", d.Count, pos, err)
	}
	var want link.Digest
	var recs []link.Record
	for i := range 200 {
		recs = append(recs, record(fmt.Sprintf("c%03d", i), uint64(i+1)))
		want.Add(recs[i].Code, recs[i].Revision)
	}
	mustApply(t, r, batchOf(200, recs...))
	d, pos, err := r.BucketDigest()
	if err != nil || !d.Equal(&want) || pos != 200 {
		t.Fatalf("digest: equal %v, position %d, %v; diff %v", d.Equal(&want), pos, err, d.Diff(&want))
	}
	var n uint64
	for i := range link.DigestBuckets {
		entries, pos, err := r.DigestBucket(i)
		if err != nil || pos != 200 || uint64(len(entries)) != want.Counts[i] {
			t.Fatalf("bucket %d: %d entries at %d, %v; want %d", i, len(entries), pos, err, want.Counts[i])
		}
		for j, e := range entries {
			if link.DigestBucket(e.Code) != i || (j > 0 && entries[j-1].Code >= e.Code) {
				t.Fatalf("bucket %d: entry %+v out of place", i, e)
			}
			var k int
			if _, err := fmt.Sscanf(e.Code, "c%03d", &k); err != nil || e.Revision != uint64(k+1) {
				t.Fatalf("bucket %d: entry %+v", i, e)
			}
		}
		n += uint64(len(entries))
	}
	if n != 200 {
		t.Fatalf("buckets hold %d entries, want 200", n)
	}
	if _, _, err := r.DigestBucket(256); err == nil {
		t.Fatal("bucket 256 accepted")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.BucketDigest(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestOverwrite(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	r := open(t, Options{Dir: dir})
	mustApply(t, r, batchOf(3, record("aaa", 5), record("bbb", 9), record("ccc", 2)))
	// Warm the hot cache, so the overwrite must reach it.
	for _, c := range []string{"aaa", "bbb", "ccc"} {
		revisionOf(t, r, c)
	}
	f := func(code string, held uint64, rec *link.Record, wantChanged bool) {
		t.Helper()
		changed, err := r.Overwrite(code, held, rec)
		if err != nil || changed != wantChanged {
			t.Fatalf("Overwrite(%s, %d, %v) = %v, %v; want %v", code, held, rec != nil, changed, err, wantChanged)
		}
	}
	older := record("bbb", 4)
	f("bbb", 8, &older, false) // held revision moved on: refused
	f("bbb", 9, &older, true)  // back to an older revision
	if got := revisionOf(t, r, "bbb"); got != 4 {
		t.Fatalf("bbb revision %d after overwrite, want 4", got)
	}
	f("ccc", 2, nil, true) // removed
	if got := revisionOf(t, r, "ccc"); got != 0 {
		t.Fatalf("ccc revision %d after removal, want absent", got)
	}
	f("ccc", 2, nil, false) // nothing left to remove
	f("zzz", 0, nil, false)
	added := record("ddd", 7)
	f("ddd", 3, &added, false) // the replica holds nothing, not 3
	f("ddd", 0, &added, true)
	if st := r.Stats(); st.Links != 3 || st.Position != 3 {
		t.Fatalf("stats %+v; want 3 links, position 3 (overwrite does not move it)", st)
	}
	if _, err := r.Overwrite("aaa", 5, &added); err == nil {
		t.Fatal("record for another code accepted")
	}
	bad := record("aaa", 0)
	if _, err := r.Overwrite("aaa", 5, &bad); err == nil {
		t.Fatal("invalid record accepted")
	}
	// The stream's revision checks now compare with the overwritten
	// revision: 5 is newer than 4 and applies.
	mustApply(t, r, batchOf(4, record("bbb", 5)))
	if got := revisionOf(t, r, "bbb"); got != 5 {
		t.Fatalf("bbb revision %d after stream change, want 5", got)
	}

	var want link.Digest
	for c, rev := range map[string]uint64{"aaa": 5, "bbb": 5, "ddd": 7} {
		want.Add(c, rev)
	}
	if d, _, err := r.BucketDigest(); err != nil || !d.Equal(&want) {
		t.Fatalf("digest after overwrites differs in %v (%v)", d.Diff(&want), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = open(t, Options{Dir: dir})
	if st := r.Stats(); st.Links != 3 {
		t.Fatalf("links after reopen %d, want 3", st.Links)
	}
	if d, _, err := r.BucketDigest(); err != nil || !d.Equal(&want) {
		t.Fatalf("digest after reopen differs in %v (%v)", d.Diff(&want), err)
	}
	if got := revisionOf(t, r, "ccc"); got != 0 {
		t.Fatalf("ccc back after reopen at revision %d", got)
	}
}

// An empty batch with Through 0 rewinds the position: how a resync makes
// the replay durable before it starts.
func TestApplyRewindsToZero(t *testing.T) {
	leaktest.Check(t)
	r := open(t, Options{FS: vfs.NewMem()})
	mustApply(t, r, batchOf(10, record("aaa", 3)))
	mustApply(t, r, replication.Batch{})
	if pos, err := r.Position(); err != nil || pos != 0 {
		t.Fatalf("position %d, %v; want 0", pos, err)
	}
	if got := revisionOf(t, r, "aaa"); got != 3 {
		t.Fatalf("aaa revision %d after rewind, want 3", got)
	}
}

// BenchmarkBucketDigest measures a full digest scan of a 100k-record
// replica (the cost per record is what scales to larger tables).
func BenchmarkBucketDigest(b *testing.B) {
	r := open(b, Options{Dir: b.TempDir()})
	const n = 100_000
	recs := make([]link.Record, 0, 1000)
	for i := 0; i < n; i += 1000 {
		recs = recs[:0]
		for j := range 1000 {
			recs = append(recs, record(fmt.Sprintf("c%07d", i+j), uint64(i+j+1)))
		}
		mustApply(b, r, batchOf(uint64(i+1000), recs...))
	}
	b.ReportAllocs()
	for b.Loop() {
		d, _, err := r.BucketDigest()
		if err != nil || d.Count != n {
			b.Fatalf("digest: %d %v", d.Count, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/record")
}
