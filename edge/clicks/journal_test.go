package clicks

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// journalBatch is an encoded empty batch of j with the given seq.
func journalBatch(j *journal, seq uint64) []byte {
	return link.AppendClickBatch(nil, &linkpb.ClickBatch{Edge: j.edge, Instance: j.instance, Seq: seq, ThroughUnixMs: time.Now().UnixMilli()})
}

// TestJournalSeqAcrossReopen: the sequence carries on across a reopen
// whatever is left on disk (meta is not rewritten at every seal, so the
// seqs used must be found in the pending batches or in last), and meta is
// written only when its dropped count changes.
func TestJournalSeqAcrossReopen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked int // of the 3 batches appended before the reopen
	}{
		{"none acked", 0},
		{"some acked", 2},
		{"all acked", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, err := openJournal(dir, "edge-1", 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			meta, err := os.ReadFile(filepath.Join(dir, metaName))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				seq := j.nextSeq()
				if seq != uint64(i+1) {
					t.Fatalf("seal %d: seq %d", i, seq)
				}
				if err := j.append([][]byte{journalBatch(j, seq)}, []uint64{0}, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if now, _ := os.ReadFile(filepath.Join(dir, metaName)); !bytes.Equal(now, meta) {
				t.Fatalf("meta rewritten by a seal without drops:\n%s\nthen\n%s", meta, now)
			}
			for range tc.acked {
				if err := j.ack(j.oldest()); err != nil {
					t.Fatal(err)
				}
			}
			j2, err := openJournal(dir, "edge-1", 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if j2.instance != j.instance {
				t.Fatalf("instance %q after reopen, was %q", j2.instance, j.instance)
			}
			if got := j2.nextSeq(); got != 4 {
				t.Fatalf("next seq %d after reopen, want 4", got)
			}
			if n, _, _ := j2.state(); n != 3-tc.acked {
				t.Fatalf("%d batches pending after reopen, want %d", n, 3-tc.acked)
			}
		})
	}
}

// TestJournalDroppedInMeta: a drop is written to meta at once (a restart
// still reports it) and cleared by the batch that reports it.
func TestJournalDroppedInMeta(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, "edge-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.addDropped(7); err != nil {
		t.Fatal(err)
	}
	j2, err := openJournal(dir, "edge-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if j2.dropped() != 7 {
		t.Fatalf("dropped %d after reopen, want 7", j2.dropped())
	}
	if err := j2.append([][]byte{journalBatch(j2, j2.nextSeq())}, []uint64{0}, time.Now()); err != nil {
		t.Fatal(err)
	}
	j3, err := openJournal(dir, "edge-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if j3.dropped() != 0 {
		t.Fatalf("dropped %d after the batch that reported it, want 0", j3.dropped())
	}
}

// TestJournalKeptAndRead: a batch is published from memory while the kept
// bytes stay under the bound and read back from its file past it; both
// are the bytes appended, and a kept buffer is not handed out again while
// its batch is pending.
func TestJournalKeptAndRead(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, "edge-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	one := len(journalBatch(j, 1))
	j.keepMax = int64(2 * one) // two kept, then read from the files
	var want [][]byte
	for i := range 6 {
		b := journalBatch(j, j.nextSeq())
		want = append(want, b)
		buf := append([]byte(nil), b...) // the shipper reuses its buffers
		if err := j.append([][]byte{buf}, []uint64{0}, time.Now()); err != nil {
			t.Fatal(err)
		}
		clear(buf)
		if i == 2 {
			// Ack one kept batch: its buffer may serve a later one.
			if err := j.ack(j.oldest()); err != nil {
				t.Fatal(err)
			}
			want = want[1:]
		}
	}
	kept := 0
	for i, w := range want {
		e := j.oldest()
		if e.data != nil {
			kept++
		}
		got, err := batchData(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("pending batch %d: %x, want %x", i, got, w)
		}
		if err := j.ack(e); err != nil {
			t.Fatal(err)
		}
	}
	if kept != 2 {
		t.Fatalf("%d batches published from memory, want 2 (the bound)", kept)
	}
	if j.kept != 0 {
		t.Fatalf("kept bytes %d with nothing pending", j.kept)
	}
}
