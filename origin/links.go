package origin

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
)

// List page sizes of GET /v1/links.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

// linkObject is the link object of r (client.Link, the one definition).
func (s *Server) linkObject(r *link.Record) client.Link { return client.NewLink(r, s.shortBase) }

// writeLink answers with one link object and its ETag.
func (s *Server) writeLink(w http.ResponseWriter, status int, r *link.Record) {
	w.Header().Set("ETag", etag(r.Revision))
	l := s.linkObject(r)
	writeJSON(w, status, &l) // a *client.Link: its own encoder, not encoding/json's
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// linkBody is the body of POST and PATCH /v1/links. Fields stay raw so
// each one is checked by its own rule and reports its own error code.
type linkBody struct {
	URL       jsontext.Value `json:"url"`
	Code      jsontext.Value `json:"code"`
	Redirect  jsontext.Value `json:"redirect"`
	ExpiresAt jsontext.Value `json:"expires_at"`
	Tags      jsontext.Value `json:"tags"`
	MaxVisits jsontext.Value `json:"max_visits"`
	Freshness jsontext.Value `json:"freshness"`
	Status    jsontext.Value `json:"status"`
}

// patchBody is linkBody without code and status, which a PATCH cannot
// change (DELETE disables): a PATCH naming them is refused as an unknown
// field.
type patchBody struct {
	URL       jsontext.Value `json:"url"`
	Redirect  jsontext.Value `json:"redirect"`
	ExpiresAt jsontext.Value `json:"expires_at"`
	Tags      jsontext.Value `json:"tags"`
	MaxVisits jsontext.Value `json:"max_visits"`
	Freshness jsontext.Value `json:"freshness"`
}

func isNull(m jsontext.Value) bool { return bytes.Equal(m, []byte("null")) }

// parseURL validates and canonicalises the url field.
func (s *Server) parseURL(m jsontext.Value) (string, error) {
	var raw string
	if m == nil || isNull(m) {
		return "", link.OnField("url", withDetail(link.ErrInvalidURL, "url is required"))
	}
	if err := decodeValue(m, &raw); err != nil {
		if m.Kind() == '"' && !utf8.Valid(m) {
			return "", link.OnField("url", withDetail(link.ErrInvalidURL, "url is not valid UTF-8"))
		}
		if m.Kind() == '"' {
			return "", link.OnField("url", withDetail(link.ErrInvalidURL, "url is not a valid JSON string (a lone surrogate escape?)"))
		}
		return "", link.OnField("url", withDetail(link.ErrInvalidURL, "url must be a string"))
	}
	u, err := s.blocks.policy().NormalizeURL(raw)
	if err != nil {
		return "", link.OnField("url", err)
	}
	return u, nil
}

// parseRedirect validates the redirect field: 301, 302, 307 or 308.
func parseRedirect(m jsontext.Value) (int, error) {
	var n int
	if err := decodeValue(m, &n); err != nil || !link.ValidRedirect(n) {
		return 0, link.OnField("redirect", link.ErrInvalidRedirect)
	}
	return n, nil
}

// parseExpiry validates expires_at: an RFC 3339 time in the future,
// truncated to the millisecond the store keeps. null is the zero time.
func parseExpiry(m jsontext.Value, now time.Time) (time.Time, error) {
	if isNull(m) {
		return time.Time{}, nil
	}
	var raw string
	if err := decodeValue(m, &raw); err != nil {
		return time.Time{}, link.OnField("expires_at", link.ErrInvalidExpiry)
	}
	t, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		return time.Time{}, link.OnField("expires_at", link.ErrInvalidExpiry)
	}
	t = t.UTC().Truncate(time.Millisecond)
	if !t.After(now) {
		return time.Time{}, link.OnField("expires_at", withDetail(link.ErrInvalidExpiry, "expires_at must be in the future"))
	}
	return t, nil
}

// parseTags validates tags: null is none.
func parseTags(m jsontext.Value) ([]string, error) {
	if isNull(m) {
		return []string{}, nil
	}
	var tags []string
	if err := decodeValue(m, &tags); err != nil {
		return nil, link.OnField("tags", link.ErrInvalidTags)
	}
	if err := link.ValidateTags(tags); err != nil {
		return nil, link.OnField("tags", err)
	}
	if tags == nil {
		tags = []string{}
	}
	return tags, nil
}

// parseMaxVisits validates max_visits: a positive integer, or null for
// no limit (0).
func parseMaxVisits(m jsontext.Value) (uint64, error) {
	if isNull(m) {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(m)), 10, 64)
	if err != nil || n == 0 {
		return 0, link.OnField("max_visits", ErrInvalidMaxVisits)
	}
	return n, nil
}

// parseFreshness validates freshness: "relaxed" or "strict"; null is
// relaxed.
func parseFreshness(m jsontext.Value) (link.Freshness, error) {
	if isNull(m) {
		return link.FreshnessRelaxed, nil
	}
	var raw string
	if err := decodeValue(m, &raw); err != nil {
		return 0, link.OnField("freshness", ErrInvalidFreshness)
	}
	f, ok := link.ParseFreshness(raw)
	if !ok {
		return 0, link.OnField("freshness", ErrInvalidFreshness)
	}
	return f, nil
}

// createRequest is a validated POST /v1/links body.
type createRequest struct {
	URL       string    `json:"url"`
	Code      string    `json:"code"`
	Redirect  int       `json:"redirect"`
	ExpiresAt time.Time `json:"expires_at"`
	Tags      []string  `json:"tags"`
	MaxVisits uint64    `json:"max_visits,omitempty"`
	// Freshness is omitted when relaxed, so the hash of every request
	// made before the field existed is unchanged.
	Freshness link.Freshness `json:"freshness,omitempty"`
	Disabled  bool           `json:"disabled,omitempty"`
}

func (s *Server) parseCreate(b *linkBody, now time.Time) (createRequest, error) {
	req := createRequest{Redirect: link.DefaultRedirect, Tags: []string{}}
	var err error
	if req.URL, err = s.parseURL(b.URL); err != nil {
		return req, err
	}
	if b.Code != nil && !isNull(b.Code) {
		var code string
		if decodeValue(b.Code, &code) != nil {
			return req, link.OnField("code", link.ErrInvalidCode)
		}
		if req.Code, err = link.ParseCode(code, s.reserved); err != nil {
			return req, link.OnField("code", err)
		}
	}
	if b.Redirect != nil && !isNull(b.Redirect) {
		if req.Redirect, err = parseRedirect(b.Redirect); err != nil {
			return req, err
		}
	}
	if b.ExpiresAt != nil {
		if req.ExpiresAt, err = parseExpiry(b.ExpiresAt, now); err != nil {
			return req, err
		}
	}
	if b.Tags != nil {
		if req.Tags, err = parseTags(b.Tags); err != nil {
			return req, err
		}
	}
	if b.MaxVisits != nil {
		if req.MaxVisits, err = parseMaxVisits(b.MaxVisits); err != nil {
			return req, err
		}
	}
	if b.Freshness != nil {
		if req.Freshness, err = parseFreshness(b.Freshness); err != nil {
			return req, err
		}
	}
	if b.Status != nil && !isNull(b.Status) {
		var st string
		if decodeValue(b.Status, &st) != nil || (st != client.StatusActive && st != client.StatusDisabled) {
			return req, link.OnField("status", ErrInvalidStatus)
		}
		req.Disabled = st == client.StatusDisabled
	}
	return req, nil
}

// store is the store's create of c (without an Idempotency-Key).
func (c *createRequest) store() store.CreateRequest {
	return store.CreateRequest{
		Code:      c.Code,
		URL:       c.URL,
		Redirect:  c.Redirect,
		ExpiresAt: c.ExpiresAt,
		Tags:      c.Tags,
		MaxVisits: c.MaxVisits,
		Freshness: c.Freshness,
		Disabled:  c.Disabled,
	}
}

// hash is the Idempotency-Key fingerprint of a create: SHA-256 of the
// route and the validated, canonical request, so retries that differ
// only in whitespace, field order or URL spelling match.
func (c *createRequest) hash() [32]byte {
	b, _ := json.Marshal(struct {
		Route string `json:"route"`
		*createRequest
	}{"POST /v1/links", c}) // only strings, ints and a time: cannot fail
	return sha256.Sum256(b)
}

// idempotencyKey reads the Idempotency-Key header: absent is "", present
// must be 1-255 printable ASCII characters.
func idempotencyKey(h http.Header) (string, error) {
	vals, ok := h["Idempotency-Key"]
	if !ok {
		return "", nil
	}
	bad := link.OnField("Idempotency-Key", ErrInvalidIdempotencyKey)
	if len(vals) != 1 {
		return "", bad
	}
	k := vals[0]
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return "", bad
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c >= 0x7f {
			return "", bad
		}
	}
	return k, nil
}

// createLink is POST /v1/links.
func (s *Server) createLink(w http.ResponseWriter, r *http.Request, p *principal) error {
	idemKey, err := idempotencyKey(r.Header)
	if err != nil {
		return err
	}
	var body linkBody
	if err := readJSON(r, &body); err != nil {
		return err
	}
	s.writeGate.RLock() // from the policy check to the commit
	defer s.writeGate.RUnlock()
	req, err := s.parseCreate(&body, time.Now())
	if err != nil {
		return err
	}
	sreq := req.store()
	if idemKey != "" {
		sreq.Idem = &store.Idempotency{Scope: p.id, Key: idemKey, RequestHash: req.hash()}
	}
	rec, replayed, err := s.store.Create(r.Context(), sreq)
	if err != nil {
		return err
	}
	if err := s.replicatedThrough(r.Context(), rec.Revision); err != nil {
		return err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/v1/links/"+rec.Code)
	s.writeLink(w, http.StatusCreated, &rec)
	return nil
}

// getLink is GET /v1/links/{code}.
func (s *Server) getLink(w http.ResponseWriter, r *http.Request, _ *principal) error {
	code := r.PathValue("code")
	if !link.ValidCode(code) {
		return link.ErrNotFound
	}
	rec, err := s.store.Get(code)
	if err != nil {
		return err
	}
	s.writeLink(w, http.StatusOK, &rec)
	return nil
}

// updateLink is PATCH /v1/links/{code}.
func (s *Server) updateLink(w http.ResponseWriter, r *http.Request, _ *principal) error {
	code := r.PathValue("code")
	ifRev, err := ifMatch(r.Header)
	if err != nil {
		return err
	}
	var body patchBody
	if err := readJSON(r, &body); err != nil {
		return err
	}
	s.writeGate.RLock() // from the policy check to the commit
	defer s.writeGate.RUnlock()
	req := store.UpdateRequest{Code: code, IfRevision: ifRev}
	n := 0
	if body.URL != nil {
		u, err := s.parseURL(body.URL)
		if err != nil {
			return err
		}
		req.URL, n = &u, n+1
	}
	if body.Redirect != nil {
		rd, err := parseRedirect(body.Redirect)
		if err != nil {
			return err
		}
		req.Redirect, n = &rd, n+1
	}
	if body.ExpiresAt != nil {
		e, err := parseExpiry(body.ExpiresAt, time.Now())
		if err != nil {
			return err
		}
		req.ExpiresAt, n = &e, n+1
	}
	if body.Tags != nil {
		t, err := parseTags(body.Tags)
		if err != nil {
			return err
		}
		req.Tags, n = &t, n+1
	}
	if body.MaxVisits != nil {
		mv, err := parseMaxVisits(body.MaxVisits)
		if err != nil {
			return err
		}
		req.MaxVisits, n = &mv, n+1
	}
	if body.Freshness != nil {
		f, err := parseFreshness(body.Freshness)
		if err != nil {
			return err
		}
		req.Freshness, n = &f, n+1
	}
	if n == 0 {
		return withDetail(link.ErrInvalidJSON, "the body must set at least one of url, redirect, expires_at, tags, max_visits, freshness")
	}
	if !link.ValidCode(code) {
		return link.ErrNotFound
	}
	rec, err := s.store.Update(r.Context(), req)
	if err != nil {
		return err
	}
	if err := s.replicatedThrough(r.Context(), rec.Revision); err != nil {
		return err
	}
	if req.MaxVisits != nil {
		// A limit the link has already reached disables it now.
		if rec, err = s.enforceMaxVisits(r.Context(), rec); err != nil {
			return err
		}
	}
	s.writeLink(w, http.StatusOK, &rec)
	return nil
}

// disableLink is DELETE /v1/links/{code}: the link is deactivated, never
// removed, and answered with status "disabled".
func (s *Server) disableLink(w http.ResponseWriter, r *http.Request, _ *principal) error {
	code := r.PathValue("code")
	ifRev, err := ifMatch(r.Header)
	if err != nil {
		return err
	}
	if !link.ValidCode(code) {
		return link.ErrNotFound
	}
	rec, err := s.store.Disable(r.Context(), code, ifRev)
	if err != nil {
		return err
	}
	if err := s.replicatedThrough(r.Context(), rec.Revision); err != nil {
		return err
	}
	s.writeLink(w, http.StatusOK, &rec)
	return nil
}

// ifMatch parses If-Match: a revision, quoted or not (W/ tolerated), or
// "*" meaning any. It returns 0 for no condition.
func ifMatch(h http.Header) (uint64, error) {
	vals, ok := h["If-Match"]
	if !ok {
		return 0, nil
	}
	bad := link.OnField("If-Match", ErrInvalidIfMatch)
	if len(vals) != 1 {
		return 0, bad
	}
	v := strings.TrimSpace(vals[0])
	if v == "*" {
		return 0, nil
	}
	v = strings.TrimPrefix(v, "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	rev, err := strconv.ParseUint(v, 10, 64)
	if err != nil || rev == 0 || v[0] == '+' {
		return 0, bad
	}
	return rev, nil
}

// listLinks is GET /v1/links?limit=&cursor=: links ordered by code;
// next_cursor is null on the last page.
func (s *Server) listLinks(w http.ResponseWriter, r *http.Request, _ *principal) error {
	q := r.URL.Query()
	limit := DefaultListLimit
	if vals, ok := q["limit"]; ok {
		n, err := strconv.Atoi(vals[0])
		if len(vals) != 1 || err != nil || n < 1 || n > MaxListLimit {
			return link.OnField("limit", ErrInvalidLimit)
		}
		limit = n
	}
	cursor := ""
	if vals, ok := q["cursor"]; ok {
		if len(vals) != 1 || vals[0] == "" {
			return link.OnField("cursor", store.ErrInvalidCursor)
		}
		cursor = vals[0]
	}
	recs, next, err := s.store.List(cursor, limit)
	if errors.Is(err, store.ErrInvalidCursor) {
		return link.OnField("cursor", err)
	}
	if err != nil {
		return err
	}
	out := client.ListPage{Links: make([]client.Link, 0, len(recs))}
	for i := range recs {
		out.Links = append(out.Links, s.linkObject(&recs[i]))
	}
	if next != "" {
		out.NextCursor = &next
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
