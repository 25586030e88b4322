package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// ErrClickApply wraps the errors of ClickApplier.ApplyClicks: the
// collector's store is broken, and ClickConsumer.Run stops without
// acknowledging what it was given.
var ErrClickApply = errors.New("click store")

// ClickVerdict is what a ClickApplier decided for one batch.
type ClickVerdict uint8

const (
	// ClickApplied: the batch was merged; it is acknowledged.
	ClickApplied ClickVerdict = iota
	// ClickDuplicate: the batch was merged before (its seq is not newer
	// than its edge instance's last applied one); it is acknowledged and
	// counts nothing.
	ClickDuplicate
	// ClickRetry: the batch cannot be applied yet (it follows a gap); it
	// is sent back (NAK with RetryDelay) and delivered again.
	ClickRetry
)

// ClickMsg is one decoded click batch from the stream.
type ClickMsg struct {
	// StreamSeq is the message's stream sequence.
	StreamSeq uint64
	// Batch is the decoded, validated batch.
	Batch *linkpb.ClickBatch
	// Verdict is set by ClickApplier.ApplyClicks.
	Verdict ClickVerdict
}

// ClickApplier merges click batches durably.
type ClickApplier interface {
	// ApplyClicks commits msgs (all of them or none) and sets each one's
	// Verdict. The consumer acknowledges them only after it returns nil.
	ApplyClicks(msgs []ClickMsg) error
}

// ClickPreparer is a ClickApplier that splits ApplyClicks in two, so the
// consumer decodes and prepares the next group while the previous one
// commits. ClickConsumer uses it when its Applier implements it.
type ClickPreparer interface {
	ClickApplier
	// PrepareClicks sets each message's Verdict and returns the commit
	// of the group (all of it or none); the consumer acknowledges the
	// messages only after the commit returned nil. The consumer calls
	// every commit PrepareClicks returned, one at a time, in the order of
	// the prepares (a session that ends commits what it prepared first).
	PrepareClicks(msgs []ClickMsg) (commit func() error, err error)
}

// ClickConsumerConfig configures a ClickConsumer.
type ClickConsumerConfig struct {
	// Stream names the click stream. The defaults are ClickStreamConfig's.
	Stream ClickStreamConfig
	// Durable is the name of the durable consumer on the stream. Several
	// collectors each need their own name (and their own Edges). The
	// default is "linkpop-collector".
	Durable string
	// Edges restricts the consumer to the batches of these edges (subject
	// filters). The default (none) is every edge.
	Edges []string
	// Applier merges the batches. Required.
	Applier ClickApplier
	// BatchSize is the most messages given to one ApplyClicks (one group
	// commit). The default is 512.
	BatchSize int
	// GroupMaxBytes bounds the encoded batches of one group, so a backlog
	// of full batches (after an outage) is applied in groups that commit
	// well within AckWait. The default is 8 MiB.
	GroupMaxBytes int
	// BatchWait is how long the consumer waits to fill a group once one
	// message arrived. The default is 5ms.
	BatchWait time.Duration
	// AckWait is how long the server waits for an acknowledgement before
	// it delivers a message again (after a collector crash). The default
	// is 30s.
	AckWait time.Duration
	// RetryDelay is how long a ClickRetry batch waits before it is
	// delivered again. The default is 1s.
	RetryDelay time.Duration
	// PollInterval is how often the consumer's info (lag) is fetched. The
	// default is 1s.
	PollInterval time.Duration
	// StallTimeout: if the server holds messages for the consumer and
	// none arrived for this long, the session is rebuilt. The default is
	// 10s.
	StallTimeout time.Duration
	// Heartbeat is the pull heartbeat; two missed ones rebuild the
	// session. At least 500ms. The default is 2s.
	Heartbeat time.Duration
	// Logger receives rebuilds and poison batches. The default discards.
	Logger *slog.Logger
	// Metrics receives linkpop_collector_consumer_* metrics. The default
	// is a set of its own.
	Metrics *metrics.Set
}

func (c ClickConsumerConfig) withDefaults() ClickConsumerConfig {
	c.Stream = c.Stream.withDefaults()
	if c.Durable == "" {
		c.Durable = "linkpop-collector"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 512
	}
	if c.GroupMaxBytes == 0 {
		c.GroupMaxBytes = 8 << 20
	}
	if c.BatchWait == 0 {
		c.BatchWait = 5 * time.Millisecond
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return c
}

// Validate reports every bad field at once.
func (c *ClickConsumerConfig) Validate() error {
	var errs []error
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Applier == nil {
		errs = append(errs, errors.New("click consumer: Applier is required"))
	}
	if c.Durable != "" && !link.ValidEdgeName(c.Durable) {
		errs = append(errs, fmt.Errorf("click consumer: Durable %q must be 1-64 of [A-Za-z0-9_-]", c.Durable))
	}
	for _, e := range c.Edges {
		if !link.ValidEdgeName(e) {
			errs = append(errs, fmt.Errorf("click consumer: edge %q is not an edge name", e))
		}
	}
	if c.BatchSize < 0 || c.GroupMaxBytes < 0 || c.BatchWait < 0 || c.AckWait < 0 || c.RetryDelay < 0 || c.PollInterval < 0 || c.StallTimeout < 0 {
		errs = append(errs, errors.New("click consumer: sizes and durations must not be negative"))
	}
	if c.AckWait != 0 && c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("click consumer: AckWait %v is below 1s", c.AckWait))
	}
	if c.Heartbeat != 0 && (c.Heartbeat < 500*time.Millisecond || c.Heartbeat > 15*time.Second) {
		errs = append(errs, fmt.Errorf("click consumer: Heartbeat %v outside [500ms, 15s]", c.Heartbeat))
	}
	return errors.Join(errs...)
}

// ClickConsumerStatus is a snapshot of a ClickConsumer.
type ClickConsumerStatus struct {
	// Pending is the number of stream messages not yet delivered to the
	// consumer, as of the last poll.
	Pending uint64
	// AckPending is the number delivered but not acknowledged.
	AckPending uint64
	// Groups counts the group commits applied by this process.
	Groups uint64
	// Poison counts the undecodable batches terminated by this process.
	Poison uint64
	// Rebuilds counts the sessions rebuilt after an error.
	Rebuilds uint64
	// LastContact is when the stream last answered.
	LastContact time.Time
}

// ClickConsumer reads the click stream through a durable pull consumer
// (explicit acks, unlimited deliveries) and hands it to a ClickApplier in
// groups. A message is acknowledged only after the group it was in has
// been committed, so a crash at any point leads to a redelivery, which
// the applier refuses by sequence. Missed heartbeats, a deleted consumer
// or a stall rebuild the session, with backoff; the durable consumer
// keeps the position across them and across restarts.
//
// Metrics (prefixed linkpop_collector_consumer_): pending_messages and
// ack_pending_messages (gauges, the consumer lag), groups_total,
// messages_total, poison_total, rebuilds_total (counters).
type ClickConsumer struct {
	cfg ClickConsumerConfig
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	pending, ackPending    atomic.Uint64
	groups, poison, rebuil atomic.Uint64
	lastContact            atomic.Int64
	lastRecv               atomic.Int64
	applying               atomic.Int32 // groups being prepared or committed: not a stall

	slot sessionSlot // the running session, for the watchdog

	mGroups, mMsgs, mPoison, mRebuilds *metrics.Counter
}

// NewClickConsumer returns a consumer of the click stream over nc. It
// does not touch the server until Run.
func NewClickConsumer(nc *nats.Conn, cfg ClickConsumerConfig) (*ClickConsumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("click consumer: nil NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &ClickConsumer{cfg: cfg, nc: nc, js: js, log: cfg.Logger.With("stream", cfg.Stream.Name, "durable", cfg.Durable)}
	s := cfg.Metrics
	s.NewGauge("linkpop_collector_consumer_pending_messages", func() float64 { return float64(c.pending.Load()) })
	s.NewGauge("linkpop_collector_consumer_ack_pending_messages", func() float64 { return float64(c.ackPending.Load()) })
	c.mGroups = s.GetOrCreateCounter("linkpop_collector_consumer_groups_total")
	c.mMsgs = s.GetOrCreateCounter("linkpop_collector_consumer_messages_total")
	c.mPoison = s.GetOrCreateCounter("linkpop_collector_consumer_poison_total")
	c.mRebuilds = s.GetOrCreateCounter("linkpop_collector_consumer_rebuilds_total")
	return c, nil
}

// Status returns a snapshot; safe for concurrent use.
func (c *ClickConsumer) Status() ClickConsumerStatus {
	return ClickConsumerStatus{
		Pending:     c.pending.Load(),
		AckPending:  c.ackPending.Load(),
		Groups:      c.groups.Load(),
		Poison:      c.poison.Load(),
		Rebuilds:    c.rebuil.Load(),
		LastContact: unixTime(c.lastContact.Load()),
	}
}

// Run consumes until ctx ends (then it returns nil) or the applier fails
// (an error wrapping ErrClickApply). NATS failures never end it. It stops
// every goroutine it started before returning.
func (c *ClickConsumer) Run(ctx context.Context) error {
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.watch(wctx) })
	defer func() {
		stopWatch()
		wg.Wait()
	}()
	backoff := minSessionBackoff
	for {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrClickApply) {
			return err
		}
		c.rebuil.Add(1)
		c.mRebuilds.Inc()
		c.log.Warn("click consumer session ended; rebuilding", "err", err, "retry_in", backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxSessionBackoff)
	}
}

// consumerConfig is the durable consumer's server-side configuration.
func (c *ClickConsumer) consumerConfig() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "linkpop collector: click batches",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * c.cfg.BatchSize,
	}
	for _, e := range c.cfg.Edges {
		cc.FilterSubjects = append(cc.FilterSubjects, c.cfg.Stream.Subject(e))
	}
	return cc
}

// session ensures the stream and the durable consumer and applies what it
// delivers until an error.
func (c *ClickConsumer) session(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	stream, err := openStream(rctx, c.js, c.cfg.Stream.jsConfig())
	cancel()
	if err != nil {
		return err
	}
	rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	cons, err := stream.CreateOrUpdateConsumer(rctx, c.consumerConfig())
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", c.cfg.Durable, err)
	}
	c.contact()
	it, err := cons.Messages(
		jetstream.PullMaxMessages(2*c.cfg.BatchSize),
		jetstream.PullExpiry(max(30*time.Second, 4*c.cfg.Heartbeat)),
		jetstream.PullHeartbeat(c.cfg.Heartbeat),
		jetstream.WithMessagesErrOnMissingHeartbeat(true),
	)
	if err != nil {
		return fmt.Errorf("consumer %s messages: %w", c.cfg.Durable, err)
	}
	defer it.Stop()
	sctx, _, end := c.slot.begin(ctx)
	defer end()
	// The committer commits and acknowledges the prepared groups in
	// order while this loop receives, decodes and prepares the next
	// one; a failed commit ends the session through gctx.
	gctx, gcancel := context.WithCancel(sctx)
	defer gcancel()
	groups := make(chan preparedGroup)
	failed := make(chan error, 1)
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for g := range groups {
			if err := c.commitGroup(g); err != nil {
				failed <- err
				gcancel()
				for range groups {
					// Prepared after the failure: never committed, never
					// acknowledged; the applier refuses them anyway.
				}
				return
			}
		}
	})
	// Every group handed over is committed before the session returns.
	defer cwg.Wait()
	defer close(groups)
	c.lastRecv.Store(time.Now().UnixNano())
	prefix := c.cfg.Stream.SubjectPrefix + "."
	applyFailed := func() error {
		select {
		case err := <-failed:
			return err
		default:
			return nil
		}
	}
	for {
		var (
			group []ClickMsg
			raw   []jetstream.Msg
		)
		msg, err := it.Next(jetstream.NextContext(gctx))
		if err != nil {
			if ferr := applyFailed(); ferr != nil {
				return ferr
			}
			return nextErr(sctx, err)
		}
		group, raw = c.take(group, raw, msg, prefix)
		size := len(msg.Data())
		fill, cancel := context.WithTimeout(gctx, c.cfg.BatchWait)
		var stop error
		for len(raw) < c.cfg.BatchSize && size < c.cfg.GroupMaxBytes {
			msg, err := it.Next(jetstream.NextContext(fill))
			if err != nil {
				if gctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
					stop = nextErr(sctx, err)
				}
				break
			}
			group, raw = c.take(group, raw, msg, prefix)
			size += len(msg.Data())
		}
		cancel()
		c.contact()
		c.lastRecv.Store(time.Now().UnixNano())
		if len(group) > 0 {
			// A long prepare or commit (a big group on a loaded
			// machine) is work, not a stall: the watcher leaves the
			// session alone meanwhile.
			c.applying.Add(1)
			commit, err := c.prepare(group)
			c.applying.Add(-1)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrClickApply, err)
			}
			select {
			case groups <- preparedGroup{group: group, raw: raw, commit: commit}:
			case err := <-failed:
				return err
			}
		}
		if ferr := applyFailed(); ferr != nil {
			return ferr
		}
		if stop != nil {
			return stop
		}
	}
}

// preparedGroup is a group handed to the committer: the decoded
// batches, their messages (raw[i] is group[i]'s) and its commit.
type preparedGroup struct {
	group  []ClickMsg
	raw    []jetstream.Msg
	commit func() error
}

// prepare returns the commit of group: the applier's own prepared commit
// if it is a ClickPreparer, else its ApplyClicks.
func (c *ClickConsumer) prepare(group []ClickMsg) (func() error, error) {
	if p, ok := c.cfg.Applier.(ClickPreparer); ok {
		return p.PrepareClicks(group)
	}
	return func() error { return c.cfg.Applier.ApplyClicks(group) }, nil
}

// commitGroup commits g and then acknowledges its messages (or sends
// back those the applier asked to retry).
func (c *ClickConsumer) commitGroup(g preparedGroup) error {
	c.applying.Add(1)
	err := g.commit()
	c.lastRecv.Store(time.Now().UnixNano())
	c.applying.Add(-1)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrClickApply, err)
	}
	c.groups.Add(1)
	c.mGroups.Inc()
	c.mMsgs.Add(len(g.group))
	for i := range g.group {
		m := g.raw[i]
		if g.group[i].Verdict == ClickRetry {
			_ = m.NakWithDelay(c.cfg.RetryDelay)
		} else {
			_ = m.Ack()
		}
	}
	return nil
}

// take decodes msg into the group; an undecodable batch, or one whose
// subject does not name its edge, is poison: logged, counted and
// terminated (never delivered again). raw[i] is the message of group[i].
func (c *ClickConsumer) take(group []ClickMsg, raw []jetstream.Msg, msg jetstream.Msg, prefix string) ([]ClickMsg, []jetstream.Msg) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		c.pending.Store(md.NumPending)
	}
	b, err := link.UnmarshalClickBatch(msg.Data())
	if err == nil {
		if edge, ok := strings.CutPrefix(msg.Subject(), prefix); !ok || edge != b.Edge {
			err = fmt.Errorf("subject %q does not name edge %q", msg.Subject(), b.Edge)
		}
	}
	if err != nil {
		c.poison.Add(1)
		c.mPoison.Inc()
		c.log.Error("terminated a poison click batch", "seq", seq, "subject", msg.Subject(), "bytes", len(msg.Data()), "err", err)
		_ = msg.Term()
		return group, raw
	}
	return append(group, ClickMsg{StreamSeq: seq, Batch: b}), append(raw, msg)
}

func (c *ClickConsumer) contact() { c.lastContact.Store(time.Now().UnixNano()) }

// watch polls the consumer's info for the lag gauges and rebuilds a
// session that stalls: messages pending on the server, none received.
func (c *ClickConsumer) watch(ctx context.Context) {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, max(c.cfg.PollInterval, 2*time.Second))
		cons, err := c.js.Consumer(rctx, c.cfg.Stream.withDefaults().Name, c.cfg.Durable)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(rctx)
		}
		cancel()
		if err != nil {
			continue
		}
		c.contact()
		c.pending.Store(info.NumPending)
		c.ackPending.Store(uint64(info.NumAckPending))
		since := time.Since(unixTime(c.lastRecv.Load()))
		if info.NumPending > 0 && since >= c.cfg.StallTimeout && c.applying.Load() == 0 && c.slot.end(errStalled) {
			c.log.Warn("click consumer stalled, rebuilding", "pending", info.NumPending, "since_receive", since)
		}
	}
}
