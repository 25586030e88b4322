package clicks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// Publisher sends one encoded click batch to the click stream and waits
// for the stream's ack (replication.ClickPublisher). A batch the stream
// already holds (same edge, instance and seq) must count as acknowledged.
type Publisher interface {
	PublishClicks(ctx context.Context, edge, instance string, seq uint64, data []byte) error
}

// Defaults of ShipperConfig.
const (
	DefaultFlush         = time.Second
	DefaultSpillMaxBytes = 256 << 20
	DefaultDrainTimeout  = 5 * time.Second
)

// ShipperConfig configures a Shipper.
type ShipperConfig struct {
	// Edge names this edge in its batches (link.ValidEdgeName). Required.
	Edge string
	// Dir holds the journal. Required.
	Dir string
	// Recorder is the recorder whose clicks are shipped. Required.
	Recorder *Recorder
	// Publisher publishes batches. Required.
	Publisher Publisher
	// Flush is the interval between two sealed batches: the usual delay
	// before a click ships. The clicks of the interval not sealed are in
	// the click log (DIR/log), so a SIGKILL loses none. The default is 1s.
	Flush time.Duration
	// SpillMaxBytes bounds the journal. A batch that does not fit is
	// shrunk to its counts (no visitors, no breakdowns); if that does not
	// fit either, its clicks are counted as dropped and reported in the
	// next batch that fits. The default is 256 MiB.
	SpillMaxBytes int64
	// DrainTimeout bounds how long Run, once its context is done, keeps
	// publishing what is on disk; what remains ships at the next start.
	// The default is 5s.
	DrainTimeout time.Duration
	// Logger receives operational logs. The default (nil) discards them.
	Logger *slog.Logger
	// Metrics is where the shipper's metrics are registered. The default
	// (nil) is a new set.
	Metrics *metrics.Set

	// maxBatchLen overrides link.MaxClickBatchLen in tests.
	maxBatchLen int
}

// Validate reports every bad field at once.
func (c *ShipperConfig) Validate() error {
	var errs []error
	if !link.ValidEdgeName(c.Edge) {
		errs = append(errs, fmt.Errorf("clicks: edge name %q is not 1-%d bytes of [A-Za-z0-9_-]", c.Edge, link.MaxEdgeNameLen))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("clicks: Dir is required"))
	}
	if c.Recorder == nil {
		errs = append(errs, errors.New("clicks: Recorder is required"))
	}
	if c.Publisher == nil {
		errs = append(errs, errors.New("clicks: Publisher is required"))
	}
	if c.Flush < 0 {
		errs = append(errs, errors.New("clicks: Flush must not be negative"))
	}
	if c.SpillMaxBytes < 0 {
		errs = append(errs, errors.New("clicks: SpillMaxBytes must not be negative"))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("clicks: DrainTimeout must not be negative"))
	}
	return errors.Join(errs...)
}

// Shipper seals the recorder's aggregates every flush interval into a
// batch, journals it and publishes the journal in order.
type Shipper struct {
	cfg ShipperConfig
	log *slog.Logger
	rec *Recorder
	j   *journal
	b   *builder
	met shipperMetrics

	spares     []*agg
	olds       []*agg
	enc, enc2  batchEnc  // a seal's LinkMinutes; their counts only
	out        [][]byte  // the batches of the last encode
	clicks     []uint64  // their clicks
	cl         *clickLog // nil: the logs are on the heap
	forgetNext bool
	through    int64 // through mark of the last sealed batch
	ran        bool
	pause      func(time.Duration) // a paced seal's pause: nil, a timer (tests count them)
	lastPacer  *pacer              // the last paced seal's (tests)
	mu         sync.Mutex          // serialises seal (Run's sealer and Seal)
}

type shipperMetrics struct {
	recorded, dropped, detailDropped, shipped, spilled *metrics.Counter
	published, publishedBytes, publishErrors, reduced  *metrics.Counter
	restored                                           *metrics.Counter
	sealDur                                            *metrics.Histogram
}

// NewShipper opens the journal. Nothing runs until Run.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Flush == 0 {
		cfg.Flush = DefaultFlush
	}
	if cfg.SpillMaxBytes == 0 {
		cfg.SpillMaxBytes = DefaultSpillMaxBytes
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.maxBatchLen == 0 {
		cfg.maxBatchLen = link.MaxClickBatchLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	j, err := openJournal(cfg.Dir, cfg.Edge, cfg.SpillMaxBytes)
	if err != nil {
		return nil, err
	}
	for _, name := range j.corrupt {
		cfg.Logger.Error("click journal: undecodable batch set aside", "file", name+".corrupt")
	}
	s := &Shipper{cfg: cfg, log: cfg.Logger, rec: cfg.Recorder, j: j, b: newBuilder(), through: time.Now().UnixMilli()}
	rec := cfg.Recorder
	n := len(rec.shards)
	for range n {
		s.spares = append(s.spares, newAgg())
	}
	s.olds = make([]*agg, n)
	set := cfg.Metrics
	s.met = shipperMetrics{
		recorded:      set.NewCounter("linkpop_edge_clicks_recorded_total"),
		dropped:       set.NewCounter("linkpop_edge_clicks_dropped_total"),
		detailDropped: set.NewCounter("linkpop_edge_clicks_detail_dropped_total"),
		shipped:       set.NewCounter("linkpop_edge_clicks_shipped_total"),
		spilled:       set.NewCounter("linkpop_edge_clicks_spilled_total"),
		published:     set.NewCounter("linkpop_edge_click_batches_published_total"),
		// The encoded batches' bytes: over shipped, the bytes a click
		// costs on the wire (NATS headers and framing not included).
		publishedBytes: set.NewCounter("linkpop_edge_click_batch_bytes_published_total"),
		publishErrors:  set.NewCounter("linkpop_edge_click_publish_errors_total"),
		reduced:        set.NewCounter("linkpop_edge_click_batches_reduced_total"),
		// Clicks found in the log at start that no batch held: recorded
		// before a crash, shipped in the first seal.
		restored: set.NewCounter("linkpop_edge_clicks_restored_total"),
		// How long a seal takes, from the swap of the shards to the
		// batch journaled: the edge's part of click → visible after
		// the flush interval (publishing follows).
		sealDur: set.NewHistogram("linkpop_edge_click_seal_duration_seconds"),
	}
	set.NewGauge("linkpop_edge_clicks_spill_bytes", func() float64 { _, b, _ := j.state(); return float64(b) })
	set.NewGauge("linkpop_edge_clicks_spill_batches", func() float64 { n, _, _ := j.state(); return float64(n) })
	set.NewGauge("linkpop_edge_clicks_shipping_lag_seconds", func() float64 { return s.State().Lag.Seconds() })
	cl, lost, err := openClickLog(cfg.Dir, 2*n, rec.logBytes, j)
	if err != nil {
		cfg.Logger.Warn("click log not mapped: a crash loses the clicks of the interval not sealed", "err", err)
	} else {
		s.cl = cl
		for i := range rec.shards {
			cl.arm(s.spares[i], &cl.regions[n+i])
			sh := &rec.shards[i]
			sh.mu.Lock()
			heap, tag := sh.cur.log, sh.cur.tag
			cl.arm(sh.cur, &cl.regions[i])
			adopt(sh.cur, heap, tag)
			sh.mu.Unlock()
		}
	}
	if len(lost) > 0 {
		k := rec.restore(lost)
		cfg.Logger.Info("click log: clicks of the last run not sealed before it ended, recorded again", "clicks", k)
		s.met.restored.Add(k)
	}
	return s, nil
}

// Instance is the journal's instance id.
func (s *Shipper) Instance() string { return s.j.instance }

// State is what the journal holds.
type State struct {
	Edge, Instance string
	PendingBatches int
	PendingBytes   int64
	// Lag is the age of the oldest pending batch (0 when none).
	Lag time.Duration
}

// State reports the journal's state.
func (s *Shipper) State() State {
	n, b, oldest := s.j.state()
	st := State{Edge: s.j.edge, Instance: s.j.instance, PendingBatches: n, PendingBytes: b}
	if n > 0 {
		st.Lag = time.Since(oldest)
	}
	return st
}

// Run seals a batch every flush interval and publishes the journal until
// ctx is done; then it seals a last batch (stop recording first: clicks
// recorded after it are not shipped by this run), and publishes for at
// most DrainTimeout. Batches still on disk ship at the next start.
func (s *Shipper) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("clicks: shipper already run")
	}
	s.ran = true
	s.mu.Unlock()

	pubCtx, pubCancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	drained := make(chan struct{})
	wg.Go(func() { s.publishLoop(pubCtx, drained) })

	tick := time.NewTicker(s.cfg.Flush)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if serr := s.seal(true, ctx.Done()); serr != nil {
				s.log.Error("seal click batch", "err", serr)
			}
		}
	}
	if serr := s.Seal(); serr != nil {
		err = fmt.Errorf("seal last click batch: %w", serr)
	}
	close(drained)
	timer := time.AfterFunc(s.cfg.DrainTimeout, pubCancel)
	wg.Wait()
	timer.Stop()
	pubCancel()
	if n, _, _ := s.j.state(); n > 0 {
		s.log.Warn("click batches left on disk for the next start", "batches", n)
	}
	return err
}

// Seal seals the clicks recorded so far into the journal now, as quickly
// as it can. Run seals every flush interval, paced (see pacer), and once
// more, quickly, when it stops; tests call Seal to make batches.
func (s *Shipper) Seal() error { return s.seal(false, nil) }

// sealSpread is the share of the flush interval a paced seal may take:
// an eighth (125 ms of the default second). The seal's time is click →
// visible's, after the interval: under spread traffic filling the edge's
// core, a quarter (250 ms) and the collector's share of a starved core
// took that past 1.9 s of the 2 s target. Within an eighth, a seal of
// 32,000 distinct clicks (about 12 ms of CPU) still takes a tenth of the
// core while it runs, in slices of at most 130 µs (pacer), where a
// quarter took a twentieth.
const sealSpread = 8

// seal seals the clicks recorded so far; paced, in slices with pauses
// between them, spread over at most 1/sealSpread of the flush interval,
// until stop is closed (Run's context is done: the rest at full speed).
func (s *Shipper) seal(paced bool, stop <-chan struct{}) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	defer func() { s.met.sealDur.UpdateDuration(start) }()
	through := time.Now().UnixMilli()
	if through < s.through {
		through = s.through // the clock went back: never lower the mark
	}
	// What the builder knows is bounded: past maxKnownStrings it forgets
	// it before it learns this interval's strings, which every shard kept
	// in this interval's log (each string once per shard and interval), so
	// nothing this seal needs is forgotten.
	if s.forgetNext {
		clear(s.b.uaClass)
		clear(s.b.refStr)
		s.forgetNext = false
	}
	var recorded int
	for i := range s.rec.shards {
		s.olds[i] = s.rec.take(i, s.spares[i])
		recorded += int(s.olds[i].recorded)
	}
	var p *pacer
	if paced {
		// A unit per click added up and per entry encoded: at most two
		// per click.
		p = newPacer(2*recorded, start.Add(s.cfg.Flush/sealSpread), s.pause, stop)
		s.lastPacer = p
	}
	for _, a := range s.olds {
		s.rec.addLog(a, p)
	}
	s.b.learn(s.olds, p)
	st := s.b.gather(s.olds)
	defer func() {
		s.b.aggs = nil
		for i, a := range s.olds {
			if a.reg != nil {
				// Journaled, or counted as dropped: not to be added back.
				a.reg.setDone()
			}
			a.reset()
			if s.cl != nil && a.reg != nil {
				s.cl.arm(a, a.reg) // the next interval but one
			}
			s.spares[i] = a
		}
	}()
	if len(s.b.uaClass)+len(s.b.refStr) > maxKnownStrings {
		s.forgetNext = true
	}
	s.met.recorded.Add(int(st.recorded))
	s.met.dropped.Add(int(st.dropped))
	s.met.detailDropped.Add(int(st.degraded))
	if st.dropped > 0 {
		if err := s.j.addDropped(st.dropped); err != nil {
			return err
		}
	}

	if s.b.entries == 0 && s.j.dropped() == 0 && s.j.backlog() {
		// Nothing to say that the batch after the backlog will not say:
		// do not grow the journal by a batch a second during an outage.
		return nil
	}
	s.enc.reset(s.cfg.maxBatchLen - batchOverhead)
	s.b.encode(&s.enc, p)
	s.enc.flush()
	batches, clicks := s.batches(&s.enc, through)
	if !s.j.fits(int64(size(batches))) {
		s.met.reduced.Inc()
		s.enc2.reset(s.cfg.maxBatchLen - batchOverhead)
		s.b.reduce(&s.enc, &s.enc2)
		s.enc2.flush()
		batches, clicks = s.batches(&s.enc2, through)
		var n uint64
		for _, c := range clicks {
			n += c
		}
		s.met.detailDropped.Add(int(n))
		if !s.j.fits(int64(size(batches))) {
			s.met.dropped.Add(int(n))
			s.log.Warn("click journal full: clicks dropped", "clicks", n, "max_bytes", s.cfg.SpillMaxBytes)
			if err := s.j.addDropped(n); err != nil {
				return err
			}
			return fmt.Errorf("%w: %d clicks dropped", ErrSpillFull, n)
		}
	}
	if s.cl != nil {
		from := s.j.nextSeq()
		for _, a := range s.olds {
			if a.reg != nil {
				a.reg.setRange(from, from+uint64(len(batches))-1)
			}
		}
	}
	if err := s.j.append(batches, clicks, time.UnixMilli(through)); errors.Is(err, errMetaNotSaved) {
		s.through = through
		return err
	} else if err != nil {
		// The batch is not on disk (a full or failing disk): its clicks
		// are lost, so count them.
		var n uint64
		for _, c := range clicks {
			n += c
		}
		s.met.dropped.Add(int(n))
		if derr := s.j.addDropped(n); derr != nil {
			s.log.Error("click journal: dropped count not saved", "clicks", n, "err", derr)
		}
		return err
	}
	s.through = through
	return nil
}

// maxKnownStrings bounds the User-Agents and referrers the shipper keeps
// between intervals; past it they are forgotten and learnt again.
const maxKnownStrings = 200_000

// batches makes the batches of one seal from e's sections, with
// consecutive seqs from the journal's next; only the last carries the new
// through mark and the dropped count (earlier ones carry the previous
// mark). They live in the shipper's buffers until the next call.
func (s *Shipper) batches(e *batchEnc, through int64) ([][]byte, []uint64) {
	n := max(len(e.ends), 1)
	for len(s.out) < n {
		s.out = append(s.out, nil)
	}
	out, clicks := s.out[:n], s.clicks[:0]
	seq := s.j.nextSeq()
	hdr := func(i int) []byte {
		b := linkpb.ClickBatch{Edge: s.j.edge, Instance: s.j.instance, Seq: seq + uint64(i), ThroughUnixMs: s.through}
		if i == n-1 {
			b.ThroughUnixMs, b.Dropped = through, s.j.dropped()
		}
		return link.AppendClickBatch(out[i][:0], &b)
	}
	if len(e.ends) == 0 {
		out[0] = hdr(0)
		clicks = append(clicks, 0)
	}
	i := 0
	e.sections(func(links []byte, c uint64) {
		out[i] = append(hdr(i), links...)
		clicks = append(clicks, c)
		i++
	})
	s.clicks = clicks
	return out, clicks
}

func size(batches [][]byte) int {
	n := 0
	for _, b := range batches {
		n += len(b)
	}
	return n
}

// publishLoop publishes the journal's batches in order, one at a time,
// retrying with a backoff; once drained is closed it returns when the
// journal is empty or ctx is done.
func (s *Shipper) publishLoop(ctx context.Context, drained <-chan struct{}) {
	backoff := time.Duration(0)
	for {
		e := s.j.oldest()
		if e == nil {
			select {
			case <-drained:
				if s.j.oldest() == nil {
					return
				}
				continue
			case <-ctx.Done():
				return
			case <-s.j.notify:
				continue
			}
		}
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		data, err := batchData(e)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			err = s.cfg.Publisher.PublishClicks(pctx, e.edge, e.instance, e.seq, data)
			cancel()
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.met.publishErrors.Inc()
			s.j.markSpilled()
			if backoff == 0 {
				s.log.Warn("publish click batch", "seq", e.seq, "err", err)
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
			continue
		}
		backoff = 0
		if err := s.j.ack(e); err != nil {
			s.log.Error("remove shipped click batch", "seq", e.seq, "err", err)
		}
		s.met.published.Inc()
		s.met.publishedBytes.Add(int(e.size))
		s.met.shipped.Add(int(e.clicks))
		if e.spilled {
			s.met.spilled.Add(int(e.clicks))
		}
	}
}

// publishTimeout bounds one publish.
const publishTimeout = 5 * time.Second
