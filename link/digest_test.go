package link

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestDigestOrderIndependentAndBucketed(t *testing.T) {
	var a, b Digest
	codes := make([]string, 1000)
	for i := range codes {
		codes[i] = fmt.Sprintf("code%04d", i)
		a.Add(codes[i], uint64(i+1))
	}
	for i := len(codes) - 1; i >= 0; i-- {
		b.Add(codes[i], uint64(i+1))
	}
	if !a.Equal(&b) || a.Diff(&b) != nil {
		t.Fatalf("same records in another order differ: %v", a.Diff(&b))
	}
	var total, count uint64
	for i := range a.Buckets {
		total += a.Buckets[i]
		count += a.Counts[i]
	}
	if a.Count != 1000 || count != 1000 || total != a.Sum {
		t.Fatalf("count %d, bucket counts %d, bucket sums %x vs sum %x", a.Count, count, total, a.Sum)
	}

	// One revision changed: exactly that code's bucket differs.
	var c Digest
	for i, code := range codes {
		rev := uint64(i + 1)
		if code == "code0421" {
			rev++
		}
		c.Add(code, rev)
	}
	if got, want := a.Diff(&c), []int{DigestBucket("code0421")}; !slices.Equal(got, want) || a.Equal(&c) {
		t.Fatalf("diff = %v, want %v", got, want)
	}
	// One code missing: its bucket differs in count too.
	var d Digest
	for i, code := range codes[1:] {
		d.Add(code, uint64(i+2))
	}
	if got, want := a.Diff(&d), []int{DigestBucket(codes[0])}; !slices.Equal(got, want) {
		t.Fatalf("diff = %v, want %v", got, want)
	}
	if d.Counts[DigestBucket(codes[0])]+1 != a.Counts[DigestBucket(codes[0])] {
		t.Fatal("bucket count of the missing code did not drop by one")
	}
}

func TestDigestBucketIgnoresRevision(t *testing.T) {
	f := func(code string) {
		t.Helper()
		b := DigestBucket(code)
		if b < 0 || b >= DigestBuckets {
			t.Fatalf("bucket %d of %q out of range", b, code)
		}
		var x, y Digest
		x.Add(code, 1)
		y.Add(code, 2)
		if got := x.Diff(&y); !slices.Equal(got, []int{b}) {
			t.Fatalf("%q at two revisions: diff %v, want [%d]", code, got, b)
		}
	}
	f("abc")
	f("Zz9_-q")
	f("a-much-longer-custom-code-of-sixty-four-characters-0123456789abc")
}

func TestDigestJSONRoundTrip(t *testing.T) {
	var d Digest
	for i := range 300 {
		d.Add(fmt.Sprintf("k%d", i), uint64(i)*7+1)
	}
	raw, err := json.Marshal(d.JSON())
	if err != nil {
		t.Fatal(err)
	}
	var j DigestJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	if len(j.Sum) != 16 || len(j.Buckets) != DigestBuckets || len(j.Buckets[0]) != 16 {
		t.Fatalf("json form %s", raw[:80])
	}
	back, err := j.Digest()
	if err != nil || !back.Equal(&d) {
		t.Fatalf("round trip: %v, equal %v", err, back.Equal(&d))
	}
	var empty Digest
	ej := empty.JSON()
	if e, err := ej.Digest(); err != nil || e.Count != 0 || ej.Sum != "0000000000000000" {
		t.Fatalf("empty digest: %+v %v", ej, err)
	}

	bad := func(name string, mutate func(j *DigestJSON)) {
		t.Helper()
		j := d.JSON()
		mutate(&j)
		if _, err := j.Digest(); !errors.Is(err, ErrBadDigest) {
			t.Errorf("%s: err %v, want ErrBadDigest", name, err)
		}
	}
	bad("short buckets", func(j *DigestJSON) { j.Buckets = j.Buckets[:10] })
	bad("short counts", func(j *DigestJSON) { j.Counts = nil })
	bad("sum not hex", func(j *DigestJSON) { j.Sum = "zz" + j.Sum[2:] })
	bad("sum too short", func(j *DigestJSON) { j.Sum = "1" })
	bad("bucket not hex", func(j *DigestJSON) { j.Buckets[3] = "not-hex-not-hex!" })
	bad("links off by one", func(j *DigestJSON) { j.Links++ })
	bad("count off by one", func(j *DigestJSON) { j.Counts[7]++ })
	bad("bucket sum changed", func(j *DigestJSON) { j.Buckets[9] = "0000000000000001" })
}

func TestRecordRevision(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := Record{Code: "abc", URL: "https://example.com/", Redirect: 302, Status: StatusActive,
		CreatedAt: now, UpdatedAt: now, Revision: 1<<40 + 3, Tags: []string{"x"}}
	b, err := MarshalRecord(&rec)
	if err != nil {
		t.Fatal(err)
	}
	if rev, err := RecordRevision(b); err != nil || rev != rec.Revision {
		t.Fatalf("RecordRevision = %d, %v; want %d", rev, err, rec.Revision)
	}
	// A second revision field wins, as it does for protobuf.
	twice := protowire.AppendVarint(protowire.AppendTag(slices.Clone(b), recordRevisionTag, protowire.VarintType), 7)
	if rev, err := RecordRevision(twice); err != nil || rev != 7 {
		t.Errorf("RecordRevision of a record with two revisions = %d, %v; want 7", rev, err)
	}
	if got, err := UnmarshalRecord(twice); err != nil || got.Revision != 7 {
		t.Errorf("UnmarshalRecord of a record with two revisions = %d, %v; want 7", got.Revision, err)
	}
	f := func(in []byte) {
		t.Helper()
		if _, err := RecordRevision(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("RecordRevision(%x) err %v, want ErrCorrupt", in, err)
		}
	}
	f(nil)
	f([]byte{0x0a, 0x05, 'a'})             // truncated code field
	f([]byte{0x48})                        // revision tag without its varint
	f([]byte{0x0a, 0x01, 'a'})             // no revision at all
	f([]byte{0x48, 0xff, 0xff})            // unterminated varint
	f(append(slices.Clone(b), 0x0a, 0x05)) // a valid record, then a cut field
}

func BenchmarkDigestAdd(b *testing.B) {
	codes := make([]string, 1024)
	for i := range codes {
		codes[i] = fmt.Sprintf("c%06d", i)
	}
	var d Digest
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Add(codes[i&1023], uint64(i))
	}
}
