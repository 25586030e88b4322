package pebbledb

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestOpen: Open adds the shared settings, keeps a store's own filter
// policy, and the database works after the cache reference is dropped.
func TestOpen(t *testing.T) {
	opts := &pebble.Options{FS: vfs.NewMem(), MemTableSize: 1 << 20}
	own := bloom.FilterPolicy(4)
	opts.Levels[6].FilterPolicy = own
	db, err := Open("db", opts, Shared{CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if opts.FormatMajorVersion != pebble.FormatNewest || opts.Cache == nil || opts.Logger == nil {
		t.Errorf("shared settings missing: format %v, cache %v, logger %v", opts.FormatMajorVersion, opts.Cache, opts.Logger)
	}
	for i, l := range opts.Levels[:6] {
		if l.FilterPolicy != bloom.FilterPolicy(BloomBits) {
			t.Errorf("level %d filter %v", i, l.FilterPolicy)
		}
	}
	if opts.Levels[6].FilterPolicy != own {
		t.Errorf("the store's own level-6 filter was replaced: %v", opts.Levels[6].FilterPolicy)
	}
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	v, c, err := db.Get([]byte("k"))
	if err != nil || string(v) != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
	c.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLogger: informational lines at the chosen level, errors at error,
// Fatalf panics.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), slog.LevelDebug)
	l.Infof("flushed %d", 1)
	if buf.Len() != 0 {
		t.Errorf("a debug-level info line was logged at info: %s", buf.String())
	}
	l.Errorf("broken %s", "disk")
	if !strings.Contains(buf.String(), `level=ERROR msg="pebble: broken disk"`) {
		t.Errorf("error line: %s", buf.String())
	}
	defer func() {
		if recover() == nil {
			t.Error("Fatalf did not panic")
		}
	}()
	Logger(nil, slog.LevelInfo).Fatalf("corrupt")
}

// TestBlockCacheHoldsBlocks: the cache Open makes holds CacheBytes of
// blocks once the memtables reached their full size. Pebble reserves
// each memtable's size in the cache and keeps the reservation of the
// memtable it holds for reuse; a cache of CacheBytes alone, with two
// memtables of that size, held no block at all.
func TestBlockCacheHoldsBlocks(t *testing.T) {
	const mem, blocks = 1 << 20, 1 << 20
	opts := &pebble.Options{FS: vfs.NewMem(), MemTableSize: mem}
	db, err := Open("db", opts, Shared{CacheBytes: blocks})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 8 MiB of incompressible values: many memtables of the full size,
	// and more blocks than the cache holds.
	rng := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, 1000)
	const n = 8 << 10
	for i := range n {
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		if err := db.Set(fmt.Appendf(nil, "k%06d", i), val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	// Fill the memtable again up to the full size: the steady state.
	for i := range mem / 1100 {
		if err := db.Set(fmt.Appendf(nil, "m%06d", i), val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		for i := range n {
			_, c, err := db.Get(fmt.Appendf(nil, "k%06d", i))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	m := db.Metrics()
	t.Logf("block cache: %d bytes, %d blocks, %d hits, %d misses; memtables %d + %d bytes",
		m.BlockCache.Size, m.BlockCache.Count, m.BlockCache.Hits, m.BlockCache.Misses, m.MemTable.Size, m.MemTable.ZombieSize)
	if m.MemTable.Size+m.MemTable.ZombieSize < mem {
		t.Fatalf("memtables hold %d + %d bytes, want at least %d: not the steady state", m.MemTable.Size, m.MemTable.ZombieSize, mem)
	}
	if m.BlockCache.Size < blocks*3/4 {
		t.Errorf("block cache holds %d bytes of blocks (%d blocks, %d hits, %d misses), want about %d",
			m.BlockCache.Size, m.BlockCache.Count, m.BlockCache.Hits, m.BlockCache.Misses, blocks)
	}
	if got := opts.Cache.MaxSize(); got != blocks+MemTableReserve(opts) {
		t.Errorf("cache size %d, want %d", got, blocks+MemTableReserve(opts))
	}
}
