//go:build linux && (amd64 || arm64)

package clicks

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSyncFileAIO: on Linux the fsync goes through AIO (unless the kernel
// refuses it, which is logged), so the journal's syncs do not hold the
// runtime's P.
func TestSyncFileAIO(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syncFile(f); err != nil {
		t.Fatal(err)
	}
	fsyncer.mu.Lock()
	ctx := fsyncer.ctx
	fsyncer.mu.Unlock()
	if ctx == 0 {
		t.Skip("no Linux AIO fsync here (io_setup refused or IOCB_CMD_FSYNC unsupported): syncFile is f.Sync")
	}
}
