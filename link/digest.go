package link

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// DigestTerm is one record's contribution to a replica digest: the xxhash
// of the code followed by the revision as 8 big-endian bytes. A digest is
// the wrapping uint64 sum of the terms of every record, so it does not
// depend on order and the origin and an edge can compare their tables
// without shipping them.
func DigestTerm(code string, revision uint64) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(code)
	var rev [8]byte
	binary.BigEndian.PutUint64(rev[:], revision)
	_, _ = d.Write(rev[:])
	return d.Sum64()
}
