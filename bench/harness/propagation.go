package harness

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// pollInterval is the pause between two polls of an edge for one link.
const pollInterval = time.Millisecond

// propagation creates links through the origin API and times each to its
// first 302 on every edge, then deactivates them and times each to its
// first 410, while wrk loads the edges.
func (h *harness) propagation() error {
	o, err := h.startOrigin()
	if err != nil {
		return err
	}
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	h.log.Info("propagation: starting a second, fresh edge")
	begin := time.Now()
	e2, err := h.startEdge("edge-2", filepath.Join(h.cfg.WorkDir, "edge-2"), -1)
	if err != nil {
		return err
	}
	ready, caught, err := h.waitEdge(h.ctx, e2, begin, last, 30*time.Minute)
	if err != nil {
		return err
	}
	if h.rep.Bootstrap != nil {
		h.rep.Bootstrap.SecondEdgeReadySeconds = ready.Seconds()
		h.rep.Bootstrap.SecondEdgeCaughtUpSeconds = caught.Seconds()
	}
	edges := []*edgeProc{h.edge1, e2}
	pr := &PropagationReport{Links: h.cfg.PropagationLinks, Edges: len(edges), Workers: h.cfg.PropagationWorkers, Load: "none"}
	h.rep.Propagation = pr

	var loads []*wrkRun
	if h.wrk != "" && h.cfg.PropagationLoadConnections > 0 {
		pr.Load = fmt.Sprintf("wrk, %d connections of uniform known codes on each edge", h.cfg.PropagationLoadConnections)
		for _, e := range edges {
			w, err := h.startWrk(wrkJob{url: e.url(), paths: h.paths[DistUniform], conns: h.cfg.PropagationLoadConnections})
			if err != nil {
				return err
			}
			loads = append(loads, w)
		}
	} else if h.wrk == "" {
		pr.Load = "none (wrk not found)"
	}
	stopLoads := func() {
		for _, w := range loads {
			if r, err := w.stop(); err == nil {
				pr.LoadRuns = append(pr.LoadRuns, r)
			}
		}
		loads = nil
	}
	defer stopLoads()

	addrs := make([]string, len(edges))
	for i, e := range edges {
		addrs[i] = e.addr
	}
	n := h.cfg.PropagationLinks
	codes := make([]string, n)
	createMs := make([][]float64, n)
	h.log.Info("propagation: creates", "links", n)
	failures := h.fanOut(n, func(i int) error {
		url := fmt.Sprintf("https://example.com/p/%d", i)
		code, _, err := o.create(h.ctx, url)
		if err != nil {
			return err
		}
		t0 := time.Now()
		codes[i] = code
		ms, err := h.pollEdges(addrs, code, 302, url, t0)
		createMs[i] = ms
		return err
	})
	pr.Failures = append(pr.Failures, failures...)

	h.log.Info("propagation: deactivations", "links", n)
	disableMs := make([][]float64, n)
	failures = h.fanOut(n, func(i int) error {
		if codes[i] == "" {
			return nil
		}
		if _, err := o.client.DisableLink(h.ctx, codes[i], 0); err != nil {
			return fmt.Errorf("deactivate %s: %w", codes[i], err)
		}
		t0 := time.Now()
		ms, err := h.pollEdges(addrs, codes[i], 410, "", t0)
		disableMs[i] = ms
		return err
	})
	pr.Failures = append(pr.Failures, failures...)
	stopLoads()
	pr.Create = latencyStats(edges, createMs)
	pr.Deactivate = latencyStats(edges, disableMs)
	if len(pr.Failures) > 10 {
		pr.Failures = append(pr.Failures[:10], fmt.Sprintf("… %d more", len(pr.Failures)-10))
	}
	return nil
}

// fanOut runs fn for 0..n-1 on PropagationWorkers goroutines and returns
// the errors.
func (h *harness) fanOut(n int, fn func(i int) error) []string {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	for range h.cfg.PropagationWorkers {
		wg.Go(func() {
			for h.ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// pollEdges asks every edge for code until each answers want (and, for
// redirects, the right Location), and returns per edge the milliseconds
// from t0 to that answer.
func (h *harness) pollEdges(addrs []string, code string, want int, loc string, t0 time.Time) ([]float64, error) {
	ms := make([]float64, len(addrs))
	pending := len(addrs)
	seen := make([]bool, len(addrs))
	deadline := t0.Add(time.Minute)
	for pending > 0 {
		for i, addr := range addrs {
			if seen[i] {
				continue
			}
			st, l, _, err := h.get("http://" + addr + "/" + code)
			if err == nil && st == want && (loc == "" || l == loc) {
				seen[i] = true
				pending--
				ms[i] = float64(time.Since(t0).Microseconds()) / 1e3
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not %d on every edge after %v", code, want, time.Minute)
		}
		select {
		case <-h.ctx.Done():
			return nil, h.ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return ms, nil
}

func latencyStats(edges []*edgeProc, perLink [][]float64) LatencyStats {
	ls := LatencyStats{PerEdge: map[string]Percentiles{}}
	var all []float64
	per := make([][]float64, len(edges))
	for _, ms := range perLink {
		if ms == nil {
			continue
		}
		worst := 0.0
		for i, v := range ms {
			per[i] = append(per[i], v)
			worst = max(worst, v)
		}
		all = append(all, worst)
	}
	ls.All = percentiles(all)
	for i, e := range edges {
		ls.PerEdge[e.name] = percentiles(per[i])
	}
	return ls
}
