package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/linkpop/linkpop/link"
)

// This file is what makes the store usable by an origin with a standby
// (high availability): the origin outbox (the events of the origin stream:
// API keys and idempotency records), applying the streams on a standby,
// refusing writes while not the leader, waiting until a mutation is in
// the stream (-ack replicated), and discarding what a deposed leader never
// published.

// ErrReadOnly is returned by every mutation while the store is read-only
// (SetReadOnly): the origin is a standby, or a leader that lost its lease.
var ErrReadOnly = errors.New("store is read-only: this origin is not the leader")

// ErrDiscarded is returned by WaitPublished when the entries waited for
// were discarded unpublished (Discard): the mutation is not in the stream
// and will never be.
var ErrDiscarded = errors.New("the change was discarded unpublished: this origin is no longer the leader")

// Codes (subject tails) of the origin stream's events. Package
// replication's OriginStream matches "idem." to give those a TTL.
const (
	originKeyCode  = "key."
	originIdemCode = "idem."
)

// keyEventCode is the origin-stream code of API key id's events.
func keyEventCode(id string) string { return originKeyCode + hex.EncodeToString([]byte(id)) }

// idemEventCode is the origin-stream code of idempotency record id.
func idemEventCode(id string) string {
	h := sha256.Sum256([]byte(id))
	return originIdemCode + hex.EncodeToString(h[:16])
}

// originEvent is the payload of an origin-stream event: exactly one of
// its fields is set.
type originEvent struct {
	// Key is the API key's whole stored record (its hash, never a
	// secret), revoked or not.
	Key *apiKeyJSON `json:"key,omitempty"`
	// Idem is an idempotency record.
	Idem *idemJSON `json:"idem,omitempty"`
}

type idemJSON struct {
	ID      string `json:"id"`
	Hash    []byte `json:"hash"`
	Created int64  `json:"created_ns"`
	// Record is the link.MarshalRecord snapshot of the created link.
	Record []byte `json:"record"`
}

// emitOrigin adds an origin outbox entry to the batch.
func (t *txn) emitOrigin(code string, ev originEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode origin event: %w", err)
	}
	t.oseq++
	if err := t.set(originKey(t.oseq), encodeOutbox(t.now, code, data)); err != nil {
		return err
	}
	t.oadded = append(t.oadded, outboxMark{rev: t.oseq, at: t.now.UnixNano()})
	return nil
}

func (t *txn) emitKey(k *APIKey) error {
	j := apiKeyJSON{
		ID: k.ID, Name: k.Name, Scopes: k.Scopes, Hash: k.Hash[:],
		RateLimit: k.RateLimit, Burst: k.Burst,
		CreatedAt: unixNano(k.CreatedAt), RevokedAt: unixNano(k.RevokedAt),
	}
	return t.emitOrigin(keyEventCode(k.ID), originEvent{Key: &j})
}

// mutation reports whether requests of kind k change what the API
// serves, and are refused while the store is read-only.
func (k reqKind) mutation() bool {
	switch k {
	case kindCreate, kindCreateBatch, kindUpdate, kindDisable, kindPutKey, kindRevokeKey:
		return true
	}
	return false
}

// SetReadOnly makes the store refuse (ErrReadOnly) or accept mutations.
// A mutation the writer has already taken still commits; one taken after
// SetReadOnly(true) returns is refused, so a Discard after it drops
// everything unpublished.
func (s *Store) SetReadOnly(ro bool) { s.readOnly.Store(ro) }

// ReadOnly reports whether the store refuses mutations.
func (s *Store) ReadOnly() bool { return s.readOnly.Load() }

// OriginSeq is the last origin outbox sequence committed.
func (s *Store) OriginSeq() uint64 { return s.oseq.Load() }

// Positions returns the stream sequences a standby applied through: of
// the link stream and of the origin stream.
func (s *Store) Positions() (links, origin uint64) { return s.posLinks.Load(), s.posOrigin.Load() }

// discardSpan is a range of outbox entries (links: revisions, origin:
// sequences) that Discard dropped without publishing.
type discardSpan struct {
	origin   bool
	from, to uint64
}

// WaitPublished waits until every link outbox entry up to revision rev
// and every origin outbox entry up to seq oseq is published (the relay
// marked it, MarkPublished, or deleted it after the stream's ack), or ctx
// ends. ErrDiscarded if one of them was discarded instead.
//
// A waiting call is woken only when its own answer is ready, not by every
// mark: under load the relay marks a small group at a time while every
// client's create waits here, and waking them all at each mark cost more
// CPU than the marks.
func (s *Store) WaitPublished(ctx context.Context, rev, oseq uint64) error {
	return s.WaitPublishedWithin(ctx, rev, oseq, 0)
}

// WaitPublishedWithin is WaitPublished giving up after d (0: never) with
// context.DeadlineExceeded. A create with -ack replicated waits this way:
// a context with a timeout per create cost six allocations, a timer and
// a registration with the request's context.
func (s *Store) WaitPublishedWithin(ctx context.Context, rev, oseq uint64, d time.Duration) error {
	var timeout <-chan time.Time
	for {
		s.pubMu.Lock()
		if done, err := s.published(rev, oseq); done {
			s.pubMu.Unlock()
			return err
		}
		w := &pubWaiter{rev: rev, oseq: oseq, ch: make(chan struct{})}
		s.waiters = append(s.waiters, w)
		s.pubMu.Unlock()
		if d > 0 && timeout == nil {
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-w.ch:
			// Answered (wakePublished forgot w): take the answer.
		case <-ctx.Done():
			s.dropWaiter(w)
			return ctx.Err()
		case <-timeout:
			s.dropWaiter(w)
			return context.DeadlineExceeded
		case <-s.done:
			s.dropWaiter(w)
			return ErrClosed
		}
	}
}

// pubWaiter is a WaitPublished call waiting for rev and oseq; ch is
// closed once published would answer it.
type pubWaiter struct {
	rev, oseq uint64
	ch        chan struct{}
}

// published reports whether WaitPublished(rev, oseq) is answered, and
// with what (nil or ErrDiscarded); the caller holds pubMu. Discards and
// deletes change its answer only in commits, which call wakePublished
// with pubMu held after updating the outbox indexes.
func (s *Store) published(rev, oseq uint64) (bool, error) {
	if s.pubRev.Load() >= rev && s.pubOseq.Load() >= oseq {
		// In the stream: a Discard that came after the ack (the delete
		// not yet committed) does not undo that.
		return true, nil
	}
	for _, d := range s.discarded {
		if (!d.origin && rev >= d.from && rev <= d.to) || (d.origin && oseq >= d.from && oseq <= d.to) {
			return true, ErrDiscarded
		}
	}
	if (s.pubRev.Load() >= rev || s.outbox.lowest(s.rev.Load()) > rev) && (s.pubOseq.Load() >= oseq || s.origin.lowest(s.oseq.Load()) > oseq) {
		return true, nil
	}
	return false, nil
}

// wakePublished wakes, and forgets, the waiters that published now
// answers; the caller holds pubMu.
func (s *Store) wakePublished() {
	ws := s.waiters[:0]
	for _, w := range s.waiters {
		if done, _ := s.published(w.rev, w.oseq); done {
			close(w.ch)
		} else {
			ws = append(ws, w)
		}
	}
	clear(s.waiters[len(ws):])
	s.waiters = ws
}

// dropWaiter forgets w if it is still waiting.
func (s *Store) dropWaiter(w *pubWaiter) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if i := slices.Index(s.waiters, w); i >= 0 {
		s.waiters = slices.Delete(s.waiters, i, i+1)
	}
}

// MarkPublished records that every link outbox entry up to revision rev
// and every origin outbox entry up to seq oseq is in the stream (the
// stream acknowledged it; 0 leaves a mark as it is), and wakes the
// WaitPublished calls it satisfies, before the relay's OutboxDelete is
// committed: the acks are answered in groups, the deletes follow.
func (s *Store) MarkPublished(rev, oseq uint64) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	moved := false
	if rev > s.pubRev.Load() {
		s.pubRev.Store(rev)
		moved = true
	}
	if oseq > s.pubOseq.Load() {
		s.pubOseq.Store(oseq)
		moved = true
	}
	if moved {
		s.wakePublished()
	}
}

// ApplyLinks applies change events of the link stream on a standby: each
// record newer than the one held replaces it (no outbox entry: the event
// is already in the stream), the revision counter follows the highest
// revision seen, and the position becomes through (unless 0) in the same
// batch. The batch is not synced on its own: a crash loses at most a tail
// that is read again from the position; the first synced commit after it
// (SetPositions at a takeover) makes it durable.
func (s *Store) ApplyLinks(ctx context.Context, through uint64, changes []link.Change) error {
	return s.submit(ctx, &request{kind: kindApplyLinks, through: through, changes: changes}).err
}

// ApplyOrigin applies origin-stream events (their payloads, as
// OriginOutbox entries carry them) on a standby, like ApplyLinks: API keys
// replace the stored key, idempotency records are stored with their
// original creation time.
func (s *Store) ApplyOrigin(ctx context.Context, through uint64, events [][]byte) error {
	return s.submit(ctx, &request{kind: kindApplyOrigin, through: through, events: events}).err
}

// SetPositions stores both stream positions in one synced commit, which
// also makes every earlier unsynced apply durable.
func (s *Store) SetPositions(ctx context.Context, links, origin uint64) error {
	return s.submit(ctx, &request{kind: kindSetPositions, through: links, through2: origin}).err
}

// Discard drops every unpublished outbox entry, links and origin events,
// and what they wrote: each such link and API key is deleted (its
// published state is fetched again from the streams by the caller, which
// gets their codes and ids) and each such idempotency record removed.
// Waiters on them get ErrDiscarded. Call it after SetReadOnly(true), on a
// leader that was deposed: nothing it did not publish is kept. keyCodes
// are the origin-stream codes of the keys dropped.
func (s *Store) Discard(ctx context.Context) (codes, keyCodes []string, err error) {
	res := s.submit(ctx, &request{kind: kindDiscard})
	return res.codes, res.keyIDs, res.err
}

func (t *txn) applyLinks(through uint64, changes []link.Change) result {
	for i := range changes {
		rec := changes[i].Record
		cur, ok, err := t.link(rec.Code)
		if err != nil {
			return result{err: err}
		}
		if ok && cur.Revision >= rec.Revision {
			continue
		}
		val, err := link.MarshalRecord(&rec)
		if err != nil {
			return result{err: fmt.Errorf("encode %s: %w", rec.Code, err)}
		}
		if err := t.set(linkKey(rec.Code), val); err != nil {
			return result{err: err}
		}
		t.s.noteCode(rec.Code)
		t.s.noteLimited(&rec)
		if t.recs == nil {
			t.recs = map[string]link.Record{}
		}
		t.recs[rec.Code] = rec
		if !ok {
			t.links++
		}
		t.rev = max(t.rev, rec.Revision)
	}
	if through != 0 {
		t.posLinks, t.dirty = through, true
	}
	return result{}
}

func (t *txn) applyOrigin(through uint64, events [][]byte) result {
	for _, data := range events {
		var ev originEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return result{err: fmt.Errorf("%w: origin event: %v", link.ErrCorrupt, err)}
		}
		switch {
		case ev.Key != nil:
			b, _ := json.Marshal(ev.Key)
			k, err := decodeAPIKey(b)
			if err != nil {
				return result{err: err}
			}
			if err := t.applyKey(k); err != nil {
				return result{err: err}
			}
		case ev.Idem != nil:
			if err := t.applyIdem(ev.Idem); err != nil {
				return result{err: err}
			}
		}
	}
	if through != 0 {
		t.posOrigin, t.dirty = through, true
	}
	return result{}
}

// applyKey stores a key replicated from the leader, with its hash index.
func (t *txn) applyKey(k APIKey) error {
	prev, hadPrev, err := t.apiKey(k.ID)
	if err != nil {
		return err
	}
	val, err := encodeAPIKey(&k)
	if err != nil {
		return err
	}
	if t.hashes == nil {
		t.hashes = map[[32]byte]string{}
	}
	if hadPrev && prev.Hash != k.Hash {
		if err := t.b.Delete(hashKey(prev.Hash), nil); err != nil {
			return err
		}
		t.hashes[prev.Hash] = ""
	}
	if err := t.set(apiKeyKey(k.ID), val); err != nil {
		return err
	}
	if err := t.set(hashKey(k.Hash), []byte(k.ID)); err != nil {
		return err
	}
	t.hashes[k.Hash] = k.ID
	t.setKey(k)
	return nil
}

// applyIdem stores an idempotency record replicated from the leader.
func (t *txn) applyIdem(j *idemJSON) error {
	if len(j.Hash) != 32 || j.ID == "" {
		return fmt.Errorf("%w: idempotency event %q", link.ErrCorrupt, j.ID)
	}
	// The event carries the record's value after its 40-byte header
	// (hash and creation time): a link snapshot, or a batch's items.
	full := make([]byte, 40, 40+len(j.Record))
	copy(full, j.Hash)
	binary.BigEndian.PutUint64(full[32:], uint64(j.Created))
	r, err := decodeIdem(append(full, j.Record...))
	if err != nil {
		return fmt.Errorf("idempotency event: %w", err)
	}
	if t.now.Sub(time.Unix(0, r.created)) >= t.s.o.IdempotencyTTL {
		return nil // expired already: the sweep would remove it
	}
	prev, hadPrev, err := t.idemRecordAny(j.ID)
	if err != nil {
		return err
	}
	val, err := encodeIdem(&r)
	if err != nil {
		return err
	}
	if hadPrev && prev.created != r.created {
		if err := t.b.Delete(expiryKey(prev.created, j.ID), nil); err != nil {
			return err
		}
	}
	if err := t.set(idemKey(j.ID), val); err != nil {
		return err
	}
	if err := t.set(expiryKey(r.created, j.ID), nil); err != nil {
		return err
	}
	if t.idem == nil {
		t.idem = map[string]idemRecord{}
	}
	t.idem[j.ID] = r
	return nil
}

// discardOutboxes drops both outboxes and what their entries wrote.
func (t *txn) discardOutboxes() result {
	// Earlier writes of this group are committed first, so the outbox
	// read below sees them.
	if err := t.commit(); err != nil {
		return result{err: err}
	}
	t.reset()
	s := t.s
	links, err := s.readOutbox(outboxPrefix, &s.outbox, s.rev.Load(), 0, 1<<62)
	if err != nil {
		return result{err: err}
	}
	events, err := s.readOutbox(originPrefix, &s.origin, s.oseq.Load(), 0, 1<<62)
	if err != nil {
		return result{err: err}
	}
	var res result
	seen := map[string]bool{}
	for _, e := range links {
		if seen[e.Code] {
			continue
		}
		seen[e.Code] = true
		if _, ok, err := t.link(e.Code); err != nil {
			return result{err: err}
		} else if ok {
			if err := t.b.Delete(linkKey(e.Code), nil); err != nil {
				return result{err: err}
			}
			t.links--
			t.dirty = true
		}
		res.codes = append(res.codes, e.Code)
	}
	for _, e := range events {
		var ev originEvent
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			return result{err: fmt.Errorf("%w: origin outbox %d: %v", link.ErrCorrupt, e.Revision, err)}
		}
		switch {
		case ev.Key != nil && strings.HasPrefix(e.Code, originKeyCode):
			k, ok, err := t.apiKey(ev.Key.ID)
			if err != nil {
				return result{err: err}
			}
			if ok && !seen["k/"+k.ID] {
				seen["k/"+k.ID] = true
				if err := t.b.Delete(apiKeyKey(k.ID), nil); err != nil {
					return result{err: err}
				}
				if err := t.b.Delete(hashKey(k.Hash), nil); err != nil {
					return result{err: err}
				}
				t.dirty = true
				res.keyIDs = append(res.keyIDs, e.Code)
			}
		case ev.Idem != nil:
			if err := t.b.Delete(idemKey(ev.Idem.ID), nil); err != nil {
				return result{err: err}
			}
			if err := t.b.Delete(expiryKey(ev.Idem.Created, ev.Idem.ID), nil); err != nil {
				return result{err: err}
			}
			t.dirty = true
		}
	}
	if n := len(links); n > 0 {
		revs := make([]uint64, n)
		for i, e := range links {
			revs[i] = e.Revision
		}
		if r := t.outboxDelete(revs); r.err != nil {
			return r
		}
		t.discard = append(t.discard, discardSpan{from: revs[0], to: revs[n-1]})
	}
	if n := len(events); n > 0 {
		seqs := make([]uint64, n)
		for i, e := range events {
			seqs[i] = e.Revision
		}
		if r := t.originOutboxDelete(seqs); r.err != nil {
			return r
		}
		t.discard = append(t.discard, discardSpan{origin: true, from: seqs[0], to: seqs[n-1]})
	}
	t.sync = true
	if err := t.commit(); err != nil {
		return result{err: err}
	}
	t.reset()
	return res
}

// idemLinkLive reports whether the link an idempotency record names is in
// the store at the record's revision or later. On a standby, a record can
// arrive without its link (the origin stream is published first, and the
// leader died before the link event landed): the create was never
// acknowledged, so the record must not replay it.
//
// A batch's record is live when every link it created is: if one is
// missing, the batch was never acknowledged, and a retry runs it again
// (the items that did land may then be created twice; with -ack
// replicated only a batch the old leader never answered can be in that
// state).
func (t *txn) idemLinkLive(r idemRecord) (bool, error) {
	if r.batch == nil {
		return t.linkAtLeast(r.rec)
	}
	for i := range r.batch {
		if r.batch[i].Err != nil {
			continue
		}
		if ok, err := t.linkAtLeast(r.batch[i].Rec); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// linkAtLeast reports whether rec's link is in the store at rec's revision
// or later.
func (t *txn) linkAtLeast(rec link.Record) (bool, error) {
	cur, ok, err := t.link(rec.Code)
	if err != nil || !ok {
		return false, err
	}
	return cur.Revision >= rec.Revision, nil
}
