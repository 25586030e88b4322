package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
)

// RoleHeader is set on every API answer of an origin with HA: "leader" or
// "standby".
const RoleHeader = "Linkpop-Role"

// Ack modes (Config.Ack).
const (
	// AckLocal answers a mutation once the store's synced batch is on the
	// local disk; the relay publishes it afterwards. Losing the machine
	// loses the outbox backlog.
	AckLocal = "local"
	// AckReplicated answers a mutation only after the stream (R3 in
	// production) has acknowledged its events: losing the origin and its
	// disk loses no answered write.
	AckReplicated = "replicated"
)

// Defaults of HAConfig and the replicated ack.
const (
	DefaultAckTimeout     = 10 * time.Second
	DefaultLeaseTTL       = 15 * time.Second
	DefaultLeaseRenew     = 2 * time.Second
	DefaultLeaseStopAfter = 10 * time.Second
	DefaultLeasePoll      = time.Second
)

// HAConfig configures an origin that runs with standbys: every origin of
// the group runs with Enabled, and the leader lease alone decides which
// one accepts writes. The others follow the streams into their stores,
// answer reads, refuse writes with 503 not_leader and are not ready.
type HAConfig struct {
	// Enabled turns the lease and the standby role on. The default
	// (false) is a single origin that always accepts writes.
	Enabled bool
	// AdvertiseURL is this origin's API URL as clients reach it, put in
	// the lease so standbys name the leader in not_leader answers. The
	// default is "http://" + the API listener's address.
	AdvertiseURL string
	// Holder names this origin in the lease. The default is the host
	// name and the API address.
	Holder string
	// Lease is the lease bucket (its TTL is LeaseTTL; Replicas default to
	// the stream's).
	Lease replication.LeaseConfig
	// Renew is how often the leader renews the lease. The default is 2s.
	Renew time.Duration
	// StopAfter: the leader stops accepting writes once this long has
	// passed since it sent its last successful renewal. It must be below
	// the lease TTL, so the leader has stopped before any standby can
	// take the lease. The default is 10s. Safety does not rest on it:
	// the epoch fence refuses a deposed leader's events anyway.
	StopAfter time.Duration
	// Poll is how often a standby tries to take the lease. The default is
	// 1s.
	Poll time.Duration
}

func (c HAConfig) withDefaults(cfg *Config) HAConfig {
	if c.Lease.TTL == 0 {
		c.Lease.TTL = DefaultLeaseTTL
	}
	if c.Lease.Replicas == 0 {
		c.Lease.Replicas = max(cfg.Stream.Replicas, 1)
	}
	if c.Renew == 0 {
		c.Renew = DefaultLeaseRenew
	}
	if c.StopAfter == 0 {
		c.StopAfter = min(DefaultLeaseStopAfter, c.Lease.TTL*2/3)
	}
	if c.Poll == 0 {
		c.Poll = DefaultLeasePoll
	}
	return c
}

// Validate reports every bad field.
func (c HAConfig) Validate() error {
	var errs []error
	if err := c.Lease.Validate(); err != nil {
		errs = append(errs, err)
	}
	ttl := c.Lease.TTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if c.Renew < 0 || c.StopAfter < 0 || c.Poll < 0 {
		errs = append(errs, errors.New("HA: Renew, StopAfter and Poll must not be negative"))
	}
	if c.StopAfter != 0 && c.StopAfter >= ttl {
		errs = append(errs, fmt.Errorf("HA: StopAfter %v must be below the lease TTL %v", c.StopAfter, ttl))
	}
	if c.Renew != 0 && c.StopAfter != 0 && c.Renew >= c.StopAfter {
		errs = append(errs, fmt.Errorf("HA: Renew %v must be below StopAfter %v", c.Renew, c.StopAfter))
	}
	return errors.Join(errs...)
}

// ErrNotReplicated answers a mutation that committed but whose events the
// stream did not acknowledge within Config.AckTimeout (-ack replicated).
// It may still be published: retry with the same Idempotency-Key.
var ErrNotReplicated = &Error{503, "unavailable", "the change is committed but the stream has not acknowledged it in time; retry (with the same Idempotency-Key) later"}

// haState is the server's HA role.
type haState struct {
	leader atomic.Bool
	epoch  atomic.Uint64
	// leaderURL is the API URL of the lease holder, as last read.
	leaderURL atomic.Value // string
	// hookRenew, set by tests, runs before each renewal; blocking in it
	// freezes the lease loop, as a SIGSTOP of the whole process would,
	// while the relay goes on.
	hookRenew func()
	takeovers atomic.Uint64
	stepDowns atomic.Uint64
}

func (h *haState) leaderAPI() string {
	v, _ := h.leaderURL.Load().(string)
	return v
}

// isLeader reports whether this origin accepts writes: always without HA.
func (s *Server) isLeader() bool { return !s.cfg.HA.Enabled || s.ha.leader.Load() }

// Role is "leader" or "standby".
func (s *Server) Role() string {
	if s.isLeader() {
		return "leader"
	}
	return "standby"
}

// Epoch is the leader epoch this origin publishes with (0 without HA or
// while it never led).
func (s *Server) Epoch() uint64 { return s.ha.epoch.Load() }

// replicated waits, with -ack replicated, until everything committed up
// to now is in the streams.
func (s *Server) replicated(ctx context.Context) error {
	return s.replicatedThrough(ctx, s.store.Revision())
}

// replicatedThrough waits, with -ack replicated, until every link event
// up to revision rev (a mutation's own: rec.Revision) and every origin
// event committed up to now are in the streams. Waiting for the store's
// revision after the mutation returned instead often waits for the next
// group commit too: under load it commits before the handler runs again.
func (s *Server) replicatedThrough(ctx context.Context, rev uint64) error {
	if s.cfg.Ack != AckReplicated {
		return nil
	}
	err := s.store.WaitPublishedWithin(ctx, rev, s.store.OriginSeq(), s.cfg.AckTimeout)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrDiscarded):
		return store.ErrReadOnly
	case errors.Is(err, context.DeadlineExceeded):
		return ErrNotReplicated
	}
	return err
}

func (c *keyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
	c.gen++
}

// runHA is the relay's place with HA: it alternates between standby and
// leader until ctx ends.
func (s *Server) runHA(ctx context.Context) error {
	h := s.cfg.HA
	me := replication.LeaseValue{Holder: h.Holder, URL: h.AdvertiseURL}
	var lease *replication.Lease
	for lease == nil {
		var err error
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		lease, err = replication.OpenLease(octx, s.raw, h.Lease, me)
		cancel()
		if err != nil {
			if !sleep(ctx, h.Poll) {
				return nil
			}
			s.log.Warn("ha: lease bucket not ready", "err", err)
		}
	}
	// What this origin did not publish before it stopped was never
	// answered with -ack replicated; another leader may have taken over
	// since, so it is dropped and refetched from the streams.
	if err := s.rebuild(ctx); err != nil {
		return err
	}
	for ctx.Err() == nil {
		epoch, lost, stopRenew, err := s.standby(ctx, lease)
		if err != nil {
			return err
		}
		if epoch == 0 {
			return nil // ctx ended
		}
		s.lead(ctx, lease, lost)
		stopRenew()
		if err := s.rebuild(ctx); err != nil {
			return err
		}
	}
	return nil
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

// standby follows both streams into the store and campaigns for the
// lease; once it wins, it takes over (catch-up and epoch barriers) and
// returns the epoch, a channel closed when the lease is lost and the
// function that stops the renewals. Epoch 0: ctx ended.
func (s *Server) standby(ctx context.Context, lease *replication.Lease) (epoch uint64, lost <-chan struct{}, stopRenew func(), err error) {
	h := s.cfg.HA
	s.store.SetReadOnly(true)
	s.ha.leader.Store(false)
	fctx, stopFollow := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ferr := make(chan error, 2)
	wg.Go(func() { ferr <- s.followLinks(fctx) })
	wg.Go(func() { ferr <- s.followOrigin(fctx) })
	defer func() {
		stopFollow()
		wg.Wait()
	}()
	s.log.Info("ha: standby, following the streams")
	for {
		select {
		case err := <-ferr:
			if err != nil && ctx.Err() == nil {
				return 0, nil, nil, err
			}
		default:
		}
		if ctx.Err() != nil {
			return 0, nil, nil, nil
		}
		actx, cancel := context.WithTimeout(ctx, h.StopAfter/2)
		e, aerr := lease.Acquire(actx)
		cancel()
		if aerr == nil {
			lostc := make(chan struct{})
			rctx, stop := context.WithCancel(ctx)
			var rwg sync.WaitGroup
			rwg.Go(func() { s.renew(rctx, lease, lostc) })
			stopRenew = func() {
				stop()
				rwg.Wait()
			}
			tctx, tcancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-lostc:
					tcancel()
				case <-tctx.Done():
				}
			}()
			start := time.Now()
			err := s.takeover(tctx, e)
			tcancel()
			if err == nil {
				s.log.Info("ha: took over as leader", "epoch", e, "takeover", time.Since(start))
				return e, lostc, stopRenew, nil
			}
			stopRenew()
			s.log.Warn("ha: takeover failed", "epoch", e, "err", err)
			rctx2, c2 := context.WithTimeout(context.Background(), time.Second)
			_ = lease.Release(rctx2)
			c2()
		} else {
			if !errors.Is(aerr, replication.ErrLeaseHeld) {
				s.log.Warn("ha: lease not acquired", "err", aerr)
			}
			gctx, c := context.WithTimeout(ctx, h.Renew)
			if v, ok := lease.Holder(gctx); ok {
				s.ha.leaderURL.Store(v.URL)
			}
			c()
		}
		if !sleep(ctx, h.Poll) {
			return 0, nil, nil, nil
		}
	}
}

// takeover makes this origin the writer at epoch: it waits until the
// store has applied each stream up to its last message, appends the epoch
// barrier to each (expecting that last message: if anything landed since,
// it catches up and tries again), makes the store durable at the
// barriers, and opens it for writes. Everything a former leader had
// acknowledged lies before the barriers; anything it sends after them is
// refused.
func (s *Server) takeover(ctx context.Context, epoch uint64) error {
	var barL, barO uint64
	// Every call to the streams is bounded: a stream without a leader
	// (an election in progress) does not answer at all.
	call := func(fn func(ctx context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return fn(cctx)
	}
	for ctx.Err() == nil {
		var tl, to replication.Tail
		err := call(func(ctx context.Context) (err error) { tl, err = s.pub.Tail(ctx); return err })
		if err == nil {
			err = call(func(ctx context.Context) (err error) { to, err = s.opub.Tail(ctx); return err })
		}
		if err != nil {
			s.log.Warn("ha: takeover: reading the streams' tails", "err", err)
			if !sleep(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		for {
			pl, po := s.store.Positions()
			if pl >= tl.LastMsgSeq && po >= to.LastMsgSeq {
				break
			}
			if !sleep(ctx, 5*time.Millisecond) {
				return ctx.Err()
			}
		}
		err = call(func(ctx context.Context) (err error) {
			barO, err = s.notAtomic(s.opub.AppendBarrier(ctx, epoch, to.Seq))
			return err
		})
		if err == nil {
			err = call(func(ctx context.Context) (err error) {
				barL, err = s.notAtomic(s.pub.AppendBarrier(ctx, epoch, tl.Seq))
				return err
			})
		}
		if err != nil {
			// 10071: something landed since the tails were read; any
			// other failure (a timeout, an election): read them again.
			// A barrier that landed although its answer was lost is the
			// tail next time, at our epoch, and the next one goes after it.
			if !errors.Is(err, replication.ErrWrongLastSequence) {
				s.log.Warn("ha: takeover: appending the barrier", "err", err)
			}
			if !sleep(ctx, 20*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		break
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The followers stop when standby returns; nothing but our own
	// barrier lies after what they applied.
	if err := s.store.SetPositions(ctx, barL, barO); err != nil {
		return err
	}
	s.pub.SetEpoch(epoch)
	s.opub.SetEpoch(epoch)
	s.relay.Reset()
	s.keys.clear()
	s.ha.epoch.Store(epoch)
	s.ha.leaderURL.Store(s.cfg.HA.AdvertiseURL)
	s.store.SetReadOnly(false)
	s.ha.leader.Store(true)
	s.ha.takeovers.Add(1)
	return nil
}

// notAtomic passes AppendBarrier's answer on, taking a barrier appended
// as one message on a stream without atomic batches for appended, with a
// warning: a deposed leader's events in flight can land after such a
// barrier (replication.ErrBarrierNotAtomic).
func (s *Server) notAtomic(seq uint64, err error) (uint64, error) {
	if errors.Is(err, replication.ErrBarrierNotAtomic) {
		s.log.Warn("ha: takeover: the barrier is a single message; events the former leader had in flight may land after it until the operator re-runs `origin streams`", "err", err)
		return seq, nil
	}
	return seq, err
}

// renew keeps the lease until ctx ends; it closes lost when the lease is
// taken from it, or when StopAfter has passed since the last renewal that
// succeeded was sent.
func (s *Server) renew(ctx context.Context, lease *replication.Lease, lost chan<- struct{}) {
	h := s.cfg.HA
	lastOK := time.Now()
	t := time.NewTicker(h.Renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.ha.hookRenew != nil {
			s.ha.hookRenew()
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, h.StopAfter/2)
		err := lease.Renew(rctx)
		cancel()
		switch {
		case err == nil:
			lastOK = sent
		case errors.Is(err, replication.ErrLeaseLost):
			s.log.Warn("ha: lease lost")
			close(lost)
			return
		default:
			s.log.Warn("ha: lease renewal failed", "err", err, "since_last_renewal", time.Since(lastOK))
		}
		if time.Since(lastOK) >= h.StopAfter {
			s.log.Warn("ha: no renewal for too long; no longer taking writes", "since_last_renewal", time.Since(lastOK))
			close(lost)
			return
		}
	}
}

// lead runs the relay as the leader until ctx ends, the lease is lost or
// the relay is fenced; then the store is read-only again.
func (s *Server) lead(ctx context.Context, lease *replication.Lease, lost <-chan struct{}) {
	rctx, stopRelay := context.WithCancel(context.Background())
	relayErr := make(chan error, 1)
	s.relayRunning.Store(true)
	go func() { relayErr <- s.relay.Run(rctx) }()
	// What a standby's blocklist sweeps could not disable (read-only), the
	// leader does now.
	sctx, stopSweep := context.WithCancel(ctx)
	var sweep sync.WaitGroup
	sweep.Go(func() { s.sweepAtTakeover(sctx) })
	defer func() {
		stopSweep()
		sweep.Wait()
	}()
	stepDown := func(why string, err error) {
		s.store.SetReadOnly(true)
		s.ha.leader.Store(false)
		s.ha.stepDowns.Add(1)
		s.log.Warn("ha: stepping down", "why", why, "err", err, "epoch", s.ha.epoch.Load())
	}
	select {
	case <-ctx.Done():
		// A clean stop: refuse new writes, let the relay drain what was
		// answered, then hand the lease over at once.
		s.store.SetReadOnly(true)
		s.ha.leader.Store(false)
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		_ = s.store.WaitPublished(dctx, s.store.Revision(), s.store.OriginSeq())
		cancel()
		stopRelay()
		<-relayErr
		rel, c := context.WithTimeout(context.Background(), time.Second)
		_ = lease.Release(rel)
		c()
	case <-lost:
		stepDown("lease lost", nil)
		stopRelay()
		<-relayErr
	case err := <-relayErr:
		stepDown("relay stopped", err)
		stopRelay()
	}
	s.relayRunning.Store(false)
}

// rebuild drops what this origin committed but never published (after
// SetReadOnly, so nothing is added meanwhile) and fetches the published
// state of what those entries touched from the streams: the store is then
// a copy of the streams up to its positions, and following them goes on
// from there.
func (s *Server) rebuild(ctx context.Context) error {
	s.store.SetReadOnly(true)
	s.ha.leader.Store(false)
	codes, keyCodes, err := s.store.Discard(ctx)
	if err != nil {
		return fmt.Errorf("ha: discard outbox: %w", err)
	}
	if len(codes)+len(keyCodes) > 0 {
		s.log.Warn("ha: discarded what was never published", "links", len(codes), "keys", len(keyCodes))
	}
	for _, code := range codes {
		if err := s.refetch(ctx, s.pub, code, func(data []byte) error {
			ch, err := link.UnmarshalChange(data)
			if err != nil {
				return err
			}
			return s.store.ApplyLinks(ctx, 0, []link.Change{ch})
		}); err != nil {
			return err
		}
	}
	for _, code := range keyCodes {
		if err := s.refetch(ctx, s.opub, code, func(data []byte) error {
			return s.store.ApplyOrigin(ctx, 0, [][]byte{data})
		}); err != nil {
			return err
		}
	}
	s.keys.clear()
	return nil
}

// refetch reads the last message of code from p's stream, retrying until
// it answers, and applies it if there is one.
func (s *Server) refetch(ctx context.Context, p *replication.Publisher, code string, apply func([]byte) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		data, found, err := p.LastFor(rctx, code)
		cancel()
		if err == nil {
			if !found {
				return nil
			}
			return apply(data)
		}
		s.log.Debug("ha: refetch", "code", code, "err", err)
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (s *Server) followLinks(ctx context.Context) error {
	return followLinks(ctx, s.raw, s.store, s.cfg.Stream, s.log)
}

func (s *Server) followOrigin(ctx context.Context) error {
	return followOrigin(ctx, s.raw, s.store, s.opub.Config(), s.log, s.keys.clear)
}

// followLinks applies the link stream to st.
func followLinks(ctx context.Context, nc *replication.Conn, st *store.Store, sc replication.StreamConfig, log *slog.Logger) error {
	return replication.Follow(ctx, nc, replication.FollowConfig{
		Stream: sc,
		After:  func() uint64 { l, _ := st.Positions(); return l },
		Apply: func(ctx context.Context, msgs []replication.RawMsg, through uint64) error {
			changes := make([]link.Change, 0, len(msgs))
			for _, m := range msgs {
				ch, err := link.UnmarshalChange(m.Data)
				if err != nil || ch.Record.Code != m.Code {
					log.Error("ha: skipping a bad message of the link stream", "seq", m.Seq, "subject_code", m.Code, "err", err)
					continue
				}
				changes = append(changes, ch)
			}
			return st.ApplyLinks(ctx, through, changes)
		},
		Logger: log.With("component", "follow", "stream", "links"),
	})
}

// followOrigin applies the origin stream to st; keysChanged runs after a
// batch that held API keys.
func followOrigin(ctx context.Context, nc *replication.Conn, st *store.Store, sc replication.StreamConfig, log *slog.Logger, keysChanged func()) error {
	return replication.Follow(ctx, nc, replication.FollowConfig{
		Stream: sc,
		After:  func() uint64 { _, o := st.Positions(); return o },
		Apply: func(ctx context.Context, msgs []replication.RawMsg, through uint64) error {
			events := make([][]byte, len(msgs))
			keys := false
			for i, m := range msgs {
				events[i] = m.Data
				keys = keys || strings.HasPrefix(m.Code, "key.")
			}
			if err := st.ApplyOrigin(ctx, through, events); err != nil {
				return err
			}
			if keys && keysChanged != nil {
				keysChanged()
			}
			return nil
		},
		Logger: log.With("component", "follow", "stream", "origin"),
	})
}

// Restore rebuilds a complete origin store in cfg.DataDir from the streams
// alone (all origins lost): it follows the link stream and the origin
// stream into a new store until it holds each up to its last message,
// makes that durable and returns the number of links. The store directory
// must not exist yet. With -ack replicated nothing that was acknowledged
// is missing; idempotency records older than their TTL have expired from
// the stream, as they would have from the store.
func Restore(ctx context.Context, cfg Config) (uint64, error) {
	if err := cfg.Validate(); err != nil {
		return 0, fmt.Errorf("origin config: %w", err)
	}
	cfg = cfg.withDefaults()
	if len(cfg.NATS.URLs) == 0 {
		return 0, errors.New("restore: NATS URLs are required")
	}
	dir := filepath.Join(cfg.DataDir, storeSubdir)
	if _, err := os.Stat(dir); err == nil {
		return 0, fmt.Errorf("restore: %s exists; restore builds a new store, move it away first", dir)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	st, err := openStore(&cfg, link.NewReserved(cfg.Reserved))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	natsCfg := cfg.NATS
	if natsCfg.Logger == nil {
		natsCfg.Logger = cfg.Logger
	}
	nc, err := replication.Dial(ctx, natsCfg)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, cfg.Stream)
	if err != nil {
		return 0, err
	}
	opub, err := replication.NewPublisher(nc, replication.OriginStream(cfg.Stream, idemStreamTTL(cfg.IdempotencyTTL)))
	if err != nil {
		return 0, err
	}
	tl, err := pub.Tail(ctx)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	to, err := opub.Tail(ctx)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() { errc <- followLinks(fctx, nc, st, cfg.Stream, cfg.Logger) })
	wg.Go(func() { errc <- followOrigin(fctx, nc, st, opub.Config(), cfg.Logger, nil) })
	for err == nil {
		pl, po := st.Positions()
		if pl >= tl.LastMsgSeq && po >= to.LastMsgSeq {
			break
		}
		select {
		case err = <-errc:
			if err == nil {
				err = ctx.Err()
			}
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	wg.Wait()
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	pl, po := st.Positions()
	if err := st.SetPositions(ctx, pl, po); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	return st.Links(), st.Close()
}

// idemStreamTTL is the age at which the origin stream drops an
// idempotency record: an hour past the store's TTL (ttl, 0 for the
// store's default).
func idemStreamTTL(ttl time.Duration) time.Duration {
	if ttl == 0 {
		ttl = store.DefaultIdempotencyTTL
	}
	return ttl + time.Hour
}

// defaultHolder names this origin in the lease.
func defaultHolder(apiAddr string) string {
	host, _ := os.Hostname()
	return host + "/" + apiAddr
}

// defaultAdvertise is the API URL of a listener address.
func defaultAdvertise(apiAddr string) string {
	host, port, err := net.SplitHostPort(apiAddr)
	if err != nil {
		return "http://" + apiAddr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
