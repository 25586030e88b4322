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

func TestCodeFilter(t *testing.T) {
	f := newCodeFilter(0)
	for i := range 200_000 {
		f.add(fmt.Sprintf("in%d", i))
	}
	f.addBytes([]byte("bytes"))
	for i := range 200_000 {
		if !f.mayContain(fmt.Sprintf("in%d", i)) {
			t.Fatalf("in%d was added but the filter says it never was", i)
		}
	}
	if !f.mayContain("bytes") {
		t.Fatal("a code added as bytes is not found as a string")
	}
	fp := 0
	for i := range 100_000 {
		if f.mayContain(fmt.Sprintf("out%d", i)) {
			fp++
		}
	}
	// 200k codes in a filter sized for 1M: well under 1% false positives.
	if fp > 1000 {
		t.Fatalf("%d false positives in 100,000", fp)
	}
}

// checks reads the code check counters: by the filter, by a Pebble read.
func checks(s *Store) (filter, read uint64) { return s.mCodeFilter.Get(), s.mCodeRead.Get() }

// TestCodeFilterDuringScan reopens a store with links and holds the code
// filter's scan half way while links are created: every code, on disk
// before the scan or written during it, must then be refused as taken once
// the filter answers, and a free code must be answered without a read.
func TestCodeFilterDuringScan(t *testing.T) {
	fs := vfs.NewMem()
	ctx := context.Background()
	s, err := Open(Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for i := range 300 {
		codes = append(codes, mustCreate(t, s, CreateRequest{Code: fmt.Sprintf("old-%03d", i), URL: "https://example.com/"}).Code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	held, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	s = openMem(t, Options{FS: fs, hookFilterScan: func(n int) {
		switch n {
		case 100:
			close(held)
			<-release
		case -1:
			close(done)
		}
	}})
	<-held
	for i := range 50 {
		codes = append(codes, mustCreate(t, s, CreateRequest{Code: fmt.Sprintf("new-%03d", i), URL: "https://example.com/"}).Code)
		codes = append(codes, mustCreate(t, s, CreateRequest{URL: "https://example.com/"}).Code)
	}
	close(release)
	<-done
	for _, c := range codes {
		if _, _, err := s.Create(ctx, CreateRequest{Code: c, URL: "https://example.com/other"}); !errors.Is(err, link.ErrCodeTaken) {
			t.Fatalf("create of taken code %q after the filter was built: %v", c, err)
		}
	}
	f0, r0 := checks(s)
	for i := range 100 {
		mustCreate(t, s, CreateRequest{Code: fmt.Sprintf("free-%03d", i), URL: "https://example.com/"})
	}
	mustCreate(t, s, CreateRequest{URL: "https://example.com/"})
	f1, r1 := checks(s)
	if f1-f0 != 101 || r1 != r0 {
		t.Fatalf("101 free codes: %d answered by the filter, %d read", f1-f0, r1-r0)
	}
	if got := s.Links(); got != uint64(len(codes)+101) {
		t.Fatalf("links = %d, want %d", got, len(codes)+101)
	}
}

// TestRandomCodesCollide draws from a space small enough that draws
// collide often (3 symbols: 238,328 codes): the filter must send every
// collision to a read, so no link is overwritten, also across a reopen.
func TestRandomCodesCollide(t *testing.T) {
	fs := vfs.NewMem()
	seen := map[string]bool{}
	create := func(s *Store) {
		reqs := make([]CreateRequest, 1000)
		for i := range reqs {
			reqs[i] = CreateRequest{URL: "https://example.com/"}
		}
		for range 3 {
			out, err := s.CreateBatch(context.Background(), reqs, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range out {
				if r.Err != nil || seen[r.Rec.Code] {
					t.Fatalf("code %q: err %v, seen before %v", r.Rec.Code, r.Err, seen[r.Rec.Code])
				}
				seen[r.Rec.Code] = true
			}
		}
	}
	done := make(chan struct{})
	s, err := Open(Options{FS: fs, CodeLength: 3, hookFilterScan: func(n int) {
		if n == -1 {
			close(done)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-done
	create(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	s = openMem(t, Options{FS: fs, CodeLength: 3, hookFilterScan: func(n int) {
		if n == -1 {
			close(done)
		}
	}})
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the code filter was not built within a minute")
	}
	_, r0 := checks(s)
	create(s)
	if _, r1 := checks(s); r1 == r0 {
		t.Fatal("3,000 draws among 6,000 taken codes of 238,328 and not one went to a read")
	}
	if got := s.Links(); got != uint64(len(seen)) {
		t.Fatalf("links = %d, want %d", got, len(seen))
	}
}
