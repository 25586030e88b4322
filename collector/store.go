package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

	// mu serialises writers (Apply, Prune) and guards the state below.
	mu   sync.Mutex
	seqs map[string]uint64    // seqKey -> last applied seq
	gaps map[string]time.Time // seqKey -> when a gap after it was first seen
	// emu guards edges, so queries read the marks without waiting for a
	// commit (Apply holds mu through its fsync).
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
	mCommitDur, mGroup                            *metrics.Histogram
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
		seqs:     map[string]uint64{},
		gaps:     map[string]time.Time{},
		edges:    map[string]edgeState{},
		watchers: map[string]map[chan struct{}]struct{}{},
		feed:     newClickFeed(),
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

// delta accumulates one group commit in memory: every key is summed
// once per group, however many clicks and batches touched it, and
// written as one merge operand (a viral link costs three rollup operands
// per commit, not one per click).
type delta struct {
	rollups map[string]*pendingRollup
	index   map[string]counts
	totals  map[string]counts
	kbuf    []byte
}

// ApplyClicks merges a group of click batches in one synced Pebble batch,
// together with the last applied sequence of every edge instance they
// came from, and sets each message's verdict: applied, duplicate (its
// seq is at most the instance's last applied one: acknowledge, count
// nothing), or retry (it follows a gap younger than GapTimeout: send it
// back). It implements replication.ClickApplier.
func (s *Store) ApplyClicks(msgs []replication.ClickMsg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
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
	seqs := map[string]uint64{}
	edges := map[string]edgeState{}
	d := delta{rollups: map[string]*pendingRollup{}, index: map[string]counts{}, totals: map[string]counts{}}
	var clicks, bots, applied, empty, dups, retries, dropped uint64
	var gaps []string
	waiting := map[string]bool{} // instances with a batch sent back
	for _, i := range order {
		m := &msgs[i]
		b := m.Batch
		sk := string(seqKey(b.Edge, b.Instance))
		last, ok := seqs[sk]
		if !ok {
			last = s.seqs[sk]
		}
		switch {
		case b.Seq <= last:
			m.Verdict = replication.ClickDuplicate
			dups++
			continue
		case b.Seq > last+1:
			first, seen := s.gaps[sk]
			if !seen {
				s.gaps[sk] = now
				first = now
			}
			if now.Sub(first) < s.o.GapTimeout {
				m.Verdict = replication.ClickRetry
				retries++
				waiting[sk] = true
				continue
			}
			gaps = append(gaps, sk)
			s.mGapBatches.Add(int(b.Seq - last - 1))
			s.log.Error("click batches missing: accepting the batch after a gap that outlived the gap timeout",
				"edge", b.Edge, "instance", b.Instance, "last_applied", last, "seq", b.Seq, "lost_batches", b.Seq-last-1)
		}
		m.Verdict = replication.ClickApplied
		seqs[sk] = b.Seq
		applied++
		es, ok := edges[b.Edge]
		if !ok {
			s.emu.RLock()
			es = s.edges[b.Edge]
			s.emu.RUnlock()
		}
		es.through = max(es.through, b.ThroughUnixMs)
		es.dropped += b.Dropped
		dropped += b.Dropped
		edges[b.Edge] = es
		if len(b.Links) == 0 {
			empty++
		}
		for _, lm := range b.Links {
			if s.o.Partitions > 1 && PartitionOf(lm.Code, s.o.Partitions) != s.o.Partition {
				continue // another collector's code
			}
			clicks += lm.Clicks
			bots += lm.Bots
			s.addMinute(&d, b.Edge, lm, now)
		}
	}
	if applied > 0 {
		wb := s.db.NewBatch()
		defer wb.Close()
		if err := s.writeDelta(wb, &d); err != nil {
			return err
		}
		var buf []byte
		for sk, seq := range seqs {
			buf = binary.AppendUvarint(buf[:0], seq)
			if err := wb.Set([]byte(sk), buf, nil); err != nil {
				return err
			}
		}
		for name, es := range edges {
			if err := wb.Set(edgeKey(name), es.encode(), nil); err != nil {
				return err
			}
		}
		if err := wb.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("commit clicks: %w", err)
		}
		for sk, seq := range seqs {
			s.seqs[sk] = seq
			if !waiting[sk] {
				delete(s.gaps, sk)
			}
		}
		s.emu.Lock()
		for name, es := range edges {
			s.edges[name] = es
		}
		s.emu.Unlock()
	}
	for _, sk := range gaps {
		delete(s.gaps, sk)
		s.mGaps.Inc()
	}
	s.mBatches.Add(int(applied))
	s.mEmpty.Add(int(empty))
	s.mDuplicates.Add(int(dups))
	s.mRetries.Add(int(retries))
	s.mClicks.AddInt64(int64(clicks))
	s.mBots.AddInt64(int64(bots))
	s.mDropped.AddInt64(int64(dropped))
	s.mGroup.Update(float64(len(msgs)))
	s.mCommitDur.Update(time.Since(start).Seconds())
	if len(d.totals) > 0 {
		s.notify(d.totals)
		codes := make([]string, 0, len(d.totals))
		for code, c := range d.totals {
			if c.clicks > 0 {
				codes = append(codes, code)
			}
		}
		s.feed.add(codes)
	}
	return nil
}

// addMinute adds one LinkMinute of a batch from edge to the delta, at
// every level whose retention still holds its bucket. A rollup key that
// only this LinkMinute touches in the group (spread traffic: nearly
// every one) is encoded straight from it by writeDelta, with its
// visitors' sketch built once for the three levels; a second
// contribution turns the key into a rollup sum.
func (s *Store) addMinute(d *delta, edge string, lm *linkpb.LinkMinute, now time.Time) {
	var sk *minuteSketch
	for lvl := Minute; lvl < numLevels; lvl++ {
		bucket := lvl.floor(lm.MinuteUnix)
		if !s.retained(lvl, bucket, now) {
			continue
		}
		d.kbuf = rollupKey(d.kbuf[:0], lvl, lm.Code, bucket)
		e, ok := d.rollups[string(d.kbuf)]
		switch {
		case !ok:
			if sk == nil && len(lm.Visitors) > 0 {
				sk = sketchOf(lm.Visitors)
			}
			e = &pendingRollup{lm: lm, edge: edge, sketch: sk}
			d.rollups[string(d.kbuf)] = e
		case e.sum == nil:
			e.sum = &rollup{}
			e.sum.add(e.lm, e.edge)
			e.lm, e.sketch = nil, nil
			fallthrough
		default:
			e.sum.add(lm, edge)
		}
		d.kbuf = indexKey(d.kbuf[:0], lvl, bucket, lm.Code)
		c := d.index[string(d.kbuf)]
		c.clicks += lm.Clicks
		c.bots += lm.Bots
		d.index[string(d.kbuf)] = c
	}
	t := d.totals[lm.Code]
	t.clicks += lm.Clicks
	t.bots += lm.Bots
	d.totals[lm.Code] = t
}

// pendingRollup is one rollup key of a group: a single LinkMinute (lm,
// from edge, with its sketch) or, once a second one came, their sum.
type pendingRollup struct {
	lm     *linkpb.LinkMinute
	edge   string
	sketch *minuteSketch
	sum    *rollup
}

// minuteSketch is the encoded sketch of one LinkMinute's visitors.
type minuteSketch struct {
	enc []byte
	est uint64
}

func sketchOf(visitors []uint64) *minuteSketch {
	sk := newSketch()
	for _, v := range visitors {
		sk.InsertHash(v)
	}
	enc, err := sk.MarshalBinary()
	if err != nil {
		panic(err) // a sketch always marshals
	}
	return &minuteSketch{enc: enc, est: sk.Estimate()}
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
// edge, as rollup.encode would write it after rollup.add (a key listed
// twice is summed when read). ok is false if a breakdown has more than
// limit entries: the caller then sums it as a rollup, which bounds it.
func encodeMinute(dst []byte, lm *linkpb.LinkMinute, edge string, sk *minuteSketch, limit int) (_ []byte, ok bool) {
	dims := minuteDims(lm)
	for _, kcs := range dims {
		if len(kcs) > limit {
			return dst, false
		}
	}
	dst = append(dst, rollupVersion)
	dst = binary.AppendUvarint(dst, lm.Clicks)
	dst = binary.AppendUvarint(dst, lm.Bots)
	if sk == nil {
		dst = binary.AppendUvarint(dst, 0)
		dst = binary.AppendUvarint(dst, 0)
	} else {
		dst = binary.AppendUvarint(dst, sk.est)
		dst = binary.AppendUvarint(dst, uint64(len(sk.enc)))
		dst = append(dst, sk.enc...)
	}
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

// writeDelta writes every key of d into wb as a merge operand, in key
// order: the memtable's skiplist inserts a run of ascending keys from
// where the previous one went, instead of searching from the top for
// each (a large group of spread traffic is a hundred thousand keys).
func (s *Store) writeDelta(wb *pebble.Batch, d *delta) error {
	keys := make([]string, 0, len(d.rollups)+len(d.index)+len(d.totals))
	for k := range d.rollups {
		keys = append(keys, k)
	}
	for k := range d.index {
		keys = append(keys, k)
	}
	for code := range d.totals {
		keys = append(keys, string(totalKey(code)))
	}
	slices.Sort(keys)
	var buf []byte
	var err error
	for _, k := range keys {
		switch k[0] {
		case pfxRollup:
			e := d.rollups[k]
			ok := false
			if e.sum == nil {
				buf, ok = encodeMinute(buf[:0], e.lm, e.edge, e.sketch, s.o.BreakdownLimit)
				if !ok {
					e.sum = &rollup{}
					e.sum.add(e.lm, e.edge)
				}
			}
			if !ok {
				e.sum.bound(s.o.BreakdownLimit)
				if buf, err = e.sum.encode(buf[:0]); err != nil {
					return err
				}
			}
		case pfxIndex:
			buf = d.index[k].encode(buf[:0])
		default:
			buf = d.totals[k[1:]].encode(buf[:0])
		}
		if err := wb.Merge([]byte(k), buf, nil); err != nil {
			return err
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

func (s *Store) notify(codes map[string]counts) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.watchers) == 0 {
		return
	}
	for code := range codes {
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

// LastSeq is the last applied seq of an edge instance, 0 if none.
func (s *Store) LastSeq(edge, instance string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqs[string(seqKey(edge, instance))]
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
