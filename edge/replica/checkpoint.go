package replica

import (
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a consistent copy of the store into dir, which must
// not exist: Pebble's DB.Checkpoint, which hard-links the immutable
// tables and copies the WAL and manifest, so it costs little and the
// replica keeps serving meanwhile (writers wait for the checkpoint). The
// position ("m/position") is in the store, so the copy holds the stream
// position it reflects; Open on dir gives a replica that resumes the
// stream from there. The bloom filter is saved into dir as well, for the
// copy's link count, so that Open loads it instead of scanning every code
// (at 10M links the scan was most of a peer bootstrap); a copy without it
// (the save failed) is rebuilt by the scan.
func (r *Replica) Checkpoint(dir string) error {
	r.wmu.Lock()
	r.mu.RLock()
	if r.closed.Load() {
		r.mu.RUnlock()
		r.wmu.Unlock()
		return ErrClosed
	}
	err := r.db.Checkpoint(dir, pebble.WithFlushedWAL())
	// With writers held off, the filter and the count are the copy's.
	links, bl := r.links.Load(), r.bloom.Load().clone()
	r.mu.RUnlock()
	r.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("checkpoint replica: %w", err)
	}
	if err := saveBloom(r.fs, dir, r.id, links, bl); err != nil {
		r.log.Warn("checkpoint without its bloom filter: the copy scans its codes when opened", "err", err)
	}
	return nil
}

// clone returns a copy of b. The caller holds writers off; readers only
// load words.
func (b *bloom) clone() *bloom {
	return &bloom{words: slices.Clone(b.words), blocks: b.blocks, capacity: b.capacity}
}
