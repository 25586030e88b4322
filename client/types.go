// Package client is the one definition of linkpop's v1 API: its JSON wire
// types (link, list page, error body, keys, digests, batch, stats) and a
// typed Go client for it. The origin encodes its answers with these
// types; the edge, origin verify, the CLI, the tests and the bench read
// them with the client. It imports only package link and the standard
// library, so the edge binary may link it.
//
// Request types (CreateLink, UpdateLink, CreateKey) are what the client
// sends; the origin decodes request bodies with its own strict decoder
// (origin/links.go), which checks every field by its own rule and
// answers its own error code. The OpenAPI document
// (origin/openapi.json) describes both, and a test checks every request
// and answer of the origin's contract tests against it.
package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/linkpop/linkpop/link"
)

// Link statuses as the API spells them.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// Link is the link object. Every field but disabled_reason is always
// present: expires_at and max_visits are null when unset, tags is []
// without tags; disabled_reason is present only on a link the origin
// disabled on its own (a blocklist entry, max_visits). Times are UTC.
type Link struct {
	Code      string     `json:"code"`
	URL       string     `json:"url"`
	ShortURL  string     `json:"short_url"`
	Redirect  int        `json:"redirect"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Revision  uint64     `json:"revision"`
	Tags      []string   `json:"tags"`
	MaxVisits *uint64    `json:"max_visits"`
	// DisabledReason says why the origin disabled the link.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// Freshness is "relaxed" (the default: an edge cut off from the
	// stream serves its last state) or "strict" (it answers 503 with
	// Retry-After instead).
	Freshness string `json:"freshness"`
}

// NewLink is the link object of r, whose short URL is shortBase + code
// (shortBase ends in "/").
func NewLink(r *link.Record, shortBase string) Link {
	l := Link{
		Code:      r.Code,
		URL:       r.URL,
		ShortURL:  shortBase + r.Code,
		Redirect:  r.Redirect,
		Status:    r.Status.String(),
		CreatedAt: r.CreatedAt.UTC(),
		UpdatedAt: r.UpdatedAt.UTC(),
		Revision:  r.Revision,
		Tags:      r.Tags,

		DisabledReason: r.DisabledReason,
		Freshness:      r.Freshness.String(),
	}
	if l.Tags == nil {
		l.Tags = []string{}
	}
	if !r.ExpiresAt.IsZero() {
		e := r.ExpiresAt.UTC()
		l.ExpiresAt = &e
	}
	if r.MaxVisits > 0 {
		m := r.MaxVisits
		l.MaxVisits = &m
	}
	return l
}

// ErrBadLink marks a link object that is not a valid record.
var ErrBadLink = errors.New("invalid link object")

// Record converts l back into the validated record it describes.
func (l *Link) Record() (link.Record, error) {
	r := link.Record{
		Code:      l.Code,
		URL:       l.URL,
		Redirect:  l.Redirect,
		CreatedAt: l.CreatedAt.UTC(),
		UpdatedAt: l.UpdatedAt.UTC(),
		Revision:  l.Revision,
		Tags:      l.Tags,

		DisabledReason: l.DisabledReason,
	}
	switch l.Status {
	case StatusActive:
		r.Status = link.StatusActive
	case StatusDisabled:
		r.Status = link.StatusDisabled
	default:
		return link.Record{}, fmt.Errorf("%w: status %q", ErrBadLink, l.Status)
	}
	if l.ExpiresAt != nil {
		r.ExpiresAt = l.ExpiresAt.UTC()
	}
	if l.MaxVisits != nil {
		r.MaxVisits = *l.MaxVisits
	}
	if l.Freshness != "" {
		f, ok := link.ParseFreshness(l.Freshness)
		if !ok {
			return link.Record{}, fmt.Errorf("%w: freshness %q", ErrBadLink, l.Freshness)
		}
		r.Freshness = f
	}
	if len(r.Tags) == 0 {
		r.Tags = nil
	}
	if err := r.Validate(); err != nil {
		return link.Record{}, fmt.Errorf("%w: %v", ErrBadLink, err)
	}
	return r, nil
}

// ListPage is the answer of GET /v1/links: links ordered by code;
// next_cursor is null on the last page.
type ListPage struct {
	Links      []Link  `json:"links"`
	NextCursor *string `json:"next_cursor"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error ErrorObject `json:"error"`
}

// ErrorObject is the error of an answer or of one batch item: a stable
// machine code, a message for people, the request field it concerns and,
// for not_leader, the leader's API URL when known.
type ErrorObject struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Leader  string `json:"leader,omitempty"`
}

// CreateLink is the body of POST /v1/links and one item of a batch.
// Zero fields are left out, so the origin applies its defaults. Status
// StatusDisabled creates the link disabled, in the same commit.
type CreateLink struct {
	URL       string     `json:"url"`
	Code      string     `json:"code,omitempty"`
	Redirect  int        `json:"redirect,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Tags      []string   `json:"tags,omitempty"`
	MaxVisits *uint64    `json:"max_visits,omitempty"`
	Freshness string     `json:"freshness,omitempty"`
	Status    string     `json:"status,omitempty"`
}

// UpdateLink is the body of PATCH /v1/links/{code}: only the set fields
// are sent. ClearExpiry sends "expires_at": null (the link never
// expires); ClearMaxVisits sends "max_visits": null.
type UpdateLink struct {
	URL            *string
	Redirect       *int
	ExpiresAt      *time.Time
	ClearExpiry    bool
	Tags           *[]string
	MaxVisits      *uint64
	ClearMaxVisits bool
	Freshness      *string
}

// MarshalJSON writes the fields that are set.
func (u UpdateLink) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if u.URL != nil {
		m["url"] = *u.URL
	}
	if u.Redirect != nil {
		m["redirect"] = *u.Redirect
	}
	switch {
	case u.ClearExpiry:
		m["expires_at"] = nil
	case u.ExpiresAt != nil:
		m["expires_at"] = u.ExpiresAt.UTC()
	}
	if u.Tags != nil {
		t := *u.Tags
		if t == nil {
			t = []string{}
		}
		m["tags"] = t
	}
	switch {
	case u.ClearMaxVisits:
		m["max_visits"] = nil
	case u.MaxVisits != nil:
		m["max_visits"] = *u.MaxVisits
	}
	if u.Freshness != nil {
		m["freshness"] = *u.Freshness
	}
	return json.Marshal(m)
}

// MaxBatch is the most creates one POST /v1/links/batch may carry.
const MaxBatch = 1000

// BatchRequest is the body of POST /v1/links/batch.
type BatchRequest struct {
	Links []CreateLink `json:"links"`
}

// BatchResponse is the answer of POST /v1/links/batch: one result per
// create, in request order.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is one item of a batch answer: the created link, or the
// error object for that item (exactly one is set).
type BatchResult struct {
	Link  *Link
	Error *ErrorObject
}

// UnmarshalJSON reads either form, decoding the item once.
func (r *BatchResult) UnmarshalJSON(b []byte) error {
	var l Link
	if l.decodeFast(b) {
		*r = BatchResult{Link: &l}
		return nil
	}
	var w struct {
		linkFields
		Error *ErrorObject `json:"error"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.Error != nil {
		*r = BatchResult{Error: w.Error}
		return nil
	}
	l = Link(w.linkFields)
	*r = BatchResult{Link: &l}
	return nil
}

// Err is the item's error as an *Error (status 0), or nil.
func (r *BatchResult) Err() error {
	if r.Error == nil {
		return nil
	}
	return &Error{Code: r.Error.Code, Message: r.Error.Message, Field: r.Error.Field}
}

// API key scopes.
const (
	ScopeLinksRead  = "links:read"
	ScopeLinksWrite = "links:write"
	ScopeAdmin      = "admin"
)

// Key is an API key as the API shows it. Key (the secret) is set only in
// the answer to the POST that minted it; rate_limit -1 means unlimited.
type Key struct {
	ID        string     `json:"id"`
	Key       string     `json:"key,omitempty"`
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	RateLimit float64    `json:"rate_limit"`
	Burst     int        `json:"burst"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

// KeyList is the answer of GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}

// CreateKey is the body of POST /v1/keys. RateLimit (requests per
// second, negative: unlimited) and Burst are the server's defaults when
// nil.
type CreateKey struct {
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes"`
	RateLimit *float64 `json:"rate_limit,omitempty"`
	Burst     *int     `json:"burst,omitempty"`
}

// Digest is GET /v1/digest: the bucketed digest of every link, the store
// revision it reflects, and how many committed changes the relay has yet
// to publish (while it is above zero, edges cannot match).
type Digest struct {
	link.DigestJSON
	Revision    uint64 `json:"revision"`
	Unpublished int    `json:"unpublished"`
}

// DigestBucket is GET /v1/digest/buckets/{i}: the code and revision of
// every link of bucket i, ordered by code.
type DigestBucket struct {
	Bucket   int                `json:"bucket"`
	Revision uint64             `json:"revision"`
	Links    []link.DigestEntry `json:"links"`
}

// EdgeDigest is an edge's admin GET /digest (operator-only, not under
// /v1): the replica's digest, the stream position it reflects and the lag
// behind the stream as last seen.
type EdgeDigest struct {
	link.DigestJSON
	Node       string `json:"node"`
	Applied    uint64 `json:"applied"`
	StreamLast uint64 `json:"stream_last"`
	Lag        uint64 `json:"lag"`
}

// EdgeDigestBucket is an edge's admin GET /digest/buckets/{i}.
type EdgeDigestBucket struct {
	Bucket  int                `json:"bucket"`
	Node    string             `json:"node"`
	Applied uint64             `json:"applied"`
	Links   []link.DigestEntry `json:"links"`
}

// Stats intervals.
const (
	IntervalMinute = "minute"
	IntervalHour   = "hour"
	IntervalDay    = "day"
)

// Stats is GET /v1/links/{code}/stats (analytics contract v1). Series
// holds every interval of the range, zeros included; the breakdowns hold
// the top 20 keys by clicks, descending. Countries are ISO 3166-1
// alpha-2 ("ZZ" unknown); devices are desktop, mobile, tablet, bot or
// other.
type Stats struct {
	Code            string       `json:"code"`
	From            time.Time    `json:"from"`
	To              time.Time    `json:"to"`
	Interval        string       `json:"interval"`
	Clicks          uint64       `json:"clicks"`
	Uniques         uint64       `json:"uniques"`
	Bots            uint64       `json:"bots"`
	Series          []StatsPoint `json:"series"`
	Referrers       []StatsCount `json:"referrers"`
	Countries       []StatsCount `json:"countries"`
	Devices         []StatsCount `json:"devices"`
	Browsers        []StatsCount `json:"browsers"`
	OS              []StatsCount `json:"os"`
	Edges           []StatsCount `json:"edges"`
	CompleteThrough *time.Time   `json:"complete_through"` // null before any edge reported
	IncompleteEdges []string     `json:"incomplete_edges"`
}

// StatsPoint is one interval of a series, starting at T.
type StatsPoint struct {
	T       time.Time `json:"t"`
	Clicks  uint64    `json:"clicks"`
	Uniques uint64    `json:"uniques"`
	Bots    uint64    `json:"bots"`
}

// StatsCount is one key of a breakdown (a referrer host, a country, ...).
type StatsCount struct {
	Key    string `json:"key"`
	Clicks uint64 `json:"clicks"`
}

// TopLinks is GET /v1/stats: the links with the most clicks in the range,
// descending.
type TopLinks struct {
	From            time.Time  `json:"from"`
	To              time.Time  `json:"to"`
	Clicks          uint64     `json:"clicks"`
	Bots            uint64     `json:"bots"`
	Links           []TopLink  `json:"links"`
	CompleteThrough *time.Time `json:"complete_through"` // null before any edge reported
}

// TopLink is one link of TopLinks.
type TopLink struct {
	Code    string `json:"code"`
	Clicks  uint64 `json:"clicks"`
	Uniques uint64 `json:"uniques"`
	Bots    uint64 `json:"bots"`
}

// LiveClicks is the data of an `event: clicks` of
// GET /v1/links/{code}/stats/live: running totals at T.
type LiveClicks struct {
	T       time.Time `json:"t"`
	Clicks  uint64    `json:"clicks"`
	Uniques uint64    `json:"uniques"`
	Bots    uint64    `json:"bots"`
}

// Encode writes v as the API writes JSON: one line, HTML not escaped, so
// targets keep their '&' readable.
func Encode(v any) ([]byte, error) {
	if a, ok := v.(appender); ok {
		b, err := a.AppendJSON(make([]byte, 0, 512))
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// EdgeStatus is the part of an edge's GET /status (its admin listener)
// that clients read: its node name, readiness and the PoP's members as
// gossip knows them. The edge writes the whole object (edge.Status); a
// test in package edge decodes it into this type.
type EdgeStatus struct {
	Node    string       `json:"node"`
	Ready   bool         `json:"ready"`
	Members []EdgeMember `json:"members"`
}

// EdgeMember is one member of an edge's PoP (edge.Member).
type EdgeMember struct {
	Name string `json:"name"`
	// Listen is the member's redirect listener, host:port.
	Listen string `json:"listen"`
	Ready  bool   `json:"ready"`
	Self   bool   `json:"self"`
}
