package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/link"
)

// The limited set: the codes of the active links that carry a
// max_visits, kept in memory so the origin's max_visits check skips,
// without a read, every clicked code that has no limit (under spread
// traffic a collector commit names tens of thousands of codes, nearly
// none of them limited), and its sweep reads the limited links instead
// of scanning the whole link table.
//
// The set may hold more codes than that (a false positive costs the
// caller one Get, which tells the truth), never fewer: Open opens an
// iterator before the writer starts, a goroutine adds every limited link
// of that snapshot, and the writer adds every link it writes with a limit
// before its batch commits, and removes a code only after a commit that
// left it without one. A code the snapshot saw limited and a later write
// freed may be added back by the scan: a false positive, until that link
// is written again.

// limitedSet is the store's limited set.
type limitedSet struct {
	mu    sync.RWMutex
	codes map[string]struct{}
	// ready is closed when the scan has added every limited link of its
	// snapshot (or failed: err).
	ready chan struct{}
	err   error
}

// limited reports whether rec belongs in the set.
func limited(rec *link.Record) bool { return rec.MaxVisits > 0 && rec.Status == link.StatusActive }

// startLimited opens the snapshot of the limited set's scan and starts
// the scan; Open calls it before the writer starts.
func (s *Store) startLimited() error {
	s.lim = limitedSet{codes: map[string]struct{}{}, ready: make(chan struct{})}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		return err
	}
	s.enter() // Open has not returned: nobody closes yet
	go s.scanLimited(it)
	return nil
}

// scanLimited adds every limited link of it to the set; it runs on its
// own goroutine, a reader of the store until it returns.
func (s *Store) scanLimited(it *pebble.Iterator) {
	defer s.exit()
	start := time.Now()
	n, seen := 0, 0
	var err error
	for valid := it.First(); valid; valid = it.Next() {
		seen++
		if seen%4096 == 0 && s.closing.Load() {
			err = ErrClosed
			break
		}
		rec, derr := link.UnmarshalRecord(it.Value())
		if derr != nil {
			err = derr
			break
		}
		if limited(&rec) {
			s.lim.mu.Lock()
			s.lim.codes[rec.Code] = struct{}{}
			s.lim.mu.Unlock()
			n++
		}
	}
	err = errors.Join(err, it.Error(), it.Close())
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Error("limited links: scan", "err", err)
	}
	s.lim.err = err
	close(s.lim.ready)
	if err == nil {
		s.log.Info("limited links: scanned", "links", seen, "limited", n, "took", time.Since(start))
	}
}

// noteLimited adds rec's code to the set if it carries a limit; the
// writer calls it for every link it writes, before the batch commits.
func (s *Store) noteLimited(rec *link.Record) {
	if !limited(rec) {
		return
	}
	s.lim.mu.Lock()
	s.lim.codes[rec.Code] = struct{}{}
	s.lim.mu.Unlock()
}

// unnoteLimited removes from the set the codes of recs, the links a
// commit wrote, that carry no limit any more; the writer calls it after
// the commit.
func (s *Store) unnoteLimited(recs map[string]link.Record) {
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	for code, rec := range recs {
		if !limited(&rec) {
			delete(s.lim.codes, code)
		}
	}
}

// MayBeLimited reports whether code may name an active link with a
// max_visits. False is certain: no such link has code (as of the last
// commit). True means: read the link.
func (s *Store) MayBeLimited(code string) bool {
	select {
	case <-s.lim.ready:
		if s.lim.err != nil {
			return true
		}
	default:
		return true // the scan is not done: everything may be
	}
	s.lim.mu.RLock()
	_, ok := s.lim.codes[code]
	s.lim.mu.RUnlock()
	return ok
}

// LimitedCodes returns, in code order, a superset of the codes of the
// active links with a max_visits, as of the last commit; it waits for
// the scan Open started. A failed scan is an error.
func (s *Store) LimitedCodes(ctx context.Context) ([]string, error) {
	select {
	case <-s.lim.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.lim.err != nil {
		return nil, s.lim.err
	}
	s.lim.mu.RLock()
	codes := make([]string, 0, len(s.lim.codes))
	for c := range s.lim.codes {
		codes = append(codes, c)
	}
	s.lim.mu.RUnlock()
	slices.Sort(codes)
	return codes, nil
}
