package replica

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a consistent copy of the store into dir, which must
// not exist: Pebble's DB.Checkpoint, which hard-links the immutable
// tables and copies the WAL and manifest, so it costs little and the
// replica keeps serving and applying meanwhile. The position ("m/position")
// is in the store, so the copy holds the stream position it reflects;
// Open on dir gives a replica that resumes the stream from there. The
// bloom filter file is not copied: Open rebuilds it by a scan.
func (r *Replica) Checkpoint(dir string) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return ErrClosed
	}
	if err := r.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("checkpoint replica: %w", err)
	}
	return nil
}
