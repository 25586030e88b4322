package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
)

// ErrReplica wraps the errors of Applier.Position and Applier.Apply: the
// replica (the disk) is broken, and Run stops.
var ErrReplica = errors.New("replica")

// ErrSubjectMismatch marks a message whose subject does not name the code
// of the record it carries.
var ErrSubjectMismatch = errors.New("subject does not match the record's code")

// Reasons a consumer session ends, used as context causes and in logs.
var (
	errStalled     = errors.New("stalled: stream is ahead and nothing was applied")
	errStreamReset = errors.New("stream was reset: its sequences restarted")
	errSeqGap      = errors.New("consumer sequence gap")
	errResync      = errors.New("resync requested: replaying the whole stream")
	errReconnected = errors.New("nats reconnected: the server may have lost the consumer")
	errSwitchBack  = errors.New("the primary stream is readable and caught up again: switching back to it")
	errSourceDown  = errors.New("the connection of the stream being read is down")
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Stream names the change stream and its subjects. The defaults are
	// StreamConfig's.
	Stream StreamConfig
	// Applier is the replica the consumer applies the stream to. Required.
	Applier Applier
	// Logger receives rebuilds, stream resets and quarantined messages.
	// The default (nil) discards.
	Logger *slog.Logger
	// Metrics is the set the consumer registers its linkpop_replication_*
	// metrics in. The default (nil) is a new set of its own.
	Metrics *metrics.Set
	// BatchSize is the most messages handed to one Applier.Apply, and
	// the most messages the server sends ahead of the consumer. Messages
	// are received and decoded while the previous batch is applied; what
	// arrived meanwhile forms the next batch, so a lagging consumer (a
	// fresh edge replaying the stream) commits few large batches and a
	// caught-up one applies each message as soon as it arrives. The
	// default is 8192.
	BatchSize int
	// BatchWait is how long the consumer waits to fill a batch once one
	// message is pending. It bounds the latency batching adds. The default
	// is 2ms.
	BatchWait time.Duration
	// StallTimeout: if the stream's last sequence is ahead of the applied
	// position and nothing was applied for this long, the consumer is
	// rebuilt. The default is 5s.
	StallTimeout time.Duration
	// PollInterval is how often the stream's info (last sequence) is
	// fetched to measure lag and detect stalls and stream resets. The
	// default is 1s.
	PollInterval time.Duration
	// MaxUnsynced bounds how long batches applied while the consumer lags
	// may stay not durable (Batch.NoSync): the first batch applied after
	// this long since the last durable one is durable, and so is every
	// batch after which nothing more is pending (the one that catches up,
	// and every batch of a caught-up consumer). Each batch stays atomic
	// and carries the position, so a crash that loses the unsynced tail
	// leaves a consistent replica whose position is where the consumer
	// resumes: the lost messages are read again from the stream. A
	// process crash loses nothing (the data is in the page cache); a
	// power loss loses at most this long of replay. The default is 1s.
	MaxUnsynced time.Duration
	// Heartbeat is the idle heartbeat the server sends on a pull; two
	// missed heartbeats (a restarted server, a lost consumer) rebuild the
	// consumer. At least 500ms. The default is 2s.
	Heartbeat time.Duration
	// Fallback is a connection to the servers of the stream the primary
	// one copies: for an edge in a region that reads its region's mirror
	// (the connection given to NewConsumer), the origin region's servers
	// with the change stream itself. A mirror keeps the stream's
	// sequences, so the consumer resumes on the fallback right after its
	// position. It reads the fallback while the primary cannot be read
	// (its connection is down, or its last session failed) and the
	// fallback's connection is up, and goes back to the primary once that
	// answers, holds at least what was applied, and (a mirror) has heard
	// from its upstream within the last SwitchBackFresh. The stream has
	// the same name on both. The default (nil) reads only the primary.
	Fallback *nats.Conn
	// SwitchBackFresh is how recently a primary mirror must have heard
	// from its upstream for the consumer to leave the fallback for it.
	// The default is 3s.
	SwitchBackFresh time.Duration
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	c.Stream = c.Stream.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	if c.BatchSize == 0 {
		c.BatchSize = 8192
	}
	if c.MaxUnsynced == 0 {
		c.MaxUnsynced = time.Second
	}
	if c.BatchWait == 0 {
		c.BatchWait = 2 * time.Millisecond
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 5 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.SwitchBackFresh == 0 {
		c.SwitchBackFresh = 3 * time.Second
	}
	return c
}

// Validate reports every bad field at once.
func (c *ConsumerConfig) Validate() error {
	var errs []error
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Applier == nil {
		errs = append(errs, errors.New("consumer: Applier is required"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("consumer: BatchSize %d must not be negative", c.BatchSize))
	}
	if c.BatchWait < 0 {
		errs = append(errs, errors.New("consumer: BatchWait must not be negative"))
	}
	if c.MaxUnsynced < 0 {
		errs = append(errs, errors.New("consumer: MaxUnsynced must not be negative"))
	}
	if c.StallTimeout < 0 {
		errs = append(errs, errors.New("consumer: StallTimeout must not be negative"))
	}
	if c.PollInterval < 0 {
		errs = append(errs, errors.New("consumer: PollInterval must not be negative"))
	}
	if c.SwitchBackFresh < 0 {
		errs = append(errs, errors.New("consumer: SwitchBackFresh must not be negative"))
	}
	if c.Heartbeat != 0 && (c.Heartbeat < 500*time.Millisecond || c.Heartbeat > 15*time.Second) {
		errs = append(errs, fmt.Errorf("consumer: Heartbeat %v outside [500ms, 15s]", c.Heartbeat))
	}
	return errors.Join(errs...)
}

// ConsumerStatus is a snapshot of a Consumer's progress.
type ConsumerStatus struct {
	// Applied is the stream sequence of the last applied message: the
	// Applier's position at start, then advancing. It counts only
	// durable batches (see MaxUnsynced): a replica restarted after a
	// crash is at Applied or beyond.
	Applied uint64
	// StreamLast is the last known stream sequence, 0 if the stream was
	// never reached.
	StreamLast uint64
	// LastApplied is the wall time of the last successful Apply, zero if
	// none in this process.
	LastApplied time.Time
	// LastContact is the last time the stream answered (info or message);
	// for a mirror of the stream (a region's), the last time the mirror
	// had heard from its upstream when it answered (see upstream).
	LastContact time.Time
	// Connected reports whether the NATS connection of the stream being
	// read is up.
	Connected bool
	// Fallback reports whether the consumer reads the fallback stream
	// (ConsumerConfig.Fallback) because the primary could not be read.
	Fallback bool
	// Bootstrapped: the replica had a position at start (a restarted edge
	// serves from disk at once), or Applied reached the StreamLast
	// observed at the first contact (a fresh edge finished its replay).
	Bootstrapped bool
	// Lag is StreamLast - Applied, 0 if Applied >= StreamLast.
	Lag uint64
	// Quarantined counts the poison messages seen by this process.
	Quarantined uint64
	// ConsumerRecreations counts the times a server-side consumer that
	// was delivering was replaced by a new one, for any reason: a
	// reconnect (the server may have restarted and lost it), missed
	// heartbeats, a deleted consumer, a sequence gap, a stall. It does not
	// count failed creations while the stream is unreachable.
	ConsumerRecreations uint64
	// Stalls counts the times the watchdog found the stream ahead and
	// nothing applied for StallTimeout, and recreated the consumer.
	Stalls uint64
	// ProvenSeq and ProvenAt are the newest proof of freshness: every
	// message the stream held at ProvenAt (its last sequence was
	// ProvenSeq when asked) is applied. The proof comes from the stream's
	// info, asked at ProvenAt (every PollInterval and at every session
	// start), once Applied has reached the last sequence it answered, so
	// its age is what an edge can guarantee about its staleness. Zero
	// before the first proof.
	ProvenSeq uint64
	ProvenAt  time.Time
}

// CaughtUp reports whether the replica is bootstrapped, at most maxLag
// messages behind, and the stream answered within maxStale.
func (s ConsumerStatus) CaughtUp(maxLag uint64, maxStale time.Duration) bool {
	return s.Bootstrapped && s.Lag <= maxLag && !s.LastContact.IsZero() && time.Since(s.LastContact) <= maxStale
}

// Consumer applies the change stream to an Applier, in order, resuming
// after the Applier's position. It reads through ephemeral, flow
// controlled pull consumers it creates and replaces itself: every
// (re)creation starts at the Applier's stored position + 1, so nothing is
// skipped and nothing applied is downloaded again. A missed heartbeat, a
// consumer deleted on the server or a gap in its sequences rebuilds it; so
// does a reconnect, at once (a restarted server has lost the consumer, and
// waiting for missed heartbeats would idle the replica for seconds), and
// the watchdog when the stream is ahead and nothing is applied for
// StallTimeout.
//
// If the stream was deleted and recreated (its last sequence is behind the
// replica's position, or its creation time changed while this process
// watched it), the Consumer replays it from the start: Applied reads 0
// until the replay applies something, and Applier.Apply receives a Through
// lower than its stored position. A stream recreated while the edge was
// down that already holds more messages than the replica's position is not
// detected; the origin's digests catch that divergence.
//
// Metrics (all prefixed linkpop_replication_): applied_seq,
// stream_last_seq, lag_messages, seconds_since_apply (0 until the first
// apply in this process), connected (gauges); applied_total (messages,
// poison included), batches_total, consumer_recreations_total,
// stalls_total, quarantined_total,
// stream_reset_total, resyncs_total (counters); apply_duration_seconds and
// propagation_seconds (now - Change.CommittedAt, observed once
// bootstrapped, so a replay does not count the data's age) histograms.
// Gauges are refreshed on every apply and every PollInterval.
type Consumer struct {
	cfg ConsumerConfig
	log *slog.Logger
	// primary is the stream read normally, fallback (nil without
	// ConsumerConfig.Fallback) the one read while primary cannot be.
	// onFallback says which one the next and current sessions use;
	// primaryFailed that the last session on primary failed.
	primary, fallback *source
	onFallback        atomic.Bool
	primaryFailed     atomic.Bool
	// aheadOfPrimary: something was applied from the fallback since the
	// primary last held the applied position, so the primary (a mirror
	// catching up) may be behind it without having been reset.
	aheadOfPrimary atomic.Bool

	applied      atomic.Uint64
	streamLast   atomic.Uint64
	lastApplied  atomic.Int64 // unix nanoseconds, 0 = never
	lastContact  atomic.Int64 // unix nanoseconds, 0 = never
	progressAt   atomic.Int64 // unix nanoseconds of the last apply or session start
	bootstrapped atomic.Bool
	quarantined  atomic.Uint64
	recreations  atomic.Uint64
	stalls       atomic.Uint64
	// provenSeq and provenAt (unix nanoseconds) are the newest proof of
	// freshness; proofSeq and proofAt a proof waiting for Applied to
	// reach proofSeq (under mu).
	provenSeq atomic.Uint64
	provenAt  atomic.Int64
	// wake cuts Run's backoff short when the connection comes back.
	wake         chan struct{}
	resetPending atomic.Bool
	// resets counts the sessions that began a replay of a reset stream;
	// the watchdog ignores a reset it saw across one of them.
	resets atomic.Uint64
	// stalePos is the position the last reset replay started from, until
	// something of the new stream is applied.
	stalePos atomic.Uint64
	// resyncPending is set by Resync until a session has rewound the
	// Applier.
	resyncPending atomic.Bool
	// unsynced is the sequence of the last batch applied without sync
	// since the last durable one, 0 if none, and unsyncedPending that
	// batch's Pending. Only the applying goroutine uses them.
	unsynced, unsyncedPending uint64

	mu         sync.Mutex
	bootKnown  bool   // bootTarget was observed
	bootTarget uint64 // StreamLast at the first contact
	proofSeq   uint64
	proofAt    int64
	// slot is the running session, for the watchdog.
	slot sessionSlot

	mApplied      *metrics.Gauge
	mStreamLast   *metrics.Gauge
	mLag          *metrics.Gauge
	mSinceApply   *metrics.Gauge
	mConnected    *metrics.Gauge
	mAppliedTotal *metrics.Counter
	mBatches      *metrics.Counter
	mApplyDur     *metrics.Histogram
	mPropagation  *metrics.Histogram
	mRecreations  *metrics.Counter
	mStalls       *metrics.Counter
	mQuarantined  *metrics.Counter
	mResets       *metrics.Counter
	mResyncs      *metrics.Counter
	mFallback     *metrics.Gauge
	mSwitches     *metrics.Counter
}

// source is one place the stream can be read: a connection and the
// creation time of the stream read there (under Consumer.mu), so that a
// reset is told apart per server: the primary mirror and the fallback
// stream were created at different times.
type source struct {
	name    string // "primary" or "fallback", for logs
	nc      *nats.Conn
	js      jetstream.JetStream
	created time.Time
	// down is when poll first saw nc disconnected while reading this
	// source (unix nanoseconds), 0 if it did not.
	down atomic.Int64
}

// NewConsumer returns a consumer reading the stream over nc. It does not
// touch the server or the Applier until Run.
func NewConsumer(nc *nats.Conn, cfg ConsumerConfig) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("consumer: nil NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg = cfg.withDefaults()
	s := cfg.Metrics
	c := &Consumer{
		cfg:           cfg,
		primary:       &source{name: "primary", nc: nc, js: js},
		log:           cfg.Logger.With("stream", cfg.Stream.Name),
		wake:          make(chan struct{}, 1),
		mApplied:      s.GetOrCreateGauge("linkpop_replication_applied_seq", nil),
		mStreamLast:   s.GetOrCreateGauge("linkpop_replication_stream_last_seq", nil),
		mLag:          s.GetOrCreateGauge("linkpop_replication_lag_messages", nil),
		mSinceApply:   s.GetOrCreateGauge("linkpop_replication_seconds_since_apply", nil),
		mConnected:    s.GetOrCreateGauge("linkpop_replication_connected", nil),
		mAppliedTotal: s.GetOrCreateCounter("linkpop_replication_applied_total"),
		mBatches:      s.GetOrCreateCounter("linkpop_replication_batches_total"),
		mApplyDur:     s.GetOrCreateHistogram("linkpop_replication_apply_duration_seconds"),
		mPropagation:  s.GetOrCreateHistogram("linkpop_replication_propagation_seconds"),
		mRecreations:  s.GetOrCreateCounter("linkpop_replication_consumer_recreations_total"),
		mStalls:       s.GetOrCreateCounter("linkpop_replication_stalls_total"),
		mQuarantined:  s.GetOrCreateCounter("linkpop_replication_quarantined_total"),
		mResets:       s.GetOrCreateCounter("linkpop_replication_stream_reset_total"),
		mResyncs:      s.GetOrCreateCounter("linkpop_replication_resyncs_total"),
		mFallback:     s.GetOrCreateGauge("linkpop_replication_fallback", nil),
		mSwitches:     s.GetOrCreateCounter("linkpop_replication_source_switches_total"),
	}
	if cfg.Fallback != nil {
		fjs, err := jetstream.New(cfg.Fallback)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		c.fallback = &source{name: "fallback", nc: cfg.Fallback, js: fjs}
	}
	return c, nil
}

// Status returns a snapshot of the consumer's progress. It is cheap and
// safe for concurrent use.
func (c *Consumer) Status() ConsumerStatus {
	s := ConsumerStatus{
		Applied:             c.applied.Load(),
		StreamLast:          c.streamLast.Load(),
		LastApplied:         unixTime(c.lastApplied.Load()),
		LastContact:         unixTime(c.lastContact.Load()),
		Connected:           c.current().nc.IsConnected(),
		Fallback:            c.onFallback.Load(),
		Bootstrapped:        c.bootstrapped.Load(),
		Quarantined:         c.quarantined.Load(),
		ConsumerRecreations: c.recreations.Load(),
		Stalls:              c.stalls.Load(),
		ProvenSeq:           c.provenSeq.Load(),
		ProvenAt:            unixTime(c.provenAt.Load()),
	}
	if s.StreamLast > s.Applied {
		s.Lag = s.StreamLast - s.Applied
	}
	return s
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Run applies the stream until ctx is done, then returns nil. NATS and
// JetStream failures never end it: it rebuilds its consumer with backoff,
// forever. It returns an error (wrapping ErrReplica) only when the
// Applier fails. Run stops every goroutine it started before it returns.
// Call it once per Consumer.
func (c *Consumer) Run(ctx context.Context) error {
	pos, err := c.cfg.Applier.Position()
	if err != nil {
		return fmt.Errorf("%w: position: %w", ErrReplica, err)
	}
	c.applied.Store(pos)
	if pos > 0 {
		c.bootstrapped.Store(true)
	}
	c.progressAt.Store(time.Now().UnixNano())
	c.publishGauges()

	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.watch(wctx) })
	for _, src := range []*source{c.primary, c.fallback} {
		if src == nil {
			continue
		}
		reconnected := src.nc.StatusChanged(nats.CONNECTED)
		wg.Go(func() { c.watchReconnects(wctx, src, reconnected) })
		defer src.nc.RemoveStatusListener(reconnected)
	}
	defer func() {
		stopWatch()
		wg.Wait()
	}()

	backoff := minSessionBackoff
	for {
		created, src, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrReplica) {
			return err
		}
		if errors.Is(err, errResync) {
			// Not a failure: the next session rewinds and replays.
			continue
		}
		if errors.Is(err, errSwitchBack) || c.failedOn(src, created, err) {
			// The next session reads the other stream: at once.
			if created {
				c.recreations.Add(1)
				c.mRecreations.Inc()
			}
			backoff = minSessionBackoff
			continue
		}
		if created && errors.Is(err, errReconnected) {
			// The connection is back: resume at once.
			c.recreations.Add(1)
			c.mRecreations.Inc()
			c.log.Info("nats reconnected; recreating the replication consumer", "applied", c.applied.Load())
			backoff = minSessionBackoff
			select {
			case <-c.wake: // this reconnect's wake-up, already acted on
			default:
			}
			continue
		}
		if created {
			c.recreations.Add(1)
			c.mRecreations.Inc()
			c.log.Warn("replication consumer rebuilt", "err", err, "applied", c.applied.Load())
			backoff = minSessionBackoff
		} else {
			c.log.Warn("replication consumer not created, retrying", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.wake:
			// Reconnected while backing off: try now.
			t.Stop()
			backoff = minSessionBackoff
			continue
		case <-t.C:
		}
		if !created {
			backoff = min(2*backoff, maxSessionBackoff)
		}
	}
}

// current is the source the running (or next) session reads.
func (c *Consumer) current() *source {
	if c.fallback != nil && c.onFallback.Load() {
		return c.fallback
	}
	return c.primary
}

// pick chooses the source of the next session: the fallback while the
// primary cannot be read (its connection is down or its last session
// failed) and the fallback's connection is up; back to the primary once
// it is ready again (primaryReady).
func (c *Consumer) pick(ctx context.Context) *source {
	if c.fallback == nil {
		return c.primary
	}
	if c.onFallback.Load() {
		if !c.primaryReady(ctx) {
			return c.fallback
		}
		c.switchTo(false, "the primary stream is readable and caught up")
		return c.primary
	}
	if (c.primaryFailed.Load() || !c.primary.nc.IsConnected()) && c.fallback.nc.IsConnected() {
		c.switchTo(true, "the primary stream cannot be read")
		return c.fallback
	}
	return c.primary
}

func (c *Consumer) switchTo(fallback bool, why string) {
	c.onFallback.Store(fallback)
	c.mSwitches.Inc()
	c.current().down.Store(0)
	if fallback {
		c.aheadOfPrimary.Store(true)
		c.mFallback.Set(1)
		c.log.Warn("reading the fallback stream", "why", why, "applied", c.applied.Load())
	} else {
		c.primaryFailed.Store(false)
		c.mFallback.Set(0)
		c.log.Info("reading the primary stream again", "why", why, "applied", c.applied.Load())
	}
}

// failedOn records that a session on src ended with err (created: after
// its consumer was created) and reports whether the next session reads
// the other source, so Run need not back off.
func (c *Consumer) failedOn(src *source, created bool, err error) (switched bool) {
	if c.fallback == nil || src == nil {
		return false
	}
	if src == c.primary {
		if created && errors.Is(err, errReconnected) {
			return false // the primary is back: read it again
		}
		c.primaryFailed.Store(true)
		return c.fallback.nc.IsConnected()
	}
	if !created || errors.Is(err, errSourceDown) {
		// The fallback cannot be read either: try the primary again.
		c.switchTo(false, "the fallback stream cannot be read")
		return true
	}
	return false
}

// primaryReady reports whether the primary can be read again: its
// connection is up, its stream answers, holds at least what was applied
// (a mirror still catching up would otherwise look like a reset stream),
// and, a mirror, heard from its upstream within SwitchBackFresh.
func (c *Consumer) primaryReady(ctx context.Context) bool {
	if !c.primary.nc.IsConnected() {
		return false
	}
	asked := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	stream, err := c.primary.js.Stream(rctx, c.cfg.Stream.Name)
	cancel()
	if err != nil {
		return false
	}
	info := stream.CachedInfo()
	_, at := upstream(info, asked)
	return info.State.LastSeq >= c.applied.Load() && !at.IsZero() && time.Since(at) <= c.cfg.SwitchBackFresh
}

// session creates one server-side consumer at the Applier's position + 1
// on the source pick chooses and applies what it delivers until it fails,
// the watchdog aborts it or ctx is done. created reports whether the
// consumer was created.
func (c *Consumer) session(ctx context.Context) (created bool, src *source, err error) {
	if c.resyncPending.Swap(false) {
		// The rewind is durable: a restart in the middle of the replay
		// resumes it instead of forgetting it.
		if err := c.cfg.Applier.Apply(Batch{}); err != nil {
			return false, nil, fmt.Errorf("%w: rewind for resync: %w", ErrReplica, err)
		}
		c.mResyncs.Inc()
		c.log.Info("resync: replaying the whole change stream", "applied_before", c.applied.Load())
	}
	pos, err := c.cfg.Applier.Position()
	if err != nil {
		return false, nil, fmt.Errorf("%w: position: %w", ErrReplica, err)
	}
	c.applied.Store(pos)
	src = c.pick(ctx)
	created, err = c.sessionOn(ctx, src, pos)
	if err == nil || created && src == c.primary {
		c.primaryFailed.Store(false)
	}
	return created, src, err
}

func (c *Consumer) sessionOn(ctx context.Context, src *source, pos uint64) (created bool, err error) {
	asked := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	stream, err := src.js.Stream(rctx, c.cfg.Stream.Name)
	cancel()
	if err != nil {
		return false, fmt.Errorf("stream %s (%s): %w", c.cfg.Stream.Name, src.name, err)
	}
	info := stream.CachedInfo()
	last, at := upstream(info, asked)
	c.contactAt(at)
	// stale: pos belongs to a stream that was reset, and nothing of its
	// successor was applied yet (the replay was interrupted).
	stale := pos > 0 && pos == c.stalePos.Load()
	reset := c.observeStream(src, info, pos)
	c.observeUpstream(last)
	reset = c.resetPending.Swap(false) || reset || stale
	if !reset {
		c.offerProof(last, at)
	}

	cc := jetstream.ConsumerConfig{
		Description:       "linkpop edge replica",
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       pos + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		Replicas:          1,
		MemoryStorage:     true,
	}
	if pos == 0 || reset {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverAllPolicy, 0
	}
	if reset && pos > 0 {
		// The stored position means nothing in the new stream: until
		// the replay applies something, Applied is 0.
		c.resets.Add(1)
		c.stalePos.Store(pos)
		c.applied.Store(0)
		if !stale {
			c.mResets.Inc()
			c.log.Error("change stream was reset: its last sequence is behind the replica's position or it was recreated; replaying it from the start",
				"position", pos, "stream_last", info.State.LastSeq, "stream_created", info.Created)
		}
	}
	rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	cons, err := stream.CreateConsumer(rctx, cc)
	cancel()
	if err != nil {
		if reset {
			c.resetPending.Store(true)
		}
		return false, fmt.Errorf("create consumer: %w", err)
	}
	name := cons.CachedInfo().Name
	defer c.deleteConsumer(src, name)

	it, err := cons.Messages(
		jetstream.PullMaxMessagesWithBytesLimit(c.cfg.BatchSize, 8<<20),
		jetstream.PullExpiry(max(30*time.Second, 4*c.cfg.Heartbeat)),
		jetstream.PullHeartbeat(c.cfg.Heartbeat),
		jetstream.WithMessagesErrOnMissingHeartbeat(true),
	)
	if err != nil {
		return true, fmt.Errorf("consumer %s messages: %w", name, err)
	}
	defer it.Stop()

	sctx, abort, end := c.slot.begin(ctx)
	defer end()
	if c.resyncPending.Load() {
		// Resync ran before abort was published: it could not end this
		// session, so the session ends itself.
		abort(errResync)
	}
	c.progressAt.Store(time.Now().UnixNano())
	c.log.Debug("replication consumer created", "source", src.name, "consumer", name, "start_seq", max(cc.OptStartSeq, 1), "applied", pos)

	return true, c.consume(sctx, it)
}

// chunkSize is the most messages the receiving goroutine puts in one
// chunk; the applying goroutine joins the chunks queued while it applied
// into one batch of up to BatchSize.
const chunkSize = 256

// chunk is a run of consecutive messages, decoded, with the number of
// messages the server still had for the consumer after the last one.
type chunk struct {
	b       Batch
	pending uint64
}

// consume applies the messages of it until an error. One goroutine
// receives and decodes messages into chunks (receive); this one joins the
// chunks queued while it applied the previous batch and applies them, so
// the network, the decoding and the Applier's commit overlap.
func (c *Consumer) consume(ctx context.Context, it jetstream.MessagesContext) error {
	chunks := make(chan chunk, c.cfg.BatchSize/min(c.cfg.BatchSize, chunkSize)+1)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg      sync.WaitGroup
		recvErr error
	)
	wg.Go(func() {
		defer close(chunks)
		recvErr = c.receive(rctx, it, chunks)
	})

	var (
		carry    *chunk    // received but not fitting in the last batch
		syncedAt time.Time // last durable Apply of this session
		err      error
	)
	for err == nil {
		var first chunk
		if carry != nil {
			first, carry = *carry, nil
		} else {
			var ok bool
			if first, ok = <-chunks; !ok {
				break
			}
		}
		b, pending := first.b, first.pending
		if q := len(chunks); q > 0 {
			b.Changes = slices.Grow(b.Changes, min(c.cfg.BatchSize, len(b.Changes)+q*chunkSize)-len(b.Changes))
		}
	join:
		for len(b.Changes)+len(b.Poison) < c.cfg.BatchSize {
			select {
			case next, ok := <-chunks:
				if !ok {
					break join
				}
				if len(b.Changes)+len(b.Poison)+len(next.b.Changes)+len(next.b.Poison) > c.cfg.BatchSize {
					carry = &next
					break join
				}
				b.Changes = append(b.Changes, next.b.Changes...)
				b.Poison = append(b.Poison, next.b.Poison...)
				b.Through, pending = next.b.Through, next.pending
			default:
				break join
			}
		}
		// Unsynced only while more is known to follow: the batch that
		// catches up, and so every batch of a caught-up consumer, is
		// durable.
		more := pending > 0 || carry != nil || len(chunks) > 0
		b.NoSync = more && time.Since(syncedAt) < c.cfg.MaxUnsynced
		b.Pending = pending
		if err = c.apply(&b, pending); err == nil && !b.NoSync {
			syncedAt = time.Now()
		}
	}
	// An Apply failed, or receive ended: stop it and let it finish.
	stop()
	for range chunks {
	}
	wg.Wait()
	if err != nil {
		return err
	}
	if err := c.syncApplied(); err != nil {
		return err
	}
	return recvErr
}

// syncApplied makes the batches applied without sync durable, with an
// Apply of no message at the last one's sequence, so that a session never
// ends with Applied behind what the Applier holds.
func (c *Consumer) syncApplied() error {
	through := c.unsynced
	if through == 0 {
		return nil
	}
	// Pending as of the batch it syncs: a session ended mid-replay is
	// still mid-replay.
	if err := c.cfg.Applier.Apply(Batch{Through: through, Pending: c.unsyncedPending}); err != nil {
		return fmt.Errorf("%w: sync through %d: %w", ErrReplica, through, err)
	}
	c.unsynced = 0
	c.applied.Store(through)
	c.stalePos.Store(0)
	c.checkBootstrap()
	c.publishGauges()
	return nil
}

// receive takes the messages of it, decodes them and sends them to out in
// chunks, until an error. A chunk is sent when it is full or when no
// message came for BatchWait.
func (c *Consumer) receive(ctx context.Context, it jetstream.MessagesContext, out chan<- chunk) error {
	var lastCon uint64 // consumer sequence of the last message taken
	prefix := c.cfg.Stream.SubjectPrefix + "."
	size := min(c.cfg.BatchSize, chunkSize)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nextErr(ctx, err)
		}
		var ch chunk
		if err := c.take(&ch.b, msg, prefix, &lastCon, &ch.pending); err != nil {
			return err
		}
		// Room for what the server holds, not for a full chunk: a
		// caught-up consumer receives one message at a time.
		ch.b.Changes = slices.Grow(ch.b.Changes, int(min(uint64(size), ch.pending+1)))
		fill, cancel := context.WithTimeout(ctx, c.cfg.BatchWait)
		var stop error
		for n := 1; n < size; n++ {
			msg, err := it.Next(jetstream.NextContext(fill))
			if err != nil {
				if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
					stop = nextErr(ctx, err)
				}
				break
			}
			if err := c.take(&ch.b, msg, prefix, &lastCon, &ch.pending); err != nil {
				stop = err
				break
			}
		}
		cancel()
		c.contact()
		if ch.b.Through > 0 {
			select {
			case out <- ch:
			case <-ctx.Done():
				return nextErr(ctx, ctx.Err())
			}
		}
		if stop != nil {
			return stop
		}
	}
}

// take adds msg to b, as a change or as poison. A gap in consumer
// sequences means the server lost messages for this consumer: take
// returns errSeqGap without adding msg, and the rebuilt consumer starts
// again after what was applied.
func (c *Consumer) take(b *Batch, msg jetstream.Msg, prefix string, lastCon, pending *uint64) error {
	md, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	if md.Sequence.Consumer != *lastCon+1 {
		return fmt.Errorf("%w: got %d after %d", errSeqGap, md.Sequence.Consumer, *lastCon)
	}
	*lastCon = md.Sequence.Consumer
	seq := md.Sequence.Stream
	b.Through = seq
	*pending = md.NumPending

	subject, data := msg.Subject(), msg.Data()
	if subject == prefix+barrierToken {
		return nil // an origin leader's epoch barrier: nothing to apply
	}
	ch, err := link.UnmarshalChange(data)
	if err == nil {
		if code, ok := strings.CutPrefix(subject, prefix); !ok || code != ch.Record.Code {
			err = fmt.Errorf("%w: subject %q, code %q", ErrSubjectMismatch, subject, ch.Record.Code)
		}
	}
	if err != nil {
		b.Poison = append(b.Poison, Poison{Seq: seq, Subject: subject, Data: data, Err: err})
		return nil
	}
	rec, _ := link.ChangeRecordBytes(data) // nil if the record is not one field
	b.Changes = append(b.Changes, Entry{Seq: seq, Change: ch, Record: rec})
	return nil
}

// apply hands b to the Applier and publishes the progress. pending is the
// number of messages the server still had for this consumer after the
// last one in b.
func (c *Consumer) apply(b *Batch, pending uint64) error {
	start := time.Now()
	if err := c.cfg.Applier.Apply(*b); err != nil {
		return fmt.Errorf("%w: apply through %d: %w", ErrReplica, b.Through, err)
	}
	now := time.Now()
	c.mApplyDur.Update(now.Sub(start).Seconds())
	c.mBatches.Inc()
	c.mAppliedTotal.Add(len(b.Changes) + len(b.Poison))
	for _, p := range b.Poison {
		c.quarantined.Add(1)
		c.mQuarantined.Inc()
		c.log.Error("quarantined poison message", "seq", p.Seq, "subject", p.Subject, "bytes", len(p.Data), "err", p.Err)
	}
	// Propagation is measured once the replay is over: during it,
	// now - CommittedAt is the age of the data, not the delay of the
	// stream.
	if c.bootstrapped.Load() {
		for i := range b.Changes {
			c.mPropagation.Update(now.Sub(b.Changes[i].Change.CommittedAt).Seconds())
		}
	}
	// Applied and the end of a reset replay count only what is durable;
	// a later synced batch, or syncApplied, makes this one durable.
	if b.NoSync {
		c.unsynced, c.unsyncedPending = b.Through, b.Pending
	} else {
		c.unsynced = 0
		c.applied.Store(b.Through)
		c.stalePos.Store(0)
	}
	c.lastApplied.Store(now.UnixNano())
	c.progressAt.Store(now.UnixNano())
	c.offerProof(0, time.Time{})
	if last := b.Through + pending; last > c.streamLast.Load() {
		c.streamLast.Store(last)
	}
	c.checkBootstrap()
	c.publishGauges()
	return nil
}

// offerProof records that the stream's last sequence was last when asked
// at asked (none if asked is zero), and turns the pending proof into the
// proven one once Applied reached its sequence. A pending proof that is
// not reached yet is kept rather than replaced by a newer one, so a
// stream that keeps growing cannot postpone every proof.
func (c *Consumer) offerProof(last uint64, asked time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !asked.IsZero() && (c.proofAt == 0 || c.applied.Load() >= c.proofSeq) {
		c.proofSeq, c.proofAt = last, asked.UnixNano()
	}
	if c.proofAt != 0 && c.applied.Load() >= c.proofSeq {
		if c.proofAt > c.provenAt.Load() {
			c.provenSeq.Store(c.proofSeq)
			c.provenAt.Store(c.proofAt)
		}
		c.proofAt = 0
	}
}

// contact records that the stream answered.
func (c *Consumer) contact() {
	c.contactAt(time.Now())
}

// contactAt records that the stream was known current at t (nothing if t
// is zero); LastContact never goes back.
func (c *Consumer) contactAt(t time.Time) {
	if t.IsZero() {
		return
	}
	ns := t.UnixNano()
	for {
		old := c.lastContact.Load()
		if old >= ns || c.lastContact.CompareAndSwap(old, ns) {
			return
		}
	}
}

// upstream reads the stream's info as a statement about the change
// stream the origin writes: its last sequence, and the time at which it
// was that. For the change stream itself that is its last sequence when
// asked. For a mirror of it (a region's local copy, see EnsureRegion)
// the mirror knows the upstream only as of its last contact with it,
// Mirror.Active before it was asked, and was Mirror.Lag messages behind
// it then (mirrors keep the upstream's sequences): so the upstream's last
// sequence was at least LastSeq+Lag at asked-Active, and a mirror never
// in contact (Active < 0) gives no time at all. An edge reading a mirror
// cut off from the origin's region thus reports itself stale and loses
// its proof of freshness, though the mirror itself answers. The mirror
// updates Lag with each message it receives, so right after a heal (its
// upstream consumer recreated, nothing received yet) it may for a moment
// still show the Lag of before the cut: the proof is as exact as the
// mirror's own view.
func upstream(info *jetstream.StreamInfo, asked time.Time) (last uint64, at time.Time) {
	last = info.State.LastSeq
	m := info.Mirror
	if m == nil {
		return last, asked
	}
	last += m.Lag
	if m.Active < 0 {
		return last, time.Time{}
	}
	return last, asked.Add(-m.Active)
}

// observeUpstream raises StreamLast to the upstream's last sequence when
// the stream read is a mirror that lags it (see upstream).
func (c *Consumer) observeUpstream(last uint64) {
	for {
		old := c.streamLast.Load()
		if old >= last || c.streamLast.CompareAndSwap(old, last) {
			return
		}
	}
}

// observeStream records the stream's state and reports whether the stream
// was reset relative to applied: its last sequence is behind a position
// the replica reached before info was requested, or it is a different
// stream (another creation time) than the one read so far.
func (c *Consumer) observeStream(src *source, info *jetstream.StreamInfo, applied uint64) (reset bool) {
	last := info.State.LastSeq
	c.streamLast.Store(last)
	c.mu.Lock()
	behind := last < applied
	if src == c.primary && c.aheadOfPrimary.Load() {
		// Not a reset: a mirror still catching up to what the fallback
		// delivered. Its consumer starts past its last sequence and
		// waits for the mirror to get there.
		behind = false
		if last >= applied {
			c.aheadOfPrimary.Store(false)
		}
	}
	reset = behind || (!src.created.IsZero() && !info.Created.Equal(src.created))
	src.created = info.Created
	if !c.bootKnown || reset {
		// A fresh replica is bootstrapped once it applied what the
		// stream held at the first contact, or at the reset: a
		// recreated stream may never reach the old target.
		c.bootKnown, c.bootTarget = true, last
	}
	c.mu.Unlock()
	c.checkBootstrap()
	c.publishGauges()
	return reset
}

func (c *Consumer) checkBootstrap() {
	if c.bootstrapped.Load() {
		return
	}
	c.mu.Lock()
	known, target := c.bootKnown, c.bootTarget
	c.mu.Unlock()
	if known && c.applied.Load() >= target {
		c.bootstrapped.Store(true)
		c.log.Info("replica bootstrapped", "applied", c.applied.Load())
	}
}

func (c *Consumer) publishGauges() {
	s := c.Status()
	c.mApplied.Set(float64(s.Applied))
	c.mStreamLast.Set(float64(s.StreamLast))
	c.mLag.Set(float64(s.Lag))
	if !s.LastApplied.IsZero() {
		c.mSinceApply.Set(time.Since(s.LastApplied).Seconds())
	}
	if s.Connected {
		c.mConnected.Set(1)
	} else {
		c.mConnected.Set(0)
	}
}

// Resync makes the consumer replay the whole stream, for a replica that
// missed or lost changes: the running session ends, and the next one
// rewinds the Applier to position 0 (an empty Apply, see Applier) before
// it reads the stream from its first message. The revision checks make
// the replay harmless, so a resync is idempotent; while it runs Applied
// and Lag count from 0 as for a fresh replica, but the replica keeps
// serving what it holds. Safe to call at any time, before or during Run.
func (c *Consumer) Resync() {
	c.resyncPending.Store(true)
	c.abortSession(errResync)
}

// abortSession ends the running session with cause. It reports false if
// no session is running (the consumer is being created or backs off).
func (c *Consumer) abortSession(cause error) bool { return c.slot.end(cause) }

// deleteConsumer removes an abandoned consumer from the server, best
// effort: the server drops it by itself after its InactiveThreshold.
func (c *Consumer) deleteConsumer(src *source, name string) {
	if !src.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = src.js.DeleteConsumer(ctx, c.cfg.Stream.Name, name)
}

// watchReconnects ends the running session when src's NATS connection
// comes back while the session reads src, and wakes Run if it is backing
// off, so the consumer is recreated at once on the (possibly restarted)
// server. An extra session end is harmless: the next one starts at the
// Applier's position + 1. The primary coming back while the fallback is
// read ends nothing: poll switches back once the primary is ready.
func (c *Consumer) watchReconnects(ctx context.Context, src *source, ch <-chan nats.Status) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		if c.current() == src {
			c.abortSession(errReconnected)
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// watch refreshes the stream's info every PollInterval. It aborts the
// session when the stream was reset or when the stream is ahead and
// nothing was applied for StallTimeout.
func (c *Consumer) watch(ctx context.Context) {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.poll(ctx)
	}
}

func (c *Consumer) poll(ctx context.Context) {
	defer c.publishGauges()
	resets, applied := c.resets.Load(), c.applied.Load()
	src := c.current()
	if c.fallback != nil {
		other := c.fallback
		if src == c.fallback {
			other = c.primary
			if c.primaryReady(ctx) && c.abortSession(errSwitchBack) {
				return // the next session, on the primary, asks for its info
			}
		}
		if !src.nc.IsConnected() {
			// A pull waits out a lost connection (it neither delivers
			// nor reports missed heartbeats): end the session once the
			// connection stayed down for a poll and the other source's
			// is up, so the next session reads the other.
			now := time.Now().UnixNano()
			src.down.CompareAndSwap(0, now)
			if now-src.down.Load() >= int64(c.cfg.PollInterval) && other.nc.IsConnected() {
				if src == c.primary {
					c.primaryFailed.Store(true)
				}
				c.abortSession(errSourceDown)
			}
			return
		}
		src.down.Store(0)
	}
	asked := time.Now()
	rctx, cancel := context.WithTimeout(ctx, max(c.cfg.PollInterval, 2*time.Second))
	stream, err := src.js.Stream(rctx, c.cfg.Stream.Name)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("stream info", "err", err)
		}
		return
	}
	info := stream.CachedInfo()
	last, at := upstream(info, asked)
	c.contactAt(at)
	// A reset is acted on only if no replay began while info was on its
	// way: applied may have been the old stream's position.
	if c.observeStream(src, info, applied) && applied > 0 && c.resets.Load() == resets {
		c.resetPending.Store(true)
		c.abortSession(errStreamReset)
		return
	}
	c.observeUpstream(last)
	c.offerProof(last, at)
	since := time.Since(unixTime(c.progressAt.Load()))
	if info.State.LastSeq > c.applied.Load() && since >= c.cfg.StallTimeout && c.abortSession(errStalled) {
		c.stalls.Add(1)
		c.mStalls.Inc()
		c.log.Warn("replication stalled, rebuilding the consumer", "applied", c.applied.Load(), "stream_last", info.State.LastSeq, "since_progress", since)
	}
}
