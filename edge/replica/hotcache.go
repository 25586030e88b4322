package replica

import (
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/maypok86/otter/v2"
)

// hotCache is the bounded cache of decoded entries in front of Pebble: a
// few shards, each a map from code to a slot in a CLOCK ring, under its own
// mutex.
//
// It replaced an otter (W-TinyLFU) cache on the redirect path. Under a
// uniform spread of requests over a million codes otter's every hit queued
// its node in a read buffer whose drain, on another goroutine, touched the
// frequency sketch and moved the node in its deques: random memory
// accesses per request, and drains that held the edge's only core for
// milliseconds at a time, which showed as tail latency. A hit here takes
// the shard's lock, reads the slot and sets its reference bit if it was
// clear; there is no background work. CLOCK (second chance) keeps codes
// read since the hand last passed them and evicts the others.
//
// Every method that changes an entry runs under the shard's lock, which is
// what the coherence of Lookup with Apply relies on: a reader's
// conditional insert (Compute) and a writer's update (ComputeIfPresent,
// Invalidate) of the same code are ordered.
type hotCache struct {
	shards []hotShard
	mask   uint64
}

type hotShard struct {
	mu    sync.Mutex
	index map[string]int32 // code → slot
	slots []hotSlot        // ring; len ≤ max
	max   int
	hand  int
	_     [40]byte // keep shards' locks on separate cache lines
}

type hotSlot struct {
	key string
	e   *Entry
	ref bool // read since the hand last passed
	// hits counts the reads since the entry was cached, saturating at
	// 255 and halved by Decay: the recent request frequency Hot ranks by.
	hits uint8
}

// hotShardMin is the fewest entries a shard is given: small caches (tests)
// get one shard and an exact bound.
const (
	hotShardMin = 4096
	hotShardMax = 64
)

// newHotCache returns a cache of at most maxEntries entries (0 caches
// nothing).
func newHotCache(maxEntries int) *hotCache {
	n := 1
	for n < hotShardMax && maxEntries/(n*2) >= hotShardMin {
		n *= 2
	}
	c := &hotCache{shards: make([]hotShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		m := maxEntries / n
		if i < maxEntries%n {
			m++
		}
		c.shards[i] = hotShard{index: make(map[string]int32), max: m}
	}
	return c
}

func (c *hotCache) shard(key string) *hotShard {
	if c.mask == 0 {
		return &c.shards[0]
	}
	return &c.shards[xxhash.Sum64String(key)&c.mask]
}

// GetIfPresent returns the entry cached for key. key is not retained.
func (c *hotCache) GetIfPresent(key string) (*Entry, bool) {
	s := c.shard(key)
	s.mu.Lock()
	i, ok := s.index[key]
	if !ok {
		s.mu.Unlock()
		return nil, false
	}
	sl := &s.slots[i]
	if !sl.ref {
		sl.ref = true
	}
	if sl.hits < 255 {
		sl.hits++
	}
	e := sl.e
	s.mu.Unlock()
	return e, true
}

// Compute calls f with the entry cached for key, if any, under the shard's
// lock, and stores what it returns on otter.WriteOp, drops the entry on
// otter.InvalidateOp and leaves it on otter.CancelOp. key is retained.
func (c *hotCache) Compute(key string, f func(old *Entry, found bool) (*Entry, otter.ComputeOp)) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.index[key]
	var old *Entry
	if found {
		old = s.slots[i].e
	}
	e, op := f(old, found)
	switch op {
	case otter.WriteOp:
		if found {
			s.slots[i].e = e
			return
		}
		s.insert(key, e)
	case otter.InvalidateOp:
		if found {
			s.remove(key, i)
		}
	}
}

// ComputeIfPresent is Compute for a key that is cached; f is not called
// for one that is not.
func (c *hotCache) ComputeIfPresent(key string, f func(old *Entry) (*Entry, otter.ComputeOp)) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.index[key]
	if !found {
		return
	}
	e, op := f(s.slots[i].e)
	switch op {
	case otter.WriteOp:
		s.slots[i].e = e
	case otter.InvalidateOp:
		s.remove(key, i)
	}
}

// Invalidate drops the entry cached for key.
func (c *hotCache) Invalidate(key string) {
	s := c.shard(key)
	s.mu.Lock()
	if i, ok := s.index[key]; ok {
		s.remove(key, i)
	}
	s.mu.Unlock()
}

// EstimatedSize returns the number of entries cached.
func (c *hotCache) EstimatedSize() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.slots)
		s.mu.Unlock()
	}
	return n
}

// insert adds key, which is not cached, evicting with the CLOCK hand when
// the shard is full. Called with s.mu held.
func (s *hotShard) insert(key string, e *Entry) {
	if s.max == 0 {
		return
	}
	if len(s.slots) < s.max {
		s.index[key] = int32(len(s.slots))
		s.slots = append(s.slots, hotSlot{key: key, e: e})
		return
	}
	for {
		if s.hand >= len(s.slots) {
			s.hand = 0
		}
		sl := &s.slots[s.hand]
		if !sl.ref {
			break
		}
		sl.ref = false
		s.hand++
	}
	sl := &s.slots[s.hand]
	delete(s.index, sl.key)
	*sl = hotSlot{key: key, e: e}
	s.index[key] = int32(s.hand)
	s.hand++
}

// remove drops key, held in slot i, moving the last slot into its place.
// Called with s.mu held.
func (s *hotShard) remove(key string, i int32) {
	delete(s.index, key)
	last := int32(len(s.slots) - 1)
	if i != last {
		s.slots[i] = s.slots[last]
		s.index[s.slots[i].key] = i
	}
	s.slots[last] = hotSlot{}
	s.slots = s.slots[:last]
}

// AddIfRoom caches e for key if key is not cached and its shard has a free
// slot: it never evicts. It reports whether it added. key is retained.
func (c *hotCache) AddIfRoom(key string, e *Entry) bool {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[key]; ok || len(s.slots) >= s.max {
		return false
	}
	s.insert(key, e)
	return true
}

// Contains reports whether key is cached, without counting a read.
func (c *hotCache) Contains(key string) bool {
	s := c.shard(key)
	s.mu.Lock()
	_, ok := s.index[key]
	s.mu.Unlock()
	return ok
}

// Decay halves every entry's hit count.
func (c *hotCache) Decay() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			s.slots[j].hits >>= 1
		}
		s.mu.Unlock()
	}
}

// Hot returns up to n cached codes, most read first (by hit count; among
// equal counts in shard order). It counts the entries per hit count in a
// first pass, so the second keeps only those above the cut and needs no
// sort.
func (c *hotCache) Hot(n int) []string {
	if n <= 0 {
		return nil
	}
	var hist [256]int
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			hist[s.slots[j].hits]++
		}
		s.mu.Unlock()
	}
	// cut is the lowest count kept; take of the entries at cut, the rest
	// in full.
	cut, above := 255, 0
	for ; cut > 0 && above+hist[cut] < n; cut-- {
		above += hist[cut]
	}
	atCut := n - above
	var byHits [256][]string
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			h := int(s.slots[j].hits)
			if h < cut || (h == cut && atCut <= 0) {
				continue
			}
			if h == cut {
				atCut--
			}
			byHits[h] = append(byHits[h], s.slots[j].key)
		}
		s.mu.Unlock()
	}
	out := make([]string, 0, min(n, c.EstimatedSize()))
	for h := 255; h >= cut && len(out) < n; h-- {
		out = append(out, byHits[h][:min(len(byHits[h]), n-len(out))]...)
	}
	return out
}
