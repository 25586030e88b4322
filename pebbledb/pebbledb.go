// Package pebbledb is the one way linkpop opens a Pebble store: the
// origin's link store (origin/store), the edge's replica (edge/replica)
// and the collector's rollups (collector). Each store sets what is its
// own (memtables, compaction thresholds, block size, a merger, the file
// system) in a pebble.Options; Open adds what they all share: Pebble's
// log lines through slog, the newest format, a block cache the database
// owns (sized for blocks: see Shared.CacheBytes), and a 10-bit bloom
// filter on every level (their reads are point lookups: a miss skips the
// data block). It imports nothing of linkpop, so the edge binary may link
// it.
package pebbledb

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Shared are the settings Open gives every store.
type Shared struct {
	// Logger receives Pebble's log lines. The default discards them.
	Logger *slog.Logger
	// InfoLevel is the level of Pebble's informational lines (flushes,
	// compactions). The default is slog.LevelInfo.
	InfoLevel slog.Level
	// CacheBytes is the size of the block cache: the bytes it holds
	// blocks in. Pebble charges its memtables to the cache it is given
	// (it reserves each memtable's size there, and keeps the reservation
	// of the one it holds for reuse), so Open gives it CacheBytes plus
	// MemTableReserve: without that, a cache not larger than two
	// memtables holds no block at all. The default (0) is Pebble's.
	CacheBytes int64
}

// MemTableReserve is what Open adds to Shared.CacheBytes for the
// memtables of opts (after EnsureDefaults) in steady state: the mutable
// one and the one Pebble keeps for reuse, each of MemTableSize. While a
// flush is queued, the queued memtables (up to
// MemTableStopWritesThreshold of them) take their size from the blocks
// until they are flushed; a memtable smaller than MemTableSize (the
// first ones after an open grow from 256 KiB) leaves the difference to
// the blocks.
func MemTableReserve(opts *pebble.Options) int64 {
	return 2 * int64(opts.MemTableSize)
}

// BloomBits is the bits per key of the bloom filter on every level.
const BloomBits = 10

// Open opens (creating if needed) the store in dir with opts plus what
// Shared and this package add (see the package comment); a level's
// filter policy set in opts is kept. Open fills opts in
// (EnsureDefaults), so the caller may read its FS afterwards.
func Open(dir string, opts *pebble.Options, sh Shared) (*pebble.DB, error) {
	opts.Logger = Logger(sh.Logger, sh.InfoLevel)
	opts.FormatMajorVersion = pebble.FormatNewest
	for i := range opts.Levels {
		if opts.Levels[i].FilterPolicy == nil {
			opts.Levels[i].FilterPolicy = bloom.FilterPolicy(BloomBits)
		}
	}
	opts.EnsureDefaults() // MemTableSize first, then the cache
	blocks := sh.CacheBytes
	if blocks == 0 {
		blocks = opts.CacheSize
	}
	cache := pebble.NewCache(blocks + MemTableReserve(opts))
	defer cache.Unref() // the database holds its own reference
	opts.Cache = cache
	return pebble.Open(dir, opts)
}

// Logger sends Pebble's log lines to l (nil discards): Infof at info,
// Errorf at error, Fatalf at error and then a panic, as Pebble expects.
func Logger(l *slog.Logger, info slog.Level) pebble.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return logger{l, info}
}

type logger struct {
	l    *slog.Logger
	info slog.Level
}

func (p logger) Infof(format string, args ...any) {
	p.l.Log(context.Background(), p.info, "pebble: "+fmt.Sprintf(format, args...))
}

func (p logger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (p logger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic(msg)
}
