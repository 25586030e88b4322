package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/link"
)

// errOrigin marks an origin answer that is neither a link nor a 404.
var errOrigin = errors.New("origin")

// fallback asks the origin about codes the lagging replica does not hold.
// It is bounded on every side: concurrent misses for one code share one
// request (single flight), all codes together spend a token-bucket budget,
// and each request has a timeout. Whatever goes wrong, the caller answers
// 404: a lagging edge never turns an origin outage into errors.
type fallback struct {
	linksURL  string // ".../v1/links/"
	bucketURL string // ".../v1/digest/buckets/", for repairs
	auth      string // "Bearer <key>" or ""
	timeout   time.Duration
	client    *http.Client
	rep       *replica.Replica
	met       *serverMetrics
	log       *slog.Logger
	ctx       context.Context // canceled when the server stops

	mu     sync.Mutex
	calls  map[string]*call
	bucket tokenBucket
}

// call is one in-flight origin request that later misses for the same
// code wait for.
type call struct {
	done  chan struct{}
	rec   link.Record
	found bool
}

func newFallback(ctx context.Context, cfg *Config, rep *replica.Replica, met *serverMetrics, log *slog.Logger) *fallback {
	f := &fallback{
		linksURL:  strings.TrimRight(cfg.OriginURL, "/") + "/v1/links/",
		bucketURL: strings.TrimRight(cfg.OriginURL, "/") + "/v1/digest/buckets/",
		timeout:   cfg.FallbackTimeout,
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     30 * time.Second,
				ForceAttemptHTTP2:   true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		rep:    rep,
		met:    met,
		log:    log,
		ctx:    ctx,
		calls:  map[string]*call{},
		bucket: tokenBucket{rate: cfg.FallbackBudget, burst: float64(cfg.FallbackBurst), tokens: float64(cfg.FallbackBurst)},
	}
	if cfg.OriginKey != "" {
		f.auth = "Bearer " + cfg.OriginKey
	}
	return f
}

// close drops the origin connections kept for reuse.
func (f *fallback) close() { f.client.CloseIdleConnections() }

// resolve returns the origin's record for code and stores it in the
// replica (only if newer than what the replica holds). ok is false when
// the origin does not know the code, fails, times out, or the budget is
// spent.
func (f *fallback) resolve(code []byte) (rec link.Record, ok bool) {
	key := string(code)
	f.mu.Lock()
	if c, shared := f.calls[key]; shared {
		f.mu.Unlock()
		f.met.fallbackShared.Inc()
		<-c.done
		return c.rec, c.found
	}
	if !f.bucket.take(time.Now()) {
		f.mu.Unlock()
		f.met.fallbackOverBudget.Inc()
		return link.Record{}, false
	}
	c := &call{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()

	defer func() {
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	rec, found, err := f.fetch(key)
	switch {
	case err != nil:
		f.met.fallbackError.Inc()
		f.log.Warn("origin fallback", "code", key, "err", err)
		return link.Record{}, false
	case !found:
		f.met.fallbackNotFound.Inc()
		return link.Record{}, false
	}
	f.met.fallbackHit.Inc()
	applied, err := f.rep.Put(rec)
	if err != nil {
		f.log.Warn("store origin record", "code", key, "err", err)
	} else if !applied {
		// The stream delivered a newer revision meanwhile: serve that.
		if newer, found, err := f.rep.Get(key); err == nil && found {
			rec = newer
		}
	}
	c.rec, c.found = rec, true
	return rec, true
}

// fetch performs GET /v1/links/{code} on the origin, within the
// fallback's timeout.
func (f *fallback) fetch(code string) (link.Record, bool, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	defer cancel()
	return f.getLink(ctx, code)
}

// getLink performs GET /v1/links/{code} on the origin. found is false
// for a 404; any other answer but 200 is an error wrapping errOrigin (a
// *originStatus).
func (f *fallback) getLink(ctx context.Context, code string) (link.Record, bool, error) {
	resp, err := f.get(ctx, f.linksURL+code)
	if err != nil {
		return link.Record{}, false, err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxOriginBody)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, body)
		return link.Record{}, false, nil
	default:
		_, _ = io.Copy(io.Discard, body)
		return link.Record{}, false, newOriginStatus(resp)
	}
	rec, err := decodeOriginLink(body)
	if err != nil {
		return link.Record{}, false, err
	}
	if rec.Code != code {
		return link.Record{}, false, fmt.Errorf("%w: asked for %q, got %q", errOrigin, code, rec.Code)
	}
	return rec, true, nil
}

// get sends an authenticated GET for a JSON answer to the origin.
func (f *fallback) get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if f.auth != "" {
		req.Header.Set("Authorization", f.auth)
	}
	return f.client.Do(req)
}

// originStatus is an origin answer with an unexpected status. It wraps
// errOrigin.
type originStatus struct {
	status     int
	retryAfter time.Duration // from Retry-After, 0 if absent
}

func newOriginStatus(resp *http.Response) *originStatus {
	e := &originStatus{status: resp.StatusCode}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.retryAfter = time.Duration(secs) * time.Second
	}
	return e
}

func (e *originStatus) Error() string { return fmt.Sprintf("%v: status %d", errOrigin, e.status) }
func (e *originStatus) Unwrap() error { return errOrigin }

// maxOriginBody bounds what the edge reads of one origin answer.
const maxOriginBody = 64 << 10

// originLink is the origin API's link object (the fields the edge needs).
type originLink struct {
	Code      string     `json:"code"`
	URL       string     `json:"url"`
	Redirect  int        `json:"redirect"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Revision  uint64     `json:"revision"`
	Tags      []string   `json:"tags"`
}

// decodeOriginLink turns an origin link object into a validated record.
func decodeOriginLink(r io.Reader) (link.Record, error) {
	var o originLink
	if err := json.NewDecoder(r).Decode(&o); err != nil {
		return link.Record{}, fmt.Errorf("%w: decode link: %v", errOrigin, err)
	}
	rec := link.Record{
		Code:      o.Code,
		URL:       o.URL,
		Redirect:  o.Redirect,
		CreatedAt: o.CreatedAt.UTC(),
		UpdatedAt: o.UpdatedAt.UTC(),
		Revision:  o.Revision,
		Tags:      o.Tags,
	}
	switch o.Status {
	case "active":
		rec.Status = link.StatusActive
	case "disabled":
		rec.Status = link.StatusDisabled
	default:
		return link.Record{}, fmt.Errorf("%w: link status %q", errOrigin, o.Status)
	}
	if o.ExpiresAt != nil {
		rec.ExpiresAt = o.ExpiresAt.UTC()
	}
	if err := rec.Validate(); err != nil {
		return link.Record{}, fmt.Errorf("%w: %v", errOrigin, err)
	}
	return rec, nil
}

// tokenBucket allows rate events per second with bursts of burst. The
// caller holds the fallback's mutex.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.burst {
			b.tokens = b.burst
		}
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
