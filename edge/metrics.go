package edge

import (
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// serverMetrics are the edge's own metrics. Every series is created up
// front so the hot path only increments: no map, no formatting.
type serverMetrics struct {
	req301, req302, req307, req308, req404, req405, req410, req503 *metrics.Counter
	req429                                                         *metrics.Counter // the enumeration limiter
	// duration is sampled: one request in durationSample (see Resolve).
	// Its _count is therefore about 1/8 of the requests; the request
	// counters above count every one.
	duration *metrics.Histogram

	fallbackHit, fallbackNotFound, fallbackError *metrics.Counter
	fallbackOverBudget, fallbackShared           *metrics.Counter
}

func newServerMetrics(set *metrics.Set, s *Server) *serverMetrics {
	req := func(status string) *metrics.Counter {
		return set.NewCounter(`linkpop_edge_requests_total{status="` + status + `"}`)
	}
	fb := func(result string) *metrics.Counter {
		return set.NewCounter(`linkpop_edge_fallback_total{result="` + result + `"}`)
	}
	m := &serverMetrics{
		req301: req("301"), req302: req("302"), req307: req("307"), req308: req("308"),
		req404: req("404"), req405: req("405"), req410: req("410"), req503: req("503"),
		req429:             req("429"),
		duration:           set.NewHistogram("linkpop_edge_request_duration_seconds"),
		fallbackHit:        fb("hit"),
		fallbackNotFound:   fb("not_found"),
		fallbackError:      fb("error"),
		fallbackOverBudget: fb("over_budget"),
		fallbackShared:     fb("shared"),
	}
	set.NewGauge("linkpop_edge_stale_seconds", func() float64 {
		now := time.Now()
		return s.since(s.health(now).lastContact, now)
	})
	set.NewGauge("linkpop_edge_ready", func() float64 {
		if s.health(time.Now()).ready {
			return 1
		}
		return 0
	})
	set.NewGauge("linkpop_edge_gossip_members", func() float64 {
		if g := s.gossip.Load(); g != nil {
			return float64(g.size())
		}
		return 0
	})
	return m
}

func (m *serverMetrics) countStatus(status int) {
	switch status {
	case 301:
		m.req301.Inc()
	case 302:
		m.req302.Inc()
	case 307:
		m.req307.Inc()
	case 308:
		m.req308.Inc()
	case 404:
		m.req404.Inc()
	case 405:
		m.req405.Inc()
	case 410:
		m.req410.Inc()
	case 503:
		m.req503.Inc()
	case 429:
		m.req429.Inc()
	}
}
