package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/maypok86/otter/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/pebbledb"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// ErrClosed is returned by every call on a closed Replica.
var ErrClosed = errors.New("replica closed")

// Keys; see the package comment.
var (
	linkPrefix       = []byte("l/")
	linkUpper        = []byte("l0") // '0' follows '/'
	positionKey      = []byte("m/position")
	linksKey         = []byte("m/links")
	quarantinedKey   = []byte("m/quarantined")
	quarantinePrefix = []byte("q/")
	quarantineUpper  = []byte("q0")
)

// Entry is what a redirect needs. It is immutable once returned: share it,
// never mutate it.
type Entry struct {
	URL       string
	Redirect  int
	Status    link.Status
	ExpiresAt time.Time // zero: never expires
	Revision  uint64
	// Strict: the link asks for link.FreshnessStrict.
	Strict bool
}

// Redirects reports whether a visitor arriving at now is redirected: the
// link is active and not expired.
func (e *Entry) Redirects(now time.Time) bool {
	return e.Status == link.StatusActive && (e.ExpiresAt.IsZero() || now.Before(e.ExpiresAt))
}

// decodeEntry decodes from an encoded record only what a redirect needs,
// and returns it with a copy of code to key the hot cache; both strings
// share one allocation. Every record in the store was fully validated
// (link.UnmarshalRecord) by Apply or Put before it was written, so this
// checks the framing, the schema version and the fields it reads, not the
// rest of the record again: decoding the whole record with its timestamps
// and tags was most of the cost of a hot-cache miss.
func decodeEntry(code, b []byte) (string, *Entry, error) {
	var (
		url                      []byte
		version, redirect        uint64
		status, revision, expire uint64
		freshness                uint64
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil, fmt.Errorf("%w: %v", link.ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		var dst *uint64
		switch num {
		case recordVersionTag:
			dst = &version
		case recordRedirectTag:
			dst = &redirect
		case recordStatusTag:
			dst = &status
		case recordExpiresTag:
			dst = &expire
		case recordRevisionTag:
			dst = &revision
		case recordFreshnessTag:
			dst = &freshness
		case recordURLTag:
			if typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return "", nil, fmt.Errorf("%w: %v", link.ErrCorrupt, protowire.ParseError(n))
				}
				url, b = v, b[n:]
				continue
			}
		}
		if dst != nil && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return "", nil, fmt.Errorf("%w: %v", link.ErrCorrupt, protowire.ParseError(n))
			}
			*dst, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", nil, fmt.Errorf("%w: %v", link.ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if version != link.SchemaVersion {
		return "", nil, fmt.Errorf("%w: record version %d", link.ErrUnsupportedSchema, version)
	}
	st := link.Status(status)
	if len(url) == 0 || !link.ValidRedirect(int(redirect)) || (st != link.StatusActive && st != link.StatusDisabled) {
		return "", nil, fmt.Errorf("%w: record fields", link.ErrCorrupt)
	}
	buf := make([]byte, 0, len(code)+len(url))
	buf = append(append(buf, code...), url...)
	s := unsafe.String(unsafe.SliceData(buf), len(buf))
	e := &Entry{URL: s[len(code):], Redirect: int(redirect), Status: st, Revision: revision,
		Strict: freshness == uint64(link.FreshnessStrict)}
	if x := int64(expire); x != 0 {
		e.ExpiresAt = time.UnixMilli(x).UTC()
	}
	return s[:len(code)], e, nil
}

// Field numbers of link's Record encoding (proto/linkpop.proto) that
// decodeEntry reads, taken from the generated descriptor so that a
// renumbered field cannot drift from the schema.
var (
	recordFields       = (&linkpb.Record{}).ProtoReflect().Descriptor().Fields()
	recordVersionTag   = recordFields.ByName("schema_version").Number()
	recordURLTag       = recordFields.ByName("url").Number()
	recordRedirectTag  = recordFields.ByName("redirect").Number()
	recordStatusTag    = recordFields.ByName("status").Number()
	recordExpiresTag   = recordFields.ByName("expires_at_unix_ms").Number()
	recordRevisionTag  = recordFields.ByName("revision").Number()
	recordFreshnessTag = recordFields.ByName("freshness").Number()
)

func entryOf(r *link.Record) *Entry {
	return &Entry{URL: r.URL, Redirect: r.Redirect, Status: r.Status, ExpiresAt: r.ExpiresAt, Revision: r.Revision,
		Strict: r.Freshness == link.FreshnessStrict}
}

// Stats is a snapshot of the replica's size and caches.
type Stats struct {
	Links           uint64 // codes held
	Position        uint64 // stream sequence applied through
	Quarantined     uint64 // poison messages held in quarantine
	DiskBytes       uint64 // Pebble's disk usage
	HotEntries      int    // hot cache entries (estimate)
	NegativeEntries int    // negative cache entries (estimate)
	BloomBits       uint64 // size of the bloom filter
}

// Replica is the edge's local copy of the link table. It is safe for
// concurrent use; writes (Apply, Put) are serialized.
type Replica struct {
	db     *pebble.DB
	opts   Options // with defaults
	fs     vfs.FS
	dir    string
	id     []byte // random store id, "m/id"
	log    *slog.Logger
	set    *metrics.Set
	gauges []string

	hot   *hotCache
	neg   *otter.Cache[string, struct{}]
	bloom atomic.Pointer[bloom]
	// gen is bumped after every commit that changed a link; a reader only
	// caches what it read from Pebble if gen did not move meanwhile.
	gen atomic.Uint64

	bloomMin    uint64
	position    atomic.Uint64
	links       atomic.Uint64
	quarantined atomic.Uint64
	diskBytes   atomic.Uint64
	diskAt      time.Time // last diskBytes refresh; writer only

	// mu guards db against Close: readers of db hold it shared.
	mu     sync.RWMutex
	closed atomic.Bool
	// wmu serializes writers.
	wmu sync.Mutex
	// bulk: db runs with the bulk-load settings (see Options.BulkPending).
	// Writers only.
	bulk bool

	keyBufs sync.Pool

	// bloomSource says how Open built the filter: "saved" or "scan".
	bloomSource string

	// afterDiskRead, set only by tests, runs between a Pebble read in
	// Lookup and the cache insert that follows it: the window the
	// generation check protects.
	afterDiskRead func()

	mHot, mNegative, mBloom, mDiskHit, mDiskMiss *metrics.Counter
	mApplied, mSkipped, mQuarantined             *metrics.Counter
	mBulk                                        *metrics.Gauge
}

// Open opens (creating if needed) the replica's store, reads its position
// and counters, and loads the bloom filter the last Close saved or, if that
// is missing or stale, builds it by scanning the held codes.
func Open(opts Options) (*Replica, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open replica: %w", err)
	}
	o := opts.withDefaults()

	start := time.Now()
	db, err := openDB(&o, false)
	if err != nil {
		return nil, fmt.Errorf("open replica: %w", err)
	}
	r := &Replica{
		db:       db,
		opts:     o,
		fs:       o.FS,
		dir:      o.Dir,
		log:      o.Logger,
		set:      o.Metrics,
		bloomMin: uint64(o.BloomMinCapacity),
		hot:      newHotCache(o.HotCacheEntries),
		neg:      otter.Must(&otter.Options[string, struct{}]{MaximumSize: o.NegativeCacheEntries}),
	}
	r.keyBufs.New = func() any { return new([]byte) }
	opened := time.Now()
	if err := r.load(); err != nil {
		r.neg.StopAllGoroutines()
		return nil, errors.Join(fmt.Errorf("open replica: %w", err), db.Close())
	}
	r.registerMetrics()
	r.log.Info("replica opened", "dir", o.Dir, "links", r.links.Load(), "position", r.position.Load(),
		"quarantined", r.quarantined.Load(), "bloom_bits", r.bloom.Load().bits(), "bloom_from", r.bloomSource,
		"open_took", opened.Sub(start), "load_took", time.Since(opened))
	return r, nil
}

// openDB opens the replica's Pebble store with its steady-state or, bulk,
// its bulk-load settings. Both keep the WAL: every Apply is atomic, and a
// synced one durable, in either (see Apply).
func openDB(o *Options, bulk bool) (*pebble.DB, error) {
	popts := &pebble.Options{
		FS:           o.FS,
		MemTableSize: uint64(o.MemTableBytes),
		// Four memtables absorb a burst while one flushes.
		MemTableStopWritesThreshold: 4,
		// Writes stall only far above where L0 compactions start, in
		// both settings: the first minutes after a bulk load leave
		// many flushes in L0 to compact, and the stream must keep
		// applying meanwhile.
		L0StopWritesThreshold: 64,
	}
	if bulk {
		// A replay writes the whole table once: large memtables flushed
		// as sorted runs into L0, compacted only once L0 holds many, so
		// each compaction merges much at once and the table is
		// rewritten fewer times on its way down the levels.
		popts.MemTableSize = uint64(o.BulkMemTableBytes)
		popts.MemTableStopWritesThreshold = 2
		popts.L0CompactionThreshold = 16
	}
	return pebbledb.Open(o.Dir, popts, pebbledb.Shared{Logger: o.Logger, CacheBytes: o.BlockCacheBytes})
}

// setBulk reopens the store with the bulk-load settings (on) or the
// steady-state ones, if it does not run with them already. Its caller
// holds wmu. The memtable is flushed first, while readers go on, so the
// reopen need not replay it from the WAL; readers then wait for the
// close and open (milliseconds: the memtable is empty), and the hot
// cache, the negative cache and the bloom filter are kept. If the open
// fails the replica is closed.
func (r *Replica) setBulk(on bool) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if r.bulk == on {
		return nil
	}
	start := time.Now()
	if err := r.db.Flush(); err != nil {
		return fmt.Errorf("flush for reopen: %w", err)
	}
	flushed := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return ErrClosed
	}
	if err := r.db.Close(); err != nil {
		r.closed.Store(true)
		r.neg.StopAllGoroutines()
		return fmt.Errorf("close for reopen: %w", err)
	}
	db, err := openDB(&r.opts, on)
	if err != nil {
		r.closed.Store(true)
		r.neg.StopAllGoroutines()
		return fmt.Errorf("reopen: %w", err)
	}
	r.db, r.bulk = db, on
	if on {
		r.mBulk.Set(1)
	} else {
		r.mBulk.Set(0)
	}
	r.log.Info("replica reopened", "bulk_load", on, "flush_took", flushed.Sub(start), "reopen_took", time.Since(flushed),
		"links", r.links.Load(), "position", r.position.Load())
	return nil
}

// load reads the position and counters and builds the bloom filter.
func (r *Replica) load() error {
	for _, m := range []struct {
		key []byte
		dst *atomic.Uint64
	}{{positionKey, &r.position}, {quarantinedKey, &r.quarantined}} {
		v, err := r.getUint64(m.key)
		if err != nil {
			return err
		}
		m.dst.Store(v)
	}
	stored, err := r.getUint64(linksKey)
	if err != nil {
		return err
	}
	if r.id, err = r.storeID(); err != nil {
		return err
	}
	b, why := loadBloom(r.fs, r.dir, r.id, stored)
	if b != nil {
		r.links.Store(stored)
		r.bloom.Store(b)
		r.bloomSource = "saved"
		r.diskBytes.Store(r.db.Metrics().DiskSpaceUsage())
		return nil
	}
	r.log.Info("replica scans its codes to build the bloom filter", "why", why)
	r.bloomSource = "scan"
	// Size the filter from the stored count, then fill it from a scan;
	// the scan's count is the truth.
	b = newBloom(max(r.bloomMin, 2*stored))
	n, err := r.fillBloom(b)
	if err != nil {
		return err
	}
	if n != stored {
		r.log.Warn("replica link count corrected", "stored", stored, "scanned", n)
	}
	if n > b.capacity {
		b = newBloom(max(r.bloomMin, 2*n))
		if _, err := r.fillBloom(b); err != nil {
			return err
		}
	}
	r.links.Store(n)
	r.bloom.Store(b)
	r.diskBytes.Store(r.db.Metrics().DiskSpaceUsage())
	return nil
}

// fillBloom adds every held code to b, which no reader sees yet, and
// returns how many there are.
func (r *Replica) fillBloom(b *bloom) (uint64, error) {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		return 0, fmt.Errorf("scan codes: %w", err)
	}
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		b.addHashUnshared(xxhash.Sum64(it.Key()[len(linkPrefix):]))
		n++
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("scan codes: %w", err)
	}
	return n, nil
}

func (r *Replica) getUint64(key []byte) (uint64, error) { return readUint64(r.db, key) }

// readUint64 reads a counter from the store or a snapshot of it; 0 if
// absent.
func readUint64(db pebble.Reader, key []byte) (uint64, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("read %s: %w: %d bytes", key, link.ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (r *Replica) registerMetrics() {
	s := r.set
	lookup := func(result string) *metrics.Counter {
		return s.GetOrCreateCounter(`linkpop_replica_lookups_total{result="` + result + `"}`)
	}
	r.mHot, r.mNegative, r.mBloom = lookup("hot"), lookup("negative"), lookup("bloom")
	r.mDiskHit, r.mDiskMiss = lookup("disk_hit"), lookup("disk_miss")
	r.mApplied = s.GetOrCreateCounter("linkpop_replica_applied_total")
	r.mSkipped = s.GetOrCreateCounter("linkpop_replica_skipped_stale_total")
	r.mQuarantined = s.GetOrCreateCounter("linkpop_replica_quarantined_total")
	r.mBulk = s.GetOrCreateGauge("linkpop_replica_bulk_load", nil)
	r.mBulk.Set(0)
	gauge := func(name string, f func() float64) {
		// A replica reopened on the same set takes the gauges over.
		s.UnregisterMetric(name)
		s.NewGauge(name, f)
		r.gauges = append(r.gauges, name)
	}
	gauge("linkpop_replica_links", func() float64 { return float64(r.links.Load()) })
	gauge("linkpop_replica_position", func() float64 { return float64(r.position.Load()) })
	gauge("linkpop_replica_quarantined", func() float64 { return float64(r.quarantined.Load()) })
	gauge("linkpop_replica_disk_bytes", func() float64 { return float64(r.diskBytes.Load()) })
	gauge("linkpop_replica_hot_entries", func() float64 { return float64(r.hot.EstimatedSize()) })
	gauge("linkpop_replica_negative_entries", func() float64 { return float64(r.neg.EstimatedSize()) })
	gauge("linkpop_replica_bloom_bits", func() float64 { return float64(r.bloom.Load().bits()) })
}

// Close flushes and closes the store. Calls after Close return ErrClosed.
func (r *Replica) Close() error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Swap(true) {
		return ErrClosed
	}
	for _, name := range r.gauges {
		r.set.UnregisterMetric(name)
	}
	r.neg.StopAllGoroutines()
	if err := saveBloom(r.fs, r.dir, r.id, r.links.Load(), r.bloom.Load()); err != nil {
		// Only the next Open's speed depends on it: that Open scans.
		r.log.Warn("replica could not save its bloom filter", "err", err)
	}
	if err := r.db.Close(); err != nil {
		return fmt.Errorf("close replica: %w", err)
	}
	return nil
}

// Lookup is the redirect hot path: hot cache, then the bloom filter, then
// the negative cache, then Pebble. code must be a valid code (the caller
// checked link.ValidCodeBytes); it is not retained. found is false when the
// replica does not hold the code. A hot-cache hit and a bloom or negative
// answer allocate nothing and touch no disk.
func (r *Replica) Lookup(code []byte) (e *Entry, found bool, err error) {
	if r.closed.Load() {
		return nil, false, ErrClosed
	}
	k := unsafe.String(unsafe.SliceData(code), len(code))
	if e, ok := r.hot.GetIfPresent(k); ok {
		r.mHot.Inc()
		return e, true, nil
	}
	if !r.bloom.Load().mayContain(k) {
		r.mBloom.Inc()
		return nil, false, nil
	}
	if _, ok := r.neg.GetIfPresent(k); ok {
		r.mNegative.Inc()
		return nil, false, nil
	}
	return r.lookupDisk(code)
}

func (r *Replica) lookupDisk(code []byte) (*Entry, bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return nil, false, ErrClosed
	}
	gen := r.gen.Load()
	bp := r.keyBufs.Get().(*[]byte)
	key := append(append((*bp)[:0], linkPrefix...), code...)
	v, closer, err := r.db.Get(key)
	*bp = key
	r.keyBufs.Put(bp)
	if r.afterDiskRead != nil {
		r.afterDiskRead()
	}
	if errors.Is(err, pebble.ErrNotFound) {
		r.mDiskMiss.Inc()
		r.neg.Compute(string(code), func(_ struct{}, found bool) (struct{}, otter.ComputeOp) {
			if found || r.gen.Load() != gen {
				return struct{}{}, otter.CancelOp
			}
			return struct{}{}, otter.WriteOp
		})
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("lookup %q: %w", code, err)
	}
	hotKey, e, err := decodeEntry(code, v)
	closer.Close()
	if err != nil {
		return nil, false, fmt.Errorf("lookup %q: %w", code, err)
	}
	r.mDiskHit.Inc()
	r.hot.Compute(hotKey, func(old *Entry, found bool) (*Entry, otter.ComputeOp) {
		if r.gen.Load() != gen || (found && old.Revision >= e.Revision) {
			return old, otter.CancelOp
		}
		return e, otter.WriteOp
	})
	return e, true, nil
}

// Get returns the full record held for code, read from Pebble (admin,
// status and digest use; not the redirect path).
func (r *Replica) Get(code string) (link.Record, bool, error) {
	if !link.ValidCode(code) {
		return link.Record{}, false, nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return link.Record{}, false, ErrClosed
	}
	if !r.bloom.Load().mayContain(code) {
		return link.Record{}, false, nil
	}
	v, closer, err := r.db.Get(linkKey(code))
	if errors.Is(err, pebble.ErrNotFound) {
		return link.Record{}, false, nil
	}
	if err != nil {
		return link.Record{}, false, fmt.Errorf("get %q: %w", code, err)
	}
	defer closer.Close()
	rec, err := link.UnmarshalRecord(v)
	if err != nil {
		return link.Record{}, false, fmt.Errorf("get %q: %w", code, err)
	}
	return rec, true, nil
}

// Position returns the stream sequence of the last applied message, or 0
// for an empty replica.
func (r *Replica) Position() (uint64, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	return r.position.Load(), nil
}

// Stats returns a snapshot of the replica's counters.
func (r *Replica) Stats() Stats {
	s := Stats{
		Links:           r.links.Load(),
		Position:        r.position.Load(),
		Quarantined:     r.quarantined.Load(),
		HotEntries:      r.hot.EstimatedSize(),
		NegativeEntries: r.neg.EstimatedSize(),
		BloomBits:       r.bloom.Load().bits(),
	}
	r.mu.RLock()
	if !r.closed.Load() {
		r.diskBytes.Store(r.db.Metrics().DiskSpaceUsage())
	}
	r.mu.RUnlock()
	s.DiskBytes = r.diskBytes.Load()
	return s
}

// Digest returns the wrapping sum of link.DigestTerm(code, revision) over
// every record held, and their count, read from one consistent snapshot.
// Compared with the origin's digest it detects divergence.
func (r *Replica) Digest() (sum uint64, count uint64, err error) {
	d, _, err := r.BucketDigest()
	return d.Sum, d.Count, err
}

// BucketDigest returns the bucketed digest of every record held and the
// stream position it reflects, both read from one snapshot (the position
// is committed in the same batch as the records it applied).
func (r *Replica) BucketDigest() (d link.Digest, position uint64, err error) {
	position, err = r.scanDigest(func(code []byte, rev uint64) {
		d.Add(unsafe.String(unsafe.SliceData(code), len(code)), rev)
	})
	if err != nil {
		return link.Digest{}, 0, err
	}
	return d, position, nil
}

// DigestBucket returns the code and revision of every record held in
// digest bucket i (see link.DigestBucket), in code order, and the stream
// position the snapshot reflects.
func (r *Replica) DigestBucket(i int) (entries []link.DigestEntry, position uint64, err error) {
	if i < 0 || i >= link.DigestBuckets {
		return nil, 0, fmt.Errorf("digest bucket %d outside [0, %d)", i, link.DigestBuckets)
	}
	position, err = r.scanDigest(func(code []byte, rev uint64) {
		if c := unsafe.String(unsafe.SliceData(code), len(code)); link.DigestBucket(c) == i {
			entries = append(entries, link.DigestEntry{Code: string(code), Revision: rev})
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return entries, position, nil
}

// scanDigest calls fn with the code and revision of every record held, in
// code order, from one snapshot, and returns the position of that
// snapshot. code is valid only during the call.
func (r *Replica) scanDigest(fn func(code []byte, rev uint64)) (uint64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return 0, ErrClosed
	}
	snap := r.db.NewSnapshot()
	defer snap.Close()
	position, err := readUint64(snap, positionKey)
	if err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		code := it.Key()[len(linkPrefix):]
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, errors.Join(fmt.Errorf("digest: %w", err), it.Close())
		}
		rev, err := recordRevision(v)
		if err != nil {
			return 0, errors.Join(fmt.Errorf("digest %q: %w", code, err), it.Close())
		}
		fn(code, rev)
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	return position, nil
}

func linkKey(code string) []byte {
	k := make([]byte, 0, len(linkPrefix)+len(code))
	return append(append(k, linkPrefix...), code...)
}

// recordRevision reads the revision field of an encoded record without
// decoding the rest of it.
func recordRevision(b []byte) (uint64, error) { return link.RecordRevision(b) }
