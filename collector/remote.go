package collector

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/tlsconf"
)

// The partition API: what a collector serves on Config.StatsListen for
// the origin, behind "Authorization: Bearer <StatsToken>". Every answer
// carries PartitionHeader ("i/n"), which the origin checks against the
// partition it meant to ask. The range parameters are the origin's
// parsed Range (aligned, RFC 3339, interval named), which ParseRange
// reads back unchanged.
//
//	GET /collector/v1/links/{code}/stats?from=&to=&interval=  client.Stats
//	GET /collector/v1/links/{code}/totals                     client.LiveClicks
//	GET /collector/v1/links/{code}/clicks                     {"clicks": n}
//	GET /collector/v1/stats?from=&to=&interval=&limit=        client.TopLinks
//	GET /collector/v1/clicked?epoch=&seq=&wait=               FeedPage (long poll, wait <= FeedMaxWait)
const (
	partitionAPIPrefix = "/collector/v1"
	// PartitionHeader names the partition that answered.
	PartitionHeader = "Linkpop-Partition"
)

// statsHandler serves the partition API from s, for partition i of n.
func statsHandler(s *Store, token string, i, n int) http.Handler {
	mux := http.NewServeMux()
	name := partitionName(i, n)
	fail := func(w http.ResponseWriter, status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: client.ErrorObject{Code: code, Message: msg}})
	}
	answer := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			fail(w, http.StatusInternalServerError, "internal", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(v)
	}
	rangeOf := func(w http.ResponseWriter, r *http.Request) (Range, bool) {
		q := r.URL.Query()
		rg, err := ParseRange(q.Get("from"), q.Get("to"), q.Get("interval"), time.Now())
		if err != nil {
			fail(w, http.StatusBadRequest, "invalid_range", err.Error())
			return rg, false
		}
		return rg, true
	}
	mux.HandleFunc("GET "+partitionAPIPrefix+"/links/{code}/stats", func(w http.ResponseWriter, r *http.Request) {
		rg, ok := rangeOf(w, r)
		if !ok {
			return
		}
		st, err := s.LinkStats(r.PathValue("code"), rg)
		if err != nil {
			answer(w, nil, err)
			return
		}
		answer(w, st.API(), nil)
	})
	mux.HandleFunc("GET "+partitionAPIPrefix+"/links/{code}/totals", func(w http.ResponseWriter, r *http.Request) {
		t, err := s.Totals(r.PathValue("code"))
		answer(w, t.API(), err)
	})
	mux.HandleFunc("GET "+partitionAPIPrefix+"/links/{code}/clicks", func(w http.ResponseWriter, r *http.Request) {
		n, err := s.Clicks(r.PathValue("code"))
		answer(w, clicksAnswer{Clicks: n}, err)
	})
	mux.HandleFunc("GET "+partitionAPIPrefix+"/stats", func(w http.ResponseWriter, r *http.Request) {
		rg, ok := rangeOf(w, r)
		if !ok {
			return
		}
		limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
		if err != nil || limit < 1 || limit > 100_000 {
			fail(w, http.StatusBadRequest, "invalid_limit", "limit must be 1 to 100000")
			return
		}
		t, err := s.TopLinks(rg, limit)
		if err != nil {
			answer(w, nil, err)
			return
		}
		answer(w, t.API(), nil)
	})
	mux.HandleFunc("GET "+partitionAPIPrefix+"/clicked", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		cur := FeedCursor{Epoch: q.Get("epoch")}
		var err error
		if v := q.Get("seq"); v != "" {
			if cur.Seq, err = strconv.ParseUint(v, 10, 64); err != nil {
				fail(w, http.StatusBadRequest, "invalid_cursor", "seq must be an unsigned integer")
				return
			}
		}
		var wait time.Duration
		if v := q.Get("wait"); v != "" {
			if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > FeedMaxWait {
				fail(w, http.StatusBadRequest, "invalid_wait", "wait must be a duration from 0 to "+FeedMaxWait.String())
				return
			}
		}
		page, err := s.Clicked(r.Context(), cur, wait)
		if r.Context().Err() != nil {
			return // the origin went away
		}
		answer(w, page, err)
	})
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(PartitionHeader, name)
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			fail(w, http.StatusUnauthorized, "unauthorized", "the partition API needs the collector stats token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// URL is the partition's stats listener, e.g. http://10.0.0.5:9084.
	// Required.
	URL string
	// Token is the partition's StatsToken. Required.
	Token string
	// Partition and Partitions: the Remote must answer for partition
	// Partition of Partitions (checked on every answer). The default is
	// 0 of 1.
	Partition, Partitions int
	// CAFile is a PEM file of the CAs an https URL's certificate is
	// verified against (tlsconf.Client). The default is the system's.
	CAFile string
	// Timeout bounds one query (a feed read adds its wait). The default
	// is 10s.
	Timeout time.Duration
	// Client is the HTTP client. The default is one of its own.
	Client *http.Client
}

// FeedMaxWait is the longest wait of one read of a partition's feed.
const FeedMaxWait = 10 * time.Second

// Validate reports every bad field.
func (c *RemoteConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("collector remote: URL %q must be an http(s) URL", c.URL))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("collector remote: Token is required"))
	}
	if err := checkPartition(c.Partition, c.Partitions); err != nil {
		errs = append(errs, err)
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("collector remote: Timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// checkPartition validates partition i of n (n 0 means 1).
func checkPartition(i, n int) error {
	if n == 0 {
		n = 1
	}
	if n < 1 || n > MaxPartitions || i < 0 || i >= n {
		return fmt.Errorf("collector: partition %d of %d; want 0 <= partition < partitions <= %d", i, n, MaxPartitions)
	}
	return nil
}

// Remote is one collector partition's stats, asked over its partition
// API. Every failure wraps ErrPartitionUnavailable.
type Remote struct {
	base, auth, name string
	hc               *http.Client
	timeout          time.Duration

	// watchers: one poller per watched code, shared by its watchers.
	wmu      sync.Mutex
	watchers map[string]*remoteWatch
}

type remoteWatch struct {
	subs map[chan struct{}]struct{}
	stop chan struct{}
}

// NewRemote validates cfg and returns the Remote.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Client == nil {
		tc, err := tlsconf.Client(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("collector remote: %w", err)
		}
		cfg.Client = &http.Client{Transport: &http.Transport{
			TLSClientConfig: tc, ForceAttemptHTTP2: true,
			MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute,
		}}
	}
	return &Remote{
		base: strings.TrimRight(cfg.URL, "/") + partitionAPIPrefix, auth: "Bearer " + cfg.Token,
		name: partitionName(cfg.Partition, cfg.Partitions), hc: cfg.Client, timeout: cfg.Timeout,
		watchers: map[string]*remoteWatch{},
	}, nil
}

// get asks path (with query q) and decodes the answer into v.
func (rm *Remote) get(path string, q url.Values, v any) error {
	return rm.getCtx(context.Background(), path, q, rm.timeout, v)
}

// getCtx is get within ctx and timeout.
func (rm *Remote) getCtx(ctx context.Context, path string, q url.Values, timeout time.Duration, v any) error {
	u := rm.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPartitionUnavailable, err)
	}
	req.Header.Set("Authorization", rm.auth)
	hc := *rm.hc
	hc.Timeout = timeout
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: partition %s: %w", ErrPartitionUnavailable, rm.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%w: partition %s: %w", ErrPartitionUnavailable, rm.name, err)
	}
	if got := resp.Header.Get(PartitionHeader); got != rm.name {
		return fmt.Errorf("%w: %s answered as partition %q, want %q (check the order of the collector URLs)", ErrPartitionUnavailable, u, got, rm.name)
	}
	if resp.StatusCode != http.StatusOK {
		var eb client.ErrorBody
		_ = json.Unmarshal(body, &eb)
		return fmt.Errorf("%w: partition %s: %s %s: %s", ErrPartitionUnavailable, rm.name, resp.Status, eb.Error.Code, eb.Error.Message)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: partition %s: %w", ErrPartitionUnavailable, rm.name, err)
	}
	return nil
}

func rangeQuery(r Range) url.Values {
	return url.Values{
		"from": {r.From.UTC().Format(time.RFC3339)}, "to": {r.To.UTC().Format(time.RFC3339)},
		"interval": {r.Interval.String()},
	}
}

// LinkStats asks the partition for code's stats over r.
func (rm *Remote) LinkStats(code string, r Range) (*LinkStats, error) {
	var a client.Stats
	if err := rm.get("/links/"+url.PathEscape(code)+"/stats", rangeQuery(r), &a); err != nil {
		return nil, err
	}
	return linkStatsOf(a), nil
}

// TopLinks asks the partition for its top links over r.
func (rm *Remote) TopLinks(r Range, limit int) (*TopLinks, error) {
	q := rangeQuery(r)
	q.Set("limit", strconv.Itoa(limit))
	var a client.TopLinks
	if err := rm.get("/stats", q, &a); err != nil {
		return nil, err
	}
	return topLinksOf(a), nil
}

// Totals asks the partition for code's running totals.
func (rm *Remote) Totals(code string) (Totals, error) {
	var a client.LiveClicks
	if err := rm.get("/links/"+url.PathEscape(code)+"/totals", nil, &a); err != nil {
		return Totals{}, err
	}
	return totalsOf(a), nil
}

// clicksAnswer is the partition API's answer to .../clicks.
type clicksAnswer struct {
	Clicks uint64 `json:"clicks"`
}

// Clicks asks the partition for code's click count.
func (rm *Remote) Clicks(code string) (uint64, error) {
	var a clicksAnswer
	if err := rm.get("/links/"+url.PathEscape(code)+"/clicks", nil, &a); err != nil {
		return 0, err
	}
	return a.Clicks, nil
}

// Clicked reads the partition's feed after cur, waiting up to wait
// (at most FeedMaxWait) for a commit.
func (rm *Remote) Clicked(ctx context.Context, cur FeedCursor, wait time.Duration) (FeedPage, error) {
	wait = min(max(wait, 0), FeedMaxWait)
	q := url.Values{"epoch": {cur.Epoch}, "seq": {strconv.FormatUint(cur.Seq, 10)}, "wait": {wait.String()}}
	var page FeedPage
	if err := rm.getCtx(ctx, "/clicked", q, rm.timeout+wait, &page); err != nil {
		return FeedPage{}, err
	}
	return page, nil
}

// Watch polls code's totals every second while it is watched and
// signals when they changed (or the partition could not be asked, so
// the caller's own read reports it).
func (rm *Remote) Watch(code string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	rm.wmu.Lock()
	w := rm.watchers[code]
	if w == nil {
		w = &remoteWatch{subs: map[chan struct{}]struct{}{}, stop: make(chan struct{})}
		rm.watchers[code] = w
		go rm.poll(code, w)
	}
	w.subs[ch] = struct{}{}
	rm.wmu.Unlock()
	return ch, func() {
		rm.wmu.Lock()
		defer rm.wmu.Unlock()
		delete(w.subs, ch)
		if len(w.subs) == 0 && rm.watchers[code] == w {
			delete(rm.watchers, code)
			close(w.stop)
		}
	}
}

func (rm *Remote) poll(code string, w *remoteWatch) {
	t := time.NewTicker(remoteWatchEvery)
	defer t.Stop()
	last, _ := rm.Totals(code)
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		cur, err := rm.Totals(code)
		changed := err != nil || cur.Clicks != last.Clicks || cur.Bots != last.Bots || cur.Uniques != last.Uniques
		last = cur
		if !changed {
			continue
		}
		rm.wmu.Lock()
		for ch := range w.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		rm.wmu.Unlock()
	}
}
