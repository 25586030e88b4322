package clicks

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestSyncFile: syncFile syncs files and directories, from several
// goroutines at once, and reports a closed file as f.Sync does.
func TestSyncFile(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for range 5 {
				if _, err := f.Write(make([]byte, 64<<10)); err != nil {
					errs <- err
					return
				}
				if err := syncFile(f); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syncFile(d); err != nil {
		t.Fatalf("directory: %v", err)
	}
	d.Close()
	if err := syncFile(d); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("closed file: %v, want os.ErrClosed", err)
	}
}
