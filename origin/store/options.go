package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/link"
)

// Defaults applied by Open to zero-valued Options fields.
const (
	DefaultIdempotencyTTL  = 48 * time.Hour
	DefaultMaxBatch        = 256
	DefaultBlockCacheBytes = 64 << 20
	DefaultMemTableBytes   = 64 << 20
	// MinIdempotencyTTL is the contract's floor: a retried request is
	// recognised for at least a day.
	MinIdempotencyTTL = 24 * time.Hour
)

// Options configure a Store.
type Options struct {
	// Dir is the directory holding the Pebble store. It is required unless
	// FS is set, in which case it names the store inside FS. The default
	// with FS set is "origin".
	Dir string
	// FS is the file system the store lives on. Tests may use
	// vfs.NewMem(). The default (nil) is the local disk (vfs.Default).
	FS vfs.FS
	// Logger receives Pebble's and the store's log lines. The default
	// (nil) discards them.
	Logger *slog.Logger
	// Metrics is the set the linkpop_store_* metrics are registered in.
	// The default (nil) is a set of its own.
	Metrics *metrics.Set
	// CodeLength is the length of random codes, in [link.MinCodeLen,
	// link.MaxCodeLen]. The default is link.DefaultCodeLen (7).
	CodeLength int
	// Reserved are codes a random draw never returns (it draws again).
	// The default is link.DefaultReserved.
	Reserved link.Reserved
	// IdempotencyTTL is how long an Idempotency-Key record is kept; after
	// it the key may be used again. It must be at least MinIdempotencyTTL
	// (24h), the contract's promise. The default is 48h.
	IdempotencyTTL time.Duration
	// MaxBatch is the most requests one group commit takes. The default
	// is 256.
	MaxBatch int
	// BlockCacheBytes is the size of Pebble's block cache. The default is
	// 64 MiB.
	BlockCacheBytes int64
	// MemTableBytes is the size of each Pebble memtable. The default is
	// 64 MiB.
	MemTableBytes int64
	// Now is the clock stamped on records, outbox entries and idempotency
	// records. The default is time.Now.
	Now func() time.Time
	// ReadOnly opens the store refusing mutations (ErrReadOnly) until
	// SetReadOnly(false): a standby origin's store. The default (false)
	// accepts them.
	ReadOnly bool

	// hookFilterScan, set by tests, is called by a code filter scan after
	// each code it adds (n) and once it is done (-1).
	hookFilterScan func(n int)
}

// Validate reports every invalid field.
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" && o.FS == nil {
		errs = append(errs, errors.New("dir: required"))
	}
	if o.CodeLength != 0 && (o.CodeLength < link.MinCodeLen || o.CodeLength > link.MaxCodeLen) {
		errs = append(errs, fmt.Errorf("code length: %d outside [%d, %d]", o.CodeLength, link.MinCodeLen, link.MaxCodeLen))
	}
	switch {
	case o.IdempotencyTTL < 0:
		errs = append(errs, fmt.Errorf("idempotency ttl: %v is negative", o.IdempotencyTTL))
	case o.IdempotencyTTL > 0 && o.IdempotencyTTL < MinIdempotencyTTL:
		errs = append(errs, fmt.Errorf("idempotency ttl: %v is below the contract's %v", o.IdempotencyTTL, MinIdempotencyTTL))
	}
	if o.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max batch: %d is negative", o.MaxBatch))
	}
	if o.BlockCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("block cache bytes: %d is negative", o.BlockCacheBytes))
	}
	if o.MemTableBytes < 0 {
		errs = append(errs, fmt.Errorf("memtable bytes: %d is negative", o.MemTableBytes))
	} else if o.MemTableBytes >= 4<<30 {
		errs = append(errs, fmt.Errorf("memtable bytes: %d is not below 4 GiB", o.MemTableBytes))
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Dir == "" {
		o.Dir = "origin"
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.CodeLength == 0 {
		o.CodeLength = link.DefaultCodeLen
	}
	if o.Reserved == nil {
		o.Reserved = link.NewReserved(link.DefaultReserved)
	}
	if o.IdempotencyTTL == 0 {
		o.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.BlockCacheBytes == 0 {
		o.BlockCacheBytes = DefaultBlockCacheBytes
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = DefaultMemTableBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}
