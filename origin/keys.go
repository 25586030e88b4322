package origin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
)

// Minted API keys are KeyPrefix followed by KeySecretLen base62
// characters from crypto/rand (about 190 bits); only their SHA-256 is
// stored. Key ids are KeyIDPrefix and KeyIDLen base62 characters.
const (
	KeyPrefix    = "lp_"
	KeySecretLen = 32
	KeyIDPrefix  = "key_"
	KeyIDLen     = 16
	MaxKeyName   = 64
)

// keyObject shows k with its effective limits: rate_limit -1 means
// unlimited.
func (s *Server) keyObject(k *store.APIKey) client.Key {
	o := client.Key{ID: k.ID, Name: k.Name, Scopes: k.Scopes, CreatedAt: k.CreatedAt.UTC()}
	if o.Scopes == nil {
		o.Scopes = []string{}
	}
	rate, burst := s.keyLimit(*k)
	if rate <= 0 {
		o.RateLimit, o.Burst = -1, 0
	} else {
		o.RateLimit, o.Burst = rate, burst
	}
	if !k.RevokedAt.IsZero() {
		t := k.RevokedAt.UTC()
		o.RevokedAt = &t
	}
	return o
}

// keyBody is the body of POST /v1/keys.
type keyBody struct {
	Name      jsontext.Value `json:"name"`
	Scopes    jsontext.Value `json:"scopes"`
	RateLimit jsontext.Value `json:"rate_limit"`
	Burst     jsontext.Value `json:"burst"`
}

func parseKeyBody(b *keyBody) (store.APIKey, error) {
	var k store.APIKey
	if decodeValue(b.Name, &k.Name) != nil || !validKeyName(k.Name) {
		return k, link.OnField("name", ErrInvalidName)
	}
	if decodeValue(b.Scopes, &k.Scopes) != nil || len(k.Scopes) == 0 {
		return k, link.OnField("scopes", ErrInvalidScopes)
	}
	seen := map[string]bool{}
	for _, sc := range k.Scopes {
		if !knownScopes[sc] || seen[sc] {
			return k, link.OnField("scopes", ErrInvalidScopes)
		}
		seen[sc] = true
	}
	if b.RateLimit != nil && !isNull(b.RateLimit) {
		if decodeValue(b.RateLimit, &k.RateLimit) != nil || math.IsNaN(k.RateLimit) || math.IsInf(k.RateLimit, 0) || k.RateLimit > 1e9 {
			return k, link.OnField("rate_limit", ErrInvalidRateLimit)
		}
		if k.RateLimit < 0 {
			k.RateLimit = -1
		}
	}
	if b.Burst != nil && !isNull(b.Burst) {
		if decodeValue(b.Burst, &k.Burst) != nil || k.Burst < 0 || k.Burst > 1e9 {
			return k, link.OnField("burst", ErrInvalidBurst)
		}
	}
	return k, nil
}

func validKeyName(n string) bool {
	if n == "" || len(n) > MaxKeyName || !utf8.ValidString(n) {
		return false
	}
	for _, r := range n {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// createKey is POST /v1/keys: it mints a key and shows its secret once.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request, _ *principal) error {
	var body keyBody
	if err := readJSON(r, &body); err != nil {
		return err
	}
	k, err := parseKeyBody(&body)
	if err != nil {
		return err
	}
	secret, err := link.RandomCode(KeySecretLen)
	if err != nil {
		return fmt.Errorf("mint key: %w", err)
	}
	secret = KeyPrefix + secret
	id, err := link.RandomCode(KeyIDLen)
	if err != nil {
		return fmt.Errorf("mint key id: %w", err)
	}
	k.ID = KeyIDPrefix + id
	k.Hash = sha256.Sum256([]byte(secret))
	k.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	if err := s.store.PutAPIKey(r.Context(), k); err != nil {
		return err
	}
	if err := s.replicated(r.Context()); err != nil {
		return err
	}
	o := s.keyObject(&k)
	o.Key = secret
	w.Header().Set("Location", "/v1/keys/"+k.ID)
	writeJSON(w, http.StatusCreated, o)
	return nil
}

// listKeys is GET /v1/keys: every minted key, revoked ones included,
// without secrets.
func (s *Server) listKeys(w http.ResponseWriter, _ *http.Request, _ *principal) error {
	keys, err := s.store.APIKeys()
	if err != nil {
		return err
	}
	out := client.KeyList{Keys: make([]client.Key, 0, len(keys))}
	for i := range keys {
		out.Keys = append(out.Keys, s.keyObject(&keys[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeKey is DELETE /v1/keys/{id}: the key stops authenticating at
// once. Revoking a revoked key answers it unchanged.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, _ *principal) error {
	id := r.PathValue("id")
	k, err := s.store.RevokeAPIKey(r.Context(), id)
	if errors.Is(err, link.ErrNotFound) {
		return ErrKeyNotFound
	}
	if err != nil {
		return err
	}
	s.keys.drop(k.Hash)
	if err := s.replicated(r.Context()); err != nil {
		return err
	}
	s.limits.drop(k.ID)
	writeJSON(w, http.StatusOK, s.keyObject(&k))
	return nil
}
