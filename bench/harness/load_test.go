package harness

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func loadHarness(t testing.TB, links int, cache string) *harness {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	h := &harness{
		cfg:  Config{WorkDir: t.TempDir(), CacheDir: cache, Links: links, Seed: 7},
		ctx:  ctx,
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		data: newDataset(links, 7),
		rep:  &Report{},
	}
	t.Cleanup(h.stopStream)
	return h
}

// TestLoadStreamCache: the first run publishes the dataset and keeps the
// stream in the cache, the next copies it (same last sequence, every
// code's event readable), and a cache that does not hold the dataset is
// published again.
func TestLoadStreamCache(t *testing.T) {
	cache := t.TempDir()
	const n = 3000
	first := loadHarness(t, n, cache)
	if err := first.loadStream(); err != nil {
		t.Fatal(err)
	}
	if b := first.rep.Bootstrap; b.StreamFromCache || b.StreamLastSeq != n {
		t.Fatalf("first load: from cache %v, last seq %d, want published %d", b.StreamFromCache, b.StreamLastSeq, n)
	}
	first.stopStream()

	second := loadHarness(t, n, cache)
	if err := second.loadStream(); err != nil {
		t.Fatal(err)
	}
	if b := second.rep.Bootstrap; !b.StreamFromCache || b.StreamLastSeq != n {
		t.Fatalf("second load: from cache %v, last seq %d, want cached %d", b.StreamFromCache, b.StreamLastSeq, n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, found, err := second.pub.LastFor(ctx, second.data.codes[i])
		cancel()
		if err != nil || !found {
			t.Fatalf("code %d (%s) in the cached stream: found %v, %v", i, second.data.codes[i], found, err)
		}
	}
	second.stopStream()

	// A cache with other content (here: a stream of fewer events under
	// this dataset's key) is replaced.
	other := loadHarness(t, n/2, cache)
	if err := other.loadStream(); err != nil {
		t.Fatal(err)
	}
	other.stopStream()
	if err := os.RemoveAll(second.streamCache()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other.streamCache(), second.streamCache()); err != nil {
		t.Fatal(err)
	}
	third := loadHarness(t, n, cache)
	if err := third.loadStream(); err != nil {
		t.Fatal(err)
	}
	if b := third.rep.Bootstrap; b.StreamFromCache || b.StreamLastSeq != n {
		t.Fatalf("load over a wrong cache: from cache %v, last seq %d, want published %d", b.StreamFromCache, b.StreamLastSeq, n)
	}
	if _, err := os.Stat(filepath.Join(third.streamCache(), streamCacheDone)); err != nil {
		t.Fatalf("the cache was not rebuilt: %v", err)
	}
}

// BenchmarkLoadStream publishes LINKPOP_LOAD_N (default 200,000) links
// into the stream the way the harness loads it, without a cache.
func BenchmarkLoadStream(b *testing.B) {
	n := 200_000
	if s := os.Getenv("LINKPOP_LOAD_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		n = v
	}
	for b.Loop() {
		b.StopTimer()
		h := loadHarness(b, n, "")
		b.StartTimer()
		if err := h.loadStream(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(h.rep.Bootstrap.PublishPerSecond, "events/s")
		h.stopStream()
		b.StartTimer()
	}
}
