package origin

import (
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// newAdminHandler serves the admin listener: Prometheus metrics, liveness
// and readiness.
func (s *Server) newAdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.metrics.WritePrometheus(w)
		metrics.WriteProcessMetrics(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

// readiness is the body of /readyz.
type readiness struct {
	Ready bool `json:"ready"`
	// Store is "open" or "closed".
	Store string `json:"store"`
	// NATS is "connected" or "disconnected". A disconnected NATS does not
	// make the origin unready: writes are accepted and wait in the outbox.
	NATS string `json:"nats"`
	// Stream is "ready" once the change stream exists, else "pending".
	Stream string `json:"stream"`
	// Relay is "running" or "stopped".
	Relay string `json:"relay"`
	// OutboxDepth is the number of change events not yet acknowledged by
	// the stream; OutboxOldestSeconds the age of the oldest.
	OutboxDepth         int     `json:"outbox_depth"`
	OutboxOldestSeconds float64 `json:"outbox_oldest_seconds"`
	// Revision is the last committed revision.
	Revision uint64 `json:"revision"`
	// Role is "leader" or "standby" (HA). A standby is not ready: a load
	// balancer routing on /readyz sends writes to the leader.
	Role string `json:"role"`
	// Epoch is the leader epoch this origin last took over at (HA).
	Epoch uint64 `json:"epoch,omitempty"`
}

// readyz answers 200 while the store is open and the server is not
// shutting down, whatever the state of NATS, and 503 otherwise. The body
// says why, and how far behind the stream is.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.storeMu.RLock()
	defer s.storeMu.RUnlock()
	rd := readiness{Store: "open", NATS: "disconnected", Stream: "pending", Relay: "stopped"}
	if s.closed.Load() {
		rd.Store = "closed"
	} else {
		depth, oldest := s.store.OutboxStats()
		rd.OutboxDepth = depth
		if !oldest.IsZero() {
			rd.OutboxOldestSeconds = time.Since(oldest).Seconds()
		}
		rd.Revision = s.store.Revision()
	}
	if s.nc.IsConnected() {
		rd.NATS = "connected"
	}
	if s.streamReady.Load() {
		rd.Stream = "ready"
	}
	if s.relayRunning.Load() {
		rd.Relay = "running"
	}
	rd.Role, rd.Epoch = s.Role(), s.Epoch()
	rd.Ready = rd.Store == "open" && !s.shutting.Load() && s.isLeader()
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

// registerGauges adds the server's own gauges to its metrics set; the
// store and relay register theirs (outbox depth and age, disk bytes).
func (s *Server) registerGauges() {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	s.metrics.GetOrCreateGauge("linkpop_origin_nats_connected", func() float64 { return b2f(s.nc.IsConnected()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_stream_ready", func() float64 { return b2f(s.streamReady.Load()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_ready", func() float64 { return b2f(!s.shutting.Load() && !s.closed.Load() && s.isLeader()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_leader", func() float64 { return b2f(s.isLeader()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_epoch", func() float64 { return float64(s.ha.epoch.Load()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_takeovers", func() float64 { return float64(s.ha.takeovers.Load()) })
	s.metrics.GetOrCreateGauge("linkpop_origin_step_downs", func() float64 { return float64(s.ha.stepDowns.Load()) })
}
