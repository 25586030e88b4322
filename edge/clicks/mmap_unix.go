//go:build unix

package clicks

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile sizes the file at path to size bytes (creating it) and maps it
// shared, read and write. The mapping lives as long as the process: a
// Record may run until the process ends.
func mapFile(path string, size int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("click log: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		return nil, fmt.Errorf("click log: %w", err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("click log: mmap: %w", err)
	}
	return data, nil
}
