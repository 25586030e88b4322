// Package relay moves the origin's outbox into the JetStream change stream:
// it reads committed change events from the store in revision order,
// publishes them with a Nats-Msg-Id derived from code and revision, waits
// for the stream's acks and only then deletes them from the outbox. A
// crash anywhere in that sequence leads to a re-publish, never a loss; the
// stream's dedup window and the edges' revision checks absorb the
// duplicates.
//
// Events are pipelined (sent as soon as they are durable, many
// unanswered), yet the stream receives them in revision order, enforced
// by the stream leader: the relay publishes through a replication.Chain,
// so each event expects the stream's last sequence to be the one its
// predecessor lands at (Nats-Expected-Last-Sequence). If one fails, every
// later event in flight is refused instead of landing ahead of it; the
// relay re-reads the stream's tail with nothing in flight, skips the
// entries already stored and resumes from the failed one. The acks are
// answered in groups (store.MarkPublished), the outbox deletes follow.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// DefaultMaxInFlight bounds the events sent and not yet answered;
	// the NATS client's own bound for asynchronous publishes is 4096. It
	// is also the most allowed: an epoch barrier refuses a deposed
	// leader's window only if it is no longer than the barrier
	// (replication.BarrierSpan).
	DefaultMaxInFlight = replication.BarrierSpan
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
	// BatchSize is how many outbox entries the relay reads at a time.
	// The default is 512.
	BatchSize int
	// MaxInFlight is how many link events may be sent and not yet
	// answered by the stream, at most replication.BarrierSpan (1000, the
	// default).
	MaxInFlight int
	// MinBackoff and MaxBackoff bound the exponential pause between
	// passes while publishing fails. The defaults are 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// AckTimeout bounds the wait for one event's ack from when it was
	// sent (and for EnsureStream after a failure). The default is 5s.
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
	if c.MaxInFlight < 0 || c.MaxInFlight > replication.BarrierSpan {
		errs = append(errs, fmt.Errorf("max in flight: %d is outside [0, %d] (an epoch barrier fences at most that many events in flight)", c.MaxInFlight, replication.BarrierSpan))
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
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
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

	// mu serialises publishing: a Run session and Republish never
	// interleave, so a code's events reach the stream in revision order.
	// It guards chain too.
	mu     sync.Mutex
	chain  *replication.Chain
	ochain *replication.Chain // nil without Config.Origin
	// publishAt is Publisher.PublishRawAsyncAt; tests replace it to make
	// single publishes fail.
	publishAt atomic.Pointer[replication.SendFunc]
	// acked is the last link revision the stream acknowledged (guarded
	// by mu): a session sends from the one after it.
	acked uint64
	// yield counts the callers waiting for mu (Republish, Reset): a
	// session ends when it sees one; yieldc wakes an idle session.
	yield  atomic.Int32
	yieldc chan struct{}

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
	r := &Relay{cfg: cfg, log: cfg.Logger, yieldc: make(chan struct{}, 1)}
	send := replication.SendFunc(cfg.Publisher.PublishRawAsyncAt)
	r.publishAt.Store(&send)
	r.chain = replication.NewChain(cfg.Publisher, func(code string, rev uint64, data []byte, lastSeq uint64) (*replication.PendingAck, error) {
		return (*r.publishAt.Load())(code, rev, data, lastSeq)
	})
	if cfg.Origin != nil {
		r.ochain = replication.NewChain(cfg.Origin, nil)
	}
	set := cfg.Metrics
	r.mPublished = set.NewCounter("linkpop_relay_published_total")
	r.mErrors = set.NewCounter("linkpop_relay_errors_total")
	r.mRepub = set.NewCounter("linkpop_relay_republished_total")
	r.mPublish = set.NewHistogram("linkpop_relay_publish_duration_seconds")
	set.NewGauge("linkpop_relay_stale_epoch_tails_total", func() float64 {
		return float64(r.chain.StaleTails())
	})
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

// Run drains the outbox until ctx ends, then returns nil. It publishes
// as one pipeline (see session): it wakes on the store's outbox
// notification and at least every second, sends what was committed
// without waiting for the acks of what is in flight, and answers the
// acks in groups. While publishing fails it backs off exponentially,
// makes sure the stream exists and retries from the oldest entry not in
// the stream. Stop Run before closing the store; a store closed under it
// ends Run with store.ErrClosed. One Relay per store: two would publish
// the same entries out of order.
func (r *Relay) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	failing := false
	for {
		acked, err := r.session(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrClosed), errors.Is(err, replication.ErrFenced):
			return fmt.Errorf("relay: %w", err)
		case err == nil:
			// Republish or Reset wants the chains: the next session
			// waits for it and re-reads the tails.
			continue
		case errors.Is(err, errResync), errors.Is(err, replication.ErrWrongLastSequence) && acked > 0:
			// The stream's last sequence was not the expected one (an
			// event answered as a duplicate): the session made progress
			// and the next one starts from the stream's actual tail, at
			// once.
			r.mErrors.Inc()
			r.log.Debug("relay: stream's tail moved, resyncing", "err", err)
			continue
		}
		r.mErrors.Inc()
		if acked > 0 {
			backoff = 0
		}
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
		} else if ctx.Err() == nil && failing {
			r.log.Info("relay: stream reachable again")
			failing = false
		}
		if r.cfg.Origin != nil {
			if err := r.cfg.Origin.OpenStream(ectx); err != nil && ctx.Err() == nil {
				r.log.Debug("relay: ensure origin stream", "err", err)
			}
		}
		cancel()
	}
}

// errResync ends a session whose chain no longer trusts its tail (an
// event was answered as a duplicate) although nothing failed.
var errResync = errors.New("the stream's tail is not where the chain expected it")

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

// flight is one link event sent and not yet answered.
type flight struct {
	entry store.OutboxEntry
	sent  *replication.Sent
	at    time.Time
	done  chan struct{} // closed once it is in the stream
}

// session publishes the outbox as one pipeline through the link chain,
// anchored once: the sender (this goroutine) reads what was committed
// after the last event it sent and sends it at once, each event expecting
// the stream's last sequence to be its predecessor's (base + i, see
// replication.Chain), up to MaxInFlight events unanswered; the acker takes
// the answers in order and, whenever it would have to wait for the next
// one, marks everything answered so far as published in the store
// (store.MarkPublished: the creates waiting with -ack replicated are
// answered as a group) and hands their outbox deletes to the deleter,
// which commits them in groups too. A failure, a refusal (10071) or a
// duplicate ends the session: what is in flight after the first event not
// answered is abandoned (it is refused or lands where the anchor says,
// and the next session's anchor finds it), and the next session starts
// from that event. Before sending links, the sender publishes the origin
// outbox committed so far and waits for its acks, so a link event is
// never in the stream without the idempotency record committed with it.
//
// It returns how many link events were answered, and nil when ctx ended
// or Republish or Reset asked for the chains.
func (r *Relay) session(ctx context.Context) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &acker{
		r:       r,
		queue:   make(chan *flight, r.cfg.MaxInFlight),
		failed:  make(chan struct{}),
		done:    make(chan struct{}),
		codes:   make(map[string]*flight),
		delNote: make(chan struct{}, 1),
		acked:   r.acked,
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.run(sctx) })
	wg.Go(func() { a.deleter(sctx) })
	err := r.send(sctx, a)
	close(a.queue)
	if err != nil {
		a.fail(err)
	}
	// Let the acker take the answers already there and the deleter
	// commit what it has, then stop both.
	<-a.done
	cancel()
	wg.Wait()
	r.acked = a.acked
	if a.err != nil && !errors.Is(a.err, errStopped) {
		return a.n, a.err
	}
	if err != nil && !errors.Is(err, errStopped) {
		return a.n, err
	}
	return a.n, nil
}

// errStopped ends a session that was asked to stop.
var errStopped = errors.New("stopped")

// send is the sender of a session (see session).
func (r *Relay) send(ctx context.Context, a *acker) error {
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	chain := r.chain
	next := r.acked + 1
	for {
		if r.yield.Load() > 0 || ctx.Err() != nil {
			return errStopped
		}
		select {
		case <-a.failed:
			return nil
		default:
		}
		entries, err := r.cfg.Store.OutboxFrom(next, r.cfg.BatchSize)
		if err != nil {
			return err
		}
		if r.ochain != nil {
			more, err := r.publishOrigin(ctx)
			if err != nil {
				return err
			}
			if more {
				continue
			}
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return errStopped
			case <-a.failed:
				return nil
			case <-r.cfg.Store.OutboxNotify():
			case <-tick.C:
			case <-r.yieldc:
			}
			continue
		}
		if !chain.Known() {
			if a.inflight() > 0 {
				// A failure or a duplicate while events are in flight:
				// they expect a tail that may not be where they think.
				// Only with nothing in flight (an unanswered event
				// stays counted) may the chain anchor again; let the
				// acker take what is there and start a new session.
				return errResync
			}
			// Nothing in flight: anchor on the stream's last message.
			events := make([]replication.Event, len(entries))
			for i, e := range entries {
				events[i] = replication.Event{Code: e.Code, Revision: e.Revision, Data: e.Data}
			}
			stale := chain.StaleTails()
			actx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
			skip, err := chain.Anchor(actx, events)
			cancel()
			if err != nil {
				return err
			}
			if chain.StaleTails() > stale {
				r.log.Warn("relay: the stream's last message is a deposed leader's event, stored after this leader's barrier and never acknowledged; replicas that applied it differ from this origin until repaired (origin verify, edge POST /repair)")
			}
			// The first skip are in the stream already: the acker takes
			// them as answered.
			for _, e := range entries[:skip] {
				f := &flight{entry: e, done: make(chan struct{})}
				a.fly(f)
				select {
				case a.queue <- f:
				case <-a.failed:
					return nil
				}
				next = e.Revision + 1
			}
			entries = entries[skip:]
		}
		for _, e := range entries {
			if prev := a.flying(e.Code); prev != nil {
				// A code never has two events in flight.
				select {
				case <-prev.done:
				case <-a.failed:
					return nil
				case <-ctx.Done():
					return errStopped
				}
			}
			if !chain.Known() {
				break
			}
			sent, err := chain.Send(replication.Event{Code: e.Code, Revision: e.Revision, Data: e.Data})
			if err != nil {
				return err
			}
			f := &flight{entry: e, sent: sent, at: time.Now(), done: make(chan struct{})}
			a.fly(f)
			select {
			case a.queue <- f:
			case <-a.failed:
				return nil
			}
			next = e.Revision + 1
		}
	}
}

// publishOrigin publishes the origin outbox committed so far and waits
// for its acks, deletes what landed and marks it published. more: a full
// batch, there may be more.
func (r *Relay) publishOrigin(ctx context.Context) (more bool, err error) {
	events, err := r.cfg.Store.OriginOutbox(r.cfg.BatchSize)
	if err != nil || len(events) == 0 {
		return false, err
	}
	oacked, err := r.publishWith(ctx, r.ochain, events, nil)
	if oacked > 0 {
		seqs := make([]uint64, oacked)
		for i := range seqs {
			seqs[i] = events[i].Revision
		}
		r.cfg.Store.MarkPublished(0, seqs[oacked-1])
		if derr := r.cfg.Store.OriginOutboxDelete(seqs...); derr != nil {
			return false, errors.Join(err, fmt.Errorf("origin outbox delete: %w", derr))
		}
	}
	return len(events) == r.cfg.BatchSize, err
}

// acker takes a session's answers in order (see session).
type acker struct {
	r      *Relay
	queue  chan *flight
	failed chan struct{} // closed at the first failure; err says why
	err    error
	once   sync.Once
	done   chan struct{} // closed when run returns

	mu    sync.Mutex
	codes map[string]*flight // code → its event in flight
	sent  int                // events given to fly, not yet answered

	// timer bounds await (made on first use; run's goroutine only)
	timer *time.Timer

	// acked is the last revision answered; marked the last one marked
	// published. n counts the answers.
	acked, marked uint64
	n             int

	// deletes waiting for the deleter, and its wake-up
	delMu   sync.Mutex
	dels    []uint64
	delNote chan struct{}
	delErr  error
}

func (a *acker) fail(err error) {
	a.once.Do(func() {
		a.err = err
		close(a.failed)
	})
}

func (a *acker) flying(code string) *flight {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.codes[code]
}

func (a *acker) fly(f *flight) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.codes[f.entry.Code] = f
	a.sent++
}

func (a *acker) inflight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent
}

// run takes the answers until the queue is closed and empty, the session
// ends or one fails.
func (a *acker) run(ctx context.Context) {
	defer close(a.done)
	r := a.r
	for {
		var f *flight
		var ok bool
		select {
		case f, ok = <-a.queue:
		default:
			// Nothing more sent yet: answer what was acknowledged.
			a.flush()
			select {
			case f, ok = <-a.queue:
			case <-ctx.Done():
				return
			}
		}
		if !ok {
			a.flush()
			return
		}
		// A flight without sent was found in the stream by the anchor.
		if f.sent != nil {
			if !f.sent.Ready() {
				// Answer what came before it while it is on its way.
				a.flush()
				if !a.await(ctx, f) {
					// Events still in flight may land after this one:
					// the tail has to be read again.
					a.flush()
					r.chain.Reset()
					err := ctx.Err()
					if err == nil {
						err = fmt.Errorf("publish %s rev %d: no ack within %v: %w", f.entry.Code, f.entry.Revision, r.cfg.AckTimeout, context.DeadlineExceeded)
					}
					a.fail(err)
					return
				}
			}
			if err := f.sent.Wait(ctx); err != nil { // answered: returns at once
				a.flush()
				a.fail(err)
				return
			}
			r.mPublished.Inc()
			r.mPublish.UpdateDuration(f.at)
			r.mLag.Update(max(time.Since(f.entry.CommittedAt).Seconds(), 0))
		}
		a.mu.Lock()
		if a.codes[f.entry.Code] == f {
			delete(a.codes, f.entry.Code)
		}
		a.sent--
		a.mu.Unlock()
		close(f.done)
		a.acked = f.entry.Revision
		a.n++
		a.delMu.Lock()
		a.dels = append(a.dels, f.entry.Revision)
		a.delMu.Unlock()
	}
}

// await waits for f's answer until AckTimeout after it was sent, and
// reports whether it came (false: the time is up or the session ended).
// One timer serves every wait.
func (a *acker) await(ctx context.Context, f *flight) bool {
	if a.timer == nil {
		a.timer = time.NewTimer(time.Until(f.at.Add(a.r.cfg.AckTimeout)))
	} else {
		a.timer.Reset(time.Until(f.at.Add(a.r.cfg.AckTimeout)))
	}
	defer a.timer.Stop()
	select {
	case <-f.sent.Done():
		return true
	case <-a.timer.C:
		return f.sent.Ready()
	case <-ctx.Done():
		return false
	}
}

// flush marks what was answered published and wakes the deleter.
func (a *acker) flush() {
	if a.acked <= a.marked {
		return
	}
	a.r.cfg.Store.MarkPublished(a.acked, 0)
	a.marked = a.acked
	select {
	case a.delNote <- struct{}{}:
	default:
	}
}

// deleter commits the outbox deletes of answered events, all that
// gathered while the previous commit ran in one, until ctx ends; then it
// commits what is left.
func (a *acker) deleter(ctx context.Context) {
	for {
		stop := false
		select {
		case <-a.delNote:
		case <-ctx.Done():
			stop = true
		}
		a.delMu.Lock()
		revs := a.dels
		a.dels = nil
		a.delMu.Unlock()
		if len(revs) > 0 {
			if err := a.r.cfg.Store.OutboxDelete(revs...); err != nil {
				a.fail(fmt.Errorf("outbox delete: %w", err))
				return
			}
		}
		if stop {
			return
		}
	}
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

// lock takes mu from a running session: it asks the session to end.
func (r *Relay) lock() {
	r.yield.Add(1)
	defer r.yield.Add(-1)
	select {
	case r.yieldc <- struct{}{}:
	default:
	}
	r.mu.Lock()
}

// Reset makes the next session re-read both streams' tails: after a
// takeover, the tail is the new leader's barrier.
func (r *Relay) Reset() {
	r.lock()
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
	r.lock()
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
