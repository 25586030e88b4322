package edge

import (
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// strictRetryAfter is the Retry-After an edge sends with the 503 it
// answers a strict link with while it cannot prove its freshness: about
// the time a reconnect and one stream poll take.
const strictRetryAfter = 5 * time.Second

var (
	hdrRetryAfter = []byte(fasthttp.HeaderRetryAfter)
	valRetryAfter = []byte(strconv.Itoa(int(strictRetryAfter / time.Second)))
)

// proof is the newest proof of freshness the consumer holds: every
// message the stream held at at (its last sequence then was seq) is
// applied. at is zero before the first proof of this process.
func (s *Server) proof() (seq uint64, at time.Time) {
	con := s.con.Load()
	if con == nil {
		return 0, time.Time{}
	}
	st := con.Status()
	return st.ProvenSeq, st.ProvenAt
}

// provablyFresh reports whether the edge can prove, at now, that it is
// within MaxStale of the stream: its newest proof is at most MaxStale
// old. A restarted edge that has not reached the stream yet cannot, even
// though it serves its replica.
func (s *Server) provablyFresh(now time.Time) bool {
	_, at := s.proof()
	return !at.IsZero() && now.Sub(at) <= s.cfg.MaxStale
}

// serveStrictUnavailable answers a strict link the edge cannot prove
// fresh: 503 with Retry-After, rather than a redirect a deactivation
// the edge has not seen yet may have withdrawn.
func (s *Server) serveStrictUnavailable(ctx *fasthttp.RequestCtx) int {
	s.strictRefused.Inc()
	ctx.Response.Header.SetCanonical(hdrRetryAfter, valRetryAfter)
	return textStatus(ctx, fasthttp.StatusServiceUnavailable, bodyUnavailable)
}

// registerFreshnessMetrics adds linkpop_edge_proof_age_seconds (the age
// of the newest proof of freshness, since the start before the first)
// and linkpop_edge_strict_unavailable_total (strict links answered 503).
func (s *Server) registerFreshnessMetrics(set *metrics.Set) {
	s.strictRefused = set.NewCounter("linkpop_edge_strict_unavailable_total")
	set.NewGauge("linkpop_edge_proof_age_seconds", func() float64 {
		now := time.Now()
		_, at := s.proof()
		return s.since(at, now)
	})
}
