package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

func TestBucketDigest(t *testing.T) {
	s := openMem(t, Options{})
	ctx := context.Background()
	if d, rev, err := s.BucketDigest(); err != nil || d.Count != 0 || rev != 0 {
		t.Fatalf("empty store: %+v %d %v", d.Count, rev, err)
	}
	want := map[string]uint64{}
	for i := range 60 {
		rec := mustCreate(t, s, CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i)})
		want[rec.Code] = rec.Revision
	}
	custom := mustCreate(t, s, CreateRequest{URL: "https://example.com/c", Code: "custom-code"})
	u := "https://example.org/updated"
	up, err := s.Update(ctx, UpdateRequest{Code: custom.Code, URL: &u})
	if err != nil {
		t.Fatal(err)
	}
	dis, err := s.Disable(ctx, up.Code, 0)
	if err != nil {
		t.Fatal(err)
	}
	want[dis.Code] = dis.Revision

	var wantD link.Digest
	for code, rev := range want {
		wantD.Add(code, rev)
	}
	d, rev, err := s.BucketDigest()
	if err != nil || !d.Equal(&wantD) || rev != s.Revision() || rev != dis.Revision {
		t.Fatalf("digest: equal %v, revision %d (store %d), err %v; diff %v", d.Equal(&wantD), rev, s.Revision(), err, d.Diff(&wantD))
	}
	if sum, n, err := s.Digest(); err != nil || sum != wantD.Sum || n != 61 {
		t.Fatalf("Digest = %x %d %v, want %x 61", sum, n, err, wantD.Sum)
	}

	// Every bucket lists exactly its codes, in code order.
	seen := 0
	for i := range link.DigestBuckets {
		entries, brev, err := s.DigestBucket(i)
		if err != nil || brev != rev {
			t.Fatalf("bucket %d: revision %d, err %v", i, brev, err)
		}
		if !slices.IsSortedFunc(entries, func(a, b link.DigestEntry) int { return strings.Compare(a.Code, b.Code) }) {
			t.Fatalf("bucket %d not in code order: %v", i, entries)
		}
		if uint64(len(entries)) != d.Counts[i] {
			t.Fatalf("bucket %d lists %d codes, digest counts %d", i, len(entries), d.Counts[i])
		}
		for _, e := range entries {
			if link.DigestBucket(e.Code) != i || want[e.Code] != e.Revision {
				t.Fatalf("bucket %d lists %+v, want revision %d in bucket %d", i, e, want[e.Code], link.DigestBucket(e.Code))
			}
			seen++
		}
	}
	if seen != len(want) {
		t.Fatalf("buckets list %d codes, want %d", seen, len(want))
	}
	if _, _, err := s.DigestBucket(link.DigestBuckets); err == nil {
		t.Fatal("bucket 256 accepted")
	}
	if _, _, err := s.DigestBucket(-1); err == nil {
		t.Fatal("bucket -1 accepted")
	}
}

func TestDigestAfterClose(t *testing.T) {
	s := openMem(t, Options{})
	mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.BucketDigest(); !errors.Is(err, ErrClosed) {
		t.Fatalf("BucketDigest after Close: %v", err)
	}
	if _, _, err := s.DigestBucket(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("DigestBucket after Close: %v", err)
	}
}
