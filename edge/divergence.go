package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/link"
)

// Errors of the divergence calls.
var (
	// ErrNotRunning: Run has not opened the replica and started the
	// consumer yet, or has stopped.
	ErrNotRunning = errors.New("edge is not running")
	// ErrNoOrigin: a repair reads the origin, and the edge has no
	// OriginURL.
	ErrNoOrigin = errors.New("repair needs the origin API: configure OriginURL and OriginKey")
	// ErrRepairRunning: one repair runs at a time.
	ErrRepairRunning = errors.New("a repair is already running")
	// ErrInvalidBucket: a digest bucket outside [0, 255].
	ErrInvalidBucket = errors.New("bucket must be an integer in [0, 255]")
)

// Repair limits.
const (
	// repairTimeout bounds one POST /repair.
	repairTimeout = 5 * time.Minute
	// repairCallTimeout bounds one origin request of a repair.
	repairCallTimeout = 10 * time.Second
	// repairAttempts is how often a repair asks the origin for one link
	// when it answers 429 or 503.
	repairAttempts = 5
	// maxRepairErrors bounds the error messages a bucket report keeps.
	maxRepairErrors = 20
	// maxBucketBody bounds an origin bucket listing: ~50 bytes an entry,
	// a million entries (a 256-million-link table).
	maxBucketBody = 64 << 20
)

// digest reads the replica's digest for GET /digest. Scans run one at a
// time.
func (s *Server) digest() (client.EdgeDigest, error) {
	rep := s.rep.Load()
	if rep == nil {
		return client.EdgeDigest{}, ErrNotRunning
	}
	s.scanMu.Lock()
	d, pos, err := rep.BucketDigest()
	s.scanMu.Unlock()
	if err != nil {
		return client.EdgeDigest{}, err
	}
	out := client.EdgeDigest{DigestJSON: d.JSON(), Node: s.NodeName(), Applied: pos}
	if con := s.con.Load(); con != nil {
		out.StreamLast = con.Status().StreamLast
		if out.StreamLast > pos {
			out.Lag = out.StreamLast - pos
		}
	}
	return out, nil
}

// digestBucket reads bucket i of the replica for GET /digest/buckets/{i}.
func (s *Server) digestBucket(i int) (client.EdgeDigestBucket, error) {
	rep := s.rep.Load()
	if rep == nil {
		return client.EdgeDigestBucket{}, ErrNotRunning
	}
	s.scanMu.Lock()
	entries, pos, err := rep.DigestBucket(i)
	s.scanMu.Unlock()
	if err != nil {
		return client.EdgeDigestBucket{}, err
	}
	if entries == nil {
		entries = []link.DigestEntry{}
	}
	return client.EdgeDigestBucket{Bucket: i, Node: s.NodeName(), Applied: pos, Links: entries}, nil
}

// Resync makes the edge replay the whole change stream into its replica
// (see replication.Consumer.Resync): it repairs a replica that missed or
// lost changes. The replica keeps serving what it holds meanwhile; until
// the replay has caught up, the edge reports its lag from position 0, so
// /readyz answers "lagging" if the stream holds more than LagThreshold
// messages. A replay cannot undo a record newer than the origin's: Repair
// does that.
func (s *Server) Resync() error {
	con := s.con.Load()
	if con == nil {
		return ErrNotRunning
	}
	s.resynced.Store(true)
	con.Resync()
	s.log.Warn("resync requested: replaying the whole change stream")
	return nil
}

// RepairAnswer is the body of the admin POST /repair: the node, what was
// done to each bucket and, when it stopped early, why.
type RepairAnswer struct {
	Node    string         `json:"node"`
	Buckets []BucketRepair `json:"buckets"`
	Error   string         `json:"error,omitempty"`
}

// BucketRepair is what Repair did to one digest bucket.
type BucketRepair struct {
	Bucket int `json:"bucket"`
	// Checked counts the codes the origin or the replica holds in the
	// bucket.
	Checked int `json:"checked"`
	// Updated counts records stored from the origin because the replica
	// lacked the code or held an older revision.
	Updated int `json:"updated"`
	// Replaced counts records overwritten with the origin's because the
	// replica held a revision the origin does not hold.
	Replaced int `json:"replaced"`
	// Removed counts codes removed because the origin does not hold them.
	Removed int `json:"removed"`
	// Failed counts codes left as they were because the origin did not
	// answer; Errors says why (at most 20 messages).
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
}

func (r *BucketRepair) fail(code string, err error) {
	r.Failed++
	if len(r.Errors) < maxRepairErrors {
		r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", code, err))
	}
}

// Repair makes each given digest bucket of the replica equal to the
// origin's, code by code, and reports what it changed. It lists the
// replica's bucket first and the origin's second: the origin never
// deletes a link and never lowers a code's revision, so a code the
// origin lists at a lower revision than the replica held, or not at all,
// is one the origin does not hold (an origin restored from a backup, a
// corrupted replica), not one still in flight. Such records are
// overwritten or removed only if the replica still holds the revision it
// listed (replica.Overwrite), so a change the stream applies meanwhile is
// never undone. Codes the origin holds at a newer revision are stored
// with replica.Put, as the fallback does. Repair needs OriginURL; one
// runs at a time.
func (s *Server) Repair(ctx context.Context, buckets []int) ([]BucketRepair, error) {
	rep := s.rep.Load()
	if rep == nil {
		return nil, ErrNotRunning
	}
	if s.fb == nil {
		return nil, ErrNoOrigin
	}
	for _, b := range buckets {
		if b < 0 || b >= link.DigestBuckets {
			return nil, ErrInvalidBucket
		}
	}
	buckets = slices.Compact(slices.Sorted(slices.Values(buckets)))
	if !s.repairMu.TryLock() {
		return nil, ErrRepairRunning
	}
	defer s.repairMu.Unlock()
	out := make([]BucketRepair, 0, len(buckets))
	for _, b := range buckets {
		r, err := s.repairBucket(ctx, rep, b)
		out = append(out, r)
		if err != nil {
			return out, err
		}
		if r.Updated+r.Replaced+r.Removed+r.Failed > 0 {
			s.log.Warn("repaired digest bucket", "bucket", b, "checked", r.Checked, "updated", r.Updated,
				"replaced", r.Replaced, "removed", r.Removed, "failed", r.Failed)
		}
	}
	return out, nil
}

func (s *Server) repairBucket(ctx context.Context, rep *replica.Replica, i int) (BucketRepair, error) {
	r := BucketRepair{Bucket: i}
	s.scanMu.Lock()
	local, _, err := rep.DigestBucket(i)
	s.scanMu.Unlock()
	if err != nil {
		return r, fmt.Errorf("replica bucket %d: %w", i, err)
	}
	// Only now ask the origin: see Repair.
	remote, err := s.fb.getBucket(ctx, i)
	if err != nil {
		return r, fmt.Errorf("origin bucket %d: %w", i, err)
	}
	held := make(map[string]uint64, len(local))
	for _, e := range local {
		held[e.Code] = e.Revision
	}
	for _, o := range remote {
		h, had := held[o.Code]
		delete(held, o.Code)
		r.Checked++
		if had && h == o.Revision {
			continue
		}
		rec, found, err := s.fb.getLinkPatiently(ctx, o.Code)
		switch {
		case ctx.Err() != nil:
			return r, ctx.Err()
		case err != nil:
			r.fail(o.Code, err)
			continue
		case !found:
			r.fail(o.Code, errors.New("the origin listed it and then answered 404"))
			continue
		}
		var changed bool
		if !had || h < o.Revision {
			changed, err = rep.Put(rec)
			if changed {
				r.Updated++
			}
		} else {
			changed, err = rep.Overwrite(o.Code, h, &rec)
			if changed {
				r.Replaced++
			}
		}
		if errors.Is(err, replica.ErrClosed) {
			return r, err
		}
		if err != nil {
			r.fail(o.Code, err)
		}
	}
	extra := make([]string, 0, len(held))
	for code := range held {
		extra = append(extra, code)
	}
	slices.Sort(extra)
	for _, code := range extra {
		r.Checked++
		changed, err := rep.Overwrite(code, held[code], nil)
		if errors.Is(err, replica.ErrClosed) {
			return r, err
		}
		if err != nil {
			r.fail(code, err)
		} else if changed {
			r.Removed++
		}
	}
	return r, nil
}

// getBucket performs GET /v1/digest/buckets/{i} on the origin and checks
// every entry it lists.
func (f *fallback) getBucket(ctx context.Context, i int) ([]link.DigestEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, repairCallTimeout)
	defer cancel()
	var b client.DigestBucket
	err := f.first(ctx, func(o *originAPI) (err error) {
		b, err = o.patient.DigestBucket(ctx, i)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errOrigin, err)
	}
	if b.Bucket != i || b.Links == nil {
		return nil, fmt.Errorf("%w: asked for bucket %d, got bucket %d with links %v", errOrigin, i, b.Bucket, b.Links != nil)
	}
	for _, e := range b.Links {
		if !link.ValidCode(e.Code) || e.Revision == 0 || link.DigestBucket(e.Code) != i {
			return nil, fmt.Errorf("%w: bucket %d lists %q at revision %d", errOrigin, i, e.Code, e.Revision)
		}
	}
	return b.Links, nil
}

// getLinkPatiently is getLink for repairs: a longer timeout, and retries
// while the origin answers 429 (the key's rate limit) or 503, waiting
// what Retry-After says (at most 5s).
func (f *fallback) getLinkPatiently(ctx context.Context, code string) (link.Record, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, repairAttempts*repairCallTimeout)
	defer cancel()
	var (
		rec   link.Record
		found bool
	)
	err := f.first(ctx, func(o *originAPI) (err error) {
		rec, found, err = getLink(ctx, o.patient, code)
		return err
	})
	return rec, found, err
}
