package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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

// idemRecord is a stored Idempotency-Key record: the link of a create,
// or, for a CreateBatch, every item's outcome (batch non-nil).
type idemRecord struct {
	hash    [32]byte
	created int64 // unix ns
	rec     link.Record
	batch   []BatchResult
	// snaps, when set, are the records already encoded (MarshalRecord):
	// snaps[0] of rec, or snaps[i] of batch[i] (nil for a refusal), so
	// encodeIdem does not encode them again.
	snaps [][]byte
}

// batchIdemMark follows the 40-byte header of a batch's record. A single
// create's snapshot is a protobuf message, which never starts with a zero
// byte (field number 0 does not exist).
const batchIdemMark = 0x00

// Kinds of a batch record's items.
const (
	batchItemRec = 1 // a record snapshot: the link created
	batchItemErr = 2 // code, field and message, NUL-separated: the refusal
)

func encodeIdem(r *idemRecord) ([]byte, error) {
	b := make([]byte, 40, 40+128*(1+len(r.batch)))
	copy(b, r.hash[:])
	binary.BigEndian.PutUint64(b[32:], uint64(r.created))
	snap := func(i int, rec *link.Record) ([]byte, error) {
		if i < len(r.snaps) && r.snaps[i] != nil {
			return r.snaps[i], nil
		}
		return link.MarshalRecord(rec)
	}
	if r.batch == nil {
		snap, err := snap(0, &r.rec)
		if err != nil {
			return nil, err
		}
		return append(b, snap...), nil
	}
	b = append(b, batchIdemMark)
	for i := range r.batch {
		it := &r.batch[i]
		if it.Err != nil {
			msg := link.ErrorCode(it.Err) + "\x00" + link.ErrorField(it.Err) + "\x00"
			var le *link.Error
			if errors.As(it.Err, &le) {
				msg += le.Message
			}
			b = append(b, batchItemErr)
			b = binary.AppendUvarint(b, uint64(len(msg)))
			b = append(b, msg...)
			continue
		}
		snap, err := snap(i, &it.Rec)
		if err != nil {
			return nil, err
		}
		b = append(b, batchItemRec)
		b = binary.AppendUvarint(b, uint64(len(snap)))
		b = append(b, snap...)
	}
	return b, nil
}

func decodeIdem(b []byte) (idemRecord, error) {
	if len(b) < 40 {
		return idemRecord{}, fmt.Errorf("%w: idempotency record of %d bytes", link.ErrCorrupt, len(b))
	}
	var r idemRecord
	copy(r.hash[:], b)
	r.created = int64(binary.BigEndian.Uint64(b[32:40]))
	if len(b) > 40 && b[40] == batchIdemMark {
		batch, err := decodeBatchIdem(b[41:])
		if err != nil {
			return idemRecord{}, fmt.Errorf("idempotency batch: %w", err)
		}
		r.batch = batch
		return r, nil
	}
	rec, err := link.UnmarshalRecord(b[40:])
	if err != nil {
		return idemRecord{}, fmt.Errorf("idempotency snapshot: %w", err)
	}
	r.rec = rec
	return r, nil
}

// decodeBatchIdem reads a batch record's items back; a refusal comes back
// as its link sentinel when it is code_taken (the one a create refuses by
// the store's state), else as a link.Error with the stored code and
// message, on its field.
func decodeBatchIdem(b []byte) ([]BatchResult, error) {
	out := []BatchResult{}
	for len(b) > 0 {
		kind := b[0]
		n, w := binary.Uvarint(b[1:])
		if w <= 0 || n > uint64(len(b)-1-w) {
			return nil, fmt.Errorf("%w: batch item %d framing", link.ErrCorrupt, len(out))
		}
		v := b[1+w : 1+w+int(n)]
		b = b[1+w+int(n):]
		switch kind {
		case batchItemRec:
			rec, err := link.UnmarshalRecord(v)
			if err != nil {
				return nil, err
			}
			out = append(out, BatchResult{Rec: rec, Replayed: true})
		case batchItemErr:
			parts := strings.SplitN(string(v), "\x00", 3)
			if len(parts) != 3 {
				return nil, fmt.Errorf("%w: batch item %d error", link.ErrCorrupt, len(out))
			}
			var err error = &link.Error{Code: parts[0], Message: parts[2]}
			switch parts[0] {
			case link.ErrCodeTaken.Code:
				err = link.ErrCodeTaken
			case "":
				err = errReplayedInternal
			}
			if parts[1] != "" {
				err = link.OnField(parts[1], err)
			}
			out = append(out, BatchResult{Err: err, Replayed: true})
		default:
			return nil, fmt.Errorf("%w: batch item %d of kind %d", link.ErrCorrupt, len(out), kind)
		}
	}
	return out, nil
}

// errReplayedInternal answers again a batch item that failed inside the
// store (not a refusal) when its batch is replayed.
var errReplayedInternal = errors.New("batch item failed in the store when the batch was first committed")
