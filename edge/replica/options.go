package replica

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults applied by Open to zero-valued Options fields.
const (
	DefaultBlockCacheBytes      = 64 << 20
	DefaultHotCacheEntries      = 1_000_000
	DefaultNegativeCacheEntries = 100_000
	DefaultMemTableBytes        = 16 << 20
	DefaultBulkMemTableBytes    = 64 << 20
	DefaultBulkPending          = 100_000
	DefaultBloomMinCapacity     = 1 << 20
)

// Options configure a Replica.
type Options struct {
	// Dir is the directory holding the Pebble store. It is required unless
	// FS is set, in which case it names the store inside FS. The default
	// with FS set is "replica".
	Dir string
	// FS is the file system the store lives on. Tests may use
	// vfs.NewMem(). The default (nil) is the local disk.
	FS vfs.FS
	// BlockCacheBytes is the size of Pebble's block cache: bytes for
	// blocks, the memtables are not charged to it (see pebbledb.Shared).
	// The default is 64 MiB.
	BlockCacheBytes int64
	// HotCacheEntries bounds the in-memory cache of decoded entries that
	// answers most redirects without touching Pebble. The default is
	// 1,000,000.
	HotCacheEntries int
	// NegativeCacheEntries bounds the cache of codes known to be absent
	// that the bloom filter could not rule out. The default is 100,000.
	NegativeCacheEntries int
	// MemTableBytes is the size of each Pebble memtable in steady state
	// (a replica following the stream; a replay uses BulkMemTableBytes).
	// The block cache is not charged for it (see pebbledb.Shared). The
	// default is 16 MiB.
	MemTableBytes int64
	// BulkPending and BulkMemTableBytes shape a replay: when Apply gets a
	// batch after which at least BulkPending messages are still pending
	// (replication.Batch.Pending: a fresh edge's replay, a resync, an
	// edge that was offline for long), the replica reopens its store with
	// memtables of BulkMemTableBytes and compactions of L0 deferred
	// until L0 holds many flushes (bulk-load settings), and it reopens
	// it with the steady-state settings after the first batch with
	// nothing pending, so the memory of the bulk memtables ends with the
	// replay. The WAL stays on in both (see Apply). BulkPending -1 never
	// uses bulk-load settings. The defaults are 100,000 and 64 MiB.
	BulkPending       int64
	BulkMemTableBytes int64
	// BloomMinCapacity is the number of codes the bloom filter is sized for
	// at least. The filter is sized for twice the held codes (at about 1%
	// false positives) and rebuilt at twice the size when it fills. The
	// default is 1<<20.
	BloomMinCapacity int
	// Logger receives Pebble's and the replica's log lines. The default
	// (nil) discards them.
	Logger *slog.Logger
	// Metrics is the set the replica's linkpop_replica_* metrics are
	// registered in. The default (nil) is a set of its own.
	Metrics *metrics.Set
}

// Validate reports every invalid field.
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" && o.FS == nil {
		errs = append(errs, errors.New("dir: required"))
	}
	if o.BlockCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("block cache bytes: %d is negative", o.BlockCacheBytes))
	}
	if o.HotCacheEntries < 0 {
		errs = append(errs, fmt.Errorf("hot cache entries: %d is negative", o.HotCacheEntries))
	}
	if o.NegativeCacheEntries < 0 {
		errs = append(errs, fmt.Errorf("negative cache entries: %d is negative", o.NegativeCacheEntries))
	}
	for _, m := range []struct {
		name string
		v    int64
	}{{"memtable bytes", o.MemTableBytes}, {"bulk memtable bytes", o.BulkMemTableBytes}} {
		if m.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", m.name, m.v))
		} else if m.v >= 4<<30 {
			errs = append(errs, fmt.Errorf("%s: %d is not below 4 GiB", m.name, m.v))
		}
	}
	if o.BulkPending < -1 {
		errs = append(errs, fmt.Errorf("bulk pending: %d is below -1", o.BulkPending))
	}
	if o.BloomMinCapacity < 0 {
		errs = append(errs, fmt.Errorf("bloom min capacity: %d is negative", o.BloomMinCapacity))
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Dir == "" {
		o.Dir = "replica"
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.BlockCacheBytes == 0 {
		o.BlockCacheBytes = DefaultBlockCacheBytes
	}
	if o.HotCacheEntries == 0 {
		o.HotCacheEntries = DefaultHotCacheEntries
	}
	if o.NegativeCacheEntries == 0 {
		o.NegativeCacheEntries = DefaultNegativeCacheEntries
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = DefaultMemTableBytes
	}
	if o.BulkMemTableBytes == 0 {
		o.BulkMemTableBytes = DefaultBulkMemTableBytes
	}
	if o.BulkPending == 0 {
		o.BulkPending = DefaultBulkPending
	}
	if o.BloomMinCapacity == 0 {
		o.BloomMinCapacity = DefaultBloomMinCapacity
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	return o
}
