package replica

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
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

// BenchmarkCheckpointOpen is the replica's part of a peer bootstrap at
// LINKPOP_CHECKPOINT_N links (default 1,000,000): a replica is filled as a
// replay fills it, then each iteration takes a checkpoint, copies its
// files into a new directory hashing each with SHA-256 and syncing it (what
// the receiver of a ship does, without the network), and opens the copy.
func BenchmarkCheckpointOpen(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("LINKPOP_CHECKPOINT_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("LINKPOP_CHECKPOINT_N=%q: want a positive integer", s)
		}
		n = v
	}
	src := open(b, Options{})
	const size = 8192
	for i := 0; i < n; i += size {
		end := min(i+size, n)
		bt := replication.Batch{Through: uint64(end), NoSync: end < n}
		for j, rec := range benchRecords(end-i, uint64(i+1)) {
			bt.Changes = append(bt.Changes, change(uint64(i+j+1), rec))
		}
		mustApply(b, src, bt)
	}
	var ckpt, cp, opened time.Duration
	var bytes int64
	for b.Loop() {
		tmp := b.TempDir()
		dir, dst := filepath.Join(tmp, "ckpt"), filepath.Join(tmp, "copy")
		start := time.Now()
		if err := src.Checkpoint(dir); err != nil {
			b.Fatal(err)
		}
		ckpt += time.Since(start)
		start = time.Now()
		n, err := copyHashed(dir, dst)
		if err != nil {
			b.Fatal(err)
		}
		bytes = n
		cp += time.Since(start)
		start = time.Now()
		r, err := Open(Options{Dir: dst})
		if err != nil {
			b.Fatal(err)
		}
		opened += time.Since(start)
		if r.bloomSource != "saved" {
			b.Fatalf("the copy scanned its codes (bloom from %s)", r.bloomSource)
		}
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
	k := float64(b.N)
	b.ReportMetric(ckpt.Seconds()/k, "checkpoint-s")
	b.ReportMetric(cp.Seconds()/k, "copy-sha256-s")
	b.ReportMetric(opened.Seconds()/k, "open-s")
	b.ReportMetric(float64(bytes)/(1<<20), "MiB")
}

// copyHashed copies dir's files into dst, hashing and syncing each.
func copyHashed(dir, dst string) (int64, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range ents {
		in, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return total, err
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			in.Close()
			return total, err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(out, h), in)
		total += n
		in.Close()
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
