package store

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
)

// gateFS holds every WAL sync while armed, so a test can look at the
// store while a commit is visible to readers but not yet durable.
type gateFS struct {
	vfs.FS
	armed   atomic.Bool
	waiting atomic.Int32
	release chan struct{}
}

func (fs *gateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f), err
}

func (fs *gateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f), err
}

func (fs *gateFS) wrap(name string, f vfs.File) vfs.File {
	if f == nil || !strings.HasSuffix(name, ".log") {
		return f
	}
	return &gateFile{File: f, fs: fs}
}

type gateFile struct {
	vfs.File
	fs *gateFS
}

func (f *gateFile) gate() {
	if f.fs.armed.Load() {
		f.fs.waiting.Add(1)
		<-f.fs.release
	}
}

func (f *gateFile) Sync() error     { f.gate(); return f.File.Sync() }
func (f *gateFile) SyncData() error { f.gate(); return f.File.SyncData() }
func (f *gateFile) SyncTo(n int64) (bool, error) {
	f.gate()
	return f.File.SyncTo(n)
}

// The relay must never be handed an outbox entry whose commit is not yet
// durable: Pebble lets readers see a batch before its WAL sync, and an
// entry published then lost to a crash would put a link in the stream
// that the store does not hold (TestCrashDurability found this as
// "GHOST" events under SIGKILL).
func TestOutboxHidesCommitsUntilDurable(t *testing.T) {
	leaktest.Check(t)
	fs := &gateFS{FS: vfs.NewMem(), release: make(chan struct{})}
	s := openMem(t, Options{FS: fs})
	ctx := context.Background()
	if _, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/durable"}); err != nil {
		t.Fatal(err)
	}

	fs.armed.Store(true)
	var released atomic.Bool
	release := func() {
		fs.armed.Store(false)
		if released.CompareAndSwap(false, true) {
			close(fs.release)
		}
	}
	// Registered after openMem's Close, so it runs first: a failing test
	// must not leave the writer stuck in a held sync.
	t.Cleanup(release)
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/in-flight"})
		done <- err
	}()
	wait.For(t, 10*time.Second, "the second create's WAL sync to be held", func() bool {
		return fs.waiting.Load() > 0
	})
	// The in-flight batch is in the memtable now; only its sync is held.
	entries, err := s.Outbox(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Revision != 1 {
		revs := []uint64{}
		for _, e := range entries {
			revs = append(revs, e.Revision)
		}
		t.Fatalf("outbox while a commit awaits its sync = revisions %v, want only the durable [1]", revs)
	}

	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	entries, err = s.Outbox(100)
	if err != nil || len(entries) != 2 {
		t.Fatalf("outbox after the sync = %d entries, %v; want 2", len(entries), err)
	}
}
