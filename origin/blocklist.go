package origin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/link"
)

// Blocklist defaults.
const (
	// DefaultBlocklistRefresh is how often blocklist files are read again.
	DefaultBlocklistRefresh = 15 * time.Minute
	// blocklistSweepers is how many disables of one sweep are in flight at
	// once: enough for the writer to group-commit them.
	blocklistSweepers = 16
)

// blocklists owns the target policy: the fixed part (the own host,
// BlockedDomains, private addresses) and the entries of the blocklist
// files, reloaded on Server.ReloadBlocklists and every BlocklistRefresh.
// A reload that lists a host no earlier one did disables the active links
// to it (sweep).
type blocklists struct {
	files   []string
	base    link.URLPolicy // own host, private addresses
	static  []string       // BlockedDomains, canonical
	current atomic.Pointer[link.URLPolicy]

	mu      sync.Mutex          // one reload (and its sweep) at a time
	entries map[string]struct{} // the listed hosts of the last load, static included
	// pending are listed hosts whose sweep has not completed (an error or
	// a stop cut it short); the next reload sweeps them again.
	pending map[string]struct{}

	mEntries, mSkipped, mLastOK atomic.Int64
	mReloadOK, mReloadErr       *metrics.Counter
	mDisabled, mSweepErr        *metrics.Counter
}

func newBlocklists(cfg *Config, ownHost string, set *metrics.Set) (*blocklists, error) {
	base, err := link.NewURLPolicy([]string{ownHost})
	if err != nil {
		return nil, err
	}
	if !cfg.AllowPrivateTargets {
		base = base.RefusingPrivateAddresses()
	}
	b := &blocklists{
		files:      cfg.BlocklistFiles,
		base:       base,
		entries:    map[string]struct{}{},
		pending:    map[string]struct{}{},
		mReloadOK:  set.GetOrCreateCounter(`linkpop_origin_blocklist_reloads_total{result="ok"}`),
		mReloadErr: set.GetOrCreateCounter(`linkpop_origin_blocklist_reloads_total{result="error"}`),
		mDisabled:  set.GetOrCreateCounter("linkpop_origin_blocklist_disabled_total"),
		mSweepErr:  set.GetOrCreateCounter("linkpop_origin_blocklist_sweep_errors_total"),
	}
	for _, d := range cfg.BlockedDomains {
		h, err := link.CanonicalHost(d)
		if err != nil {
			return nil, fmt.Errorf("blocked domain %q: %w", d, err)
		}
		b.static = append(b.static, h)
	}
	set.GetOrCreateGauge("linkpop_origin_blocklist_entries", func() float64 { return float64(b.mEntries.Load()) })
	set.GetOrCreateGauge("linkpop_origin_blocklist_skipped_entries", func() float64 { return float64(b.mSkipped.Load()) })
	set.GetOrCreateGauge("linkpop_origin_blocklist_last_reload_timestamp_seconds", func() float64 { return float64(b.mLastOK.Load()) })
	return b, nil
}

// Len is the number of listed hosts in force (BlockedDomains included).
func (b *blocklists) Len() int { return int(b.mEntries.Load()) }

// policy is the target policy in force.
func (b *blocklists) policy() *link.URLPolicy { return b.current.Load() }

// load reads every file and returns the listed hosts (BlockedDomains
// included) and how many file entries had no canonical form. A file that
// cannot be read fails the whole load: a list half-downloaded or moved
// away must not unlist its hosts.
func (b *blocklists) load() (map[string]struct{}, int, error) {
	hosts := make(map[string]struct{}, len(b.static))
	for _, h := range b.static {
		hosts[h] = struct{}{}
	}
	skipped := 0
	var errs []error
	for _, name := range b.files {
		f, err := os.Open(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("blocklist: %w", err))
			continue
		}
		hs, n, err := link.ParseBlocklist(f)
		_ = f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("blocklist %s: %w", name, err))
			continue
		}
		skipped += n
		for _, h := range hs {
			hosts[h] = struct{}{}
		}
	}
	return hosts, skipped, errors.Join(errs...)
}

// ReloadBlocklists reads the blocklist files again and puts the new
// policy in force for every create and update from then on; then, if the
// files list hosts no earlier load did, it disables every active link to
// them (and their subdomains) through the store, so the change stream
// carries the disable to every edge, with DisabledReason "blocklist:
// <entry>". It returns once that sweep is done. On an unreadable file the
// policy in force is kept and the error returned. cmd/origin calls it on
// SIGHUP; Run calls it every BlocklistRefresh.
func (s *Server) ReloadBlocklists(ctx context.Context) error {
	b := s.blocks
	b.mu.Lock()
	defer b.mu.Unlock()
	hosts, skipped, err := b.load()
	if err != nil {
		b.mReloadErr.Inc()
		s.log.Error("blocklist reload failed; keeping the lists in force", "err", err)
		return err
	}
	added := make([]string, 0)
	for h := range hosts {
		if _, ok := b.entries[h]; !ok {
			added = append(added, h)
		}
	}
	for h := range b.pending {
		if _, ok := hosts[h]; ok && !slices.Contains(added, h) {
			added = append(added, h)
		}
	}
	p := b.base.WithHosts(slices.Collect(maps.Keys(hosts)))
	// Every create or update that read the old policy holds writeGate
	// until its commit: once Lock returns they are in the store, where
	// the sweep finds them, and later ones read the new policy.
	s.writeGate.Lock()
	b.current.Store(&p)
	s.writeGate.Unlock()
	b.entries = hosts
	b.mEntries.Store(int64(len(hosts)))
	b.mSkipped.Store(int64(skipped))
	b.mLastOK.Store(time.Now().Unix())
	b.mReloadOK.Inc()
	s.log.Info("blocklists loaded", "entries", len(hosts), "added", len(added), "skipped", skipped, "files", len(b.files))
	if len(added) == 0 {
		return nil
	}
	for _, h := range added {
		b.pending[h] = struct{}{}
	}
	n, err := s.sweepBlocked(ctx, link.URLPolicy{}.WithHosts(added))
	if err != nil {
		b.mSweepErr.Inc()
		s.log.Error("blocklist sweep incomplete; the next reload sweeps again", "disabled", n, "err", err)
		return fmt.Errorf("blocklist sweep: %w", err)
	}
	clear(b.pending)
	return nil
}

// sweepBlocked disables every active link whose target deny blocks, and
// returns how many it disabled.
func (s *Server) sweepBlocked(ctx context.Context, deny link.URLPolicy) (int, error) {
	type hit struct {
		code, entry string
		rev         uint64
	}
	var hits []hit
	err := s.store.ScanAll(func(r link.Record) error {
		if r.Status != link.StatusActive {
			return nil
		}
		if e, ok := deny.BlockedBy(r.URL); ok {
			hits = append(hits, hit{r.Code, e, r.Revision})
		}
		return ctx.Err()
	})
	if err != nil {
		return 0, err
	}
	var disabled atomic.Int64
	var mu sync.Mutex
	var errs []error
	work := make(chan hit)
	var wg sync.WaitGroup
	for range min(blocklistSweepers, len(hits)) {
		wg.Go(func() {
			for h := range work {
				if err := s.disableBlocked(ctx, h.code, h.rev, h.entry, deny); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("disable %s: %w", h.code, err))
					mu.Unlock()
					continue
				}
				disabled.Add(1)
			}
		})
	}
	for _, h := range hits {
		select {
		case work <- h:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return int(disabled.Load()), errors.Join(errs...)
}

// disableBlocked disables one link at the revision the sweep read; if a
// change raced it, it reads the link again and disables it if it is still
// active and blocked.
func (s *Server) disableBlocked(ctx context.Context, code string, rev uint64, entry string, deny link.URLPolicy) error {
	for range 3 {
		rec, err := s.store.DisableFor(ctx, code, rev, "blocklist: "+entry)
		if errors.Is(err, link.ErrRevisionMismatch) {
			cur, gerr := s.store.Get(code)
			if gerr != nil {
				return gerr
			}
			e, ok := deny.BlockedBy(cur.URL)
			if cur.Status != link.StatusActive || !ok {
				return nil
			}
			rev, entry = cur.Revision, e
			continue
		}
		if err != nil {
			return err
		}
		s.blocks.mDisabled.Inc()
		s.log.Info("link disabled: target blocklisted", "code", code, "entry", entry, "revision", rec.Revision)
		return nil
	}
	return fmt.Errorf("%w: changed three times during the sweep", link.ErrRevisionMismatch)
}

// runBlocklists reloads the files every BlocklistRefresh until ctx ends.
// The first sweep (of what New loaded) runs at once.
func (s *Server) runBlocklists(ctx context.Context) {
	if _, err := s.sweepBlocked(ctx, s.blocks.initialDeny()); err != nil && ctx.Err() == nil {
		s.blocks.mSweepErr.Inc()
		s.log.Error("blocklist sweep at start incomplete", "err", err)
		s.blocks.mu.Lock()
		for h := range s.blocks.entries {
			s.blocks.pending[h] = struct{}{}
		}
		s.blocks.mu.Unlock()
	}
	if s.cfg.BlocklistRefresh < 0 || len(s.blocks.files) == 0 {
		return
	}
	t := time.NewTicker(s.cfg.BlocklistRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = s.ReloadBlocklists(ctx) // logged and counted
		}
	}
}

// sweepAtTakeover sweeps every listed host once this origin leads: a
// standby refuses writes, so its sweeps (at start, and at every reload of
// the files) failed and left the hosts pending, and the links it follows
// were written by leaders that may have had other lists.
func (s *Server) sweepAtTakeover(ctx context.Context) {
	b := s.blocks
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.entries) == 0 {
		return
	}
	n, err := s.sweepBlocked(ctx, link.URLPolicy{}.WithHosts(slices.Collect(maps.Keys(b.entries))))
	if err != nil {
		if ctx.Err() == nil {
			b.mSweepErr.Inc()
			s.log.Error("blocklist sweep at takeover incomplete; the next reload sweeps again", "disabled", n, "err", err)
		}
		for h := range b.entries {
			b.pending[h] = struct{}{}
		}
		return
	}
	clear(b.pending)
	s.log.Info("blocklist sweep at takeover", "disabled", n, "entries", len(b.entries))
}

// initialDeny is a policy of every listed host (no own host, no private
// addresses), for the sweep at start.
func (b *blocklists) initialDeny() link.URLPolicy {
	b.mu.Lock()
	defer b.mu.Unlock()
	return link.URLPolicy{}.WithHosts(slices.Collect(maps.Keys(b.entries)))
}

// loadInitial is the load New does: an unreadable file is a start-up
// error.
func (b *blocklists) loadInitial() error {
	hosts, skipped, err := b.load()
	if err != nil {
		return err
	}
	p := b.base.WithHosts(slices.Collect(maps.Keys(hosts)))
	b.current.Store(&p)
	b.entries = hosts
	b.mEntries.Store(int64(len(hosts)))
	b.mSkipped.Store(int64(skipped))
	b.mLastOK.Store(time.Now().Unix())
	return nil
}
