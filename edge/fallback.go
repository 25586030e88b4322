package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/tlsconf"
)

// errOrigin marks an origin answer that is neither a link nor a 404.
var errOrigin = errors.New("origin")

// fallback asks the origin about codes the lagging replica does not hold.
// It is bounded on every side: concurrent misses for one code share one
// request (single flight), all codes together spend a token-bucket budget,
// and each request has a timeout. Whatever goes wrong, the caller answers
// 404: a lagging edge never turns an origin outage into errors.
type fallback struct {
	// origins are the configured origin URLs, in the order given: with
	// several (an origin with HA and its standbys), calls go to the one
	// that last answered as the leader, then to the others (see order).
	origins []*originAPI
	timeout time.Duration
	rep     *replica.Replica
	met     *serverMetrics
	log     *slog.Logger
	ctx     context.Context // canceled when the server stops

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

func newFallback(ctx context.Context, cfg *Config, rep *replica.Replica, met *serverMetrics, log *slog.Logger) (*fallback, error) {
	tc, err := tlsconf.Client(cfg.OriginCAFile)
	if err != nil {
		return nil, fmt.Errorf("origin CA: %w", err)
	}
	f := &fallback{
		timeout: cfg.FallbackTimeout,
		rep:     rep,
		met:     met,
		log:     log,
		ctx:     ctx,
		calls:   map[string]*call{},
		bucket:  tokenBucket{rate: cfg.FallbackBudget, burst: float64(cfg.FallbackBurst), tokens: float64(cfg.FallbackBurst)},
	}
	for _, u := range originURLs(cfg.OriginURL) {
		o := &originAPI{url: u}
		hc := &http.Client{
			Transport: &roleTransport{o: o, next: &http.Transport{
				TLSClientConfig:     tc,
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     30 * time.Second,
				ForceAttemptHTTP2:   true,
			}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		ccfg := client.Config{
			BaseURL:         u,
			Key:             cfg.OriginKey,
			HTTPClient:      hc,
			MaxAttempts:     1,
			MaxResponseBody: maxOriginBody,
			UserAgent:       "linkpop-edge",
		}
		if o.api, err = client.New(ccfg); err != nil {
			return nil, err
		}
		ccfg.MaxAttempts, ccfg.MaxRetryWait, ccfg.MaxResponseBody = repairAttempts, 5*time.Second, maxBucketBody
		if o.patient, err = client.New(ccfg); err != nil {
			return nil, err
		}
		f.origins = append(f.origins, o)
	}
	return f, nil
}

// originURLs splits Config.OriginURL's comma-separated list.
func originURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// roleHeader is origin.RoleHeader (the edge does not import the origin):
// every API answer of an origin with HA says "leader" or "standby".
const roleHeader = "Linkpop-Role"

// Roles an origin last answered with (originAPI.role).
const (
	roleUnknown int32 = iota // no answer yet, or an origin without HA
	roleLeader
	roleStandby
	roleDown // the last call failed without an answer
)

// originAPI is one origin URL and what its last answer said about it.
type originAPI struct {
	url     string
	api     *client.Client // one try a call: a miss must not wait
	patient *client.Client // repairs: retries 429 and 503 as Retry-After says
	role    atomic.Int32
}

// roleTransport records, from every answer, the origin's role.
type roleTransport struct {
	o    *originAPI
	next http.RoundTripper
}

func (t *roleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	switch {
	case err != nil:
		t.o.role.Store(roleDown)
	case resp.Header.Get(roleHeader) == "leader":
		t.o.role.Store(roleLeader)
	case resp.Header.Get(roleHeader) == "standby":
		t.o.role.Store(roleStandby)
	case resp.StatusCode >= 500:
		t.o.role.Store(roleDown)
	default:
		t.o.role.Store(roleUnknown)
	}
	return resp, err
}

// CloseIdleConnections lets the http.Client close the wrapped
// transport's idle connections.
func (t *roleTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// order returns the origins in the order a call tries them: the ones
// that last answered as the leader, then those not heard from (or
// without HA), then standbys (they answer reads too, possibly behind),
// then those whose last call failed; the configured order within each.
func (f *fallback) order() []*originAPI {
	out := make([]*originAPI, 0, len(f.origins))
	for _, r := range []int32{roleLeader, roleUnknown, roleStandby, roleDown} {
		for _, o := range f.origins {
			if o.role.Load() == r {
				out = append(out, o)
			}
		}
	}
	return out
}

// first calls call on the origins in order until one answers (call
// returns nil) and returns that answer's error, or the last failure. A
// failure is anything but nil, so a 404 must come back as nil.
func (f *fallback) first(ctx context.Context, call func(o *originAPI) error) error {
	var err error
	for _, o := range f.order() {
		if err = call(o); err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// close drops the origin connections kept for reuse.
func (f *fallback) close() {
	for _, o := range f.origins {
		o.api.CloseIdleConnections()
	}
}

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
	var (
		rec   link.Record
		found bool
	)
	err := f.first(ctx, func(o *originAPI) (err error) {
		rec, found, err = getLink(ctx, o.api, code)
		return err
	})
	return rec, found, err
}

// getLink performs GET /v1/links/{code} on the origin with c. found is
// false for a 404; any other failure is an error wrapping errOrigin.
func getLink(ctx context.Context, c *client.Client, code string) (link.Record, bool, error) {
	l, err := c.GetLink(ctx, code)
	if errors.Is(err, link.ErrNotFound) {
		return link.Record{}, false, nil
	}
	if err != nil {
		return link.Record{}, false, fmt.Errorf("%w: %w", errOrigin, err)
	}
	rec, err := l.Record()
	if err != nil {
		return link.Record{}, false, fmt.Errorf("%w: %w", errOrigin, err)
	}
	if rec.Code != code {
		return link.Record{}, false, fmt.Errorf("%w: asked for %q, got %q", errOrigin, code, rec.Code)
	}
	return rec, true, nil
}

// maxOriginBody bounds what the edge reads of one fallback answer (a
// link object).
const maxOriginBody = 64 << 10

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
