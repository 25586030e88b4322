package clicks

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkpop/linkpop/link"
)

// ErrSpillFull is returned by journal.append when a batch does not fit
// under the journal's size bound.
var ErrSpillFull = errors.New("click journal full")

// journal is the on-disk queue of sealed, not yet acknowledged batches:
// one file per batch (DIR/<seq>.batch, written to a temporary name,
// synced and renamed, so a crash never leaves half a batch), and DIR/meta
// holding the edge name, the journal's instance id, the dropped clicks not
// yet reported and the next sequence number as of the last time meta was
// written. Once the stream has acknowledged a batch, its file becomes
// DIR/last (a rename over the previous one), so the newest sequence used
// is always on disk, in a pending batch or in last, and meta is rewritten
// only when its dropped count changes, not at every seal. The next
// sequence at open is the largest of meta's, the pending batches' and
// last's, plus one.
type journal struct {
	dir      string
	max      int64
	edge     string
	instance string

	mu      sync.Mutex
	next    uint64 // sequence of the next sealed batch
	carry   uint64 // dropped clicks not yet in a batch, kept across restarts
	pending []*entry
	bytes   int64
	kept    int64         // bytes of the pending batches kept in memory (entry.data)
	keepMax int64         // bound of kept: maxKeptBytes (tests lower it)
	spares  [][]byte      // buffers of acknowledged kept batches, for the next ones
	notify  chan struct{} // a batch was appended
	corrupt []string      // batch files set aside at open
}

// entry is one unacknowledged batch.
type entry struct {
	edge, instance string
	seq            uint64
	path           string
	size           int64
	clicks         uint64 // clicks and bots in the batch
	sealedAt       time.Time
	spilled        bool // waited on disk because the stream did not take it at once
	// data is the batch as written, kept in memory while the journal's
	// kept bytes stay under maxKeptBytes so the publisher does not read
	// the file back; nil: read the file.
	data []byte
}

const (
	metaName = "meta"
	lastName = "last"
	// maxKeptBytes bounds the pending batches kept in memory for the
	// publisher; past it (a backlog during an outage) they are read back
	// from their files.
	maxKeptBytes = 16 << 20
)

// errMetaNotSaved: the batches were stored but meta was not updated.
var errMetaNotSaved = errors.New("click journal meta not saved")

// openJournal opens (or creates) the journal in dir for edge. A journal
// made for another edge name gets a new instance: its pending batches
// still ship under their own (edge, instance), and the new name's
// sequence starts at 1.
func openJournal(dir, edge string, maxBytes int64) (*journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("click journal: %w", err)
	}
	j := &journal{dir: dir, max: maxBytes, keepMax: maxKeptBytes, edge: edge, notify: make(chan struct{}, 1)}
	metaEdge, instance, next, carry, err := readMeta(filepath.Join(dir, metaName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	// The newest batch acknowledged: its seq was used.
	if data, err := os.ReadFile(filepath.Join(dir, lastName)); err == nil {
		if b, err := link.UnmarshalClickBatch(data); err == nil && b.Edge == metaEdge && b.Instance == instance && b.Seq >= next {
			next = b.Seq + 1
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("click journal: %w", err)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("click journal: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".batch") {
			continue
		}
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("click journal: %w", err)
		}
		b, err := link.UnmarshalClickBatch(data)
		if err != nil {
			// Never written by this code (batches are renamed into place
			// once synced); keep it aside for the operator rather than
			// refuse to start or ship it.
			j.corrupt = append(j.corrupt, name)
			_ = os.Rename(p, p+".corrupt")
			continue
		}
		var clicks uint64
		for _, lm := range b.Links {
			clicks += lm.Clicks + lm.Bots
		}
		sealed := time.UnixMilli(b.ThroughUnixMs)
		j.pending = append(j.pending, &entry{edge: b.Edge, instance: b.Instance, seq: b.Seq, path: p,
			size: int64(len(data)), clicks: clicks, sealedAt: sealed, spilled: true})
		j.bytes += int64(len(data))
		if b.Edge == metaEdge && b.Instance == instance && b.Seq >= next {
			next = b.Seq + 1
		}
	}
	slices.SortFunc(j.pending, func(x, y *entry) int {
		// Batches of an older instance first, each instance in sequence.
		if x.instance != y.instance {
			if x.instance == instance {
				return 1
			}
			if y.instance == instance {
				return -1
			}
			return x.sealedAt.Compare(y.sealedAt)
		}
		return cmp.Compare(x.seq, y.seq)
	})
	if instance == "" || metaEdge != edge {
		instance, next = newInstance(), 1
	}
	if next == 0 {
		next = 1
	}
	j.instance, j.next, j.carry = instance, next, carry
	if err := j.writeMeta(); err != nil {
		return nil, err
	}
	return j, nil
}

// newInstance is a random journal identity: 20 characters of [a-z0-9].
func newInstance() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0234567"
	var b [20]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%32]
	}
	return string(b[:])
}

func readMeta(path string) (edge, instance string, next, carry uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "edge":
			edge = v
		case "instance":
			instance = v
		case "next":
			if next, err = strconv.ParseUint(v, 10, 64); err != nil {
				return "", "", 0, 0, fmt.Errorf("click journal meta: %w", err)
			}
		case "dropped":
			if carry, err = strconv.ParseUint(v, 10, 64); err != nil {
				return "", "", 0, 0, fmt.Errorf("click journal meta: %w", err)
			}
		}
	}
	if !link.ValidEdgeName(instance) || !link.ValidEdgeName(edge) {
		return "", "", 0, 0, fmt.Errorf("click journal meta: bad edge %q or instance %q", edge, instance)
	}
	return edge, instance, next, carry, nil
}

// addDropped counts clicks dropped at the bound, on disk at once, so a
// restart still reports them.
func (j *journal) addDropped(n uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.carry += n
	return j.writeMeta()
}

// dropped is the count the next batch reports.
func (j *journal) dropped() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.carry
}

func (j *journal) writeMeta() error {
	data := fmt.Sprintf("edge %s\ninstance %s\nnext %d\ndropped %d\n", j.edge, j.instance, j.next, j.carry)
	return writeFileAtomic(filepath.Join(j.dir, metaName), []byte(data))
}

// writeFileAtomic writes data to path through a synced temporary file and
// a rename, then syncs the directory (syncFile: without holding the
// runtime's P while the disk works).
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("click journal: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("click journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = syncFile(d)
		_ = d.Close()
	}
	return nil
}

// nextSeq is the sequence the next appended batch must carry.
func (j *journal) nextSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.next
}

// fits reports whether n more bytes stay within the bound.
func (j *journal) fits(n int64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.max <= 0 || j.bytes+n <= j.max
}

// backlog reports whether any batch waits on disk.
func (j *journal) backlog() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.pending) > 0
}

// append stores consecutive encoded batches, seqs next, next+1, ...
// Only the sealer appends.
func (j *journal) append(batches [][]byte, clicks []uint64, sealedAt time.Time) error {
	j.mu.Lock()
	seq := j.next
	var spilled bool
	kept := j.kept
	for _, e := range j.pending {
		spilled = spilled || e.spilled
	}
	j.mu.Unlock()
	var added []*entry
	for i, data := range batches {
		p := filepath.Join(j.dir, fmt.Sprintf("%020d.batch", seq))
		if err := writeFileAtomic(p, data); err != nil {
			for _, e := range added {
				_ = os.Remove(e.path)
			}
			return err
		}
		e := &entry{edge: j.edge, instance: j.instance, seq: seq, path: p,
			size: int64(len(data)), clicks: clicks[i], sealedAt: sealedAt, spilled: spilled}
		if kept+e.size <= j.keepMax {
			// batches are the shipper's buffers, reused at the next seal.
			e.data = append(j.spare(len(data)), data...)
			kept += e.size
		}
		added = append(added, e)
		seq++
	}
	j.mu.Lock()
	j.next = seq
	var err error
	if j.carry != 0 {
		j.carry = 0 // the last batch reported it
		if err = j.writeMeta(); err != nil {
			// The batches are in and will ship; a restart recomputes
			// next from their files.
			err = fmt.Errorf("%w: %w", errMetaNotSaved, err)
		}
	}
	j.pending = append(j.pending, added...)
	for _, e := range added {
		j.bytes += e.size
		if e.data != nil {
			j.kept += e.size
		}
	}
	j.mu.Unlock()
	select {
	case j.notify <- struct{}{}:
	default:
	}
	return err
}

// removeFrom removes the pending batches of this instance from seq on
// and makes seq the next: the batches of a seal journaled in part before
// a crash, which were never published (see clickLog).
func (j *journal) removeFrom(seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	kept := j.pending[:0]
	for _, e := range j.pending {
		if e.instance == j.instance && e.seq >= seq {
			_ = os.Remove(e.path)
			j.bytes -= e.size
			continue
		}
		kept = append(kept, e)
	}
	j.pending = kept
	j.next = min(j.next, seq)
	_ = j.writeMeta()
}

// oldest returns the first unacknowledged batch, or nil.
func (j *journal) oldest() *entry {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.pending) == 0 {
		return nil
	}
	return j.pending[0]
}

// markSpilled records that the stream did not take the pending batches at
// once.
func (j *journal) markSpilled() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range j.pending {
		e.spilled = true
	}
}

// ack removes the oldest batch, which the stream acknowledged.
func (j *journal) ack(e *entry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.pending) == 0 || j.pending[0] != e {
		return errors.New("click journal: ack out of order")
	}
	j.pending = j.pending[1:]
	j.bytes -= e.size
	if e.data != nil {
		j.kept -= e.size
		j.spares = append(j.spares, e.data[:0])
		e.data = nil
	}
	// Not removed but kept as last: the newest acknowledged seq stays on
	// disk for the next open (see journal). A batch of another edge or
	// instance (shipped after a rename or a new instance) says nothing of
	// this one's seqs; it is removed.
	if e.edge != j.edge || e.instance != j.instance {
		if err := os.Remove(e.path); err != nil {
			return fmt.Errorf("click journal: %w", err)
		}
		return nil
	}
	if err := os.Rename(e.path, filepath.Join(j.dir, lastName)); err != nil {
		return fmt.Errorf("click journal: %w", err)
	}
	return nil
}

// spare returns an empty buffer of at least n bytes for a kept batch:
// one of the acknowledged batches' buffers when one is large enough.
// Called with mu not held.
func (j *journal) spare(n int) []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, b := range j.spares {
		if cap(b) >= n {
			last := len(j.spares) - 1
			j.spares[i] = j.spares[last]
			j.spares = j.spares[:last]
			return b
		}
	}
	if len(j.spares) > 0 {
		j.spares = j.spares[:len(j.spares)-1] // too small: let it go
	}
	return make([]byte, 0, n+n/4)
}

// state reports the pending batches, their bytes and the oldest one's
// seal time.
func (j *journal) state() (n int, bytes int64, oldest time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.pending) > 0 {
		oldest = j.pending[0].sealedAt
	}
	return len(j.pending), j.bytes, oldest
}

// batchData returns e's encoded batch: kept in memory, or read from its
// file. It must not be retained after e is acknowledged.
func batchData(e *entry) ([]byte, error) {
	if e.data != nil {
		return e.data, nil
	}
	return readBatch(e.path)
}

func readBatch(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("click journal: %w", err)
	}
	return data, nil
}
