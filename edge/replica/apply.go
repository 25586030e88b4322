package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/maypok86/otter/v2"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// MaxQuarantineData bounds the raw bytes kept for a quarantined message.
const MaxQuarantineData = 16 << 10

// diskBytesEvery is how often a writer refreshes the disk-usage gauge.
const diskBytesEvery = time.Second

var _ replication.Applier = (*Replica)(nil)

// Apply stores every change of b newer than what the replica holds for its
// code (within b, the newest revision per code wins), quarantines every
// poison message, and sets the position to b.Through, even if that is
// lower than the current position (the stream was reset and is replayed).
// All of it is one Pebble batch committed with pebble.Sync, or with
// pebble.NoSync if b.NoSync is set: Pebble's WAL holds the batch as one
// record, so a crash keeps it whole or drops it (and every later one)
// whole, with the position of the last batch kept, and the next synced
// commit makes every earlier one durable too. When Apply returns, Lookup
// sees the new values.
//
// A batch after which at least Options.BulkPending messages are pending
// first reopens the store with bulk-load settings; the first batch after
// which none are reopens it with the steady-state ones once applied (see
// Options.BulkPending). The WAL stays on in bulk-load settings: without
// it a batch would be durable only once its memtable is flushed, so a
// synced Apply could not be durable when it returns (the consumer's
// Applied and proofs of freshness count on it) unless every synced batch
// flushed a memtable; with it, writing the WAL unsynced costs a
// sequential write of each batch, and a crash mid-replay leaves the
// position of the last batch the WAL kept whole, with its data.
func (r *Replica) Apply(b replication.Batch) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if p := r.opts.BulkPending; p > 0 && b.Pending >= uint64(p) {
		if err := r.setBulk(true); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	if err := r.apply(b); err != nil {
		return err
	}
	if b.Pending == 0 {
		if err := r.setBulk(false); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	return nil
}

func (r *Replica) apply(b replication.Batch) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return ErrClosed
	}

	// newest holds, per code, the index in b.Changes of the change to
	// write. Codes are looked up in Pebble only if the bloom filter says
	// the replica may hold them, so a fresh replica's bootstrap reads
	// almost nothing.
	newest := make(map[string]int, len(b.Changes))
	var created, skipped uint64
	poison := b.Poison
	for i := range b.Changes {
		rec := &b.Changes[i].Change.Record
		if err := rec.Validate(); err != nil {
			// The consumer validates events; one that slips through is
			// quarantined rather than stored under an unusable key.
			data, _ := link.MarshalChange(&b.Changes[i].Change)
			poison = append(poison[:len(poison):len(poison)], replication.Poison{Seq: b.Changes[i].Seq, Data: data, Err: err})
			continue
		}
		if j, ok := newest[rec.Code]; ok {
			if rec.Revision > b.Changes[j].Change.Record.Revision {
				newest[rec.Code] = i
			}
			skipped++
			continue
		}
		held, exists, err := r.heldRevision(rec.Code)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if exists && rec.Revision <= held {
			skipped++
			continue
		}
		if !exists {
			created++
		}
		newest[rec.Code] = i
	}

	// Keys go into the batch sorted: Pebble inserts a batch into its
	// memtable skiplist in order, and sorted inserts reuse the search
	// position of the previous key.
	order := make([]int, 0, len(newest))
	for _, i := range newest {
		order = append(order, i)
	}
	slices.SortFunc(order, func(x, y int) int {
		return strings.Compare(b.Changes[x].Change.Record.Code, b.Changes[y].Change.Record.Code)
	})
	batch := r.db.NewBatchWithSize(batchSizeHint(len(order), len(poison)))
	defer batch.Close()
	var key []byte // Set copies it into the batch
	for _, i := range order {
		rec := &b.Changes[i].Change.Record
		// The bytes the message carried are the record's encoding: stored
		// as they are, as the origin stores them.
		v := b.Changes[i].Record
		if v == nil {
			var err error
			if v, err = link.MarshalRecord(rec); err != nil {
				return fmt.Errorf("apply %q: %w", rec.Code, err)
			}
		}
		key = append(append(key[:0], linkPrefix...), rec.Code...)
		if err := batch.Set(key, v, nil); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	quarantined, err := r.quarantine(batch, poison)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := setUint64(batch, positionKey, b.Through); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	sync := pebble.Sync
	if b.NoSync {
		sync = pebble.NoSync
	}
	if err := r.commit(batch, created, quarantined, sync); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	r.position.Store(b.Through)
	r.published(len(order), func(yield func(*link.Record)) {
		for _, i := range order {
			yield(&b.Changes[i].Change.Record)
		}
	}, created)
	r.warmCreated(&b, order, time.Now())
	r.mApplied.Add(len(order))
	r.mSkipped.Add(int(skipped))
	r.mQuarantined.Add(int(quarantined))
	return nil
}

// Put stores a record fetched from the origin outside the stream (the
// lagging-miss fallback) if its revision is newer than what the replica
// holds. It does not move the stream position. When Put returns, Lookup
// sees the stored value.
func (r *Replica) Put(rec link.Record) (applied bool, err error) {
	if err := rec.Validate(); err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return false, ErrClosed
	}
	held, exists, err := r.heldRevision(rec.Code)
	if err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	if exists && rec.Revision <= held {
		r.mSkipped.Inc()
		return false, nil
	}
	v, err := link.MarshalRecord(&rec)
	if err != nil {
		return false, fmt.Errorf("put %q: %w", rec.Code, err)
	}
	batch := r.db.NewBatch()
	defer batch.Close()
	if err := batch.Set(linkKey(rec.Code), v, nil); err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	var created uint64
	if !exists {
		created = 1
	}
	if err := r.commit(batch, created, 0, pebble.Sync); err != nil {
		return false, fmt.Errorf("put: %w", err)
	}
	r.published(1, func(yield func(*link.Record)) { yield(&rec) }, created)
	r.mApplied.Inc()
	return true, nil
}

// Overwrite makes the replica hold rec for code, or nothing when rec is
// nil, whether or not rec is newer: it is how a repair makes a replica
// equal to the origin (the system of record) when the replica holds a
// revision the origin does not. To be safe against the stream it acts
// only if the replica still holds revision held for code (0: holds
// nothing), and reports false otherwise or when there is nothing to
// change. It does not move the stream position. When Overwrite returns,
// Lookup sees the result.
func (r *Replica) Overwrite(code string, held uint64, rec *link.Record) (changed bool, err error) {
	if rec != nil {
		if err := rec.Validate(); err != nil {
			return false, fmt.Errorf("overwrite: %w", err)
		}
		if rec.Code != code {
			return false, fmt.Errorf("overwrite %q: record is for %q", code, rec.Code)
		}
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return false, ErrClosed
	}
	cur, exists, err := r.heldRevision(code)
	if err != nil {
		return false, fmt.Errorf("overwrite: %w", err)
	}
	if (exists && cur != held) || (!exists && held != 0) || (!exists && rec == nil) {
		return false, nil
	}
	batch := r.db.NewBatch()
	defer batch.Close()
	var created uint64
	if rec == nil {
		if err := batch.Delete(linkKey(code), nil); err != nil {
			return false, fmt.Errorf("overwrite: %w", err)
		}
		if err := setUint64(batch, linksKey, r.links.Load()-1); err != nil {
			return false, fmt.Errorf("overwrite: %w", err)
		}
	} else {
		v, err := link.MarshalRecord(rec)
		if err != nil {
			return false, fmt.Errorf("overwrite %q: %w", code, err)
		}
		if err := batch.Set(linkKey(code), v, nil); err != nil {
			return false, fmt.Errorf("overwrite: %w", err)
		}
		if !exists {
			created = 1
		}
	}
	if err := r.commit(batch, created, 0, pebble.Sync); err != nil {
		return false, fmt.Errorf("overwrite: %w", err)
	}
	if rec == nil {
		// The code stays in the bloom filter: a false positive costs one
		// disk read, and the filter is rebuilt at the next growth or scan.
		r.links.Add(^uint64(0))
		r.gen.Add(1)
		r.hot.Invalidate(code)
	} else {
		// published keeps newer hot entries; an overwrite may go back in
		// revision, so the hot entry is dropped instead.
		r.bloom.Load().add(code)
		if links := r.links.Load(); created > 0 && links > r.bloom.Load().capacity {
			r.growBloom(links)
		}
		r.gen.Add(1)
		r.hot.Invalidate(code)
		r.neg.Invalidate(code)
	}
	r.mApplied.Inc()
	return true, nil
}

// heldRevision returns the revision the replica holds for code. Writers
// call it with wmu held, when every committed code is in the bloom filter.
func (r *Replica) heldRevision(code string) (rev uint64, exists bool, err error) {
	if !r.bloom.Load().mayContain(code) {
		return 0, false, nil
	}
	v, closer, err := r.db.Get(linkKey(code))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %q: %w", code, err)
	}
	defer closer.Close()
	rev, err = recordRevision(v)
	if err != nil {
		return 0, false, fmt.Errorf("read %q: %w", code, err)
	}
	return rev, true, nil
}

// quarantine adds poison messages to batch and returns how many are new
// (a replayed stream quarantines the same sequence again).
func (r *Replica) quarantine(batch *pebble.Batch, poison []replication.Poison) (uint64, error) {
	var added uint64
	for _, p := range poison {
		key := quarantineKey(p.Seq)
		_, closer, err := r.db.Get(key)
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			added++
		case err != nil:
			return 0, fmt.Errorf("read quarantine %d: %w", p.Seq, err)
		default:
			closer.Close()
		}
		if err := batch.Set(key, encodeQuarantine(p), nil); err != nil {
			return 0, err
		}
		r.log.Warn("replica quarantined a message", "seq", p.Seq, "subject", p.Subject, "err", p.Err)
	}
	return added, nil
}

// commit adds the counters to batch, commits it with sync (pebble.Sync:
// durably) and refreshes the in-memory counters.
func (r *Replica) commit(batch *pebble.Batch, created, quarantined uint64, sync *pebble.WriteOptions) error {
	if created > 0 {
		if err := setUint64(batch, linksKey, r.links.Load()+created); err != nil {
			return err
		}
	}
	if quarantined > 0 {
		if err := setUint64(batch, quarantinedKey, r.quarantined.Load()+quarantined); err != nil {
			return err
		}
	}
	if err := batch.Commit(sync); err != nil {
		return err
	}
	r.links.Add(created)
	r.quarantined.Add(quarantined)
	if now := time.Now(); now.Sub(r.diskAt) >= diskBytesEvery {
		r.diskAt = now
		r.diskBytes.Store(r.db.Metrics().DiskSpaceUsage())
	}
	return nil
}

// published makes committed records visible to readers: codes into the
// bloom filter (grown if it is full), the generation bumped so no reader
// caches what it read before the commit, hot entries replaced and negative
// entries dropped. Writers call it with wmu held.
func (r *Replica) published(n int, recs func(yield func(*link.Record)), created uint64) {
	if n == 0 {
		return
	}
	bl := r.bloom.Load()
	recs(func(rec *link.Record) { bl.add(rec.Code) })
	if links := r.links.Load(); created > 0 && links > bl.capacity {
		r.growBloom(links)
	}
	r.gen.Add(1)
	recs(func(rec *link.Record) {
		r.hot.ComputeIfPresent(rec.Code, func(old *Entry) (*Entry, otter.ComputeOp) {
			if old.Revision >= rec.Revision {
				return old, otter.CancelOp
			}
			return entryOf(rec), otter.WriteOp
		})
		r.neg.Invalidate(rec.Code)
	})
}

// growBloom replaces the bloom filter with one sized for twice links,
// filled from a scan of the store. Readers keep using the old filter (which
// holds every code) until the new one is complete.
func (r *Replica) growBloom(links uint64) {
	start := time.Now()
	b := newBloom(max(r.bloomMin, 2*links))
	n, err := r.fillBloom(b)
	if err != nil {
		// The old filter still holds every code; it only answers more
		// false positives. Try again at the next create.
		r.log.Error("replica bloom rebuild", "err", err)
		return
	}
	r.bloom.Store(b)
	r.log.Info("replica bloom grown", "links", n, "bits", b.bits(), "took", time.Since(start))
}

// batchSizeHint estimates the bytes of a batch of records and poison
// messages, so the batch buffer is allocated once.
func batchSizeHint(records, poison int) int {
	return 64 + records*320 + poison*1024
}

func setUint64(batch *pebble.Batch, key []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return batch.Set(key, buf[:], nil)
}

func quarantineKey(seq uint64) []byte {
	k := make([]byte, len(quarantinePrefix)+8)
	copy(k, quarantinePrefix)
	binary.BigEndian.PutUint64(k[len(quarantinePrefix):], seq)
	return k
}

func encodeQuarantine(p replication.Poison) []byte {
	errText := ""
	if p.Err != nil {
		errText = p.Err.Error()
	}
	data := p.Data
	if len(data) > MaxQuarantineData {
		data = data[:MaxQuarantineData]
	}
	v := make([]byte, 0, 2*binary.MaxVarintLen64+len(p.Subject)+len(errText)+len(data))
	v = binary.AppendUvarint(v, uint64(len(p.Subject)))
	v = append(v, p.Subject...)
	v = binary.AppendUvarint(v, uint64(len(errText)))
	v = append(v, errText...)
	return append(v, data...)
}

// Quarantined is a poison message held in quarantine.
type Quarantined struct {
	Seq     uint64
	Subject string
	Err     string
	Data    []byte // truncated to MaxQuarantineData
}

func decodeQuarantine(seq uint64, v []byte) (Quarantined, error) {
	q := Quarantined{Seq: seq}
	field := func() (string, error) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return "", fmt.Errorf("%w: quarantine %d", link.ErrCorrupt, seq)
		}
		s := string(v[k : k+int(n)])
		v = v[k+int(n):]
		return s, nil
	}
	var err error
	if q.Subject, err = field(); err != nil {
		return Quarantined{}, err
	}
	if q.Err, err = field(); err != nil {
		return Quarantined{}, err
	}
	q.Data = append([]byte(nil), v...)
	return q, nil
}

// Quarantine returns up to limit quarantined messages with a sequence of at
// least from, in sequence order.
func (r *Replica) Quarantine(from uint64, limit int) ([]Quarantined, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: quarantineKey(from), UpperBound: quarantineUpper})
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	var out []Quarantined
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		k := it.Key()
		if len(k) != len(quarantinePrefix)+8 {
			continue
		}
		q, err := decodeQuarantine(binary.BigEndian.Uint64(k[len(quarantinePrefix):]), it.Value())
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		out = append(out, q)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	return out, nil
}
