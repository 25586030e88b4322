package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// OutboxEntry is one committed change event waiting to be published.
type OutboxEntry struct {
	// Revision is the origin revision the change produced.
	Revision uint64
	// Code is the link's code (the stream subject's last token).
	Code string
	// Data is the encoded event (link.MarshalChange output).
	Data []byte
	// CommittedAt is when the change was committed.
	CommittedAt time.Time
}

// Outbox returns up to limit entries, oldest (lowest revision) first.
func (s *Store) Outbox(limit int) ([]OutboxEntry, error) {
	return s.readOutbox(outboxPrefix, &s.outbox, s.rev.Load(), 0, limit)
}

// OutboxFrom is Outbox from revision from on: a relay with events in
// flight reads past them.
func (s *Store) OutboxFrom(from uint64, limit int) ([]OutboxEntry, error) {
	return s.readOutbox(outboxPrefix, &s.outbox, s.rev.Load(), from, limit)
}

// OriginOutbox returns up to limit entries of the origin outbox, oldest
// first: the events of the origin stream (replication.OriginStream), API
// keys and idempotency records, committed with the links they belong to.
// An entry's Revision is its origin sequence (OriginSeq), its Code the
// subject's tail ("key.<hex id>" or "idem.<hex hash>").
func (s *Store) OriginOutbox(limit int) ([]OutboxEntry, error) {
	return s.readOutbox(originPrefix, &s.origin, s.oseq.Load(), 0, limit)
}

// readOutbox reads up to limit entries of one outbox from revision from
// on, up to durable.
func (s *Store) readOutbox(prefix []byte, idx *outboxIndex, durable, from uint64, limit int) ([]OutboxEntry, error) {
	if limit <= 0 {
		return nil, nil
	}
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.exit()
	// Read only what is durable. Pebble makes a batch visible to readers
	// once it is in the memtable, before its WAL write is synced (see
	// commitPipeline.publish); a relay that published such an entry and
	// then lost it to a crash would put a link in the stream that the
	// store never had. s.rev (s.oseq) advances only after a synced commit
	// returns, so entries up to it are on disk; the caller reads it before
	// calling.
	// Start at the oldest live entry: the deleted ones before it are
	// tombstones an iterator would otherwise step over one by one.
	lower := seqKey(prefix, max(idx.lowest(durable), from))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: seqKey(prefix, durable+1)})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	var out []OutboxEntry
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		e, err := decodeOutbox(it.Key(), it.Value())
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return out, nil
}

// OriginOutboxDelete removes published entries of the origin outbox, as
// OutboxDelete does for links.
func (s *Store) OriginOutboxDelete(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	revs := slices.Clone(seqs)
	slices.Sort(revs)
	return s.submit(context.Background(), &request{kind: kindOriginOutboxDelete, revisions: slices.Compact(revs)}).err
}

// OutboxDelete removes published entries. Unknown revisions are ignored.
// The delete goes through the writer but is not synced on its own: after
// a crash a lost delete only means the entry is published again, which
// the stream's dedup window and the edges' revision checks absorb.
func (s *Store) OutboxDelete(revisions ...uint64) error {
	if len(revisions) == 0 {
		return nil
	}
	revs := slices.Clone(revisions)
	slices.Sort(revs)
	return s.submit(context.Background(), &request{kind: kindOutboxDelete, revisions: slices.Compact(revs)}).err
}

// OutboxStats returns the number of entries waiting and the commit time
// of the oldest (zero when empty). It reads memory only.
func (s *Store) OutboxStats() (depth int, oldest time.Time) {
	s.outbox.mu.Lock()
	defer s.outbox.mu.Unlock()
	if s.outbox.live == 0 {
		return 0, time.Time{}
	}
	return s.outbox.live, time.Unix(0, s.outbox.oldest()).UTC()
}

// OutboxNotify returns a channel that receives (capacity 1, never
// blocking the writer) after each commit that adds outbox entries.
func (s *Store) OutboxNotify() <-chan struct{} { return s.notify }

// outboxDelete adds deletes for sorted revs (see deleteSeqs).
func (t *txn) outboxDelete(revs []uint64) result {
	if err := t.deleteSeqs(outboxPrefix, revs); err != nil {
		return result{err: err}
	}
	t.deleted = append(t.deleted, revs...)
	return result{}
}

// originOutboxDelete is outboxDelete for the origin outbox.
func (t *txn) originOutboxDelete(seqs []uint64) result {
	if err := t.deleteSeqs(originPrefix, seqs); err != nil {
		return result{err: err}
	}
	t.odeleted = append(t.odeleted, seqs...)
	return result{}
}

// minRangeDelete is the shortest run of consecutive entries deleted with
// one range tombstone instead of a point tombstone each. Every range
// tombstone in a memtable makes each later read of that memtable (a Get,
// the relay's next outbox iterator) fragment all of its range tombstones
// again, so the steady state, one short run per relay pass, deletes point
// by point (the outbox reader starts past them), and only the long runs
// of a catch-up after an outage use a range.
const minRangeDelete = 512

// deleteSeqs deletes the sorted seqs of one outbox.
func (t *txn) deleteSeqs(prefix []byte, revs []uint64) error {
	for i := 0; i < len(revs); {
		j := i
		for j+1 < len(revs) && revs[j+1] == revs[j]+1 {
			j++
		}
		var err error
		if j-i+1 < minRangeDelete {
			for _, rev := range revs[i : j+1] {
				if err = t.b.Delete(seqKey(prefix, rev), nil); err != nil {
					break
				}
			}
		} else {
			err = t.b.DeleteRange(seqKey(prefix, revs[i]), seqKey(prefix, revs[j]+1), nil)
		}
		if err != nil {
			return err
		}
		i = j + 1
	}
	t.dirty = true
	return nil
}

// outboxIndex mirrors the outbox's live revisions and commit times in
// memory, so OutboxStats is cheap. It holds spans of consecutive live
// revisions committed at the same time: a group commit's entries form one
// span and the relay deletes from the front, so a long outage costs one
// span per group commit, not one item per entry.
type outboxIndex struct {
	mu    sync.Mutex
	spans []outboxSpan // ascending; spans before head are gone
	head  int
	live  int
}

// outboxSpan is the live revisions first..last, committed at at.
type outboxSpan struct {
	first, last uint64
	at          int64
}

// add appends rev, which is above every revision held; the caller holds
// mu (or owns the index).
func (x *outboxIndex) add(rev uint64, at int64) {
	if n := len(x.spans); n > x.head {
		if sp := &x.spans[n-1]; sp.last+1 == rev && sp.at == at {
			sp.last = rev
			x.live++
			return
		}
	}
	x.spans = append(x.spans, outboxSpan{first: rev, last: rev, at: at})
	x.live++
}

// remove drops rev if it is live; the caller holds mu.
func (x *outboxIndex) remove(rev uint64) {
	rest := x.spans[x.head:]
	i := sort.Search(len(rest), func(i int) bool { return rest[i].last >= rev })
	if i == len(rest) || rest[i].first > rev {
		return
	}
	x.live--
	sp := &rest[i]
	switch {
	case sp.first == sp.last:
		if i == 0 {
			x.head++
		} else {
			x.spans = slices.Delete(x.spans, x.head+i, x.head+i+1)
		}
	case rev == sp.first:
		sp.first++
	case rev == sp.last:
		sp.last--
	default:
		tail := outboxSpan{first: rev + 1, last: sp.last, at: sp.at}
		sp.last = rev - 1
		x.spans = slices.Insert(x.spans, x.head+i+1, tail)
	}
	if x.head == len(x.spans) {
		x.spans, x.head = x.spans[:0], 0
	} else if x.head > 1024 && x.head > len(x.spans)/2 {
		x.spans = append(x.spans[:0], x.spans[x.head:]...)
		x.head = 0
	}
}

// lowest returns the revision of the oldest live entry, or last+1 when
// there is none (last is the last committed revision).
func (x *outboxIndex) lowest(last uint64) uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.live == 0 {
		return last + 1
	}
	return x.spans[x.head].first
}

// oldest returns the commit time of the oldest live entry; the caller
// holds mu and has checked live > 0.
func (x *outboxIndex) oldest() int64 { return x.spans[x.head].at }
