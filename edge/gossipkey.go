package edge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
)

// ParseGossipKeys reads a gossip key file (-gossip-key-file): one
// base64-encoded key of 16, 24 or 32 bytes per line (`openssl rand
// -base64 32` makes one), the first the key gossip is encrypted with and
// the others accepted too, for rotation. Blank lines and lines starting
// with # are skipped. It never puts a key in an error.
func ParseGossipKeys(data []byte) ([][]byte, error) {
	var keys [][]byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			return nil, fmt.Errorf("gossip key on line %d: not base64", i+1)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip key on line %d: %d bytes, want 16, 24 or 32", i+1, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("gossip key file holds no key")
	}
	return keys, nil
}
