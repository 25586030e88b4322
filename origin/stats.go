package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/link"
)

// Top links page sizes of GET /v1/stats.
const (
	DefaultTopLimit = 20
	MaxTopLimit     = 1000
)

// liveMinGap is the least time between two events of the live stream.
const liveMinGap = time.Second

// errNoCollector answers the stats API of an origin without a collector.
var errNoCollector = withDetail(ErrUnavailable, "analytics are not collected by this origin (NoCollector) and no Collectors are configured")

// statsErr maps a failed stats query: a collector partition that could
// not answer is 503 unavailable.
func statsErr(what string, err error) error {
	if errors.Is(err, collector.ErrPartitionUnavailable) {
		return withDetail(ErrUnavailable, err.Error())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// statsRange reads from, to and interval; each may appear once.
func statsRange(r *http.Request) (collector.Range, error) {
	q := r.URL.Query()
	var vals [3]string
	for i, name := range []string{"from", "to", "interval"} {
		v, ok := q[name]
		if !ok {
			continue
		}
		if len(v) != 1 {
			return collector.Range{}, link.OnField(name, withDetail(ErrInvalidRange, name+" must be given once"))
		}
		vals[i] = v[0]
		if vals[i] == "" {
			return collector.Range{}, link.OnField(name, withDetail(ErrInvalidRange, name+" must not be empty"))
		}
	}
	rg, err := collector.ParseRange(vals[0], vals[1], vals[2], time.Now())
	var re *collector.RangeError
	if errors.As(err, &re) {
		return rg, link.OnField(re.Field, withDetail(ErrInvalidRange, re.Msg))
	}
	return rg, err
}

// statsLink checks that code names a link of the store.
func (s *Server) statsLink(code string) error {
	if s.stats == nil {
		return errNoCollector
	}
	if !link.ValidCode(code) {
		return link.ErrNotFound
	}
	_, err := s.store.Get(code)
	return err
}

// wantsCSV reports whether the Accept header asks for text/csv.
func wantsCSV(h http.Header) bool {
	for _, part := range strings.Split(h.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/csv" {
			return true
		}
	}
	return false
}

// linkStats is GET /v1/links/{code}/stats?from=&to=&interval=.
func (s *Server) linkStats(w http.ResponseWriter, r *http.Request, _ *principal) error {
	code := r.PathValue("code")
	if err := s.statsLink(code); err != nil {
		return err
	}
	rg, err := statsRange(r)
	if err != nil {
		return err
	}
	st, err := s.stats.LinkStats(code, rg)
	if err != nil {
		return statsErr("link stats", err)
	}
	if wantsCSV(r.Header) {
		var b strings.Builder
		b.WriteString("t,clicks,uniques,bots\n")
		for _, p := range st.Series {
			fmt.Fprintf(&b, "%s,%d,%d,%d\n", apiTime(p.T), p.Clicks, p.Uniques, p.Bots)
		}
		h := w.Header()
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("Content-Disposition", `attachment; filename="`+code+`-stats.csv"`)
		h.Set("Content-Length", strconv.Itoa(b.Len()))
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(b.String()))
		return nil
	}
	writeJSON(w, http.StatusOK, st.API())
	return nil
}

// topLinks is GET /v1/stats?from=&to=&limit=.
func (s *Server) topLinks(w http.ResponseWriter, r *http.Request, _ *principal) error {
	if s.stats == nil {
		return errNoCollector
	}
	limit := DefaultTopLimit
	if vals, ok := r.URL.Query()["limit"]; ok {
		n, err := strconv.Atoi(vals[0])
		if len(vals) != 1 || err != nil || n < 1 || n > MaxTopLimit {
			return link.OnField("limit", ErrInvalidLimit)
		}
		limit = n
	}
	if _, ok := r.URL.Query()["interval"]; ok {
		return link.OnField("interval", withDetail(ErrInvalidRange, "GET /v1/stats takes from, to and limit"))
	}
	rg, err := statsRange(r)
	if err != nil {
		return err
	}
	top, err := s.stats.TopLinks(rg, limit)
	if err != nil {
		return statsErr("top links", err)
	}
	writeJSON(w, http.StatusOK, top.API())
	return nil
}

// liveStats is GET /v1/links/{code}/stats/live: Server-Sent Events with
// the link's running totals (event "clicks"), at once and then at most
// once a second while clicks arrive, and a comment heartbeat every
// StatsHeartbeat. It ends when the client goes or the origin stops.
func (s *Server) liveStats(w http.ResponseWriter, r *http.Request, _ *principal) error {
	code := r.PathValue("code")
	if err := s.statsLink(code); err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	// The API's write timeout does not apply to a stream.
	_ = rc.SetWriteDeadline(time.Time{})
	ch, stop := s.stats.Watch(code)
	defer stop()
	// The first read answers an error (a partition down) before the
	// stream begins.
	first, err := s.stats.Totals(code)
	if err != nil {
		return statsErr("live stats", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	write := func(t collector.Totals) error {
		b, _ := json.Marshal(t.API())
		if _, err := fmt.Fprintf(w, "event: clicks\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	send := func() error {
		t, err := s.stats.Totals(code)
		if err != nil {
			return err
		}
		return write(t)
	}
	if err := write(first); err != nil {
		return nil // the answer has begun: nothing more to say
	}
	last := time.Now()
	hb := time.NewTicker(s.cfg.StatsHeartbeat)
	defer hb.Stop()
	var due <-chan time.Time // set while an event waits for liveMinGap
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-s.quit:
			return nil
		case <-hb.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		case <-ch:
			if due != nil {
				continue
			}
			if wait := liveMinGap - time.Since(last); wait > 0 {
				due = time.After(wait)
				continue
			}
			if send() != nil {
				return nil
			}
			last = time.Now()
		case <-due:
			due = nil
			if send() != nil {
				return nil
			}
			last = time.Now()
		}
	}
}

// clickFeed is one collector's feed of clicked codes and the totals
// of its codes: the in-process collector, or one partition of
// Collectors.
type clickFeed struct {
	collector.ClickFeed
	collector.Source
	part, parts int
}

// feedWait is how long one read of a collector's feed waits for a
// commit.
const feedWait = 5 * time.Second

// followClicks enforces max_visits from one collector's feed until ctx
// ends: every code the collector counted clicks of is checked against
// the store's limited set (only the links with a max_visits are read),
// and one whose clicks reached its limit is disabled through the ordinary
// store and change stream. Only the leader follows (the origin is the
// one writer); a reader that may have missed commits (its first read,
// after it became leader, or after the collector restarted or the feed
// overflowed) sweeps every limited link of the partition once.
func (s *Server) followClicks(ctx context.Context, f clickFeed) {
	log := s.log.With("collector_partition", fmt.Sprintf("%d/%d", f.part, f.parts))
	var cur collector.FeedCursor
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	retry := func(what string, err error) bool {
		s.mFeedErrors.Inc()
		log.Warn("max_visits: "+what, "err", err, "retry_in", backoff)
		ok := sleep(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
		return ok
	}
	for ctx.Err() == nil {
		if !s.isLeader() {
			cur = collector.FeedCursor{} // a new leader has missed the feed: it sweeps
			if !sleep(ctx, 200*time.Millisecond) {
				return
			}
			continue
		}
		page, err := f.Clicked(ctx, cur, feedWait)
		if err != nil {
			if ctx.Err() != nil || !retry("reading the collector's click feed", err) {
				return
			}
			continue
		}
		for _, code := range page.Codes {
			if err := s.checkMaxVisits(ctx, f.Source, code); err != nil && ctx.Err() == nil {
				log.Error("disable link at max_visits", "code", code, "err", err)
			}
		}
		if !page.Complete {
			n, err := s.sweepMaxVisits(ctx, f)
			if err != nil {
				// The cursor stays: the next read is incomplete again
				// and the sweep is tried again.
				if ctx.Err() != nil || !retry("sweep of the limited links", err) {
					return
				}
				continue
			}
			s.mFeedSweeps.Inc()
			log.Info("max_visits: swept the limited links", "disabled", n, "after_cursor", cur.Seq, "epoch", page.Cursor.Epoch)
		}
		backoff = minBackoff
		cur = page.Cursor
	}
}

// checkMaxVisits disables code if it is an active link whose clicks in
// src reached its max_visits. A code the store's limited set does not
// name costs no read.
func (s *Server) checkMaxVisits(ctx context.Context, src collector.Source, code string) error {
	if !s.store.MayBeLimited(code) {
		return nil
	}
	rec, err := s.store.Get(code)
	if err != nil || rec.MaxVisits == 0 || rec.Status != link.StatusActive {
		return nil
	}
	_, err = s.enforceFrom(ctx, src, rec)
	return err
}

// sweepMaxVisits checks every active link with a max_visits in f's
// partition (the store's limited set) and returns how many it disabled.
func (s *Server) sweepMaxVisits(ctx context.Context, f clickFeed) (int, error) {
	codes, err := s.store.LimitedCodes(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, code := range codes {
		if collector.PartitionOf(code, f.parts) != f.part {
			continue
		}
		rec, err := s.store.Get(code)
		if errors.Is(err, link.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("link %s: %w", code, err)
		}
		next, err := s.enforceFrom(ctx, f.Source, rec)
		if err != nil {
			return n, fmt.Errorf("link %s: %w", code, err)
		}
		if rec.Status == link.StatusActive && next.Status != link.StatusActive {
			n++
		}
	}
	return n, nil
}

// enforceMaxVisits disables rec, through the ordinary store and change
// stream, if it is active and its clicks reached its max_visits; it
// returns the link's state after that.
func (s *Server) enforceMaxVisits(ctx context.Context, rec link.Record) (link.Record, error) {
	if s.stats == nil {
		return rec, nil
	}
	return s.enforceFrom(ctx, s.stats, rec)
}

// enforceFrom is enforceMaxVisits with rec's clicks read from src.
func (s *Server) enforceFrom(ctx context.Context, src collector.Source, rec link.Record) (link.Record, error) {
	if rec.MaxVisits == 0 || rec.Status != link.StatusActive {
		return rec, nil
	}
	n, err := src.Clicks(rec.Code)
	if err != nil || n < rec.MaxVisits {
		return rec, err
	}
	// Conditional on the revision read: a concurrent change wins, and its
	// own clicks re-trigger the check.
	next, err := s.store.DisableFor(ctx, rec.Code, rec.Revision, "max_visits")
	if errors.Is(err, link.ErrRevisionMismatch) {
		return s.store.Get(rec.Code)
	}
	if err != nil {
		return rec, err
	}
	s.mMaxVisits.Inc()
	s.log.Info("link disabled: max_visits reached", "code", rec.Code, "max_visits", rec.MaxVisits, "clicks", n)
	return next, nil
}

// apiTime is the API's time format: RFC 3339 in UTC, with fractional
// seconds only when there are some (as client.Link writes its times).
func apiTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
