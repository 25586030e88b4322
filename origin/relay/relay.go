// Package relay moves the origin's outbox into the JetStream change stream:
// it reads committed change events from the store in revision order,
// publishes them with a Nats-Msg-Id derived from code and revision, waits
// for the stream's acks and only then deletes them from the outbox. A
// crash anywhere in that sequence leads to a re-publish, never a loss; the
// stream's dedup window and the edges' revision checks absorb the
// duplicates.
//
// Events are pipelined, yet the stream receives them in revision order,
// enforced by the stream leader: the relay publishes through a
// replication.Chain, so each event expects the stream's last sequence to
// be the one its predecessor landed at (Nats-Expected-Last-Sequence). If
// one fails, every later event in flight is refused instead of landing
// ahead of it; the relay re-reads the stream's tail, skips the entries
// already stored and resumes from the failed one.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultBatchSize  = 512
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
	DefaultAckTimeout = 5 * time.Second
	// idlePoll is how often the relay looks at the outbox without being
	// notified: a safety net, the notification is the fast path.
	idlePoll = time.Second
)

// Config configures a Relay.
type Config struct {
	// Store is the outbox to drain. Required.
	Store *store.Store
	// Publisher appends to the change stream. Required.
	Publisher *replication.Publisher
	// Origin appends the origin outbox (API keys, idempotency records) to
	// the origin stream (replication.OriginStream). Each pass publishes
	// it before the links, so a link event is never in the stream without
	// the idempotency record committed with it. The default (nil) leaves
	// the origin outbox alone.
	Origin *replication.Publisher
	// Logger receives publish failures and recoveries. The default (nil)
	// discards them.
	Logger *slog.Logger
	// Metrics is the set the linkpop_relay_* and linkpop_outbox_* metrics
	// are registered in. The default (nil) is a set of its own.
	Metrics *metrics.Set
	// BatchSize is how many outbox entries one pass reads; they are
	// published as a pipelined window. The default is 512.
	BatchSize int
	// MinBackoff and MaxBackoff bound the exponential pause between
	// passes while publishing fails. The defaults are 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// AckTimeout bounds the wait for one pass's acks (and for
	// EnsureStream after a failure). The default is 5s.
	AckTimeout time.Duration
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store: required"))
	}
	if c.Publisher == nil {
		errs = append(errs, errors.New("publisher: required"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("batch size: %d is negative", c.BatchSize))
	}
	if c.MinBackoff < 0 {
		errs = append(errs, fmt.Errorf("min backoff: %v is negative", c.MinBackoff))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("max backoff: %v is negative", c.MaxBackoff))
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("backoff: min %v above max %v", c.MinBackoff, c.MaxBackoff))
	}
	if c.AckTimeout < 0 {
		errs = append(errs, fmt.Errorf("ack timeout: %v is negative", c.AckTimeout))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	return c
}

// Relay publishes the outbox to the change stream.
type Relay struct {
	cfg Config
	log *slog.Logger

	// mu serialises publishing: a Run pass and Republish never interleave,
	// so a code's events reach the stream in revision order. It guards
	// chain too.
	mu     sync.Mutex
	chain  *replication.Chain
	ochain *replication.Chain // nil without Config.Origin
	// publishAt is Publisher.PublishRawAsyncAt; tests replace it to make
	// single publishes fail.
	publishAt replication.SendFunc

	mPublished *metrics.Counter
	mErrors    *metrics.Counter
	mPublish   *metrics.Histogram
	mLag       *metrics.Histogram
	mRepub     *metrics.Counter
}

// New checks cfg and registers the relay's metrics.
func New(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	cfg = cfg.withDefaults()
	r := &Relay{cfg: cfg, log: cfg.Logger, publishAt: cfg.Publisher.PublishRawAsyncAt}
	r.chain = replication.NewChain(cfg.Publisher, func(code string, rev uint64, data []byte, lastSeq uint64) (*replication.PendingAck, error) {
		return r.publishAt(code, rev, data, lastSeq)
	})
	if cfg.Origin != nil {
		r.ochain = replication.NewChain(cfg.Origin, nil)
	}
	set := cfg.Metrics
	r.mPublished = set.NewCounter("linkpop_relay_published_total")
	r.mErrors = set.NewCounter("linkpop_relay_errors_total")
	r.mRepub = set.NewCounter("linkpop_relay_republished_total")
	r.mPublish = set.NewHistogram("linkpop_relay_publish_duration_seconds")
	r.mLag = set.NewHistogram("linkpop_relay_lag_seconds")
	st := cfg.Store
	set.NewGauge("linkpop_outbox_depth", func() float64 {
		depth, _ := st.OutboxStats()
		return float64(depth)
	})
	set.NewGauge("linkpop_outbox_oldest_age_seconds", func() float64 {
		_, oldest := st.OutboxStats()
		if oldest.IsZero() {
			return 0
		}
		return max(time.Since(oldest).Seconds(), 0)
	})
	return r, nil
}

// Run drains the outbox until ctx ends, then returns nil. It wakes on the
// store's outbox notification and at least every second. While publishing
// fails it backs off exponentially, makes sure the stream exists and
// retries from the oldest entry. Stop Run before closing the store; a
// store closed under it ends Run with store.ErrClosed. One Relay per
// store: two would publish the same entries out of order.
func (r *Relay) Run(ctx context.Context) error {
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	backoff := time.Duration(0)
	failing := false
	for {
		n, acked, err := r.pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrClosed), errors.Is(err, replication.ErrFenced):
			return fmt.Errorf("relay: %w", err)
		case errors.Is(err, replication.ErrWrongLastSequence) && acked > 0:
			// The stream's last sequence was not the expected one (an
			// event answered as a duplicate): the pass made progress and
			// the next one starts from the stream's actual tail, at once.
			r.mErrors.Inc()
			r.log.Debug("relay: stream's tail moved, resyncing", "err", err)
			continue
		case err != nil:
			r.mErrors.Inc()
			backoff = min(max(2*backoff, r.cfg.MinBackoff), r.cfg.MaxBackoff)
			if !failing {
				r.log.Warn("relay: publish failed, retrying", "err", err, "backoff", backoff)
			} else {
				r.log.Debug("relay: publish failed again", "err", err, "backoff", backoff)
			}
			failing = true
			if !sleep(ctx, backoff) {
				return nil
			}
			ectx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
			if err := r.cfg.Publisher.OpenStream(ectx); err != nil && ctx.Err() == nil {
				r.log.Debug("relay: ensure stream", "err", err)
			}
			if r.cfg.Origin != nil {
				if err := r.cfg.Origin.OpenStream(ectx); err != nil && ctx.Err() == nil {
					r.log.Debug("relay: ensure origin stream", "err", err)
				}
			}
			cancel()
			continue
		}
		if failing {
			r.log.Info("relay: publishing again")
			failing = false
		}
		backoff = 0
		if n == r.cfg.BatchSize {
			continue // more is waiting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.Store.OutboxNotify():
		case <-tick.C:
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pass publishes up to BatchSize of the oldest outbox entries and deletes
// the ones acknowledged, in order, up to the first failure. It returns how
// many entries it read and how many of them it deleted. With an origin
// stream it first publishes the origin outbox the same way, and the links
// only once that is empty: the link entries are read before the origin
// entries, so every origin event committed with one of them is published
// first.
func (r *Relay) pass(ctx context.Context) (n, acked int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.cfg.Store.Outbox(r.cfg.BatchSize)
	if err != nil {
		return 0, 0, err
	}
	if r.ochain != nil {
		events, err := r.cfg.Store.OriginOutbox(r.cfg.BatchSize)
		if err != nil {
			return 0, 0, err
		}
		if len(events) > 0 {
			oacked, err := r.publishWith(ctx, r.ochain, events, nil)
			if oacked > 0 {
				seqs := make([]uint64, oacked)
				for i := range seqs {
					seqs[i] = events[i].Revision
				}
				if derr := r.cfg.Store.OriginOutboxDelete(seqs...); derr != nil {
					return len(events), 0, errors.Join(err, fmt.Errorf("origin outbox delete: %w", derr))
				}
			}
			if err != nil || len(events) == r.cfg.BatchSize {
				return len(events), oacked, err
			}
		}
	}
	if len(entries) == 0 {
		return 0, 0, nil
	}
	acked, err = r.publish(ctx, entries, func(i int) {
		r.mLag.Update(max(time.Since(entries[i].CommittedAt).Seconds(), 0))
	})
	if acked > 0 {
		revs := make([]uint64, acked)
		for i := range revs {
			revs[i] = entries[i].Revision
		}
		if derr := r.cfg.Store.OutboxDelete(revs...); derr != nil {
			return len(entries), 0, errors.Join(err, fmt.Errorf("outbox delete: %w", derr))
		}
	}
	return len(entries), acked, err
}

// publish sends entries through the chain as one pipelined window (see
// replication.Chain) and returns how many entries, from the first, are in
// the stream, and the first error.
func (r *Relay) publish(ctx context.Context, entries []store.OutboxEntry, onAck func(i int)) (int, error) {
	return r.publishWith(ctx, r.chain, entries, onAck)
}

// publishWith publishes entries through chain as one window.
func (r *Relay) publishWith(ctx context.Context, chain *replication.Chain, entries []store.OutboxEntry, onAck func(i int)) (int, error) {
	events := make([]replication.Event, len(entries))
	for i, e := range entries {
		events[i] = replication.Event{Code: e.Code, Revision: e.Revision, Data: e.Data}
	}
	return r.publishChain(ctx, chain, events, onAck)
}

// publishEvents publishes one window through the chain within AckTimeout.
func (r *Relay) publishEvents(ctx context.Context, events []replication.Event, onAck func(i int)) (int, error) {
	return r.publishChain(ctx, r.chain, events, onAck)
}

func (r *Relay) publishChain(ctx context.Context, chain *replication.Chain, events []replication.Event, onAck func(i int)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	start := time.Now()
	n, err := chain.Publish(ctx, events, func(i int) {
		r.mPublished.Inc()
		if onAck != nil {
			onAck(i)
		}
	})
	if err == nil {
		r.mPublish.UpdateDuration(start)
	}
	return n, err
}

// Reset makes the next pass re-read both streams' tails: after a
// takeover, the tail is the new leader's barrier.
func (r *Relay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chain.Reset()
	if r.ochain != nil {
		r.ochain.Reset()
	}
}

// Republish publishes every link's current state (an OpUpdate event at
// the link's current revision, committed at its UpdatedAt) into the
// stream, for a stream that is empty or damaged. It holds off Run's
// passes while it works, so each code's events stay in revision order.
// The links go out in code order through the same chain as the outbox
// (expected last sequence; after a failure a batch resumes after the
// stream's last message, and what is sent again is absorbed by the dedup
// window). The next pass re-reads the stream's tail. It returns how many
// links are in the stream.
func (r *Relay) Republish(ctx context.Context) (n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chain.Reset()
	defer r.chain.Reset()
	if err := r.cfg.Publisher.OpenStream(ctx); err != nil {
		return 0, fmt.Errorf("republish: %w", err)
	}
	batch := make([]replication.Event, 0, r.cfg.BatchSize)
	// flush publishes batch, retrying what is not in the stream yet with
	// backoff (the chain resyncs first) until ctx ends.
	flush := func() error {
		rest := batch
		for backoff := time.Duration(0); ; {
			acked, err := r.publishEvents(ctx, rest, nil)
			n += acked
			r.mRepub.Add(acked)
			rest = rest[acked:]
			if err == nil {
				batch = batch[:0]
				return nil
			}
			r.mErrors.Inc()
			if acked == 0 {
				backoff = min(max(2*backoff, r.cfg.MinBackoff), r.cfg.MaxBackoff)
			} else {
				backoff = 0
			}
			r.log.Debug("relay: republish batch failed, retrying", "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return err
			}
		}
	}
	err = r.cfg.Store.ScanAll(func(rec link.Record) error {
		data, err := link.MarshalChange(&link.Change{Op: link.OpUpdate, Record: rec, CommittedAt: rec.UpdatedAt})
		if err != nil {
			return fmt.Errorf("encode %s: %w", rec.Code, err)
		}
		batch = append(batch, replication.Event{Code: rec.Code, Revision: rec.Revision, Data: data})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return n, fmt.Errorf("republish: %w", err)
	}
	r.log.Info("relay: republished every link", "links", n)
	return n, nil
}
