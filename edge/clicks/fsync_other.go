//go:build !(linux && (amd64 || arm64))

package clicks

import "os"

// syncFile is f.Sync.
func syncFile(f *os.File) error { return f.Sync() }
