package edge

import (
	"encoding/json"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// serveAdmin is the admin listener's handler:
//
//	/metrics  Prometheus text: the edge's, replica's and consumer's metrics
//	          and the process's
//	/healthz  200 while the process serves
//	/readyz   200 "ok" when bootstrapped and within LagThreshold of the
//	          stream; 200 "stale" when the stream is unreachable but the
//	          replica serves its last state (an edge with data stays in
//	          rotation during an outage); 503 "bootstrapping" while a fresh
//	          replica has not caught up once; 503 "lagging" when the stream
//	          is reachable but the replica lags beyond LagThreshold
//	/status   JSON Status, gossip members included
func (s *Server) serveAdmin(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.SetCanonical(hdrAllow, valAllow)
		textStatus(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	switch string(ctx.Path()) {
	case "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
		s.cfg.Metrics.WritePrometheus(ctx)
		metrics.WriteProcessMetrics(ctx)
	case "/healthz":
		textStatus(ctx, fasthttp.StatusOK, []byte("ok\n"))
	case "/readyz":
		h := s.health(ctx.Time())
		status := fasthttp.StatusOK
		if !h.ready {
			status = fasthttp.StatusServiceUnavailable
		}
		textStatus(ctx, status, []byte(h.reason+"\n"))
	case "/status":
		ctx.SetContentType("application/json")
		enc := json.NewEncoder(ctx)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s.Status()); err != nil {
			s.log.Warn("encode status", "err", err)
		}
	default:
		textStatus(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
}
