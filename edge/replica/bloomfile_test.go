package replica

import (
	"fmt"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
)

func readFile(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSavedBloom: Close saves the filter and Open uses it, but only while
// it is provably complete for the store; otherwise Open scans.
func TestSavedBloom(t *testing.T) {
	leaktest.Check(t)
	fs := vfs.NewMem()
	o := Options{FS: fs, Dir: "a"}
	file := fs.PathJoin("a", bloomFileName)
	var codes []string
	seq := uint64(0)
	add := func(r *Replica, n int) {
		t.Helper()
		var recs []link.Record
		for range n {
			seq++
			code := fmt.Sprintf("s%05d", seq)
			codes = append(codes, code)
			recs = append(recs, record(code, seq))
		}
		mustApply(t, r, batchOf(seq, recs...))
	}
	reopen := func(r *Replica, wantSource string) *Replica {
		t.Helper()
		if r != nil {
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
		r = open(t, o)
		if r.bloomSource != wantSource {
			t.Errorf("bloom from %s, want %s", r.bloomSource, wantSource)
		}
		for _, code := range codes {
			if _, ok, err := r.Lookup([]byte(code)); !ok || err != nil {
				t.Fatalf("%s lost (bloom from %s): %v", code, r.bloomSource, err)
			}
		}
		if st := r.Stats(); st.Links != uint64(len(codes)) {
			t.Errorf("links = %d, want %d", st.Links, len(codes))
		}
		return r
	}

	r := reopen(nil, "scan")
	add(r, 100)
	r = reopen(r, "saved")
	saved := readFile(t, fs, file)

	// A session adds codes and its filter is lost (a crash after the
	// previous clean Close): the old file is incomplete.
	add(r, 50)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fs, file, saved)
	r = reopen(nil, "scan")

	// Updates and Puts of held codes keep the saved filter valid.
	mustApply(t, r, batchOf(seq+1, record(codes[0], seq+1)))
	seq++
	r = reopen(r, "saved")

	// A damaged file is refused.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, fs, file)
	b[bloomHeaderLen+3] ^= 0x10
	writeFile(t, fs, file, b)
	r = reopen(nil, "scan")

	// So is a file from another store with the same number of links.
	other := open(t, Options{FS: fs, Dir: "b"})
	var recs []link.Record
	for i := range len(codes) {
		recs = append(recs, record(fmt.Sprintf("other%05d", i), uint64(i+1)))
	}
	mustApply(t, other, batchOf(1, recs...))
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fs, file, readFile(t, fs, fs.PathJoin("b", bloomFileName)))
	reopen(nil, "scan")
}
