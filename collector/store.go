package collector

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/pebbledb"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("collector: store closed")

// Key layout of the rollup store. Buckets are Unix seconds, big endian,
// so a prefix scan walks them in time order.
//
//	r <level> <code> 0x00 <bucket>   rollup of one link over one interval
//	g <level> <bucket> <code>        clicks and bots of one link over one
//	                                 interval: the index for top links and
//	                                 for retention
//	c <code>                         clicks and bots of one link, all time
//	s <edge> 0x00 <instance>         last applied seq of an edge instance
//	e <edge>                         through mark (ms) and dropped total
//	p                                the store's partition, "i/n"
const (
	pfxRollup   = 'r'
	pfxIndex    = 'g'
	pfxTotal    = 'c'
	pfxSeq      = 's'
	pfxEdge     = 'e'
	pfxPart     = 'p'
	levelLetter = "mhd"
)

func rollupKey(dst []byte, lvl Interval, code string, bucket int64) []byte {
	dst = append(dst, pfxRollup, levelLetter[lvl])
	dst = append(dst, code...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, uint64(bucket))
}

func indexKey(dst []byte, lvl Interval, bucket int64, code string) []byte {
	dst = append(dst, pfxIndex, levelLetter[lvl])
	dst = binary.BigEndian.AppendUint64(dst, uint64(bucket))
	return append(dst, code...)
}

func totalKey(code string) []byte { return append([]byte{pfxTotal}, code...) }

func seqKey(edge, instance string) []byte {
	k := append([]byte{pfxSeq}, edge...)
	k = append(k, 0)
	return append(k, instance...)
}

func edgeKey(edge string) []byte { return append([]byte{pfxEdge}, edge...) }

// StoreOptions configure a Store.
type StoreOptions struct {
	// Dir is the directory of the Pebble store. Required unless FS is
	// set; the default with FS is "collector".
	Dir string
	// FS is the file system; tests may use vfs.NewMem(). The default is
	// the local disk.
	FS vfs.FS
	// BreakdownLimit is the most keys one rollup keeps per breakdown
	// (referrers, countries, devices, browsers, OS, edges): the largest,
	// the rest summed under OtherKey. The default is 100.
	BreakdownLimit int
	// Retention of the minute and hour rollups: older buckets are
	// deleted by Prune and not written. Day rollups are kept forever.
	// The defaults are 7 days and 90 days.
	MinuteRetention, HourRetention time.Duration
	// GapTimeout is how long a batch that follows a gap in its edge
	// instance's sequence is sent back for redelivery (waiting for the
	// missing batches, which a redelivery after a collector crash may
	// bring out of order) before it is accepted and the gap counted as
	// lost batches. The default is 2 minutes.
	GapTimeout time.Duration
	// RetireAfter: an edge whose flush-through mark is this far behind
	// the newest mark of any edge stops holding complete_through back
	// (a decommissioned or long-dead edge). The default is 1 hour.
	RetireAfter time.Duration
	// StaleAfter: an edge whose mark is this far behind the newest mark
	// (and the end of the query) is listed in incomplete_edges. The
	// default is 10s (several flush intervals).
	StaleAfter time.Duration
	// ForgetAfter: a retired edge is no longer listed in incomplete_edges
	// once its mark is this far behind the newest one. The default is 7
	// days, the click stream's retention.
	ForgetAfter time.Duration
	// Partition and Partitions: the store keeps the rollups of the codes
	// of partition Partition of Partitions (PartitionOf), and skips the
	// others' entries. A store remembers its partition and refuses to
	// open as another. The default is 0 of 1 (every code).
	Partition, Partitions int
	// BlockCacheBytes is Pebble's block cache. The default is 32 MiB.
	BlockCacheBytes int64
	// Logger receives gaps and Pebble's log. The default discards.
	Logger *slog.Logger
	// Metrics receives linkpop_collector_* metrics. The default is a set
	// of its own.
	Metrics *metrics.Set
	// Now is the clock for retention and gap timing. The default is
	// time.Now.
	Now func() time.Time
}

func (o StoreOptions) withDefaults() StoreOptions {
	if o.Dir == "" {
		o.Dir = "collector"
	}
	if o.BreakdownLimit == 0 {
		o.BreakdownLimit = 100
	}
	if o.MinuteRetention == 0 {
		o.MinuteRetention = 7 * 24 * time.Hour
	}
	if o.HourRetention == 0 {
		o.HourRetention = 90 * 24 * time.Hour
	}
	if o.GapTimeout == 0 {
		o.GapTimeout = 2 * time.Minute
	}
	if o.RetireAfter == 0 {
		o.RetireAfter = time.Hour
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = 10 * time.Second
	}
	if o.ForgetAfter == 0 {
		o.ForgetAfter = 7 * 24 * time.Hour
	}
	if o.BlockCacheBytes == 0 {
		o.BlockCacheBytes = 32 << 20
	}
	if o.Partitions == 0 {
		o.Partitions = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports every bad field.
func (o *StoreOptions) Validate() error {
	var errs []error
	if o.Dir == "" && o.FS == nil {
		errs = append(errs, errors.New("collector store: Dir is required"))
	}
	if o.BreakdownLimit < 0 || (o.BreakdownLimit > 0 && o.BreakdownLimit < 2) {
		errs = append(errs, fmt.Errorf("collector store: BreakdownLimit %d must be at least 2", o.BreakdownLimit))
	}
	if o.MinuteRetention < 0 || o.HourRetention < 0 || o.GapTimeout < 0 || o.BlockCacheBytes < 0 ||
		o.RetireAfter < 0 || o.StaleAfter < 0 || o.ForgetAfter < 0 {
		errs = append(errs, errors.New("collector store: durations and BlockCacheBytes must not be negative"))
	}
	if err := checkPartition(o.Partition, o.Partitions); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// edgeState is what the collector knows of one edge.
type edgeState struct {
	through int64 // flush-through mark, Unix ms; the newest of its instances
	dropped uint64
}

// Store holds the rollups in a Pebble store of its own. Apply merges
// click batches; the queries read it concurrently.
type Store struct {
	db  *pebble.DB
	o   StoreOptions
	log *slog.Logger

	// mu serialises the writers' preparing (PrepareClicks, Prune) and
	// guards the prepared state below: what the groups prepared so far
	// (committed or not) leave.
	mu        sync.Mutex
	seqs      map[string]uint64    // seqKey -> last applied seq
	gaps      map[string]time.Time // seqKey -> when a gap after it was first seen
	prepEdges map[string]edgeState // edge name -> state
	prepared  uint64               // groups prepared
	// cmu serialises the commits of prepared groups and guards the
	// committed state: committed (groups committed) and cseqs (seqKey ->
	// last committed seq).
	cmu       sync.Mutex
	committed uint64
	cseqs     map[string]uint64
	// broken is set when a commit failed or came out of order: the
	// prepared state is ahead of the disk (see PrepareClicks).
	broken atomic.Pointer[brokenErr]
	// emu guards edges, the committed marks, so queries read them
	// without waiting for a commit.
	emu   sync.RWMutex
	edges map[string]edgeState // edge name -> state
	// closed is set by Close, under mu.
	closed bool
	rmu    sync.RWMutex // held for reading by queries, for writing by Close

	// feed lists the codes each commit counted clicks of (Clicked).
	feed *clickFeed

	// watchers of Watch, by code.
	wmu      sync.Mutex
	watchers map[string]map[chan struct{}]struct{}

	mClicks, mBots, mBatches, mEmpty, mDuplicates *metrics.Counter
	mRetries, mGaps, mGapBatches, mDropped        *metrics.Counter
	mPrepareDur, mCommitDur, mGroup               *metrics.Histogram
}

// OpenStore opens (creating if needed) the rollup store and loads the
// applied sequences and edge marks.
func OpenStore(opts StoreOptions) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	// Commits write merge operands (newMerger), never reading the stored
	// values, so ingest costs no random reads. The point reads left
	// (totals for max_visits and the live stream) skip the levels that do
	// not hold the key with a 10-bit bloom filter per level.
	popts := &pebble.Options{
		FS:                          o.FS,
		Merger:                      newMerger(o.BreakdownLimit),
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       1000,
		LBaseMaxBytes:               128 << 20,
	}
	for i := range popts.Levels {
		popts.Levels[i].BlockSize = 32 << 10
	}
	// Pebble's informational lines at debug: the collector flushes often.
	sh := pebbledb.Shared{Logger: o.Logger, InfoLevel: slog.LevelDebug, CacheBytes: o.BlockCacheBytes}
	db, err := pebbledb.Open(o.Dir, popts, sh)
	if adoptSetOnlyStore(popts.FS, o.Dir, err) {
		db, err = pebbledb.Open(o.Dir, popts, sh)
	}
	if err != nil {
		return nil, fmt.Errorf("open collector store: %w", err)
	}
	s := &Store{
		db: db, o: o, log: o.Logger,
		seqs:      map[string]uint64{},
		cseqs:     map[string]uint64{},
		gaps:      map[string]time.Time{},
		edges:     map[string]edgeState{},
		prepEdges: map[string]edgeState{},
		watchers:  map[string]map[chan struct{}]struct{}{},
		feed:      newClickFeed(),
	}
	if err := s.checkPartition(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if err := s.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("open collector store: %w", err), db.Close())
	}
	s.registerMetrics()
	return s, nil
}

// ErrPartitionMismatch is a store opened as another partition than the
// one it holds: its rollups are another set of codes.
var ErrPartitionMismatch = errors.New("collector store holds another partition")

// checkPartition records the store's partition on first use and refuses
// a store that holds another one.
func (s *Store) checkPartition() error {
	want := partitionName(s.o.Partition, s.o.Partitions)
	v, closer, err := s.db.Get([]byte{pfxPart})
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return s.db.Set([]byte{pfxPart}, []byte(want), pebble.Sync)
	case err != nil:
		return fmt.Errorf("open collector store: %w", err)
	}
	defer closer.Close()
	if string(v) != want {
		return fmt.Errorf("open collector store %s: %w: it holds partition %s, configured as %s", s.o.Dir, ErrPartitionMismatch, v, want)
	}
	return nil
}

func (s *Store) load() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxSeq}, UpperBound: []byte{pfxSeq + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, n := binary.Uvarint(it.Value())
		if n <= 0 {
			_ = it.Close()
			return fmt.Errorf("bad seq under %q", it.Key())
		}
		s.seqs[string(it.Key())] = v
		s.cseqs[string(it.Key())] = v
	}
	if err := it.Close(); err != nil {
		return err
	}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxEdge}, UpperBound: []byte{pfxEdge + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		es, err := decodeEdge(it.Value())
		if err != nil {
			return fmt.Errorf("edge %q: %w", it.Key()[1:], err)
		}
		s.edges[string(it.Key()[1:])] = es
		s.prepEdges[string(it.Key()[1:])] = es
	}
	return it.Error()
}

func (e edgeState) encode() []byte {
	b := binary.AppendVarint(nil, e.through)
	return binary.AppendUvarint(b, e.dropped)
}

func decodeEdge(b []byte) (edgeState, error) {
	t, n := binary.Varint(b)
	if n <= 0 {
		return edgeState{}, errBadRollup
	}
	d, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return edgeState{}, errBadRollup
	}
	return edgeState{through: t, dropped: d}, nil
}

func (s *Store) registerMetrics() {
	set := s.o.Metrics
	s.mClicks = set.GetOrCreateCounter("linkpop_collector_clicks_total")
	s.mBots = set.GetOrCreateCounter("linkpop_collector_bots_total")
	s.mBatches = set.GetOrCreateCounter("linkpop_collector_batches_total")
	s.mEmpty = set.GetOrCreateCounter("linkpop_collector_empty_batches_total")
	s.mDuplicates = set.GetOrCreateCounter("linkpop_collector_duplicates_refused_total")
	s.mRetries = set.GetOrCreateCounter("linkpop_collector_gap_retries_total")
	s.mGaps = set.GetOrCreateCounter("linkpop_collector_gaps_total")
	s.mGapBatches = set.GetOrCreateCounter("linkpop_collector_gap_batches_lost_total")
	s.mDropped = set.GetOrCreateCounter("linkpop_collector_edge_dropped_total")
	s.mPrepareDur = set.GetOrCreateHistogram("linkpop_collector_prepare_duration_seconds")
	s.mCommitDur = set.GetOrCreateHistogram("linkpop_collector_commit_duration_seconds")
	s.mGroup = set.GetOrCreateHistogram("linkpop_collector_commit_batches")
	set.NewGauge("linkpop_collector_store_bytes", func() float64 {
		s.rmu.RLock()
		defer s.rmu.RUnlock()
		if s.closed {
			return 0
		}
		return float64(s.db.Metrics().DiskSpaceUsage())
	})
}

// Close closes the store. Queries and Apply after it return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}

// delta is one group commit being summed: the LinkMinutes of its
// applied batches, each with the edge that shipped it. writeDelta sorts
// them once by code and minute and writes every key of the group once,
// as one merge operand, however many clicks and batches touched it (a
// viral link costs three rollup operands per commit, not one per click).
type delta struct {
	entries []entry
	// values holds the stored rollups of single entries (delta.single).
	values []byte
	// touched are the codes of the group, clicked those with clicks (for
	// the watchers and the feed); set by writeDelta.
	touched, clicked []string
	kbuf, vbuf       []byte
	now              time.Time
}

// entry is one LinkMinute of a group.
type entry struct {
	lm   *linkpb.LinkMinute
	edge string
	// Its stored rollup alone, once built: values[off:end] (end 0: it
	// must be summed).
	off, end int
	built    bool
}

// newDelta returns an empty delta sized for msgs.
func newDelta(msgs []replication.ClickMsg, now time.Time) *delta {
	n := 0
	for _, m := range msgs {
		n += len(m.Batch.Links)
	}
	// About 100 bytes per single entry's rollup (values), one growth at
	// most for the rest.
	return &delta{entries: make([]entry, 0, n), values: make([]byte, 0, 128*n), now: now}
}

// ApplyClicks merges a group of click batches in one synced Pebble batch,
// together with the last applied sequence of every edge instance they
// came from, and sets each message's verdict: applied, duplicate (its
// seq is at most the instance's last applied one: acknowledge, count
// nothing), or retry (it follows a gap younger than GapTimeout: send it
// back). It implements replication.ClickApplier; it is PrepareClicks
// and the commit it returns.
func (s *Store) ApplyClicks(msgs []replication.ClickMsg) error {
	commit, err := s.PrepareClicks(msgs)
	if err != nil {
		return err
	}
	return commit()
}

// PrepareClicks is the first half of ApplyClicks: it sets the verdicts
// and sums the group into its Pebble batch, and returns the commit (the
// synced write, then the new state published to the queries). It
// implements replication.ClickPreparer, so the consumer decodes and
// prepares the next group while this one commits.
//
// Verdicts are decided against the groups prepared before, committed or
// not, so every prepared commit must be called, in the order of the
// prepares. One that fails, or comes out of order, breaks the store:
// every later prepare and commit returns the error, and nothing it
// prepared is acknowledged (the store must be reopened, which reads the
// sequences from disk again).
func (s *Store) PrepareClicks(msgs []replication.ClickMsg) (commit func() error, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if b := s.broken.Load(); b != nil {
		return nil, b.err
	}
	start := time.Now()
	now := s.o.Now()
	// Consecutive batches of one instance in seq order, so a group that
	// holds a gap and the batch that fills it applies both.
	order := make([]int, len(msgs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		x, y := msgs[a].Batch, msgs[b].Batch
		if c := strings.Compare(x.Edge, y.Edge); c != 0 {
			return c
		}
		if c := strings.Compare(x.Instance, y.Instance); c != 0 {
			return c
		}
		switch {
		case x.Seq < y.Seq:
			return -1
		case x.Seq > y.Seq:
			return 1
		}
		return 0
	})
	g := &group{s: s, seqs: map[string]uint64{}, edges: map[string]edgeState{}, msgs: len(msgs)}
	d := newDelta(msgs, now)
	waiting := map[string]bool{} // instances with a batch sent back
	for _, i := range order {
		m := &msgs[i]
		b := m.Batch
		sk := string(seqKey(b.Edge, b.Instance))
		last, ok := g.seqs[sk]
		if !ok {
			last = s.seqs[sk]
		}
		switch {
		case b.Seq <= last:
			m.Verdict = replication.ClickDuplicate
			g.dups++
			continue
		case b.Seq > last+1:
			first, seen := s.gaps[sk]
			if !seen {
				s.gaps[sk] = now
				first = now
			}
			if now.Sub(first) < s.o.GapTimeout {
				m.Verdict = replication.ClickRetry
				g.retries++
				waiting[sk] = true
				continue
			}
			g.gaps = append(g.gaps, sk)
			s.mGapBatches.Add(int(b.Seq - last - 1))
			s.log.Error("click batches missing: accepting the batch after a gap that outlived the gap timeout",
				"edge", b.Edge, "instance", b.Instance, "last_applied", last, "seq", b.Seq, "lost_batches", b.Seq-last-1)
		}
		m.Verdict = replication.ClickApplied
		g.seqs[sk] = b.Seq
		g.applied++
		es, ok := g.edges[b.Edge]
		if !ok {
			es = s.prepEdges[b.Edge]
		}
		es.through = max(es.through, b.ThroughUnixMs)
		es.dropped += b.Dropped
		g.dropped += b.Dropped
		g.edges[b.Edge] = es
		if len(b.Links) == 0 {
			g.empty++
		}
		for _, lm := range b.Links {
			if s.o.Partitions > 1 && PartitionOf(lm.Code, s.o.Partitions) != s.o.Partition {
				continue // another collector's code
			}
			g.clicks += lm.Clicks
			g.bots += lm.Bots
			d.addMinute(b.Edge, lm)
		}
	}
	if g.applied > 0 {
		g.wb = s.db.NewBatchWithSize(batchSizeHint(len(d.entries)))
		if err := s.writeDelta(g.wb, d); err != nil {
			g.wb.Close()
			return nil, err
		}
		var buf []byte
		for sk, seq := range g.seqs {
			buf = binary.AppendUvarint(buf[:0], seq)
			if err := g.wb.Set([]byte(sk), buf, nil); err != nil {
				g.wb.Close()
				return nil, err
			}
		}
		for name, es := range g.edges {
			if err := g.wb.Set(edgeKey(name), es.encode(), nil); err != nil {
				g.wb.Close()
				return nil, err
			}
		}
	}
	// The prepared state: what the next group is decided against.
	for sk, seq := range g.seqs {
		s.seqs[sk] = seq
		if !waiting[sk] {
			delete(s.gaps, sk)
		}
	}
	for name, es := range g.edges {
		s.prepEdges[name] = es
	}
	for _, sk := range g.gaps {
		delete(s.gaps, sk)
	}
	g.touched, g.clicked = d.touched, d.clicked
	s.prepared++
	g.n = s.prepared
	s.mPrepareDur.Update(time.Since(start).Seconds())
	return g.commit, nil
}

// group is one prepared group commit.
type group struct {
	s     *Store
	n     uint64        // its place in the order of prepares
	wb    *pebble.Batch // nil: nothing applied
	seqs  map[string]uint64
	edges map[string]edgeState
	gaps  []string
	// touched and clicked: the codes the group counted clicks or bots
	// of, and clicks of.
	touched, clicked []string
	msgs             int

	clicks, bots, applied, empty, dups, retries, dropped uint64
}

// brokenErr is why the store refuses to prepare and commit (see
// PrepareClicks).
type brokenErr struct{ err error }

// commit writes the group (synced) and publishes it: the committed
// sequences, the edges' marks, the metrics, the watchers and the feed.
func (g *group) commit() error {
	s := g.s
	s.cmu.Lock()
	defer s.cmu.Unlock()
	start := time.Now()
	if g.wb != nil {
		defer g.wb.Close()
	}
	if b := s.broken.Load(); b != nil {
		return b.err
	}
	if g.n != s.committed+1 {
		err := fmt.Errorf("collector: commit %d of the prepared groups after %d: out of order", g.n, s.committed)
		s.broken.Store(&brokenErr{err})
		return err
	}
	if g.wb != nil {
		s.rmu.RLock()
		err := ErrClosed
		if !s.closed {
			err = g.wb.Commit(pebble.Sync)
		}
		s.rmu.RUnlock()
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				err = fmt.Errorf("commit clicks: %w", err)
			}
			s.broken.Store(&brokenErr{err})
			return err
		}
	}
	s.committed = g.n
	for sk, seq := range g.seqs {
		s.cseqs[sk] = seq
	}
	if len(g.edges) > 0 {
		s.emu.Lock()
		for name, es := range g.edges {
			s.edges[name] = es
		}
		s.emu.Unlock()
	}
	s.mGaps.Add(len(g.gaps))
	s.mBatches.Add(int(g.applied))
	s.mEmpty.Add(int(g.empty))
	s.mDuplicates.Add(int(g.dups))
	s.mRetries.Add(int(g.retries))
	s.mClicks.AddInt64(int64(g.clicks))
	s.mBots.AddInt64(int64(g.bots))
	s.mDropped.AddInt64(int64(g.dropped))
	s.mGroup.Update(float64(g.msgs))
	s.mCommitDur.Update(time.Since(start).Seconds())
	s.notify(g.touched)
	s.feed.add(g.clicked)
	return nil
}

// batchSizeHint is the initial size of the Pebble batch of a group of
// entries LinkMinutes: about 7 keys each (three rollups, three index
// entries, the total), so the batch does not grow by copying itself.
func batchSizeHint(entries int) int { return min(64<<10+entries*512, 64<<20) }

// addMinute adds one LinkMinute of a batch from edge to the delta.
func (d *delta) addMinute(edge string, lm *linkpb.LinkMinute) {
	d.entries = append(d.entries, entry{lm: lm, edge: edge})
}

// single returns the stored rollup of e alone (encodeMinute), or nil if
// it must be summed as a rollup to be bounded. It is encoded once, for
// the three levels: under spread traffic the rollup of nearly every
// key is one LinkMinute, the same at every level.
func (d *delta) single(e *entry, limit int) []byte {
	if !e.built {
		e.built = true
		var sk []byte
		var est uint64
		if len(e.lm.Visitors) > 0 {
			h := newSketch()
			for _, v := range e.lm.Visitors {
				h.InsertHash(v)
			}
			est = h.Estimate()
			b, err := h.MarshalBinary()
			if err != nil {
				panic(err) // a sketch of a valid precision always encodes
			}
			sk = b
		}
		off := len(d.values)
		var ok bool
		if d.values, ok = encodeMinute(d.values, e.lm, e.edge, sk, est, limit); ok {
			e.off, e.end = off, len(d.values)
		}
	}
	if e.end == 0 {
		return nil
	}
	return d.values[e.off:e.end]
}

// add adds one LinkMinute from edge.
func (r *rollup) add(lm *linkpb.LinkMinute, edge string) {
	r.clicks += lm.Clicks
	r.bots += lm.Bots
	if len(lm.Visitors) > 0 {
		if r.hll == nil {
			r.hll = newSketch()
		}
		for _, v := range lm.Visitors {
			r.hll.InsertHash(v)
		}
	}
	for dim, kcs := range minuteDims(lm) {
		for _, kc := range kcs {
			r.addDim(dim, dimKey(dim, kc.Key), kc.Count)
		}
	}
	if lm.Clicks > 0 {
		r.addDim(dimEdges, edge, lm.Clicks)
	}
}

// minuteDims are a LinkMinute's breakdowns in the rollup's dimension
// order (all but dimEdges).
func minuteDims(lm *linkpb.LinkMinute) [dimEdges][]*linkpb.KeyCount {
	return [...][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os}
}

// dimKey is the stored key of a breakdown entry: an unknown country is
// UnknownCountry.
func dimKey(dim int, key string) string {
	if dim == dimCountries && key == "" {
		return UnknownCountry
	}
	return key
}

// encodeMinute appends to dst the stored rollup of one LinkMinute from
// edge with its encoded sketch sk (nil: no visitors) and estimate est, as
// rollup.encode would write it after rollup.add (a key listed twice is
// summed when read). ok is false if a breakdown has more than limit
// entries: the caller then sums it as a rollup, which bounds it.
func encodeMinute(dst []byte, lm *linkpb.LinkMinute, edge string, sk []byte, est uint64, limit int) (_ []byte, ok bool) {
	dims := minuteDims(lm)
	for _, kcs := range dims {
		if len(kcs) > limit {
			return dst, false
		}
	}
	dst = append(dst, rollupVersion)
	dst = binary.AppendUvarint(dst, lm.Clicks)
	dst = binary.AppendUvarint(dst, lm.Bots)
	dst = binary.AppendUvarint(dst, est)
	dst = binary.AppendUvarint(dst, uint64(len(sk)))
	dst = append(dst, sk...)
	for dim, kcs := range dims {
		dst = binary.AppendUvarint(dst, uint64(len(kcs)))
		for _, kc := range kcs {
			k := dimKey(dim, kc.Key)
			dst = binary.AppendUvarint(dst, uint64(len(k)))
			dst = append(dst, k...)
			dst = binary.AppendUvarint(dst, kc.Count)
		}
	}
	if lm.Clicks > 0 {
		dst = binary.AppendUvarint(dst, 1)
		dst = binary.AppendUvarint(dst, uint64(len(edge)))
		dst = append(dst, edge...)
		dst = binary.AppendUvarint(dst, lm.Clicks)
	} else {
		dst = binary.AppendUvarint(dst, 0)
	}
	return dst, true
}

// retained reports whether a bucket of lvl is within its retention.
func (s *Store) retained(lvl Interval, bucket int64, now time.Time) bool {
	var keep time.Duration
	switch lvl {
	case Minute:
		keep = s.o.MinuteRetention
	case Hour:
		keep = s.o.HourRetention
	default:
		return true
	}
	return time.Unix(bucket, 0).Add(lvl.Duration()).After(now.Add(-keep))
}

// run is the entries d.entries[i:j] of one code that fall in one
// bucket of a level: one rollup key and one index key.
type run struct {
	bucket int64
	i, j   int
	c      counts
}

// writeDelta writes every key of d into wb as a merge operand, in key
// order: the memtable's skiplist inserts a run of ascending keys from
// where the previous one went, instead of searching from the top for
// each (a large group of spread traffic is a hundred thousand keys).
// One sort of the entries by code and minute gives the order of the
// totals and, level by level, of the rollups; the index orders a level's
// rollups by bucket first.
func (s *Store) writeDelta(wb *pebble.Batch, d *delta) error {
	es := d.entries
	slices.SortFunc(es, func(a, b entry) int {
		if c := strings.Compare(a.lm.Code, b.lm.Code); c != 0 {
			return c
		}
		return cmp.Compare(a.lm.MinuteUnix, b.lm.MinuteUnix)
	})
	// Totals: c <code> sorts before g and r.
	for i := 0; i < len(es); {
		code := es[i].lm.Code
		var c counts
		for ; i < len(es) && es[i].lm.Code == code; i++ {
			c.clicks += es[i].lm.Clicks
			c.bots += es[i].lm.Bots
		}
		d.touched = append(d.touched, code)
		if c.clicks > 0 {
			d.clicked = append(d.clicked, code)
		}
		d.kbuf = append(append(d.kbuf[:0], pfxTotal), code...)
		if err := wb.Merge(d.kbuf, c.encode(d.vbuf[:0]), nil); err != nil {
			return err
		}
	}
	// The levels in key order: the level letters sort d < h < m.
	levels := [numLevels]Interval{Day, Hour, Minute}
	var runs [numLevels][]run
	for li, lvl := range levels {
		rs := make([]run, 0, len(es))
		for i := 0; i < len(es); {
			code, bucket := es[i].lm.Code, lvl.floor(es[i].lm.MinuteUnix)
			r := run{bucket: bucket, i: i}
			for ; i < len(es) && es[i].lm.Code == code && lvl.floor(es[i].lm.MinuteUnix) == bucket; i++ {
				r.c.clicks += es[i].lm.Clicks
				r.c.bots += es[i].lm.Bots
			}
			r.j = i
			if s.retained(lvl, bucket, d.now) {
				rs = append(rs, r)
			}
		}
		runs[li] = rs
	}
	// Index: g <level> <bucket> <code>, a level's runs by bucket (stable:
	// by code within one).
	for li, lvl := range levels {
		byBucket := slices.Clone(runs[li])
		slices.SortStableFunc(byBucket, func(a, b run) int { return cmp.Compare(a.bucket, b.bucket) })
		for _, r := range byBucket {
			d.kbuf = indexKey(d.kbuf[:0], lvl, r.bucket, es[r.i].lm.Code)
			if err := wb.Merge(d.kbuf, r.c.encode(d.vbuf[:0]), nil); err != nil {
				return err
			}
		}
	}
	// Rollups: r <level> <code> 0 <bucket>, in the runs' order.
	for li, lvl := range levels {
		for _, r := range runs[li] {
			var v []byte
			if r.j-r.i == 1 {
				v = d.single(&es[r.i], s.o.BreakdownLimit)
			}
			if v == nil {
				sum := &rollup{}
				for k := r.i; k < r.j; k++ {
					sum.add(es[k].lm, es[k].edge)
				}
				sum.bound(s.o.BreakdownLimit)
				var err error
				if d.vbuf, err = sum.encode(d.vbuf[:0]); err != nil {
					return err
				}
				v = d.vbuf
			}
			d.kbuf = rollupKey(d.kbuf[:0], lvl, es[r.i].lm.Code, r.bucket)
			if err := wb.Merge(d.kbuf, v, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// Prune deletes the minute and hour rollups past their retention (and
// their index entries). It returns the number of rollups deleted.
func (s *Store) Prune() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	now := s.o.Now()
	n := 0
	for _, lvl := range []Interval{Minute, Hour} {
		keep := s.o.MinuteRetention
		if lvl == Hour {
			keep = s.o.HourRetention
		}
		// Buckets that end at or before now - keep are gone.
		cut := lvl.floor(now.Add(-keep).Unix()) - int64(lvl.Duration()/time.Second) + 1
		lo := indexKey(nil, lvl, 0, "")
		hi := indexKey(nil, lvl, cut, "")
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return n, err
		}
		wb := s.db.NewBatch()
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			bucket := int64(binary.BigEndian.Uint64(k[2:10]))
			code := string(k[10:])
			_ = wb.Delete(rollupKey(nil, lvl, code, bucket), nil)
			n++
		}
		err = it.Close()
		if err == nil {
			err = wb.DeleteRange(lo, hi, nil)
		}
		if err == nil {
			err = wb.Commit(pebble.NoSync)
		}
		wb.Close()
		if err != nil {
			return n, fmt.Errorf("prune %s rollups: %w", lvl, err)
		}
	}
	return n, nil
}

// Watch returns a channel that receives (without blocking the writer,
// coalesced) after every commit that counted clicks or bots of code, and
// a function that stops the watch.
func (s *Store) Watch(code string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.wmu.Lock()
	m := s.watchers[code]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		s.watchers[code] = m
	}
	m[ch] = struct{}{}
	s.wmu.Unlock()
	return ch, func() {
		s.wmu.Lock()
		delete(s.watchers[code], ch)
		if len(s.watchers[code]) == 0 {
			delete(s.watchers, code)
		}
		s.wmu.Unlock()
	}
}

func (s *Store) notify(codes []string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.watchers) == 0 {
		return
	}
	for _, code := range codes {
		for ch := range s.watchers[code] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// EdgeMark is the collector's view of one edge.
type EdgeMark struct {
	Edge    string
	Through time.Time // every click the edge answered before it is counted
	Dropped uint64    // clicks the edge reported it could not keep
}

// Edges lists the edges the store has applied batches from, by name.
func (s *Store) Edges() []EdgeMark {
	s.emu.RLock()
	defer s.emu.RUnlock()
	out := make([]EdgeMark, 0, len(s.edges))
	for name, es := range s.edges {
		out = append(out, EdgeMark{Edge: name, Through: time.UnixMilli(es.through).UTC(), Dropped: es.dropped})
	}
	slices.SortFunc(out, func(a, b EdgeMark) int { return strings.Compare(a.Edge, b.Edge) })
	return out
}

// LastSeq is the last applied (committed) seq of an edge instance, 0 if
// none.
func (s *Store) LastSeq(edge, instance string) uint64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.cseqs[string(seqKey(edge, instance))]
}

// scan calls fn for every key in [lo, hi) under the read lock.
func (s *Store) scan(lo, hi []byte, fn func(k, v []byte) error) error {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// get reads one key under the read lock; found false if absent.
func (s *Store) get(k []byte, fn func(v []byte) error) (bool, error) {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	return true, fn(v)
}

// DiskBytes is the store's size on disk.
func (s *Store) DiskBytes() uint64 {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed {
		return 0
	}
	return s.db.Metrics().DiskSpaceUsage()
}

// TableBytes is the size of the store's sstables (compressed; without
// the WAL and memtables), after compacting everything when compact is
// set. Benchmarks measure bytes per link-day with it.
func (s *Store) TableBytes(compact bool) (int64, error) {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	if compact {
		if err := s.db.Flush(); err != nil {
			return 0, err
		}
		if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			return 0, err
		}
	}
	return s.db.Metrics().Total().TablesSize, nil
}

// Flush writes the memtable to disk (benchmarks measure bytes on disk).
func (s *Store) Flush() error {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.Flush()
}
