package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/pebbledb"
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("store closed")

// ErrInvalidCursor is returned by List for a cursor it did not issue. It
// is a link.Error so the API answers it with a stable code.
var ErrInvalidCursor = &link.Error{Code: "invalid_cursor", Message: "cursor is not one this server issued"}

// List page sizes.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Store is the origin's Pebble-backed system of record. It is safe for
// concurrent use. Open starts its writer goroutine; Close stops it.
type Store struct {
	db  *pebble.DB
	o   Options
	log *slog.Logger

	reqs chan *request
	quit chan struct{} // closed by Close: the writer drains and exits
	done chan struct{} // closed by the writer when it has exited

	closeMu   sync.RWMutex // held for reading while a request is handed over
	closed    bool
	closeOnce sync.Once
	closeErr  error

	// Reads check in with readers and back out once closing is set;
	// Close waits for the readers in flight before closing Pebble, so a
	// late read gets ErrClosed instead of touching a closed DB.
	closing atomic.Bool
	readers atomic.Int64

	rev     atomic.Uint64 // last committed revision
	links   atomic.Uint64 // number of links
	commits atomic.Uint64 // group commits made
	notify  chan struct{}
	outbox  outboxIndex

	// The origin outbox (OriginOutbox): its last sequence and index.
	oseq   atomic.Uint64
	origin outboxIndex
	// Stream positions applied by a standby (ApplyLinks, ApplyOrigin).
	posLinks, posOrigin atomic.Uint64
	// readOnly refuses every mutation with ErrReadOnly (SetReadOnly).
	readOnly atomic.Bool
	// waiters are the WaitPublished calls waiting (see wakePublished).
	pubMu     sync.Mutex
	waiters   []*pubWaiter
	discarded []discardSpan // outbox spans Discard dropped unpublished
	// published: the relay's marks (MarkPublished), links and origin.
	pubRev, pubOseq atomic.Uint64

	sweepEvery time.Duration

	mBatchSize      *metrics.Histogram
	mCommitDuration *metrics.Histogram
	mCommitErrors   *metrics.Counter
	mIdemExpired    *metrics.Counter
	// Existence checks of codes answered by the code filter, and by a
	// Pebble read.
	mCodeFilter, mCodeRead *metrics.Counter

	// filters is the writer's code filter (codefilter.go); filterBytes
	// the size of the newest one.
	filters     codeFilters
	filterBytes atomic.Uint64

	// lim is the limited set (limited.go).
	lim limitedSet

	// hookBatch, when set by tests, is called by the writer with the
	// first request of a batch before it drains the rest.
	hookBatch func()
}

// Open opens (creating if needed) the store, rebuilds its in-memory state
// (revision, link count, outbox index) from disk, sweeps expired
// idempotency records and starts the writer.
func Open(opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	o := opts.withDefaults()

	// The write path is durable: the WAL stays on (DisableWAL false) and
	// every batch that acknowledges a mutation is committed with
	// pebble.Sync, so WALBytesPerSync stays 0 (no background syncs that
	// would only add I/O). Group commit in the writer amortises the fsync.
	// Reads are point lookups by code, idempotency key and key hash, so
	// every level carries a 10-bit bloom filter (~1% false positives)
	// that lets a miss skip the data block (pebbledb adds it, with the
	// newest format and the block cache).
	popts := &pebble.Options{
		FS:                          o.FS,
		MemTableSize:                uint64(o.MemTableBytes),
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       2,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               64 << 20,
	}
	for i := range popts.Levels {
		popts.Levels[i].BlockSize = 32 << 10
	}
	db, err := pebbledb.Open(o.Dir, popts, pebbledb.Shared{Logger: o.Logger, CacheBytes: o.BlockCacheBytes})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{
		db:     db,
		o:      o,
		log:    o.Logger,
		reqs:   make(chan *request, o.MaxBatch),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
	}
	s.readOnly.Store(o.ReadOnly)
	s.sweepEvery = min(max(o.IdempotencyTTL/16, time.Second), time.Hour)
	if err := s.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("open store: %w", err), db.Close())
	}
	if _, err := s.sweepIdempotency(); err != nil {
		return nil, errors.Join(fmt.Errorf("open store: %w", err), db.Close())
	}
	if err := s.startLimited(); err != nil {
		return nil, errors.Join(fmt.Errorf("open store: %w", err), db.Close())
	}
	s.registerMetrics()
	go s.run()
	depth, _ := s.OutboxStats()
	s.log.Info("store opened", "dir", o.Dir, "revision", s.rev.Load(), "links", s.links.Load(), "outbox", depth)
	return s, nil
}

// load reads the counters and rebuilds the outbox index.
func (s *Store) load() error {
	for _, m := range []struct {
		key []byte
		dst *atomic.Uint64
	}{{revisionKey, &s.rev}, {linksKey, &s.links}, {oseqKey, &s.oseq}, {posLinksKey, &s.posLinks}, {posOrigKey, &s.posOrigin}} {
		v, err := s.getUint64(m.key)
		if err != nil {
			return err
		}
		m.dst.Store(v)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: outboxPrefix, UpperBound: outboxUpper})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeOutbox(it.Key(), it.Value())
		if err != nil {
			return errors.Join(err, it.Close())
		}
		if e.Revision > s.rev.Load() {
			return errors.Join(fmt.Errorf("%w: outbox entry %d beyond revision %d", link.ErrCorrupt, e.Revision, s.rev.Load()), it.Close())
		}
		s.outbox.add(e.Revision, e.CommittedAt.UnixNano())
	}
	if err := it.Close(); err != nil {
		return err
	}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: originPrefix, UpperBound: originUpper})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeOutbox(it.Key(), it.Value())
		if err != nil {
			return errors.Join(err, it.Close())
		}
		if e.Revision > s.oseq.Load() {
			return errors.Join(fmt.Errorf("%w: origin outbox entry %d beyond %d", link.ErrCorrupt, e.Revision, s.oseq.Load()), it.Close())
		}
		s.origin.add(e.Revision, e.CommittedAt.UnixNano())
	}
	return it.Close()
}

func (s *Store) getUint64(key []byte) (uint64, error) { return getUint64(s.db, key) }

// getUint64 reads a counter from db or a snapshot of it; 0 if absent.
func getUint64(r pebble.Reader, key []byte) (uint64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return decodeUint64(v)
}

func (s *Store) registerMetrics() {
	set := s.o.Metrics
	s.mBatchSize = set.NewHistogram("linkpop_store_commit_batch_size")
	s.mCommitDuration = set.NewHistogram("linkpop_store_commit_duration_seconds")
	s.mCommitErrors = set.NewCounter("linkpop_store_commit_errors_total")
	s.mIdemExpired = set.NewCounter("linkpop_store_idempotency_expired_total")
	s.mCodeFilter = set.NewCounter(`linkpop_store_code_checks_total{by="filter"}`)
	s.mCodeRead = set.NewCounter(`linkpop_store_code_checks_total{by="read"}`)
	set.NewGauge("linkpop_store_code_filter_bytes", func() float64 { return float64(s.filterBytes.Load()) })
	set.NewGauge("linkpop_store_disk_bytes", func() float64 { return float64(s.DiskUsage()) })
	set.NewGauge("linkpop_store_revision", func() float64 { return float64(s.rev.Load()) })
	set.NewGauge("linkpop_store_links", func() float64 { return float64(s.links.Load()) })
	set.NewGauge("linkpop_store_commits", func() float64 { return float64(s.commits.Load()) })
}

// Close stops the writer after it has committed every request already
// handed to it, then closes Pebble. Later calls return ErrClosed. Close is
// safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		close(s.quit)
		<-s.done
		s.closing.Store(true)
		for s.readers.Load() > 0 {
			time.Sleep(time.Millisecond)
		}
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store: %w", err)
		}
	})
	return s.closeErr
}

// enter admits a read, or reports false once Close has begun; every
// admitted read calls exit.
func (s *Store) enter() bool {
	s.readers.Add(1)
	if s.closing.Load() {
		s.readers.Add(-1)
		return false
	}
	return true
}

func (s *Store) exit() { s.readers.Add(-1) }

// Get returns the link with code, active or disabled.
func (s *Store) Get(code string) (link.Record, error) {
	if !s.enter() {
		return link.Record{}, ErrClosed
	}
	defer s.exit()
	rec, ok, err := s.getLink(code)
	if err != nil {
		return link.Record{}, err
	}
	if !ok {
		return link.Record{}, link.ErrNotFound
	}
	return rec, nil
}

// hasLink reports whether a link has code, reading Pebble.
func (s *Store) hasLink(code string) (bool, error) {
	_, closer, err := s.db.Get(linkKey(code))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %s: %w", code, err)
	}
	return true, closer.Close()
}

func (s *Store) getLink(code string) (link.Record, bool, error) {
	v, closer, err := s.db.Get(linkKey(code))
	if errors.Is(err, pebble.ErrNotFound) {
		return link.Record{}, false, nil
	}
	if err != nil {
		return link.Record{}, false, fmt.Errorf("get %s: %w", code, err)
	}
	defer closer.Close()
	rec, err := link.UnmarshalRecord(v)
	if err != nil {
		return link.Record{}, false, fmt.Errorf("get %s: %w", code, err)
	}
	return rec, true, nil
}

// List returns up to limit links ordered by code, starting after cursor
// ("" = from the first). next is the cursor of the following page, "" at
// the end. limit <= 0 means DefaultListLimit; it is capped at
// MaxListLimit. A cursor List did not issue is ErrInvalidCursor.
func (s *Store) List(cursor string, limit int) (recs []link.Record, next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	if !s.enter() {
		return nil, "", ErrClosed
	}
	defer s.exit()
	lower := linkPrefix
	if cursor != "" {
		after, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || !link.ValidCode(string(after)) {
			return nil, "", ErrInvalidCursor
		}
		lower = append(linkKey(string(after)), 0)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: linkUpper})
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	more := false
	for it.First(); it.Valid(); it.Next() {
		if len(recs) == limit {
			more = true
			break
		}
		rec, err := link.UnmarshalRecord(it.Value())
		if err != nil {
			return nil, "", errors.Join(fmt.Errorf("list %q: %w", it.Key(), err), it.Close())
		}
		recs = append(recs, rec)
	}
	if err := it.Close(); err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	if more {
		next = base64.RawURLEncoding.EncodeToString([]byte(recs[len(recs)-1].Code))
	}
	return recs, next, nil
}

// Revision returns the last committed revision (0 for an empty store).
func (s *Store) Revision() uint64 { return s.rev.Load() }

// Links returns the number of links, active and disabled.
func (s *Store) Links() uint64 { return s.links.Load() }

// Commits returns the number of group commits the writer has made since
// Open; with concurrent callers it is smaller than the number of
// mutations.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// ScanAll calls fn with every link in code order, from one consistent
// snapshot. It stops at fn's first error and returns it. Close waits for
// a scan in progress.
func (s *Store) ScanAll(fn func(link.Record) error) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		rec, err := link.UnmarshalRecord(it.Value())
		if err != nil {
			return errors.Join(fmt.Errorf("scan %q: %w", it.Key(), err), it.Close())
		}
		if err := fn(rec); err != nil {
			return errors.Join(err, it.Close())
		}
	}
	return it.Close()
}

// Digest returns the order-independent digest of every link (the sum of
// link.DigestTerm over code and revision) and the number of links, from
// one snapshot, for comparison with an edge's replica.
func (s *Store) Digest() (sum uint64, n uint64, err error) {
	d, _, err := s.BucketDigest()
	return d.Sum, d.Count, err
}

// BucketDigest returns the bucketed digest of every link and the revision
// it reflects (the last revision committed when the snapshot was taken),
// both read from one snapshot. It reads every link, but decodes only its
// revision.
func (s *Store) BucketDigest() (d link.Digest, revision uint64, err error) {
	revision, err = s.scanDigest(func(code string, rev uint64) { d.Add(code, rev) })
	if err != nil {
		return link.Digest{}, 0, err
	}
	return d, revision, nil
}

// DigestBucket returns the code and revision of every link in digest
// bucket i (see link.DigestBucket), in code order, and the revision the
// snapshot reflects.
func (s *Store) DigestBucket(i int) (entries []link.DigestEntry, revision uint64, err error) {
	if i < 0 || i >= link.DigestBuckets {
		return nil, 0, fmt.Errorf("digest bucket %d outside [0, %d)", i, link.DigestBuckets)
	}
	revision, err = s.scanDigest(func(code string, rev uint64) {
		if link.DigestBucket(code) == i {
			entries = append(entries, link.DigestEntry{Code: code, Revision: rev})
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return entries, revision, nil
}

// scanDigest calls fn with the code and revision of every link, in code
// order, from one snapshot, and returns the revision of that snapshot.
// The code passed to fn is its own string.
func (s *Store) scanDigest(fn func(code string, rev uint64)) (uint64, error) {
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.exit()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	revision, err := getUint64(snap, revisionKey)
	if err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		code := string(it.Key()[len(linkPrefix):])
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, errors.Join(fmt.Errorf("digest: %w", err), it.Close())
		}
		rev, err := link.RecordRevision(v)
		if err != nil {
			return 0, errors.Join(fmt.Errorf("digest %q: %w", code, err), it.Close())
		}
		fn(code, rev)
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("digest: %w", err)
	}
	return revision, nil
}

// DiskUsage returns the bytes the store occupies on disk, 0 once closed.
func (s *Store) DiskUsage() uint64 {
	if !s.enter() {
		return 0
	}
	defer s.exit()
	return s.db.Metrics().DiskSpaceUsage()
}

// submit hands r to the writer and waits for its answer. If ctx ends
// before the writer picks r up, r is dropped and ctx's error returned;
// once picked up, r is committed (or refused) regardless of ctx.
func (s *Store) submit(ctx context.Context, r *request) result {
	r.done = make(chan result, 1)
	if err := ctx.Err(); err != nil {
		return result{err: err}
	}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return result{err: ErrClosed}
	}
	select {
	case s.reqs <- r:
		s.closeMu.RUnlock()
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return result{err: ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateAbandoned) {
			return result{err: ctx.Err()}
		}
		return <-r.done
	}
}
