package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/linkpop/linkpop/link"
)

// ErrKeyHashInUse is returned by PutAPIKey when another key id already has
// the same hash.
var ErrKeyHashInUse = errors.New("api key hash belongs to another key")

// APIKey is a stored API key. Only the SHA-256 hash of the secret is kept;
// the origin hashes the presented bearer token and compares in constant
// time.
type APIKey struct {
	// ID names the key; it scopes Idempotency-Keys and appears in logs.
	ID string
	// Name is a human description.
	Name string
	// Scopes are the permissions granted.
	Scopes []string
	// Hash is the SHA-256 of the secret.
	Hash [32]byte
	// RateLimit is requests per second: 0 is the server default, < 0
	// unlimited.
	RateLimit float64
	// Burst is the rate limiter's bucket size; 0 is the server default.
	Burst int
	// CreatedAt is when the key was stored.
	CreatedAt time.Time
	// RevokedAt is when the key was revoked; zero while it is active.
	RevokedAt time.Time
}

// Revoked reports whether the key has been revoked.
func (k *APIKey) Revoked() bool { return !k.RevokedAt.IsZero() }

// apiKeyJSON is the stored form of an APIKey.
type apiKeyJSON struct {
	ID        string   `json:"id"`
	Name      string   `json:"name,omitempty"`
	Scopes    []string `json:"scopes,omitempty"`
	Hash      []byte   `json:"hash"`
	RateLimit float64  `json:"rate_limit,omitempty"`
	Burst     int      `json:"burst,omitempty"`
	CreatedAt int64    `json:"created_at_ns,omitempty"`
	RevokedAt int64    `json:"revoked_at_ns,omitempty"`
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func encodeAPIKey(k *APIKey) ([]byte, error) {
	return json.Marshal(apiKeyJSON{
		ID: k.ID, Name: k.Name, Scopes: k.Scopes, Hash: k.Hash[:],
		RateLimit: k.RateLimit, Burst: k.Burst,
		CreatedAt: unixNano(k.CreatedAt), RevokedAt: unixNano(k.RevokedAt),
	})
}

func decodeAPIKey(b []byte) (APIKey, error) {
	var j apiKeyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return APIKey{}, fmt.Errorf("%w: api key: %v", link.ErrCorrupt, err)
	}
	if j.ID == "" || len(j.Hash) != 32 {
		return APIKey{}, fmt.Errorf("%w: api key %q", link.ErrCorrupt, j.ID)
	}
	k := APIKey{
		ID: j.ID, Name: j.Name, Scopes: j.Scopes, RateLimit: j.RateLimit, Burst: j.Burst,
		CreatedAt: fromUnixNano(j.CreatedAt), RevokedAt: fromUnixNano(j.RevokedAt),
	}
	copy(k.Hash[:], j.Hash)
	return k, nil
}

// PutAPIKey stores k, replacing the key with the same ID (and its hash
// index entry). A zero CreatedAt is set to now. ErrKeyHashInUse if another
// key has the same hash.
func (s *Store) PutAPIKey(ctx context.Context, k APIKey) error {
	if k.ID == "" || strings.ContainsRune(k.ID, 0) {
		return errors.New("put api key: id must be non-empty and without NUL")
	}
	k.Scopes = slices.Clone(k.Scopes)
	return s.submit(ctx, &request{kind: kindPutKey, key: k}).err
}

// APIKeyByHash returns the key whose secret hashes to hash, revoked or
// not: callers must check Revoked. link.ErrNotFound if none.
func (s *Store) APIKeyByHash(hash [32]byte) (APIKey, error) {
	if !s.enter() {
		return APIKey{}, ErrClosed
	}
	defer s.exit()
	id, ok, err := s.get(hashKey(hash))
	if err != nil {
		return APIKey{}, fmt.Errorf("api key by hash: %w", err)
	}
	if !ok {
		return APIKey{}, link.ErrNotFound
	}
	return s.apiKey(string(id))
}

func (s *Store) apiKey(id string) (APIKey, error) {
	v, ok, err := s.get(apiKeyKey(id))
	if err != nil {
		return APIKey{}, fmt.Errorf("api key %s: %w", id, err)
	}
	if !ok {
		return APIKey{}, link.ErrNotFound
	}
	return decodeAPIKey(v)
}

// get returns a copy of key's value.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return slices.Clone(v), true, nil
}

// APIKeys returns every key, revoked ones included, ordered by ID.
func (s *Store) APIKeys() ([]APIKey, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.exit()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: keyPrefix, UpperBound: keyUpper})
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	var keys []APIKey
	for it.First(); it.Valid(); it.Next() {
		k, err := decodeAPIKey(it.Value())
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		keys = append(keys, k)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	return keys, nil
}

// RevokeAPIKey marks the key revoked (now) and returns it; revoking a
// revoked key returns it unchanged. link.ErrNotFound if there is no such
// key.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	res := s.submit(ctx, &request{kind: kindRevokeKey, keyID: id})
	return res.key, res.err
}

// apiKey returns the key with id as of this batch.
func (t *txn) apiKey(id string) (APIKey, bool, error) {
	if k, ok := t.keys[id]; ok {
		return k, true, nil
	}
	k, err := t.s.apiKey(id)
	if errors.Is(err, link.ErrNotFound) {
		return APIKey{}, false, nil
	}
	return k, err == nil, err
}

// hashOwner returns the id the hash index names for h as of this batch.
func (t *txn) hashOwner(h [32]byte) (string, bool, error) {
	if id, ok := t.hashes[h]; ok {
		return id, id != "", nil
	}
	v, ok, err := t.s.get(hashKey(h))
	return string(v), ok, err
}

func (t *txn) putKey(k APIKey) result {
	owner, ok, err := t.hashOwner(k.Hash)
	if err != nil {
		return result{err: err}
	}
	if ok && owner != k.ID {
		return result{err: ErrKeyHashInUse}
	}
	prev, hadPrev, err := t.apiKey(k.ID)
	if err != nil {
		return result{err: err}
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = t.now
	}
	val, err := encodeAPIKey(&k)
	if err != nil {
		return result{err: err}
	}
	if t.hashes == nil {
		t.hashes = map[[32]byte]string{}
	}
	if hadPrev && prev.Hash != k.Hash {
		if err := t.b.Delete(hashKey(prev.Hash), nil); err != nil {
			return result{err: err}
		}
		t.hashes[prev.Hash] = ""
	}
	if err := t.set(apiKeyKey(k.ID), val); err != nil {
		return result{err: err}
	}
	if err := t.set(hashKey(k.Hash), []byte(k.ID)); err != nil {
		return result{err: err}
	}
	t.hashes[k.Hash] = k.ID
	t.setKey(k)
	t.sync = true
	if err := t.emitKey(&k); err != nil {
		return result{err: err}
	}
	return result{key: k}
}

func (t *txn) setKey(k APIKey) {
	if t.keys == nil {
		t.keys = map[string]APIKey{}
	}
	t.keys[k.ID] = k
}

func (t *txn) revokeKey(id string) result {
	k, ok, err := t.apiKey(id)
	if err != nil {
		return result{err: err}
	}
	if !ok {
		return result{err: link.ErrNotFound}
	}
	if k.Revoked() {
		return result{key: k}
	}
	k.RevokedAt = t.now
	val, err := encodeAPIKey(&k)
	if err != nil {
		return result{err: err}
	}
	if err := t.set(apiKeyKey(id), val); err != nil {
		return result{err: err}
	}
	t.setKey(k)
	t.sync = true
	if err := t.emitKey(&k); err != nil {
		return result{err: err}
	}
	return result{key: k}
}
