// Package relay moves the origin's outbox into the JetStream change stream:
// it reads committed change events from the store in revision order,
// publishes them with a Nats-Msg-Id derived from code and revision, waits
// for the stream's acks and only then deletes them from the outbox. A
// crash anywhere in that sequence leads to a re-publish, never a loss; the
// stream's dedup window and the edges' revision checks absorb the
// duplicates.
//
// Events are pipelined, yet the stream receives them in revision order,
// enforced by the server: each event expects the stream's last message to
// be the event before it (Nats-Expected-Last-Msg-Id). If one fails, every
// later event in flight is refused instead of landing ahead of it, and
// the relay resumes from the failed one.
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
	// last and careful too.
	mu sync.Mutex
	// last is the Nats-Msg-Id of the stream's last message as far as the
	// relay knows ("" for an empty stream); known says whether it knows.
	// After a failure, a restart or Republish it does not, and reads it
	// from the stream before the next pass.
	last  string
	known bool
	// careful makes the relay send one event at a time, each after the
	// previous one's ack, until an event is stored anew: while the stream
	// answers with duplicates (events stored before a failure or a
	// restart), its last message stays what it was, so a pipelined event
	// expecting its predecessor would be refused.
	careful bool
	// publishAfter is Publisher.PublishRawAsyncAfter; tests replace it to
	// make single publishes fail.
	publishAfter func(code string, rev uint64, data []byte, lastMsgID string) (*replication.PendingAck, error)

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
	r := &Relay{cfg: cfg, log: cfg.Logger, publishAfter: cfg.Publisher.PublishRawAsyncAfter}
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
		case errors.Is(err, store.ErrClosed):
			return fmt.Errorf("relay: %w", err)
		case errors.Is(err, replication.ErrWrongLastMsgID) && acked > 0:
			// The stream's last message was not the expected one (an
			// event answered as a duplicate, a recreated stream): the
			// pass made progress and the next one starts from the
			// stream's actual last message, at once.
			r.mErrors.Inc()
			r.log.Debug("relay: stream's last message moved, resuming from it", "err", err)
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
			if err := r.cfg.Publisher.EnsureStream(ectx); err != nil && ctx.Err() == nil {
				r.log.Debug("relay: ensure stream", "err", err)
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
// many entries it read and how many of them it deleted.
func (r *Relay) pass(ctx context.Context) (n, acked int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	entries, err := r.cfg.Store.Outbox(r.cfg.BatchSize)
	if err != nil || len(entries) == 0 {
		return 0, 0, err
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

// event is one message to publish.
type event struct {
	code string
	rev  uint64
	data []byte
}

// publish sends entries as a pipelined window and waits for their acks in
// order. A code never has two events in flight: before sending a code's
// next event the relay waits for the ack of its previous one, so a failed
// event can never be overtaken by a newer one of the same code (the
// stream keeps one message per code, and a later re-publish of the older
// event would otherwise replace the newer). Each event expects the
// stream's last message to be the event before it, the first one the
// stream's last message, so the stream stores them in exactly this order
// or refuses the rest. It returns how many entries, from the first, were
// acknowledged, and the first error.
func (r *Relay) publish(ctx context.Context, entries []store.OutboxEntry, onAck func(i int)) (int, error) {
	events := make([]event, len(entries))
	for i, e := range entries {
		events[i] = event{code: e.Code, rev: e.Revision, data: e.Data}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	if !r.known {
		last, err := r.cfg.Publisher.LastMsgID(ctx)
		if err != nil {
			return 0, err
		}
		r.last, r.known, r.careful = last, true, true
	}
	return r.publishEvents(ctx, events, true, onAck)
}

// publishEvents publishes events as a pipelined window, chained to the
// stream's last message if chained is set (see publish). The relay's
// knowledge of the stream's last message ends with any failure.
func (r *Relay) publishEvents(ctx context.Context, events []event, chained bool, onAck func(i int)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	start := time.Now()
	pending := make([]*replication.PendingAck, len(events))
	inflight := make(map[string]int, len(events)) // code → index of its unacked event
	acked := 0
	// await waits for acks in order up to and including index i.
	await := func(i int) error {
		for ; acked <= i; acked++ {
			_, dup, err := pending[acked].Wait(ctx)
			if err != nil {
				// Events still in flight may land after this: what the
				// stream's last message is has to be read again.
				r.known = false
				return err
			}
			switch {
			case !chained:
			case dup:
				// The stream's last message did not change; events sent
				// after this one expected it to, and are refused unless
				// stored before too. Send the rest one at a time.
				r.careful = true
			default:
				r.last, r.careful = replication.MsgID(events[acked].code, events[acked].rev), false
			}
			if inflight[events[acked].code] == acked {
				delete(inflight, events[acked].code)
			}
			r.mPublished.Inc()
			if onAck != nil {
				onAck(acked)
			}
		}
		return nil
	}
	expect := r.last
	for i, e := range events {
		if j, ok := inflight[e.code]; ok {
			if err := await(j); err != nil {
				return acked, err
			}
		}
		var p *replication.PendingAck
		var err error
		if chained {
			if r.careful {
				if err := await(i - 1); err != nil {
					return acked, err
				}
				expect = r.last
			}
			p, err = r.publishAfter(e.code, e.rev, e.data, expect)
			expect = replication.MsgID(e.code, e.rev)
		} else {
			p, err = r.cfg.Publisher.PublishRawAsync(e.code, e.rev, e.data)
		}
		if err != nil {
			r.known = false
			if aerr := await(i - 1); aerr != nil {
				return acked, aerr
			}
			return acked, err
		}
		pending[i] = p
		inflight[e.code] = i
	}
	if err := await(len(events) - 1); err != nil {
		return acked, err
	}
	r.mPublish.UpdateDuration(start)
	return acked, nil
}

// Republish publishes every link's current state (an OpUpdate event at
// the link's current revision, committed at its UpdatedAt) into the
// stream, for a stream that is empty or damaged. It holds off Run's
// passes while it works, so each code's events stay in revision order.
// The links go out in code order, without expectations about the
// stream's last message; the next pass reads it afresh. It returns how
// many links it published.
func (r *Relay) Republish(ctx context.Context) (n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known = false
	if err := r.cfg.Publisher.EnsureStream(ctx); err != nil {
		return 0, fmt.Errorf("republish: %w", err)
	}
	batch := make([]event, 0, r.cfg.BatchSize)
	flush := func() error {
		acked, err := r.publishEvents(ctx, batch, false, nil)
		n += acked
		r.mRepub.Add(acked)
		batch = batch[:0]
		return err
	}
	err = r.cfg.Store.ScanAll(func(rec link.Record) error {
		data, err := link.MarshalChange(&link.Change{Op: link.OpUpdate, Record: rec, CommittedAt: rec.UpdatedAt})
		if err != nil {
			return fmt.Errorf("encode %s: %w", rec.Code, err)
		}
		batch = append(batch, event{code: rec.Code, rev: rec.Revision, data: data})
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		r.mErrors.Inc()
		return n, fmt.Errorf("republish: %w", err)
	}
	r.log.Info("relay: republished every link", "links", n)
	return n, nil
}
