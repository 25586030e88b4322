package replica

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/linkpop/linkpop/link"
)

// TestCheckpointCarriesBloom: a checkpoint opens as a replica at the
// position and with the digest it was taken at, with the bloom filter
// loaded from the copy (no scan), answering every held code and none of
// those applied to the source after it.
func TestCheckpointCarriesBloom(t *testing.T) {
	src := open(t, Options{})
	var recs []link.Record
	for i := range 3000 {
		recs = append(recs, record(fmt.Sprintf("cp%04d", i), 1))
	}
	mustApply(t, src, batchOf(3000, recs...))
	dir := filepath.Join(t.TempDir(), "copy")
	if err := src.Checkpoint(dir); err != nil {
		t.Fatal(err)
	}
	wantSum, wantCount, err := src.Digest()
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, src, batchOf(3001, record("later", 1)))

	cp := open(t, Options{Dir: dir})
	if cp.bloomSource != "saved" {
		t.Errorf("bloom filter from %s, want the saved one", cp.bloomSource)
	}
	if pos, _ := cp.Position(); pos != 3000 {
		t.Errorf("position %d, want 3000", pos)
	}
	if sum, count, err := cp.Digest(); err != nil || sum != wantSum || count != wantCount {
		t.Errorf("digest %x/%d (%v), want %x/%d", sum, count, err, wantSum, wantCount)
	}
	for _, rec := range recs {
		if got := revisionOf(t, cp, rec.Code); got != 1 {
			t.Fatalf("%s: revision %d in the copy", rec.Code, got)
		}
	}
	if got := revisionOf(t, cp, "later"); got != 0 {
		t.Errorf("a code applied after the checkpoint is in the copy (revision %d)", got)
	}
}
