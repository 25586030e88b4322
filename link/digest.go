package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
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

// DigestBuckets is the number of buckets a Digest splits a table into. At
// a million links a bucket holds about 4,000.
const DigestBuckets = 256

// DigestBucket returns the bucket of code: the top byte of the xxhash of
// the code alone. A code stays in its bucket whatever its revision, so
// the origin and an edge list the same codes in a bucket and a bucket's
// listing shows every code whose revision differs.
func DigestBucket(code string) int { return int(xxhash.Sum64String(code) >> 56) }

// Digest summarises a link table as the sum and count of its records'
// DigestTerms, overall and per DigestBucket. Equal digests mean equal
// (code, revision) sets, up to hash collisions; the buckets that differ
// localise a divergence to 1/256 of the table. The zero value is the
// digest of an empty table.
type Digest struct {
	// Count is the number of records and Sum the wrapping sum of their
	// terms.
	Count, Sum uint64
	// Buckets[i] is the wrapping sum of the terms of the records whose
	// code is in bucket i, and Counts[i] their number.
	Buckets [DigestBuckets]uint64
	Counts  [DigestBuckets]uint64
}

// Add adds the record (code, revision).
func (d *Digest) Add(code string, revision uint64) {
	t := DigestTerm(code, revision)
	b := DigestBucket(code)
	d.Count++
	d.Sum += t
	d.Buckets[b] += t
	d.Counts[b]++
}

// Equal reports whether d and o summarise the same records.
func (d *Digest) Equal(o *Digest) bool { return *d == *o }

// Diff returns, in order, the buckets whose sum or count differ between d
// and o; nil when the digests are equal.
func (d *Digest) Diff(o *Digest) []int {
	var out []int
	for i := range d.Buckets {
		if d.Buckets[i] != o.Buckets[i] || d.Counts[i] != o.Counts[i] {
			out = append(out, i)
		}
	}
	return out
}

// DigestJSON is the JSON form of a Digest, as the origin's GET /v1/digest
// and an edge's GET /digest serve it (each adds fields of its own): sums
// are 16 lower-case hex digits, so JSON numbers never lose precision.
type DigestJSON struct {
	Links   uint64   `json:"links"`
	Sum     string   `json:"sum"`
	Buckets []string `json:"buckets"`
	Counts  []uint64 `json:"counts"`
}

// JSON returns the JSON form of d.
func (d *Digest) JSON() DigestJSON {
	j := DigestJSON{
		Links:   d.Count,
		Sum:     hex64(d.Sum),
		Buckets: make([]string, DigestBuckets),
		Counts:  append([]uint64(nil), d.Counts[:]...),
	}
	for i, s := range d.Buckets {
		j.Buckets[i] = hex64(s)
	}
	return j
}

func hex64(v uint64) string {
	const digits = "0000000000000000"
	s := strconv.FormatUint(v, 16)
	return digits[len(s):] + s
}

// ErrBadDigest is returned by DigestJSON.Digest for a digest that is
// malformed or whose buckets do not add up to its totals.
var ErrBadDigest = errors.New("malformed digest")

// Digest parses j and checks that it is whole: DigestBuckets buckets and
// counts, and totals equal to their sums.
func (j *DigestJSON) Digest() (Digest, error) {
	var d Digest
	if len(j.Buckets) != DigestBuckets || len(j.Counts) != DigestBuckets {
		return d, fmt.Errorf("%w: %d buckets and %d counts, want %d", ErrBadDigest, len(j.Buckets), len(j.Counts), DigestBuckets)
	}
	var err error
	if d.Sum, err = parseHex64(j.Sum); err != nil {
		return Digest{}, fmt.Errorf("%w: sum %q", ErrBadDigest, j.Sum)
	}
	d.Count = j.Links
	var sum, count uint64
	for i, s := range j.Buckets {
		if d.Buckets[i], err = parseHex64(s); err != nil {
			return Digest{}, fmt.Errorf("%w: bucket %d %q", ErrBadDigest, i, s)
		}
		d.Counts[i] = j.Counts[i]
		sum += d.Buckets[i]
		count += d.Counts[i]
	}
	if sum != d.Sum || count != d.Count {
		return Digest{}, fmt.Errorf("%w: buckets add up to %s and %d links, totals say %s and %d",
			ErrBadDigest, hex64(sum), count, j.Sum, j.Links)
	}
	return d, nil
}

func parseHex64(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, ErrBadDigest
	}
	return strconv.ParseUint(s, 16, 64)
}

// DigestEntry is one record as a digest bucket listing shows it. The
// origin's GET /v1/digest/buckets/{i} and an edge's GET
// /digest/buckets/{i} serve lists of them in code order.
type DigestEntry struct {
	Code     string `json:"code"`
	Revision uint64 `json:"revision"`
}

// recordRevisionTag is the field number of linkpb.Record.revision.
const recordRevisionTag = protowire.Number(9)

// RecordRevision reads the revision of a record encoded by MarshalRecord
// without decoding the rest of it: digests read every record and need
// nothing else. It checks the framing, not the fields. Like protobuf, it
// takes the last revision field if a record has several: a replica stores
// the record bytes the change stream carried (ChangeRecordBytes), and its
// digest must see the revision UnmarshalRecord decodes from them.
func RecordRevision(b []byte) (uint64, error) {
	var (
		rev   uint64
		found bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		if num == recordRevisionTag && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
			}
			rev, found, b = v, true, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, fmt.Errorf("%w: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if !found {
		return 0, fmt.Errorf("%w: record without revision", ErrCorrupt)
	}
	return rev, nil
}
