package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/linkpop/linkpop/link"
)

// Table prefixes; see the package comment for the layout.
var (
	linkPrefix   = []byte("l/")
	linkUpper    = []byte("l0") // '0' follows '/'
	outboxPrefix = []byte("o/")
	outboxUpper  = []byte("o0")
	idemPrefix   = []byte("i/")
	expiryPrefix = []byte("x/")
	expiryUpper  = []byte("x0")
	keyPrefix    = []byte("k/")
	keyUpper     = []byte("k0")
	hashPrefix   = []byte("h/")
	originPrefix = []byte("p/")
	originUpper  = []byte("p0")
	revisionKey  = []byte("m/revision")
	linksKey     = []byte("m/links")
	oseqKey      = []byte("m/oseq")
	posLinksKey  = []byte("m/pos/links")
	posOrigKey   = []byte("m/pos/origin")
)

func linkKey(code string) []byte {
	return append(append(make([]byte, 0, len(linkPrefix)+len(code)), linkPrefix...), code...)
}

func outboxKey(rev uint64) []byte { return seqKey(outboxPrefix, rev) }

func originKey(seq uint64) []byte { return seqKey(originPrefix, seq) }

func seqKey(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), seq)
}

func idemID(scope, key string) string { return scope + "\x00" + key }

func idemKey(id string) []byte {
	return append(append(make([]byte, 0, len(idemPrefix)+len(id)), idemPrefix...), id...)
}

func expiryKey(created int64, id string) []byte {
	k := append(make([]byte, 0, len(expiryPrefix)+8+len(id)), expiryPrefix...)
	k = binary.BigEndian.AppendUint64(k, uint64(created))
	return append(k, id...)
}

func apiKeyKey(id string) []byte {
	return append(append(make([]byte, 0, len(keyPrefix)+len(id)), keyPrefix...), id...)
}

func hashKey(h [32]byte) []byte {
	return append(append(make([]byte, 0, len(hashPrefix)+32), hashPrefix...), h[:]...)
}

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: counter of %d bytes", link.ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// encodeOutbox is the value of an outbox entry.
func encodeOutbox(committed time.Time, code string, change []byte) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(code)+len(change))
	b = binary.AppendUvarint(b, uint64(committed.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(code)))
	b = append(b, code...)
	return append(b, change...)
}

func decodeOutbox(key, val []byte) (OutboxEntry, error) {
	if len(key) != len(outboxPrefix)+8 {
		return OutboxEntry{}, fmt.Errorf("%w: outbox key of %d bytes", link.ErrCorrupt, len(key))
	}
	e := OutboxEntry{Revision: binary.BigEndian.Uint64(key[len(outboxPrefix):])} // p/ is as long as o/
	ns, n := binary.Uvarint(val)
	if n <= 0 {
		return OutboxEntry{}, fmt.Errorf("%w: outbox entry %d: time", link.ErrCorrupt, e.Revision)
	}
	val = val[n:]
	l, n := binary.Uvarint(val)
	if n <= 0 || l > uint64(len(val)-n) {
		return OutboxEntry{}, fmt.Errorf("%w: outbox entry %d: code", link.ErrCorrupt, e.Revision)
	}
	val = val[n:]
	e.CommittedAt = time.Unix(0, int64(ns)).UTC()
	e.Code = string(val[:l])
	e.Data = append([]byte(nil), val[l:]...)
	return e, nil
}

// idemRecord is a stored Idempotency-Key record.
type idemRecord struct {
	hash    [32]byte
	created int64 // unix ns
	rec     link.Record
}

func encodeIdem(r *idemRecord) ([]byte, error) {
	snap, err := link.MarshalRecord(&r.rec)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 40+len(snap))
	b = append(b, r.hash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created))
	return append(b, snap...), nil
}

func decodeIdem(b []byte) (idemRecord, error) {
	if len(b) < 40 {
		return idemRecord{}, fmt.Errorf("%w: idempotency record of %d bytes", link.ErrCorrupt, len(b))
	}
	var r idemRecord
	copy(r.hash[:], b)
	r.created = int64(binary.BigEndian.Uint64(b[32:40]))
	rec, err := link.UnmarshalRecord(b[40:])
	if err != nil {
		return idemRecord{}, fmt.Errorf("idempotency snapshot: %w", err)
	}
	r.rec = rec
	return r, nil
}
