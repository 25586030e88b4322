package replication

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseHeld is returned by Lease.Acquire while another holder has the
// lease.
var ErrLeaseHeld = errors.New("lease is held by another origin")

// ErrLeaseLost is returned by Lease.Renew when the lease is no longer this
// holder's: it expired and was taken, or was deleted.
var ErrLeaseLost = errors.New("lease lost")

// LeaseConfig configures the origin leader lease: one key in a JetStream
// KV bucket, written only by compare-and-set on its revision.
type LeaseConfig struct {
	// Bucket is the KV bucket. The default is "LINKPOP_LEASE".
	Bucket string
	// Replicas is the bucket's replication factor (3 in production, as
	// the streams). The default is 1.
	Replicas int
	// TTL is the bucket's TTL (the stream's MaxAge): a key not written
	// for TTL is gone, and a candidate's Create succeeds. Every Update
	// restarts the key's age. (A per-key TTL would not do: Update sends
	// none, so the first renewal would make the lease eternal.) The
	// default is 15s.
	TTL time.Duration
}

func (c LeaseConfig) withDefaults() LeaseConfig {
	if c.Bucket == "" {
		c.Bucket = "LINKPOP_LEASE"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.TTL == 0 {
		c.TTL = 15 * time.Second
	}
	return c
}

// Validate reports every bad field.
func (c LeaseConfig) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("lease: Replicas %d outside [1, 5]", c.Replicas))
	}
	if c.TTL != 0 && c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("lease: TTL %v below 1s", c.TTL))
	}
	return errors.Join(errs...)
}

// LeaseValue is what the lease key holds: who holds it and where its API
// is, for the not_leader answers of the others.
type LeaseValue struct {
	Holder string `json:"holder"`
	URL    string `json:"url,omitempty"`
	// Nonce is new at every Acquire: a renewal whose answer was lost may
	// have landed, and the holder recognises its own write by it.
	Nonce string `json:"nonce"`
}

const leaseKey = "origin"

// Lease is one origin's handle on the leader lease. Not safe for
// concurrent use: one loop owns it.
type Lease struct {
	kv  jetstream.KeyValue
	me  LeaseValue
	val []byte
	rev uint64 // revision of our last write; 0 while not holding
	// try is the value Acquire writes until it wins: a Create whose
	// answer was lost may have landed, and a later Acquire recognises it.
	try []byte
}

// leaseBucketConfig is the lease bucket's configuration.
func leaseBucketConfig(cfg LeaseConfig) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "linkpop origin leader lease",
		History:     1,
		TTL:         cfg.TTL,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}
}

// EnsureLeaseBucket creates the lease bucket, or updates it to cfg: the
// operator's step (`origin streams`), which needs the operator role's
// permissions, like the streams.
func EnsureLeaseBucket(ctx context.Context, nc *nats.Conn, cfg LeaseConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, leaseBucketConfig(cfg.withDefaults())); err != nil {
		return fmt.Errorf("lease bucket %s: %w", cfg.withDefaults().Bucket, err)
	}
	return nil
}

// OpenLease opens the lease bucket and returns a handle for holder me. A
// missing bucket is created when this client may (the operator's
// permissions: the dev server, tests); the origin role gets
// ErrStreamMissing until the operator has run `origin streams`.
func OpenLease(ctx context.Context, nc *nats.Conn, cfg LeaseConfig, me LeaseValue) (*Lease, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		cctx, cancel := context.WithTimeout(ctx, createTimeout)
		kv, err = js.CreateKeyValue(cctx, leaseBucketConfig(cfg))
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("lease bucket %s: %w (create: %v)", cfg.Bucket, ErrStreamMissing, err)
		}
		if err != nil {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", cfg.Bucket, err)
	}
	return &Lease{kv: kv, me: me}, nil
}

// Acquire takes the lease if nobody holds it (Create: compare-and-set on
// "no such key") and returns its revision, the new leader's epoch: every
// acquisition gets a higher one. ErrLeaseHeld if another holds it.
func (l *Lease) Acquire(ctx context.Context) (epoch uint64, err error) {
	if l.try == nil {
		me := l.me
		me.Nonce = rand.Text()
		val, err := json.Marshal(me)
		if err != nil {
			return 0, err
		}
		l.try = val
	}
	val := l.try
	rev, err := l.kv.Create(ctx, leaseKey, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := l.kv.Get(ctx, leaseKey)
		if gerr != nil || string(e.Value()) != string(val) {
			return 0, ErrLeaseHeld
		}
		rev, err = e.Revision(), nil // our earlier Create landed
	}
	if err != nil {
		return 0, fmt.Errorf("lease acquire: %w", err)
	}
	l.val, l.rev, l.try = val, rev, nil
	return rev, nil
}

// Renew writes the lease again at its revision (Update), restarting its
// TTL. ErrLeaseLost if someone else wrote it; a renewal of ours that
// landed although its answer was lost is recognised by the nonce. Other
// errors (timeouts, a KV leader election) leave the lease as it was: the
// caller retries and stops taking writes if renewals keep failing.
func (l *Lease) Renew(ctx context.Context) error {
	if l.rev == 0 {
		return ErrLeaseLost
	}
	rev, err := l.kv.Update(ctx, leaseKey, l.val, l.rev)
	if err == nil {
		l.rev = rev
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("lease renew: %w", err)
	}
	e, gerr := l.kv.Get(ctx, leaseKey)
	if gerr == nil && string(e.Value()) == string(l.val) && e.Revision() > l.rev {
		l.rev = e.Revision()
		return nil
	}
	l.rev = 0
	return ErrLeaseLost
}

// Release deletes the lease if it is still ours (at our revision), so a
// standby takes over without waiting for the TTL.
func (l *Lease) Release(ctx context.Context) error {
	if l.rev == 0 {
		return nil
	}
	err := l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev))
	l.rev = 0
	return err
}

// Holder returns who holds the lease, as far as a possibly lagging
// replica knows: for the not_leader answers, never for safety.
func (l *Lease) Holder(ctx context.Context) (LeaseValue, bool) {
	e, err := l.kv.Get(ctx, leaseKey)
	if err != nil {
		return LeaseValue{}, false
	}
	var v LeaseValue
	if json.Unmarshal(e.Value(), &v) != nil {
		return LeaseValue{}, false
	}
	return v, true
}
