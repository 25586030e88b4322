package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkpop/linkpop/client"
)

// restartWindow is the start of an edge's traffic after a restart that
// the restart section measures: the "first 5 s".
const restartWindow = 5 * time.Second

// noWarm are the edge flags of a restart without the hot set.
var noWarm = []string{"-warm-entries", "-1"}

// restart measures the first restartWindow of Zipf traffic of an edge
// just restarted on its replica, with its hot set loaded before it serves
// (warming on, the default) and without (-warm-entries -1: the hot cache
// starts empty), next to bare302 in the same round.
//
// First the edge is restarted with warming on and asked for Zipf codes
// for a while, so the hot set it saves when it is stopped ranks codes as
// its traffic did. Then each round restarts it twice (warm, cold) and
// runs bare302, in a rotating order, each run starting at the same offset
// of the request stream in that round.
func (h *harness) restart() error {
	if h.wrk == "" {
		return fmt.Errorf("wrk not found: %w", errSkipped)
	}
	bare, err := h.startBare302()
	if err != nil {
		return err
	}
	defer bare.stop()
	conns := h.cfg.Connections[0]
	rr := &RestartReport{Distribution: DistZipf, Connections: conns, WindowSeconds: restartWindow.Seconds(),
		WarmEntries: "edge default (-warm-entries 200000, -warm-timeout 5s)", LoadAvgStart: loadAvg()}
	h.rep.Restart = rr
	defer func() { rr.LoadAvgEnd = loadAvg() }()

	h.log.Info("restart: edge with warming on, Zipf traffic to rank its hot set")
	e, _, err := h.restartReady()
	if err != nil {
		return err
	}
	train := min(max(2*h.cfg.Duration, 2*time.Second), 20*time.Second)
	if _, err := h.measure(&e.server, DistZipf, conns, -1, 0, train); err != nil {
		return err
	}
	rr.TrainSeconds = train.Seconds()

	m := h.cfg.PathsPerFile
	kinds := []string{"warm", "cold", SysBare302}
	lastEdge := "warm"
	for round := range h.cfg.Rounds {
		offset := (round + 1) * (m / (h.cfg.Rounds + 1))
		k := round % len(kinds)
		rd := RestartRound{Round: round}
		for _, kind := range append(slices.Clone(kinds[k:]), kinds[:k]...) {
			h.log.Info("restart: run", "round", round+1, "kind", kind)
			if kind == SysBare302 {
				if rd.Bare302, err = h.measure(bare, DistZipf, conns, round, offset, restartWindow); err != nil {
					return err
				}
				continue
			}
			var extra []string
			if kind == "cold" {
				extra = noWarm
			}
			e, ready, err := h.restartReady(extra...)
			if err != nil {
				return err
			}
			lastEdge = kind
			st, _ := e.status()
			run, err := h.measure(&e.server, DistZipf, conns, round, offset, restartWindow)
			if err != nil {
				return err
			}
			if kind == "warm" {
				run.System = SysLinkpop + " restarted, warming on"
				rd.Warm, rd.WarmReadySeconds, rd.WarmHotEntries = run, ready.Seconds(), st.HotEntries
			} else {
				run.System = SysLinkpop + " restarted, warming off"
				rd.Cold, rd.ColdReadySeconds, rd.ColdHotEntries = run, ready.Seconds(), st.HotEntries
			}
		}
		if b := rd.Bare302.RPS; b > 0 {
			rd.RatioWarm, rd.RatioCold = rd.Warm.RPS/b, rd.Cold.RPS/b
		}
		rr.Rounds = append(rr.Rounds, rd)
	}
	var warm, cold, warmReady, coldReady []float64
	for _, rd := range rr.Rounds {
		warm, cold = append(warm, rd.RatioWarm), append(cold, rd.RatioCold)
		warmReady, coldReady = append(warmReady, rd.WarmReadySeconds), append(coldReady, rd.ColdReadySeconds)
	}
	rr.RatioWarm, rr.RatioCold = median(warm), median(cold)
	rr.WarmReadySeconds, rr.ColdReadySeconds = median(warmReady), median(coldReady)
	if lastEdge == "cold" {
		// Leave the edge as the other sections expect it: warming on.
		_, _, err = h.restartReady()
	}
	return err
}

// restartReady restarts the first edge on its replica with extra flags
// and waits until it is ready and has the whole stream; ready is the
// restart (stop excluded) to /readyz 200.
func (h *harness) restartReady(extra ...string) (*edgeProc, time.Duration, error) {
	last, err := h.lastSeq()
	if err != nil {
		return nil, 0, err
	}
	h.edge1.p.stop(stopSignal, 20*time.Second) // restartEdge's stop is then a no-op
	begin := time.Now()
	e, err := h.restartEdge(h.edge1, extra...)
	if err != nil {
		return nil, 0, err
	}
	ready, _, err := h.waitEdge(h.ctx, e, begin, last, 10*time.Minute)
	if err != nil {
		return nil, 0, err
	}
	return e, ready, nil
}

// peer measures peer bootstrap: the first edge (its replica complete)
// is restarted as a PoP member with the fleet secret, and a fresh edge
// joins its gossip and takes its Pebble checkpoint. The fresh edge's
// start to /readyz and to the whole stream, the transfer, and its digest
// against the first edge's. Then the first edge's redirects with wrk, a
// run alone and a run during which another fresh edge (niced, pinned to
// the load generator's core) takes its checkpoint.
func (h *harness) peer() error {
	secret := filepath.Join(h.cfg.WorkDir, "peer.secret")
	if err := os.WriteFile(secret, []byte("bench-peer-secret-0123456789abcdef\n"), 0o600); err != nil {
		return err
	}
	gossip, err := freeAddr()
	if err != nil {
		return err
	}
	pr := &PeerReport{Links: len(h.data.codes), LoadAvgStart: loadAvg()}
	h.rep.Peer = pr
	defer func() { pr.LoadAvgEnd = loadAvg() }()
	h.log.Info("peer: first edge restarted as a PoP member with the fleet secret")
	e, _, err := h.restartReady("-gossip-bind", gossip, "-peer-secret-file", secret)
	if err != nil {
		return err
	}
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	args := []string{"-gossip-bind", "127.0.0.1:0", "-gossip-join", gossip, "-peer-secret-file", secret, "-warm-entries", "-1"}
	fresh := func(name string, cpu int, nice bool) (*edgeProc, error) {
		dir := filepath.Join(h.cfg.WorkDir, name)
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if !nice {
			return h.startEdge(name, dir, cpu, args...)
		}
		return h.startEdgeNice(name, dir, cpu, args...)
	}

	h.log.Info("peer: fresh edge takes the first edge's checkpoint")
	begin := time.Now()
	b, err := fresh("edge-peer", -1, false)
	if err != nil {
		return err
	}
	ready, caught, err := h.waitEdge(h.ctx, b, begin, last, 30*time.Minute)
	if err != nil {
		return fmt.Errorf("peer bootstrap: %w", err)
	}
	pr.ReadySeconds, pr.CaughtUpSeconds = ready.Seconds(), caught.Seconds()
	if pr.Result, pr.TransferSeconds, err = h.peerResult(b); err != nil {
		return err
	}
	if pr.Result != "peer" {
		return fmt.Errorf("the fresh edge did not bootstrap from its peer: %s", pr.Result)
	}
	ed, err1 := h.digest(e)
	bd, err2 := h.digest(b)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("digest: %v %v", err1, err2)
	}
	pr.PeerDigest, pr.FreshDigest, pr.DigestLinks = ed.Sum, bd.Sum, bd.Links
	pr.DigestEqual = ed.Sum == bd.Sum && ed.Links == bd.Links && ed.Applied == bd.Applied
	pr.ReplicaBytes = dirBytes(filepath.Join(b.data, "replica"))
	b.stop()
	if !pr.DigestEqual {
		return fmt.Errorf("digest of the bootstrapped replica %s (%d links at %d), its peer's %s (%d at %d)",
			bd.Sum, bd.Links, bd.Applied, ed.Sum, ed.Links, ed.Applied)
	}

	if h.wrk == "" {
		return nil
	}
	conns, dist := h.cfg.Connections[0], h.cfg.Distributions[0]
	d := max(h.cfg.Duration, time.Duration(pr.TransferSeconds*2*float64(time.Second))+2*time.Second).Round(time.Second)
	h.log.Info("peer: the first edge's redirects alone", "seconds", d.Seconds())
	if pr.ServeIdle, err = h.measure(&e.server, dist, conns, 0, 0, d); err != nil {
		return err
	}
	h.log.Info("peer: the first edge's redirects while it ships a checkpoint", "seconds", d.Seconds())
	job, err := h.startWrk(wrkJob{url: e.url(), paths: h.paths[dist], conns: conns, duration: d})
	if err != nil {
		return err
	}
	pids := e.pids()
	cpu0 := cpuSeconds(pids)
	// wrk loads its request stream before it starts the clock: give it
	// a moment, so the transfer falls inside the run.
	time.Sleep(time.Second) // a head start of the load, not a wait for a condition
	c, err := fresh("edge-peer-2", h.cfg.LoadCPU, true)
	if err != nil {
		return err
	}
	res, werr := job.wait(h.ctx, d+time.Minute)
	cpu := cpuSeconds(pids) - cpu0
	if werr != nil {
		return werr
	}
	if _, _, err := h.waitEdge(h.ctx, c, begin, last, 30*time.Minute); err != nil {
		return fmt.Errorf("second peer bootstrap: %w", err)
	}
	var result string
	if result, pr.ShippingTransferSeconds, err = h.peerResult(c); err != nil || result != "peer" {
		return fmt.Errorf("second fresh edge: %q, %v", result, err)
	}
	c.stop()
	pr.ServeShipping = RedirectRun{Distribution: dist, Connections: conns, System: SysLinkpop + " shipping a checkpoint",
		RPS: res.RPS(), P50US: res.LatencyUS.P50, P99US: res.LatencyUS.P99, P999US: res.LatencyUS.P999,
		StatusErrors: res.Errors.Status, SocketErrors: res.SocketErrors(), LoadCPUCores: res.LoadCores(),
		Memory: readMemory(pids), Wrk: res}
	if res.DurationUS > 0 {
		pr.ServeShipping.CPUCores = cpu / (float64(res.DurationUS) / 1e6)
	}
	if res.Requests > 0 {
		pr.ServeShipping.CPUMicrosPerRequest = cpu * 1e6 / float64(res.Requests)
	}
	if pr.ServeIdle.RPS > 0 {
		pr.RatioShippingRPS = pr.ServeShipping.RPS / pr.ServeIdle.RPS
	}
	return nil
}

// peerResult reads how a fresh edge got its replica
// (linkpop_edge_peer_bootstrap_total's result) and the transfer's seconds.
func (h *harness) peerResult(e *edgeProc) (string, float64, error) {
	code, body, err := e.adminGet("/metrics")
	if err != nil || code != 200 {
		return "", 0, fmt.Errorf("metrics: %d %v", code, err)
	}
	result, took := "none seen", 0.0
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, `linkpop_edge_peer_bootstrap_total{result="`); ok {
			if name, n, ok := strings.Cut(v, `"} `); ok && n != "0" {
				result = name
			}
		}
		if v, ok := strings.CutPrefix(l, "linkpop_edge_peer_bootstrap_seconds "); ok {
			took, _ = strconv.ParseFloat(v, 64)
		}
	}
	return result, took, nil
}

// digest is an edge's admin GET /digest.
func (h *harness) digest(e *edgeProc) (client.EdgeDigest, error) {
	// A digest reads every link: at 10M that is well past the 5 s of
	// the harness's client.
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.admin+"/digest", nil)
	if err != nil {
		return client.EdgeDigest{}, err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return client.EdgeDigest{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	code := resp.StatusCode
	if err != nil {
		return client.EdgeDigest{}, err
	}
	if code != 200 {
		return client.EdgeDigest{}, fmt.Errorf("GET /digest: %d %s", code, body)
	}
	var d client.EdgeDigest
	return d, json.Unmarshal(body, &d)
}

// RestartReport is the restart section.
type RestartReport struct {
	Distribution  string  `json:"distribution"`
	Connections   int     `json:"connections"`
	WindowSeconds float64 `json:"window_seconds"`
	WarmEntries   string  `json:"warm_entries"`
	// TrainSeconds is the Zipf run before the rounds that ranks the hot
	// set the first warm restart loads.
	TrainSeconds float64        `json:"train_seconds"`
	Rounds       []RestartRound `json:"rounds"`
	// Medians over rounds of the ratios to bare302 in the same round and
	// of restart to /readyz.
	RatioWarm        float64 `json:"ratio_warm_to_bare302"`
	RatioCold        float64 `json:"ratio_cold_to_bare302"`
	WarmReadySeconds float64 `json:"warm_ready_seconds"`
	ColdReadySeconds float64 `json:"cold_ready_seconds"`
	LoadAvgStart     string  `json:"loadavg_start"`
	LoadAvgEnd       string  `json:"loadavg_end"`
}

// RestartRound is one round: a warm restart's first window, a cold
// restart's, bare302's.
type RestartRound struct {
	Round            int         `json:"round"`
	Warm             RedirectRun `json:"warm"`
	Cold             RedirectRun `json:"cold"`
	Bare302          RedirectRun `json:"bare302"`
	RatioWarm        float64     `json:"ratio_warm_to_bare302"`
	RatioCold        float64     `json:"ratio_cold_to_bare302"`
	WarmReadySeconds float64     `json:"warm_ready_seconds"`
	ColdReadySeconds float64     `json:"cold_ready_seconds"`
	// HotEntries are the hot cache's entries when the edge became ready.
	WarmHotEntries int `json:"warm_hot_entries"`
	ColdHotEntries int `json:"cold_hot_entries"`
}

// PeerReport is the peer section.
type PeerReport struct {
	Links int `json:"links"`
	// Result is the fresh edge's linkpop_edge_peer_bootstrap_total result
	// ("peer": it took the checkpoint).
	Result string `json:"result"`
	// ReadySeconds and CaughtUpSeconds: the fresh edge's start to
	// /readyz 200 and to the whole stream applied; TransferSeconds its
	// linkpop_edge_peer_bootstrap_seconds (gossip join to the checkpoint
	// installed).
	ReadySeconds    float64 `json:"ready_seconds"`
	CaughtUpSeconds float64 `json:"caught_up_seconds"`
	TransferSeconds float64 `json:"transfer_seconds"`
	ReplicaBytes    int64   `json:"replica_bytes"`
	DigestEqual     bool    `json:"digest_equal"`
	PeerDigest      string  `json:"peer_digest"`
	FreshDigest     string  `json:"fresh_digest"`
	DigestLinks     uint64  `json:"digest_links"`
	// ServeIdle and ServeShipping are the peer's redirects alone and
	// while a second fresh edge (niced, on the load generator's core)
	// takes its checkpoint (ShippingTransferSeconds of the run).
	ServeIdle               RedirectRun `json:"serve_idle"`
	ServeShipping           RedirectRun `json:"serve_shipping"`
	ShippingTransferSeconds float64     `json:"shipping_transfer_seconds"`
	RatioShippingRPS        float64     `json:"ratio_shipping_to_idle_rps"`
	LoadAvgStart            string      `json:"loadavg_start"`
	LoadAvgEnd              string      `json:"loadavg_end"`
}
