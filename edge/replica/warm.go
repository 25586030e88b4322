package replica

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/maypok86/otter/v2"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// LiveWindow is how recently a created link must have been committed for
// Apply to put it in the hot cache (see warmCreated).
const LiveWindow = 10 * time.Second

// HotCodes returns up to n codes of the hot cache, most requested first
// (by the cache's decayed hit counts, see DecayHot): the hot set an edge
// saves and a fresh peer loads.
func (r *Replica) HotCodes(n int) []string { return r.hot.Hot(n) }

// DecayHot halves every hot-cache entry's hit count, so that HotCodes
// ranks by recent requests: a code hot an hour ago and not since sinks
// below one requested in the last minutes. The edge calls it after each
// periodic save of its hot set.
func (r *Replica) DecayHot() { r.hot.Decay() }

// warmChunk is how many codes Warm sorts and reads at a time: the hottest
// chunk first, so a warm cut short by its context has loaded the hottest
// codes.
const warmChunk = 65536

// warmCtxEvery is how many codes a warm worker reads between two checks of
// its context.
const warmCtxEvery = 1024

// Warm loads the codes the replica holds into the hot cache until ctx is
// done, and returns how many it loaded (codes already cached count as
// loaded). Codes that are not valid or not held are skipped.
//
// codes are in order of heat. Warm takes them warmChunk at a time, sorts
// each chunk and reads it with Pebble iterators, forward: neighbouring
// codes share blocks, and a forward seek from the previous key steps
// through the block instead of searching the LSM again, which costs a
// fraction of a point Get. Each chunk is split into as many contiguous
// key ranges as there are CPUs (at most 4), read in parallel.
func (r *Replica) Warm(ctx context.Context, codes []string) (int, error) {
	workers := min(runtime.GOMAXPROCS(0), 4)
	chunk := make([]string, 0, min(warmChunk, len(codes)))
	loaded := 0
	for start := 0; start < len(codes) && ctx.Err() == nil; start += warmChunk {
		chunk = chunk[:0]
		for _, c := range codes[start:min(start+warmChunk, len(codes))] {
			if link.ValidCode(c) {
				chunk = append(chunk, c)
			}
		}
		slices.Sort(chunk)
		chunk = slices.Compact(chunk)
		parts := min(workers, max(len(chunk)/warmCtxEvery, 1))
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for p := range parts {
			part := chunk[p*len(chunk)/parts : (p+1)*len(chunk)/parts]
			wg.Go(func() {
				n, err := r.warmSorted(ctx, part)
				mu.Lock()
				loaded += n
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			return loaded, errs[0]
		}
	}
	return loaded, nil
}

// warmSorted loads sorted, distinct, valid codes into the hot cache with
// one iterator, reopened when a writer commits meanwhile (an iterator reads
// the store as of its creation; an entry read before a commit is cached
// only if no commit happened since, as in lookupDisk).
func (r *Replica) warmSorted(ctx context.Context, codes []string) (int, error) {
	if len(codes) == 0 {
		return 0, nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return 0, ErrClosed
	}
	var (
		it  *pebble.Iterator
		gen uint64
		err error
		key []byte
		n   int
	)
	open := func(from string) error {
		if it != nil {
			if err := it.Close(); err != nil {
				return err
			}
		}
		gen = r.gen.Load()
		it, err = r.db.NewIter(&pebble.IterOptions{LowerBound: linkKey(from), UpperBound: linkUpper})
		return err
	}
	if err := open(codes[0]); err != nil {
		return 0, fmt.Errorf("warm: %w", err)
	}
	defer func() {
		if it != nil {
			_ = it.Close()
		}
	}()
	bl := r.bloom.Load()
	for i, code := range codes {
		if i%warmCtxEvery == 0 && ctx.Err() != nil {
			break
		}
		// A cached code is marked read, as a lookup would, so that the
		// CLOCK hand does not evict it for the codes loaded after it.
		if _, ok := r.hot.GetIfPresent(code); ok {
			n++
			continue
		}
		if !bl.mayContain(code) {
			continue
		}
		if r.gen.Load() != gen {
			if err := open(code); err != nil {
				return n, fmt.Errorf("warm: %w", err)
			}
		}
		key = append(append(key[:0], linkPrefix...), code...)
		if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return n, fmt.Errorf("warm %q: %w", code, err)
		}
		if r.afterDiskRead != nil {
			r.afterDiskRead()
		}
		hotKey, e, err := decodeEntry(key[len(linkPrefix):], v)
		if err != nil {
			return n, fmt.Errorf("warm %q: %w", code, err)
		}
		r.hot.Compute(hotKey, func(old *Entry, found bool) (*Entry, otter.ComputeOp) {
			if r.gen.Load() != gen || (found && old.Revision >= e.Revision) {
				return old, otter.CancelOp
			}
			return e, otter.WriteOp
		})
		n++
	}
	if err := it.Error(); err != nil {
		return n, fmt.Errorf("warm: %w", err)
	}
	return n, nil
}

// warmCreated is the warm-on-apply rule for links that are not cached:
// an update of a cached link replaces it in place (published); a created
// link goes into the hot cache only if it was committed within LiveWindow
// (a live create, not a replay or a catch-up) and its shard has a free
// slot. It never evicts: most links are visited rarely (the request
// distribution is Zipf-like), so trading a cached entry that was read for
// a new one that may never be would lower the hit rate, and the first
// visit of a link that is not cached costs one local Pebble read, not a
// trip to the origin, so there is no thundering herd to avoid. Called
// with wmu held, after published.
func (r *Replica) warmCreated(b *replication.Batch, order []int, now time.Time) {
	for _, i := range order {
		c := &b.Changes[i].Change
		if c.Op != link.OpCreate || now.Sub(c.CommittedAt) > LiveWindow {
			continue
		}
		r.hot.AddIfRoom(c.Record.Code, entryOf(&c.Record))
	}
}
