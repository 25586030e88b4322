package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/link"
)

var valAllowPost = []byte("POST")

// serveAdmin is the admin listener's handler. The admin listener is for
// operators only: it must never be reachable from the public network
// (bind it to loopback or a management interface), since POST /resync and
// POST /repair change the replica and, but for /checkpoint (the fleet
// secret), it has no authentication.
//
//	/metrics  Prometheus text: the edge's, replica's and consumer's metrics
//	          and the process's
//	/healthz  200 while the process serves
//	/readyz   200 "ok" when bootstrapped and within LagThreshold of the
//	          stream; 200 "stale" when the stream is unreachable but the
//	          replica serves its last state (an edge with data stays in
//	          rotation during an outage); 503 "warming" while the hot
//	          cache loads (at most WarmTimeout); 503 "behind_peers" (see
//	          PeerLagThreshold); 503 "bootstrapping" while a fresh
//	          replica has not caught up once; 503 "lagging" when the stream
//	          is reachable but the replica lags beyond LagThreshold
//	/status   JSON Status, gossip members included
//	/hotset   the hot set (warm.go): codes of the hot cache, recently
//	          requested first, at most WarmEntries or ?n=; what a fresh
//	          peer warms its hot cache with
//	/checkpoint
//	          with "Authorization: Bearer <PeerSecret>": a Pebble
//	          checkpoint of the replica, streamed with SHA-256 sums
//	          (bootstrap.go); what a fresh peer bootstraps from
//	/digest   JSON digest of the replica (link.DigestJSON) with "node",
//	          "applied" (the stream position it reflects), "stream_last"
//	          and "lag", for comparison with the origin's GET /v1/digest
//	/digest/buckets/{i}
//	          JSON {"bucket", "node", "applied", "links": [{"code",
//	          "revision"}...]}: the records of one digest bucket
//	POST /resync
//	          replay the whole change stream into the replica (Resync);
//	          202 at once, the replay runs in the background
//	POST /repair?bucket=i[&bucket=j...]
//	          make those buckets equal to the origin's (Repair); 200 with
//	          {"node", "buckets": [BucketRepair...]} when done
func (s *Server) serveAdmin(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	switch path {
	case "/resync", "/repair":
		if !ctx.IsPost() {
			ctx.Response.Header.SetCanonical(hdrAllow, valAllowPost)
			textStatus(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		if path == "/resync" {
			s.adminResync(ctx)
		} else {
			s.adminRepair(ctx)
		}
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.SetCanonical(hdrAllow, valAllow)
		textStatus(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	switch path {
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
		s.writeAdminJSON(ctx, fasthttp.StatusOK, s.Status())
	case "/hotset":
		s.adminHotSet(ctx)
	case "/checkpoint":
		s.adminCheckpoint(ctx)
	case "/digest":
		d, err := s.digest()
		if err != nil {
			s.adminError(ctx, err)
			return
		}
		s.writeAdminJSON(ctx, fasthttp.StatusOK, d)
	default:
		if v, ok := strings.CutPrefix(path, "/digest/buckets/"); ok {
			i, err := parseBucket(v)
			if err != nil {
				s.adminError(ctx, err)
				return
			}
			b, err := s.digestBucket(i)
			if err != nil {
				s.adminError(ctx, err)
				return
			}
			s.writeAdminJSON(ctx, fasthttp.StatusOK, b)
			return
		}
		textStatus(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
}

func (s *Server) adminResync(ctx *fasthttp.RequestCtx) {
	if err := s.Resync(); err != nil {
		s.adminError(ctx, err)
		return
	}
	s.writeAdminJSON(ctx, fasthttp.StatusAccepted, map[string]string{"node": s.NodeName(), "resync": "replaying the whole change stream"})
}

func (s *Server) adminRepair(ctx *fasthttp.RequestCtx) {
	args := ctx.QueryArgs().PeekMulti("bucket")
	if len(args) == 0 {
		s.adminError(ctx, ErrInvalidBucket)
		return
	}
	buckets := make([]int, 0, len(args))
	for _, a := range args {
		i, err := parseBucket(string(a))
		if err != nil {
			s.adminError(ctx, err)
			return
		}
		buckets = append(buckets, i)
	}
	rctx, cancel := context.WithTimeout(s.ops, repairTimeout)
	defer cancel()
	res, err := s.Repair(rctx, buckets)
	if err != nil && len(res) == 0 {
		s.adminError(ctx, err)
		return
	}
	out := RepairAnswer{Node: s.NodeName(), Buckets: res}
	status := fasthttp.StatusOK
	if err != nil {
		// What was repaired before the failure is reported with it.
		status, out.Error = adminStatus(err), err.Error()
		s.log.Warn("repair stopped", "err", err, "buckets_done", len(res))
	}
	s.writeAdminJSON(ctx, status, out)
}

// parseBucket reads a digest bucket: a decimal integer in [0, 255].
func parseBucket(v string) (int, error) {
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 || i >= link.DigestBuckets || strconv.Itoa(i) != v {
		return 0, ErrInvalidBucket
	}
	return i, nil
}

// adminError answers a failed admin call with {"error": "..."}.
func (s *Server) adminError(ctx *fasthttp.RequestCtx, err error) {
	status := adminStatus(err)
	if status == fasthttp.StatusInternalServerError {
		s.log.Error("admin call failed", "path", string(ctx.Path()), "err", err)
	}
	s.writeAdminJSON(ctx, status, map[string]string{"error": err.Error()})
}

// adminStatus maps an admin call's error to its HTTP status.
func adminStatus(err error) int {
	switch {
	case errors.Is(err, ErrInvalidBucket):
		return fasthttp.StatusBadRequest
	case errors.Is(err, ErrNoOrigin), errors.Is(err, ErrRepairRunning):
		return fasthttp.StatusConflict
	case errors.Is(err, ErrNotRunning), errors.Is(err, context.Canceled):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, errOrigin), errors.Is(err, context.DeadlineExceeded), errors.As(err, new(*url.Error)):
		return fasthttp.StatusBadGateway
	}
	return fasthttp.StatusInternalServerError
}

func (s *Server) writeAdminJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	enc := json.NewEncoder(ctx)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.log.Warn("encode admin answer", "path", string(ctx.Path()), "err", err)
	}
}
