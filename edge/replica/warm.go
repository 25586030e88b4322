package replica

import (
	"context"
	"slices"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// LiveWindow is how recently a created link must have been committed for
// Apply to put it in the hot cache (see warmCreated).
const LiveWindow = 10 * time.Second

// HotCodes returns up to n codes of the hot cache, recently requested ones
// first: the hot set an edge saves and a fresh peer loads.
func (r *Replica) HotCodes(n int) []string { return r.hot.Hot(n) }

// Warm loads the codes the replica holds into the hot cache, in order,
// until ctx is done, and returns how many it loaded. Codes that are not
// valid or not held are skipped (a miss is cached as a miss, as any
// lookup's).
//
// It reads the codes in chunks of warmChunk, each sorted: neighbouring
// codes share Pebble blocks, so a sorted chunk reads each block once,
// while the chunks keep the hottest codes first for a warm cut short by
// ctx.
func (r *Replica) Warm(ctx context.Context, codes []string) (int, error) {
	n := 0
	chunk := make([]string, 0, warmChunk)
	for start := 0; start < len(codes); start += warmChunk {
		if ctx.Err() != nil {
			break
		}
		chunk = append(chunk[:0], codes[start:min(start+warmChunk, len(codes))]...)
		slices.Sort(chunk)
		for _, code := range chunk {
			if !link.ValidCode(code) {
				continue
			}
			_, found, err := r.Lookup([]byte(code))
			if err != nil {
				return n, err
			}
			if found {
				n++
			}
		}
	}
	return n, nil
}

// warmChunk is how many codes Warm sorts and reads at a time.
const warmChunk = 16384

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
