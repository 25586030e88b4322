package pebbledb

import (
	"bytes"
	"log/slog"
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
