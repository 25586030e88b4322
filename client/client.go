package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxAttempts     = 4
	DefaultMaxRetryWait    = 10 * time.Second
	DefaultMaxResponseBody = 64 << 20
	DefaultTimeout         = 60 * time.Second
)

// Config configures a Client.
type Config struct {
	// BaseURL is the origin API base, for example "http://127.0.0.1:8081".
	// Required.
	BaseURL string
	// Key is the API key sent as "Authorization: Bearer <key>". The
	// default is none (only GET /v1/openapi.json works without one).
	Key string
	// HTTPClient sends the requests. The default has a 60s timeout.
	HTTPClient *http.Client
	// MaxAttempts bounds the tries of a call that is safe to repeat (a
	// GET, or a POST with an Idempotency-Key) when the network fails or
	// the server answers 429, 502, 503 or 504. 1 disables retries. The
	// default is 4.
	MaxAttempts int
	// MaxRetryWait caps one pause between tries, whether it comes from
	// Retry-After or from the backoff (100ms doubling, jittered). The
	// default is 10s.
	MaxRetryWait time.Duration
	// MaxResponseBody bounds what is read of one answer. The default is
	// 64 MiB.
	MaxResponseBody int64
	// UserAgent is sent with every request. The default is
	// "linkpop-client".
	UserAgent string
}

// Validate reports every bad field at once.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("BaseURL %q: want an http or https URL such as http://127.0.0.1:8081", c.BaseURL))
	}
	if strings.ContainsAny(c.Key, "\r\n") {
		errs = append(errs, errors.New("Key must not contain line breaks"))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("MaxAttempts %d must not be negative", c.MaxAttempts))
	}
	if c.MaxRetryWait < 0 {
		errs = append(errs, fmt.Errorf("MaxRetryWait %v must not be negative", c.MaxRetryWait))
	}
	if c.MaxResponseBody < 0 {
		errs = append(errs, fmt.Errorf("MaxResponseBody %d must not be negative", c.MaxResponseBody))
	}
	return errors.Join(errs...)
}

// Client calls the v1 API. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base atomic.Pointer[string] // moves to the leader a not_leader answer names
	auth string
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxRetryWait == 0 {
		cfg.MaxRetryWait = DefaultMaxRetryWait
	}
	if cfg.MaxResponseBody == 0 {
		cfg.MaxResponseBody = DefaultMaxResponseBody
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "linkpop-client"
	}
	c := &Client{cfg: cfg}
	base := strings.TrimRight(cfg.BaseURL, "/")
	c.base.Store(&base)
	if cfg.Key != "" {
		c.auth = "Bearer " + cfg.Key
	}
	return c, nil
}

// BaseURL is the API base the client calls.
// After a not_leader answer that named the leader, it is the leader's.
func (c *Client) BaseURL() string { return *c.base.Load() }

// CloseIdleConnections closes the connections kept for reuse.
func (c *Client) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }

// request is one API call.
type request struct {
	method  string
	path    string // with its query
	body    any    // JSON-encoded when not nil
	header  http.Header
	accept  string
	want    int  // success status
	retry   bool // safe to send again
	decode  any  // where the JSON answer goes; nil: discard it
	rawBody *[]byte
	resp    **http.Response // the final answer's headers, when wanted
}

// do sends r, retrying when it is safe, and decodes the answer.
func (c *Client) do(ctx context.Context, r request) error {
	var body []byte
	if r.body != nil {
		b, err := Encode(r.body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	attempts := 1
	if r.retry {
		attempts = c.cfg.MaxAttempts
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := c.once(ctx, &r, body)
		var ae *Error
		if errors.As(err, &ae) && ae.Code == ErrNotLeader.Code && attempt < c.cfg.MaxAttempts && ctx.Err() == nil {
			// A standby refused the call before doing anything, so any
			// call may be sent again; with the leader named, to it, at
			// once, and every later call too.
			if l := strings.TrimRight(ae.Leader, "/"); l != "" {
				if u, perr := url.Parse(l); perr == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
					c.base.Store(&l)
					continue
				}
			}
			attempts = max(attempts, attempt+1)
		}
		if err == nil || attempt >= attempts || ctx.Err() != nil {
			return err
		}
		wait, ok := retryable(err)
		if !ok {
			return err
		}
		if wait == 0 {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff *= 2
		}
		wait = min(wait, c.cfg.MaxRetryWait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// retryable says whether a failed try may be repeated, and how long the
// server asked to wait (0: use the backoff).
func retryable(err error) (time.Duration, bool) {
	var ae *Error
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return ae.RetryAfter, true
		}
		return 0, false
	}
	var ne *netError
	return 0, errors.As(err, &ne)
}

// netError is a request that got no answer.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

func (c *Client) once(ctx context.Context, r *request, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.BaseURL()+r.path, rd)
	if err != nil {
		return err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return &netError{err: err}
	}
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, c.cfg.MaxResponseBody+1)
	raw, err := io.ReadAll(lr)
	if err != nil {
		return &netError{err: fmt.Errorf("%s %s: read answer: %w", r.method, r.path, err)}
	}
	if int64(len(raw)) > c.cfg.MaxResponseBody {
		return fmt.Errorf("%s %s: answer larger than %d bytes", r.method, r.path, c.cfg.MaxResponseBody)
	}
	if resp.StatusCode != r.want {
		return decodeError(resp, raw)
	}
	if r.resp != nil {
		*r.resp = resp
	}
	if r.rawBody != nil {
		*r.rawBody = raw
	}
	if r.decode != nil {
		// An answer type with its own reader checks the syntax itself
		// (or hands the bytes to encoding/json), so the whole answer is
		// not scanned twice.
		dec := json.Unmarshal
		if u, ok := r.decode.(json.Unmarshaler); ok {
			dec = func(b []byte, _ any) error { return u.UnmarshalJSON(b) }
		}
		if err := dec(raw, r.decode); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", r.method, r.path, err)
		}
	}
	return nil
}

// decodeError turns an error answer into an *Error.
func decodeError(resp *http.Response, raw []byte) *Error {
	var eb ErrorBody
	var e *Error
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
		e = &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field, Leader: eb.Error.Leader}
	} else {
		snippet := strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		if !strings.Contains(resp.Header.Get("Content-Type"), "text/") {
			snippet = ""
		}
		e = statusError(resp, snippet)
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(v); err == nil {
			e.RetryAfter = max(time.Until(t), 0)
		}
	}
	return e
}

// CreateOptions are the headers of a create.
type CreateOptions struct {
	// IdempotencyKey makes a retry return the first answer, and makes the
	// call safe for the client to retry. The default is none.
	IdempotencyKey string
	// Replayed, when not nil, is set to whether the answer was the first
	// answer to IdempotencyKey again (Idempotent-Replayed: true): an
	// earlier call with the key was committed, by another run or by this
	// call's own retry. The default (nil) does not ask.
	Replayed *bool
}

// replayed sets *o.Replayed from the answer (nil: none).
func (o CreateOptions) replayed(resp *http.Response) {
	if o.Replayed != nil {
		*o.Replayed = resp != nil && resp.Header.Get("Idempotent-Replayed") == "true"
	}
}

func (o CreateOptions) header() http.Header {
	if o.IdempotencyKey == "" {
		return nil
	}
	return http.Header{"Idempotency-Key": {o.IdempotencyKey}}
}

// CreateLink is POST /v1/links.
func (c *Client) CreateLink(ctx context.Context, in CreateLink, opt CreateOptions) (Link, error) {
	var l Link
	var resp *http.Response
	// &in: a *CreateLink writes itself (Encode), without encoding/json.
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/links", body: &in, header: opt.header(),
		want: http.StatusCreated, retry: opt.IdempotencyKey != "", decode: &l, resp: &resp})
	opt.replayed(resp)
	return l, err
}

// CreateBatch is POST /v1/links/batch: at most MaxBatch creates, one
// result each, in order.
func (c *Client) CreateBatch(ctx context.Context, in []CreateLink, opt CreateOptions) ([]BatchResult, error) {
	var out BatchResponse
	var resp *http.Response
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/links/batch", body: &BatchRequest{Links: in}, header: opt.header(),
		want: http.StatusOK, retry: opt.IdempotencyKey != "", decode: &out, resp: &resp})
	if err == nil && len(out.Results) != len(in) {
		err = fmt.Errorf("POST /v1/links/batch: %d results for %d creates", len(out.Results), len(in))
	}
	opt.replayed(resp)
	return out.Results, err
}

// GetLink is GET /v1/links/{code}.
func (c *Client) GetLink(ctx context.Context, code string) (Link, error) {
	var l Link
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/links/" + url.PathEscape(code), want: http.StatusOK, retry: true, decode: &l})
	return l, err
}

// UpdateLink is PATCH /v1/links/{code}; ifRevision > 0 sends If-Match, so
// the update applies only to that revision.
func (c *Client) UpdateLink(ctx context.Context, code string, in UpdateLink, ifRevision uint64) (Link, error) {
	var l Link
	err := c.do(ctx, request{method: http.MethodPatch, path: "/v1/links/" + url.PathEscape(code), body: in,
		header: ifMatch(ifRevision), want: http.StatusOK, decode: &l})
	return l, err
}

// DisableLink is DELETE /v1/links/{code}: the link is deactivated.
func (c *Client) DisableLink(ctx context.Context, code string, ifRevision uint64) (Link, error) {
	var l Link
	err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/links/" + url.PathEscape(code),
		header: ifMatch(ifRevision), want: http.StatusOK, decode: &l})
	return l, err
}

func ifMatch(rev uint64) http.Header {
	if rev == 0 {
		return nil
	}
	return http.Header{"If-Match": {`"` + strconv.FormatUint(rev, 10) + `"`}}
}

// ListOptions select a page of GET /v1/links.
type ListOptions struct {
	// Limit is the page size, 1-1000. The default is the server's (50).
	Limit int
	// Cursor is the next_cursor of the previous page; "" is the first.
	Cursor string
}

// ListLinks is GET /v1/links: one page.
func (c *Client) ListLinks(ctx context.Context, opt ListOptions) (ListPage, error) {
	q := url.Values{}
	if opt.Limit > 0 {
		q.Set("limit", strconv.Itoa(opt.Limit))
	}
	if opt.Cursor != "" {
		q.Set("cursor", opt.Cursor)
	}
	path := "/v1/links"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p ListPage
	err := c.do(ctx, request{method: http.MethodGet, path: path, want: http.StatusOK, retry: true, decode: &p})
	return p, err
}

// AllLinks walks every link in code order, page by page (pageSize 0 is
// the server's default), holding one page at a time. The walk stops at
// the first error, which it yields.
func (c *Client) AllLinks(ctx context.Context, pageSize int) iter.Seq2[Link, error] {
	return func(yield func(Link, error) bool) {
		cursor := ""
		for {
			p, err := c.ListLinks(ctx, ListOptions{Limit: pageSize, Cursor: cursor})
			if err != nil {
				yield(Link{}, err)
				return
			}
			for _, l := range p.Links {
				if !yield(l, nil) {
					return
				}
			}
			if p.NextCursor == nil {
				return
			}
			cursor = *p.NextCursor
		}
	}
}

// Digest is GET /v1/digest.
func (c *Client) Digest(ctx context.Context) (Digest, error) {
	var d Digest
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/digest", want: http.StatusOK, retry: true, decode: &d})
	return d, err
}

// DigestBucket is GET /v1/digest/buckets/{i}.
func (c *Client) DigestBucket(ctx context.Context, i int) (DigestBucket, error) {
	var d DigestBucket
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/digest/buckets/" + strconv.Itoa(i), want: http.StatusOK, retry: true, decode: &d})
	return d, err
}

// EdgeDigest is an edge's admin GET /digest; the client's BaseURL is the
// edge's admin listener.
func (c *Client) EdgeDigest(ctx context.Context) (EdgeDigest, error) {
	var d EdgeDigest
	err := c.do(ctx, request{method: http.MethodGet, path: "/digest", want: http.StatusOK, retry: true, decode: &d})
	return d, err
}

// EdgeDigestBucket is an edge's admin GET /digest/buckets/{i}.
func (c *Client) EdgeDigestBucket(ctx context.Context, i int) (EdgeDigestBucket, error) {
	var d EdgeDigestBucket
	err := c.do(ctx, request{method: http.MethodGet, path: "/digest/buckets/" + strconv.Itoa(i), want: http.StatusOK, retry: true, decode: &d})
	return d, err
}

// CreateKey is POST /v1/keys (scope admin); the answer carries the secret,
// shown only this once.
func (c *Client) CreateKey(ctx context.Context, in CreateKey) (Key, error) {
	var k Key
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/keys", body: in, want: http.StatusCreated, decode: &k})
	return k, err
}

// ListKeys is GET /v1/keys (scope admin).
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	var l KeyList
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/keys", want: http.StatusOK, retry: true, decode: &l})
	return l.Keys, err
}

// RevokeKey is DELETE /v1/keys/{id} (scope admin).
func (c *Client) RevokeKey(ctx context.Context, id string) (Key, error) {
	var k Key
	err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/keys/" + url.PathEscape(id), want: http.StatusOK, decode: &k})
	return k, err
}

// QR formats.
const (
	QRPNG = "png"
	QRSVG = "svg"
)

// QR is GET /v1/links/{code}/qr: the short URL as a QR code image
// (format QRPNG or QRSVG, "" the server's default; size in pixels, 0 the
// server's default). It returns the image and its content type.
func (c *Client) QR(ctx context.Context, code, format string, size int) ([]byte, string, error) {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	if size > 0 {
		q.Set("size", strconv.Itoa(size))
	}
	path := "/v1/links/" + url.PathEscape(code) + "/qr"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var raw []byte
	var resp *http.Response
	err := c.do(ctx, request{method: http.MethodGet, path: path, accept: "image/png, image/svg+xml", want: http.StatusOK, retry: true, rawBody: &raw, resp: &resp})
	if err != nil {
		return nil, "", err
	}
	return raw, resp.Header.Get("Content-Type"), nil
}

// OpenAPI is GET /v1/openapi.json, the API's OpenAPI 3.1 document.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	var raw []byte
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/openapi.json", want: http.StatusOK, retry: true, rawBody: &raw})
	return raw, err
}

// StatsQuery selects the range of a stats call; zero fields are the
// server's defaults (the last 7 days, an interval fitting the range,
// 20 links).
type StatsQuery struct {
	From, To time.Time
	Interval string
	Limit    int
}

func (q StatsQuery) values() url.Values {
	v := url.Values{}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339))
	}
	if q.Interval != "" {
		v.Set("interval", q.Interval)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Stats is GET /v1/links/{code}/stats. On a server without the stats API
// it returns an error matching ErrNotAvailable (told apart from an
// unknown link by asking for the link).
func (c *Client) Stats(ctx context.Context, code string, q StatsQuery) (Stats, error) {
	q.Limit = 0
	var s Stats
	path := "/v1/links/" + url.PathEscape(code) + "/stats"
	if v := q.values(); len(v) > 0 {
		path += "?" + v.Encode()
	}
	err := c.do(ctx, request{method: http.MethodGet, path: path, want: http.StatusOK, retry: true, decode: &s})
	if isStatus(err, http.StatusNotFound) {
		if _, lerr := c.GetLink(ctx, code); lerr == nil {
			return s, fmt.Errorf("GET /v1/links/{code}/stats: %w", ErrNotAvailable)
		}
	}
	return s, err
}

// Top is GET /v1/stats: the links with the most clicks. On a server
// without the stats API it returns an error matching ErrNotAvailable.
func (c *Client) Top(ctx context.Context, q StatsQuery) (TopLinks, error) {
	q.Interval = ""
	var t TopLinks
	path := "/v1/stats"
	if v := q.values(); len(v) > 0 {
		path += "?" + v.Encode()
	}
	err := c.do(ctx, request{method: http.MethodGet, path: path, want: http.StatusOK, retry: true, decode: &t})
	if isStatus(err, http.StatusNotFound) {
		return t, fmt.Errorf("GET /v1/stats: %w", ErrNotAvailable)
	}
	return t, err
}

func isStatus(err error, status int) bool {
	var ae *Error
	return errors.As(err, &ae) && ae.Status == status
}
