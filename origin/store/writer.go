package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/link"
)

// Idempotency identifies a create by its Idempotency-Key.
type Idempotency struct {
	// Scope is the API key id the Idempotency-Key belongs to.
	Scope string
	// Key is the Idempotency-Key header value.
	Key string
	// RequestHash is a hash of the request; the same key with a different
	// hash is link.ErrIdempotencyKeyReused.
	RequestHash [32]byte
}

// CreateRequest is a new link.
type CreateRequest struct {
	// Code is the custom code, already validated; "" draws a random code.
	Code string
	// URL is the target, already canonical (link.URLPolicy.NormalizeURL).
	URL string
	// Redirect is the status; 0 means link.DefaultRedirect.
	Redirect int
	// ExpiresAt is when the link stops redirecting; zero never.
	ExpiresAt time.Time
	// Tags are the link's tags.
	Tags []string
	// MaxVisits is the click count at which the origin disables the
	// link; 0 is no limit.
	MaxVisits uint64
	// Freshness is the link's policy at stale edges.
	Freshness link.Freshness
	// Disabled creates the link disabled (an import of a disabled link).
	// The default is active.
	Disabled bool
	// Idem, when set, makes a retry of the same request return the first
	// response.
	Idem *Idempotency
}

// UpdateRequest changes a link. Nil fields are left unchanged.
type UpdateRequest struct {
	Code     string
	URL      *string // canonical
	Redirect *int
	// ExpiresAt: nil leaves it unchanged; a pointer to the zero time
	// clears the expiry.
	ExpiresAt *time.Time
	Tags      *[]string
	// MaxVisits: nil leaves it unchanged; a pointer to 0 removes the
	// limit.
	MaxVisits *uint64
	Freshness *link.Freshness
	// IfRevision: 0 updates unconditionally; otherwise the update is
	// link.ErrRevisionMismatch unless it equals the current revision.
	IfRevision uint64
}

// Create commits the link, its change event (outbox) and the idempotency
// record in one synced batch. replayed is true when the Idempotency-Key was
// seen before with the same RequestHash; rec is then the snapshot stored at
// the first create. Errors: link.ErrCodeTaken (the custom code exists,
// active or disabled: codes are never reused), link.ErrIdempotencyKeyReused
// (same Scope and Key, different hash).
func (s *Store) Create(ctx context.Context, req CreateRequest) (rec link.Record, replayed bool, err error) {
	res := s.submit(ctx, &request{kind: kindCreate, create: req})
	return res.rec, res.replayed, res.err
}

// BatchResult is the outcome of one create of CreateBatch.
type BatchResult struct {
	Rec      link.Record
	Replayed bool
	Err      error // the create's own refusal (link.ErrCodeTaken, ...)
}

// CreateBatch commits every create of reqs that succeeds in one synced
// group commit (as Create does for one) and answers each in order: a
// refused create (a taken code, a reused Idempotency-Key) refuses only
// itself. The error is for the whole batch: nothing was committed.
//
// With idem, the batch has one idempotency record, written in the same
// commit, holding every item's outcome: the same batch again (same Scope,
// Key and RequestHash) answers those outcomes, each Replayed, and commits
// nothing; another batch under the key is link.ErrIdempotencyKeyReused.
// The items' own Idem must then be nil.
func (s *Store) CreateBatch(ctx context.Context, reqs []CreateRequest, idem *Idempotency) ([]BatchResult, error) {
	res := s.submit(ctx, &request{kind: kindCreateBatch, batch: reqs, batchIdem: idem})
	return res.batch, res.err
}

// Update applies req. An update that changes nothing returns the record
// unchanged, without a new revision or change event. Errors:
// link.ErrNotFound, link.ErrRevisionMismatch.
func (s *Store) Update(ctx context.Context, req UpdateRequest) (link.Record, error) {
	res := s.submit(ctx, &request{kind: kindUpdate, update: req})
	return res.rec, res.err
}

// Disable sets the link's status to disabled with a new revision and
// change event. Disabling a disabled link returns it unchanged. ifRevision
// is as in UpdateRequest. Errors: link.ErrNotFound,
// link.ErrRevisionMismatch.
func (s *Store) Disable(ctx context.Context, code string, ifRevision uint64) (link.Record, error) {
	return s.DisableFor(ctx, code, ifRevision, "")
}

// DisableFor is Disable recording why the origin disabled the link on its
// own (link.Record.DisabledReason, at most link.MaxReasonLen bytes).
func (s *Store) DisableFor(ctx context.Context, code string, ifRevision uint64, reason string) (link.Record, error) {
	res := s.submit(ctx, &request{kind: kindDisable, code: code, ifRev: ifRevision, reason: reason})
	return res.rec, res.err
}

// SweepIdempotency deletes every idempotency record older than
// IdempotencyTTL now and returns how many it removed. The writer also
// sweeps at Open and periodically (every TTL/16, at most hourly).
func (s *Store) SweepIdempotency(ctx context.Context) (int, error) {
	res := s.submit(ctx, &request{kind: kindSweep})
	return res.n, res.err
}

type reqKind uint8

const (
	kindCreate reqKind = iota + 1
	kindUpdate
	kindDisable
	kindPutKey
	kindRevokeKey
	kindOutboxDelete
	kindSweep
	kindCreateBatch
	kindOriginOutboxDelete
	kindApplyLinks
	kindApplyOrigin
	kindDiscard
	kindSetPositions
)

const (
	stateQueued int32 = iota
	stateTaken
	stateAbandoned
)

// request is one call waiting for the writer.
type request struct {
	state atomic.Int32
	kind  reqKind

	create    CreateRequest
	batch     []CreateRequest
	batchIdem *Idempotency
	update    UpdateRequest
	code      string
	ifRev     uint64
	reason    string // kindDisable: link.Record.DisabledReason
	key       APIKey
	keyID     string
	revisions []uint64
	changes   []link.Change
	events    [][]byte
	through   uint64
	through2  uint64

	done chan result
}

// maxGroupCreates bounds the creates of CreateBatch requests one group
// commit takes (a request is never split).
const maxGroupCreates = 8192

type result struct {
	rec      link.Record
	snap     []byte // rec as written (MarshalRecord), for a create
	replayed bool
	batch    []BatchResult
	key      APIKey
	n        int
	codes    []string
	keyIDs   []string
	err      error
}

// run is the writer: it owns every mutation.
func (s *Store) run() {
	defer close(s.done)
	sweep := time.NewTicker(s.sweepEvery)
	defer sweep.Stop()
	for {
		s.maybeBuildFilter()
		select {
		case r := <-s.reqs:
			s.commitBatch(r)
		case <-sweep.C:
			if _, err := s.sweepIdempotency(); err != nil {
				s.log.Error("idempotency sweep", "err", err)
			}
		case <-s.quit:
			// Close holds no new senders; commit what was handed over.
			for {
				select {
				case r := <-s.reqs:
					s.commitBatch(r)
				default:
					return
				}
			}
		}
	}
}

// txn is one group commit being built: the Pebble batch and what it
// changes, so later requests in the batch see earlier ones.
type txn struct {
	s     *Store
	b     *pebble.Batch
	now   time.Time
	sync  bool
	rev   uint64 // last revision assigned
	links uint64 // link count after the batch
	oseq  uint64 // last origin outbox sequence assigned
	// positions applied by a standby (0: unchanged)
	posLinks, posOrigin uint64
	dirty               bool  // the batch holds writes
	err                 error // a commit of this group failed: everything fails

	recs map[string]link.Record // links written in this batch
	idem map[string]idemRecord  // idempotency records written in this batch
	// idemRead caches what idemRecordAny read from the store in this
	// batch: a create looks its key up twice (replay check, then the
	// expired record its write replaces).
	idemRead map[string]idemLookup
	keys     map[string]APIKey   // API keys written, by id
	hashes   map[[32]byte]string // hash index entries written
	added    []outboxMark        // outbox entries added
	deleted  []uint64            // outbox entries deleted
	oadded   []outboxMark        // origin outbox entries added
	odeleted []uint64            // origin outbox entries deleted
	discard  []discardSpan       // outbox spans dropped unpublished
}

type outboxMark struct {
	rev uint64
	at  int64
}

// commitBatch drains up to MaxBatch requests after first, applies them to
// one batch, commits it and answers every request.
func (s *Store) commitBatch(first *request) {
	if s.hookBatch != nil {
		s.hookBatch()
	}
	// Up to MaxBatch requests, and at most maxGroupCreates creates when
	// CreateBatch requests come in: concurrent batches share one fsync,
	// and a group's Pebble batch stays bounded.
	reqs := []*request{first}
	creates := len(first.batch)
drain:
	for len(reqs) < s.o.MaxBatch && creates < maxGroupCreates {
		select {
		case r := <-s.reqs:
			reqs = append(reqs, r)
			creates += len(r.batch)
		default:
			break drain
		}
	}
	t := &txn{
		s:     s,
		b:     s.db.NewBatch(),
		now:   s.o.Now().UTC().Truncate(time.Millisecond),
		rev:   s.rev.Load(),
		links: s.links.Load(),
		oseq:  s.oseq.Load(),
	}
	defer t.b.Close()
	results := make([]result, len(reqs))
	live := reqs[:0:0]
	var liveRes []*result
	for i, r := range reqs {
		if !r.state.CompareAndSwap(stateQueued, stateTaken) {
			continue // the caller gave up before the writer got here
		}
		results[i] = t.apply(r)
		live = append(live, r)
		liveRes = append(liveRes, &results[i])
	}
	if len(live) == 0 {
		return
	}
	err := t.commit()
	if err == nil {
		err = t.err
	}
	s.mBatchSize.Update(float64(len(live)))
	for i, r := range live {
		res := *liveRes[i]
		if err != nil && res.err == nil {
			res = result{err: err}
		}
		r.done <- res
	}
}

// apply validates r against the store and the batch so far and, if it
// succeeds, adds its writes to the batch.
func (t *txn) apply(r *request) result {
	if t.err != nil {
		return result{err: t.err}
	}
	if r.kind.mutation() && t.s.readOnly.Load() {
		return result{err: ErrReadOnly}
	}
	switch r.kind {
	case kindOriginOutboxDelete:
		return t.originOutboxDelete(r.revisions)
	case kindApplyLinks:
		return t.applyLinks(r.through, r.changes)
	case kindApplyOrigin:
		return t.applyOrigin(r.through, r.events)
	case kindDiscard:
		return t.discardOutboxes()
	case kindSetPositions:
		t.posLinks, t.posOrigin, t.sync, t.dirty = r.through, r.through2, true, true
		return result{}
	case kindCreate:
		return t.create(&r.create)
	case kindCreateBatch:
		return t.createBatch(r.batch, r.batchIdem)
	case kindUpdate:
		return t.updateLink(&r.update)
	case kindDisable:
		return t.disable(r.code, r.ifRev, r.reason)
	case kindPutKey:
		return t.putKey(r.key)
	case kindRevokeKey:
		return t.revokeKey(r.keyID)
	case kindOutboxDelete:
		return t.outboxDelete(r.revisions)
	case kindSweep:
		// Sweeping commits its own batches; earlier writes of this
		// group are committed first so the sweep sees them.
		if err := t.commit(); err != nil {
			return result{err: err}
		}
		t.reset()
		n, err := t.s.sweepIdempotency()
		return result{n: n, err: err}
	}
	return result{err: fmt.Errorf("unknown request kind %d", r.kind)}
}

// link returns the link with code as of this batch.
func (t *txn) link(code string) (link.Record, bool, error) {
	if rec, ok := t.recs[code]; ok {
		return rec, true, nil
	}
	return t.s.getLink(code)
}

// taken reports whether a link has code as of this batch: the batch, then
// the code filter, and Pebble only when the filter may have seen it.
func (t *txn) taken(code string) (bool, error) {
	if _, ok := t.recs[code]; ok {
		return true, nil
	}
	if t.s.codeFree(code) {
		return false, nil
	}
	return t.s.hasLink(code)
}

func (t *txn) create(req *CreateRequest) result {
	var id string
	if req.Idem != nil {
		id = idemID(req.Idem.Scope, req.Idem.Key)
		prev, ok, err := t.idemRecord(id)
		if err != nil {
			return result{err: err}
		}
		if ok {
			ok, err = t.idemLinkLive(prev)
			if err != nil {
				return result{err: err}
			}
		}
		if ok {
			if prev.hash != req.Idem.RequestHash || prev.batch != nil {
				return result{err: link.ErrIdempotencyKeyReused}
			}
			return result{rec: prev.rec, replayed: true}
		}
	}
	code := req.Code
	if code != "" {
		taken, err := t.taken(code)
		if err != nil {
			return result{err: err}
		}
		if taken {
			return result{err: link.ErrCodeTaken}
		}
	} else {
		var err error
		if code, err = t.randomCode(); err != nil {
			return result{err: err}
		}
	}
	redirect := req.Redirect
	if redirect == 0 {
		redirect = link.DefaultRedirect
	}
	rec := link.Record{
		Code:      code,
		URL:       req.URL,
		Redirect:  redirect,
		Status:    link.StatusActive,
		CreatedAt: t.now,
		UpdatedAt: t.now,
		ExpiresAt: normTime(req.ExpiresAt),
		Revision:  t.rev + 1,
		Tags:      normTags(req.Tags),
		MaxVisits: req.MaxVisits,
		Freshness: req.Freshness,
	}
	if req.Disabled {
		rec.Status = link.StatusDisabled
	}
	var idem *idemRecord
	if req.Idem != nil {
		idem = &idemRecord{hash: req.Idem.RequestHash, created: t.now.UnixNano(), rec: rec}
	}
	snap, err := t.writeLink(link.OpCreate, rec, id, idem)
	if err != nil {
		return result{err: err}
	}
	t.links++
	return result{rec: rec, snap: snap}
}

func (t *txn) createBatch(reqs []CreateRequest, idem *Idempotency) result {
	var id string
	if idem != nil {
		id = idemID(idem.Scope, idem.Key)
		prev, ok, err := t.idemRecord(id)
		if err != nil {
			return result{err: err}
		}
		if ok {
			if ok, err = t.idemLinkLive(prev); err != nil {
				return result{err: err}
			}
		}
		if ok {
			if prev.hash != idem.RequestHash || prev.batch == nil || len(prev.batch) != len(reqs) {
				return result{err: link.ErrIdempotencyKeyReused}
			}
			return result{batch: slices.Clone(prev.batch)}
		}
	}
	out := make([]BatchResult, len(reqs))
	var snaps [][]byte
	if idem != nil {
		snaps = make([][]byte, len(reqs))
	}
	for i := range reqs {
		res := t.create(&reqs[i])
		if t.err != nil {
			return result{err: t.err}
		}
		out[i] = BatchResult{Rec: res.rec, Replayed: res.replayed, Err: res.err}
		if snaps != nil && res.err == nil {
			snaps[i] = res.snap
		}
	}
	if idem == nil {
		return result{batch: out}
	}
	rec := &idemRecord{hash: idem.RequestHash, created: t.now.UnixNano(), batch: out, snaps: snaps}
	val, err := encodeIdem(rec)
	if err == nil {
		err = t.putIdem(id, rec, val)
	}
	if err != nil {
		// The links are in the batch and are answered; only a retry's
		// replay is lost. Encoding what writeLink just encoded does not
		// fail in practice.
		t.s.log.Error("batch idempotency record", "err", err)
	}
	return result{batch: out}
}

// putIdem adds the idempotency record id (encoded as val) and its expiry
// index entry to the batch, replacing an expired record of the same id.
func (t *txn) putIdem(id string, idem *idemRecord, val []byte) error {
	prev, hadPrev, err := t.idemRecordAny(id)
	if err != nil {
		return err
	}
	if hadPrev {
		if err := t.b.Delete(expiryKey(prev.created, id), nil); err != nil {
			return err
		}
	}
	if err := t.set(idemKey(id), val); err != nil {
		return err
	}
	if err := t.set(expiryKey(idem.created, id), nil); err != nil {
		return err
	}
	// A standby (origin HA) gets the record through the origin stream.
	if err := t.emitOrigin(idemEventCode(id), originEvent{Idem: &idemJSON{ID: id, Hash: idem.hash[:], Created: idem.created, Record: val[40:]}}); err != nil {
		return err
	}
	if t.idem == nil {
		t.idem = map[string]idemRecord{}
	}
	t.idem[id] = *idem
	return nil
}

// randomCode draws codes until one is free in the store and the batch and
// not reserved.
func (t *txn) randomCode() (string, error) {
	for {
		code, err := link.RandomCode(t.s.o.CodeLength)
		if err != nil {
			return "", err
		}
		if t.s.o.Reserved.Contains(code) {
			continue
		}
		taken, err := t.taken(code)
		if err != nil {
			return "", err
		}
		if !taken {
			return code, nil
		}
	}
}

func (t *txn) updateLink(req *UpdateRequest) result {
	cur, ok, err := t.link(req.Code)
	if err != nil {
		return result{err: err}
	}
	if !ok {
		return result{err: link.ErrNotFound}
	}
	if req.IfRevision != 0 && req.IfRevision != cur.Revision {
		return result{err: link.ErrRevisionMismatch}
	}
	next := cur
	if req.URL != nil {
		next.URL = *req.URL
	}
	if req.Redirect != nil {
		next.Redirect = *req.Redirect
		if next.Redirect == 0 {
			next.Redirect = link.DefaultRedirect
		}
	}
	if req.ExpiresAt != nil {
		next.ExpiresAt = normTime(*req.ExpiresAt)
	}
	if req.Tags != nil {
		next.Tags = normTags(*req.Tags)
	}
	if req.MaxVisits != nil {
		next.MaxVisits = *req.MaxVisits
	}
	if req.Freshness != nil {
		next.Freshness = *req.Freshness
	}
	if next.URL == cur.URL && next.Redirect == cur.Redirect && next.ExpiresAt.Equal(cur.ExpiresAt) &&
		slices.Equal(next.Tags, cur.Tags) && next.MaxVisits == cur.MaxVisits && next.Freshness == cur.Freshness {
		return result{rec: cur}
	}
	next.UpdatedAt = t.now
	next.Revision = t.rev + 1
	if _, err := t.writeLink(link.OpUpdate, next, "", nil); err != nil {
		return result{err: err}
	}
	return result{rec: next}
}

func (t *txn) disable(code string, ifRev uint64, reason string) result {
	cur, ok, err := t.link(code)
	if err != nil {
		return result{err: err}
	}
	if !ok {
		return result{err: link.ErrNotFound}
	}
	if ifRev != 0 && ifRev != cur.Revision {
		return result{err: link.ErrRevisionMismatch}
	}
	if cur.Status == link.StatusDisabled {
		return result{rec: cur}
	}
	next := cur
	next.Status = link.StatusDisabled
	next.DisabledReason = reason
	next.UpdatedAt = t.now
	next.Revision = t.rev + 1
	if _, err := t.writeLink(link.OpDisable, next, "", nil); err != nil {
		return result{err: err}
	}
	return result{rec: next}
}

// writeLink adds rec (at revision t.rev+1), its outbox entry and, for a
// create with an Idempotency-Key, the idempotency record to the batch, and
// returns rec encoded. It encodes everything before writing anything, so
// a failure leaves the batch as it was.
func (t *txn) writeLink(op link.Op, rec link.Record, id string, idem *idemRecord) ([]byte, error) {
	if err := checkRecord(&rec); err != nil {
		return nil, err
	}
	val, err := link.MarshalRecord(&rec)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", rec.Code, err)
	}
	change := link.MarshalChangeOf(op, val, t.now)
	var idemVal []byte
	if idem != nil {
		idem.snaps = [][]byte{val}
		if idemVal, err = encodeIdem(idem); err != nil {
			return nil, fmt.Errorf("encode idempotency record: %w", err)
		}
		// An expired record for the same key may still be on disk: its
		// expiry index entry goes with it. Read it now, before anything
		// is written (putIdem then finds it in t.idemRead).
		if _, _, err = t.idemRecordAny(id); err != nil {
			return nil, err
		}
	}
	if err := t.set(linkKey(rec.Code), val); err != nil {
		return nil, err
	}
	t.s.noteCode(rec.Code)
	t.s.noteLimited(&rec)
	if err := t.set(outboxKey(rec.Revision), encodeOutbox(t.now, rec.Code, change)); err != nil {
		return nil, err
	}
	if idem != nil {
		if err := t.putIdem(id, idem, idemVal); err != nil {
			return nil, err
		}
	}
	if t.recs == nil {
		t.recs = map[string]link.Record{}
	}
	t.recs[rec.Code] = rec
	t.rev = rec.Revision
	t.added = append(t.added, outboxMark{rev: rec.Revision, at: t.now.UnixNano()})
	t.sync = true
	return val, nil
}

func (t *txn) set(key, val []byte) error {
	t.dirty = true
	return t.b.Set(key, val, nil)
}

// idemRecord returns the live (unexpired) idempotency record for id as of
// this batch.
func (t *txn) idemRecord(id string) (idemRecord, bool, error) {
	r, ok, err := t.idemRecordAny(id)
	if err != nil || !ok {
		return idemRecord{}, false, err
	}
	if t.now.Sub(time.Unix(0, r.created)) >= t.s.o.IdempotencyTTL {
		return idemRecord{}, false, nil
	}
	return r, true, nil
}

// idemRecordAny returns the idempotency record for id, expired or not.
func (t *txn) idemRecordAny(id string) (idemRecord, bool, error) {
	if r, ok := t.idem[id]; ok {
		return r, true, nil
	}
	if l, ok := t.idemRead[id]; ok {
		return l.r, l.ok, nil
	}
	r, ok, err := t.readIdem(id)
	if err != nil {
		return r, ok, err
	}
	if t.idemRead == nil {
		t.idemRead = map[string]idemLookup{}
	}
	t.idemRead[id] = idemLookup{r, ok}
	return r, ok, nil
}

type idemLookup struct {
	r  idemRecord
	ok bool
}

// readIdem reads the idempotency record for id from the store.
func (t *txn) readIdem(id string) (idemRecord, bool, error) {
	v, closer, err := t.s.db.Get(idemKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return idemRecord{}, false, nil
	}
	if err != nil {
		return idemRecord{}, false, fmt.Errorf("idempotency record: %w", err)
	}
	defer closer.Close()
	r, err := decodeIdem(v)
	if err != nil {
		return idemRecord{}, false, err
	}
	return r, true, nil
}

// commit writes the batch (synced if it holds an acknowledged mutation)
// and publishes its effects to the in-memory state.
func (t *txn) commit() error {
	if !t.dirty {
		return nil
	}
	s := t.s
	for _, c := range []struct {
		key     []byte
		v, prev uint64
	}{
		{revisionKey, t.rev, s.rev.Load()}, {linksKey, t.links, s.links.Load()}, {oseqKey, t.oseq, s.oseq.Load()},
		{posLinksKey, t.posLinks, 0}, {posOrigKey, t.posOrigin, 0},
	} {
		if c.v != c.prev {
			if err := t.b.Set(c.key, encodeUint64(c.v), nil); err != nil {
				return err
			}
		}
	}
	opts := pebble.NoSync
	if t.sync {
		opts = pebble.Sync
	}
	start := time.Now()
	if err := t.b.Commit(opts); err != nil {
		s.mCommitErrors.Inc()
		s.log.Error("store commit", "err", err)
		t.err = fmt.Errorf("commit: %w", err)
		return t.err
	}
	s.mCommitDuration.UpdateDuration(start)
	s.commits.Add(1)
	if len(t.recs) > 0 {
		s.unnoteLimited(t.recs)
	}
	s.outbox.mu.Lock()
	for _, m := range t.added {
		s.outbox.add(m.rev, m.at)
	}
	for _, rev := range t.deleted {
		s.outbox.remove(rev)
	}
	s.rev.Store(t.rev)
	s.links.Store(t.links)
	s.outbox.mu.Unlock()
	s.origin.mu.Lock()
	for _, m := range t.oadded {
		s.origin.add(m.rev, m.at)
	}
	for _, seq := range t.odeleted {
		s.origin.remove(seq)
	}
	s.oseq.Store(t.oseq)
	s.origin.mu.Unlock()
	if t.posLinks != 0 {
		s.posLinks.Store(t.posLinks)
	}
	if t.posOrigin != 0 {
		s.posOrigin.Store(t.posOrigin)
	}
	if len(t.deleted) > 0 || len(t.odeleted) > 0 || len(t.discard) > 0 {
		s.pubMu.Lock()
		s.discarded = append(s.discarded, t.discard...)
		s.wakePublished()
		s.pubMu.Unlock()
	}
	if len(t.added) > 0 || len(t.oadded) > 0 {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// reset empties t after a commit, for the rest of the group.
func (t *txn) reset() {
	t.b.Reset()
	t.sync, t.dirty = false, false
	t.recs, t.idem, t.keys, t.hashes, t.idemRead = nil, nil, nil, nil, nil
	t.added, t.deleted = nil, nil
	t.oadded, t.odeleted, t.discard = nil, nil, nil
	t.posLinks, t.posOrigin = 0, 0
}

// sweepIdempotency deletes idempotency records created IdempotencyTTL or
// longer ago, in batches, and returns how many it removed. Only the writer
// (or Open, before it starts) calls it. The deletes are not synced: a lost
// sweep is redone.
func (s *Store) sweepIdempotency() (int, error) {
	cutoff := s.o.Now().Add(-s.o.IdempotencyTTL).UnixNano()
	upper := expiryKey(cutoff+1, "")
	total := 0
	for {
		n, err := s.sweepSome(upper, 4096)
		total += n
		if err != nil {
			return total, fmt.Errorf("sweep idempotency: %w", err)
		}
		if n < 4096 {
			s.mIdemExpiredAdd(total)
			return total, nil
		}
	}
}

func (s *Store) mIdemExpiredAdd(n int) {
	if s.mIdemExpired != nil && n > 0 {
		s.mIdemExpired.Add(n)
	}
}

func (s *Store) sweepSome(upper []byte, limit int) (int, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: expiryPrefix, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	for it.First(); it.Valid() && n < limit; it.Next() {
		k := it.Key()
		if len(k) < len(expiryPrefix)+8 {
			continue
		}
		created := int64(binary.BigEndian.Uint64(k[len(expiryPrefix):]))
		id := string(k[len(expiryPrefix)+8:])
		if err := b.Delete(k, nil); err != nil {
			return 0, errors.Join(err, it.Close())
		}
		// Delete the record only if it is the one this index entry
		// names: a reused key has a newer record.
		v, closer, err := s.db.Get(idemKey(id))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return 0, errors.Join(err, it.Close())
		default:
			r, derr := decodeIdem(v)
			closer.Close()
			if derr != nil || r.created == created {
				if err := b.Delete(idemKey(id), nil); err != nil {
					return 0, errors.Join(err, it.Close())
				}
			}
		}
		n++
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	return n, b.Commit(pebble.NoSync)
}

// checkRecord refuses a record a reader would reject as corrupt: callers
// validate requests, but nothing that cannot be read back is ever
// committed. The errors are the link package's, on the offending field.
func checkRecord(r *link.Record) error {
	switch {
	case !link.ValidCode(r.Code):
		return link.OnField("code", link.ErrInvalidCode)
	case link.ValidStoredURL(r.URL) != nil:
		return link.OnField("url", link.ValidStoredURL(r.URL))
	case !link.ValidRedirect(r.Redirect):
		return link.OnField("redirect", link.ErrInvalidRedirect)
	case link.ValidateTags(r.Tags) != nil:
		return link.OnField("tags", link.ErrInvalidTags)
	}
	return r.Validate()
}

// normTime is t as a record stores it: UTC, millisecond precision, no
// monotonic reading.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Millisecond)
}

// normTags copies tags; an empty list is nil, as a decoded record has it.
func normTags(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	return slices.Clone(tags)
}
