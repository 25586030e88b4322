//go:build !unix

package clicks

import "errors"

// mapFile is not available: the logs stay on the heap and a crash loses
// the unsealed interval.
func mapFile(path string, size int) ([]byte, error) {
	return nil, errors.New("click log: no shared file mappings on this platform")
}
