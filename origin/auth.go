package origin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
)

// API key scopes. ScopeAdmin implies every other scope.
const (
	ScopeLinksRead  = "links:read"
	ScopeLinksWrite = "links:write"
	ScopeAdmin      = "admin"
)

// AdminKeyID is the principal id of the bootstrap admin key: its
// idempotency scope and its rate limiter's name.
const AdminKeyID = "admin"

var knownScopes = map[string]bool{ScopeLinksRead: true, ScopeLinksWrite: true, ScopeAdmin: true}

// principal is the authenticated caller of one request.
type principal struct {
	id     string
	scopes []string
	rate   float64 // requests per second; <= 0 unlimited
	burst  int
}

func (p *principal) has(scope string) bool {
	for _, s := range p.scopes {
		if s == scope || s == ScopeAdmin {
			return true
		}
	}
	return false
}

// keyCache remembers store API keys by hash so a request does not read
// Pebble. The origin is the only writer of keys, so revocation
// invalidates the entry and the cache never serves a revoked key.
type keyCache struct {
	mu  sync.RWMutex
	m   map[[32]byte]store.APIKey
	gen uint64 // bumped by drop, so a lookup racing a revocation is not cached
}

func newKeyCache() *keyCache { return &keyCache{m: map[[32]byte]store.APIKey{}} }

// get returns the cached key for h, or the generation to pass to put
// after reading the store.
func (c *keyCache) get(h [32]byte) (store.APIKey, uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.m[h]
	return k, c.gen, ok
}

// put caches k unless a drop happened since the get that returned gen:
// the store read may predate that revocation.
func (c *keyCache) put(k store.APIKey, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.m[k.Hash] = k
	}
}

func (c *keyCache) drop(h [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, h)
	c.gen++
}

// authenticate resolves the request's Bearer token to a principal. The
// token is hashed first: the bootstrap key's hash is compared in constant
// time, and store keys are found by hash, so timing reveals nothing about
// a key's text.
func (s *Server) authenticate(r *http.Request) (*principal, error) {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, ErrUnauthorized
	}
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], s.adminKeyHash[:]) == 1 {
		return &s.adminPrincipal, nil
	}
	k, gen, ok := s.keys.get(h)
	if !ok {
		var err error
		k, err = s.store.APIKeyByHash(h)
		if err != nil {
			if errors.Is(err, link.ErrNotFound) {
				return nil, ErrUnauthorized
			}
			return nil, fmt.Errorf("look up api key: %w", err)
		}
		s.keys.put(k, gen)
	}
	if !k.RevokedAt.IsZero() {
		return nil, withDetail(ErrUnauthorized, "the API key has been revoked")
	}
	p := &principal{id: k.ID, scopes: k.Scopes}
	p.rate, p.burst = s.keyLimit(k)
	return p, nil
}

// keyLimit is the effective rate and burst of a stored key.
func (s *Server) keyLimit(k store.APIKey) (float64, int) {
	rate, burst := k.RateLimit, k.Burst
	switch {
	case rate < 0:
		return 0, 0
	case rate == 0:
		rate = s.cfg.DefaultRateLimit
		if burst == 0 {
			burst = s.cfg.DefaultBurst
		}
	}
	if rate < 0 {
		return 0, 0
	}
	if burst == 0 {
		burst = max(1, int(2*rate))
	}
	return rate, burst
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
