package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// verifySample is how many known and unknown codes the correctness check
// requests from each system.
const verifySample = 200

// redirect is the side-by-side comparison: every system serves the same
// links and is measured with the same wrk script, in alternated rounds.
func (h *harness) redirect() error {
	if h.wrk == "" {
		return fmt.Errorf("wrk not found: %w", errSkipped)
	}
	r := &RedirectReport{LoadAvgStart: loadAvg()}
	defer func() { r.LoadAvgEnd = loadAvg() }()
	h.rep.Redirect = r
	var servers []*server
	// linkpop's edge and the reference architecture stay up for later
	// sections; the harness stops them at the end.
	keep := func(s *server) bool { return s.name == SysLinkpop || s.name == SysRedisPG }
	defer func() {
		for _, s := range servers {
			if !keep(s) {
				s.stop()
			}
		}
	}()
	for _, name := range h.cfg.Systems {
		info := SystemInfo{Name: name}
		s, err := h.startSystem(&info)
		if err != nil {
			info.Skipped = err.Error()
			h.log.Warn("system not measured", "system", name, "err", err)
		} else {
			info.MemoryLoaded = readMemory(s.pids())
			info.Verify, info.VerifyErrors = h.verify(s)
			if len(info.VerifyErrors) > 0 {
				info.Skipped = "wrong answers: " + info.VerifyErrors[0]
				if s.name == SysRedisPG {
					h.redispg = nil
				}
				if s.name != SysLinkpop {
					s.stop()
				}
			} else {
				servers = append(servers, s)
			}
		}
		r.Systems = append(r.Systems, info)
	}
	if len(servers) == 0 {
		return fmt.Errorf("no system could be measured")
	}

	m := h.cfg.PathsPerFile
	for _, dist := range h.cfg.Distributions {
		if h.cfg.Warmup > 0 {
			for _, s := range servers {
				h.log.Info("warm-up", "dist", dist, "system", s.name)
				if err := h.warmup(r, s, dist); err != nil {
					return err
				}
			}
		}
		for _, conns := range h.cfg.Connections {
			for round := range h.cfg.Rounds {
				// Rotate the order so no system always runs first.
				order := slices.Clone(servers)
				k := round % len(order)
				order = append(order[k:], order[:k]...)
				offset := round * (m / h.cfg.Rounds)
				for _, s := range order {
					h.log.Info("run", "dist", dist, "conns", conns, "round", round+1, "system", s.name)
					run, err := h.measure(s, dist, conns, round, offset, h.cfg.Duration)
					if err != nil {
						return err
					}
					r.Runs = append(r.Runs, run)
				}
			}
		}
	}
	r.Summary = summarize(r.Runs)
	h.footprint()
	var bare *server
	for _, s := range servers {
		if s.name == SysBare302 {
			bare = s
		}
		if !slices.Contains(profileSystems, s.name) || r.ProfileSkipped != "" {
			continue
		}
		h.log.Info("profile", "system", s.name)
		pr, err := h.profile(s, h.cfg.Distributions[0], slices.Max(h.cfg.Connections))
		if err != nil {
			r.ProfileSkipped = err.Error()
			continue
		}
		r.Profiles = append(r.Profiles, pr)
	}
	if bare != nil && slices.ContainsFunc(servers, func(s *server) bool { return s.name == SysLinkpop }) {
		return h.cold(r, bare)
	}
	return nil
}

// warmup brings s to its steady state before the measured rounds of
// dist: a short run for every system, and for linkpop as many more
// seconds as it takes to walk the rest of the request stream once, so its
// hot cache holds every code the rounds ask for (nginx and golink have no
// per-link cache to fill). Warm-up runs are kept in the report with round
// -1 and left out of every median.
func (h *harness) warmup(r *RedirectReport, s *server, dist string) error {
	conns := h.cfg.Connections[0]
	run, err := h.measure(s, dist, conns, -1, 0, h.cfg.Warmup)
	if err != nil {
		return err
	}
	r.Runs = append(r.Runs, run)
	left := int64(h.cfg.PathsPerFile) - run.Wrk.Requests
	if !cachesPerLink(s.name) || left <= 0 || run.RPS <= 0 {
		return nil
	}
	d := time.Duration(float64(left) / run.RPS * float64(time.Second))
	d = min(max(d.Round(time.Second), time.Second), maxWarmWalk)
	run, err = h.measure(s, dist, conns, -1, int(run.Wrk.Requests), d)
	if err != nil {
		return err
	}
	r.Runs = append(r.Runs, run)
	return nil
}

// cachesPerLink reports whether a system fills a per-link cache as it is
// asked (linkpop's hot cache, the reference's Redis), so its warm-up walks
// the whole request stream.
func cachesPerLink(name string) bool {
	return name == SysLinkpop || name == SysLinkpopAnalytics || name == SysLinkpopBase || name == SysRedisPG
}

// maxWarmWalk bounds linkpop's walk of a request stream during warm-up.
const maxWarmWalk = 2 * time.Minute

// cold measures the edge right after a restart, its hot cache and Pebble
// block cache empty: the first requests for each code miss the hot cache
// and are read from the replica. bare302 runs right after, for the ratio.
// Then the same again under perf, for the profile of the miss path.
func (h *harness) cold(r *RedirectReport, bare *server) error {
	conns := h.cfg.Connections[0]
	restart := func() (*server, error) {
		last, err := h.lastSeq()
		if err != nil {
			return nil, err
		}
		begin := time.Now()
		// Without its hot set: every code a first touch.
		e, err := h.restartEdge(h.edge1, noWarm...)
		if err != nil {
			return nil, err
		}
		if _, _, err := h.waitEdge(h.ctx, e, begin, last, 10*time.Minute); err != nil {
			return nil, err
		}
		s := e.server
		s.name = SysLinkpop
		return &s, nil
	}
	h.log.Info("cold: edge restarted, every code a first touch")
	s, err := restart()
	if err != nil {
		return err
	}
	c := &ColdReport{Distribution: DistUniform, Connections: conns}
	if c.Linkpop, err = h.measure(s, DistUniform, conns, 0, 0, h.cfg.Duration); err != nil {
		return err
	}
	if c.Bare302, err = h.measure(bare, DistUniform, conns, 0, 0, h.cfg.Duration); err != nil {
		return err
	}
	if c.Bare302.RPS > 0 {
		c.RatioRPS = c.Linkpop.RPS / c.Bare302.RPS
	}
	if rp := h.redispg; rp != nil {
		h.log.Info("cold: Redis flushed, every code a miss to PostgreSQL")
		if err := rp.flushRedis(); err != nil {
			return fmt.Errorf("cold redis-pg: %w", err)
		}
		run, err := h.measure(rp.server(), DistUniform, conns, 0, 0, h.cfg.Duration)
		if err != nil {
			return err
		}
		c.RedisPG = &run
		if c.Bare302.RPS > 0 {
			c.RatioRedisPG = run.RPS / c.Bare302.RPS
		}
	}
	r.Cold = c
	if r.ProfileSkipped != "" {
		return nil
	}
	if s, err = restart(); err != nil {
		return err
	}
	pr, err := h.profile(s, DistUniform, conns)
	if err != nil {
		r.ProfileSkipped = err.Error()
		return nil
	}
	pr.System = SysLinkpop + ", restarted (hot cache empty)"
	r.Profiles = append(r.Profiles, pr)
	return nil
}

// startBaseEdge starts the other edge build on a fresh replica and waits
// until it has the whole stream.
func (h *harness) startBaseEdge(info *SystemInfo) (*server, error) {
	var extra []string
	if h.cfg.BaseAnalytics {
		keyFile, err := h.analyticsKeyFile()
		if err != nil {
			return nil, err
		}
		extra = append(extra, "-analytics-key-file", keyFile)
	}
	begin := time.Now()
	e, err := h.startEdgeBin(h.cfg.BaseEdge, "edge-base", filepath.Join(h.cfg.WorkDir, "edge-base"), h.cfg.ServerCPU, extra...)
	if err != nil {
		return nil, err
	}
	_, caught, err := h.waitEdge(h.ctx, e, begin, h.rep.Bootstrap.StreamLastSeq, 30*time.Minute)
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("base edge: %w", err)
	}
	info.LoadSeconds = h.rep.Bootstrap.PublishSeconds + caught.Seconds()
	info.StartSeconds = caught.Seconds()
	s := e.server
	s.name = SysLinkpopBase
	return &s, nil
}

// analyticsKeyFile writes the analytics edges' key file and returns its
// path.
func (h *harness) analyticsKeyFile() (string, error) {
	keyFile := filepath.Join(h.cfg.WorkDir, "analytics.key")
	return keyFile, os.WriteFile(keyFile, []byte("bench-analytics-key-0123456789abcdef\n"), 0o600)
}

// startAnalyticsEdge starts an edge with click analytics on a fresh
// replica and waits until it has the whole stream.
func (h *harness) startAnalyticsEdge(info *SystemInfo) (*server, error) {
	keyFile, err := h.analyticsKeyFile()
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	e, err := h.startEdge("edge-analytics", filepath.Join(h.cfg.WorkDir, "edge-analytics"), h.cfg.ServerCPU, "-analytics-key-file", keyFile)
	if err != nil {
		return nil, err
	}
	_, caught, err := h.waitEdge(h.ctx, e, begin, h.rep.Bootstrap.StreamLastSeq, 30*time.Minute)
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("analytics edge: %w", err)
	}
	info.LoadSeconds = h.rep.Bootstrap.PublishSeconds + caught.Seconds()
	info.StartSeconds = caught.Seconds()
	s := e.server
	s.name = SysLinkpopAnalytics
	return &s, nil
}

// startSystem starts one system with every link loaded and fills in how.
func (h *harness) startSystem(info *SystemInfo) (*server, error) {
	n := len(h.data.codes)
	switch info.Name {
	case SysLinkpop:
		info.Description = "linkpop edge (bin/edge): links published to the change stream with replication.Publisher, replayed by a fresh edge into its Pebble replica"
		info.LoadSeconds = h.rep.Bootstrap.PublishSeconds + h.rep.Bootstrap.CaughtUpSeconds
		info.StartSeconds = h.rep.Bootstrap.CaughtUpSeconds
		info.Notes = append(info.Notes,
			fmt.Sprintf("publish %.1f s (%.0f/s), fresh edge to /readyz %.1f s, to the whole stream applied %.1f s; start_seconds is the fresh bootstrap (a restart with its replica: see bootstrap)",
				h.rep.Bootstrap.PublishSeconds, h.rep.Bootstrap.PublishPerSecond, h.rep.Bootstrap.ReadySeconds, h.rep.Bootstrap.CaughtUpSeconds))
		s := h.edge1.server
		s.name = SysLinkpop
		return &s, nil
	case SysLinkpopAnalytics:
		info.Description = "the linkpop edge with click analytics on (-analytics-key-file): every redirect recorded, a batch a second shipped to LINKPOP_CLICKS; its own replica, bootstrapped from the same stream"
		return h.startAnalyticsEdge(info)
	case SysBare302:
		info.Description = "bare fasthttp server answering every request with the same 302 (bench/cmd/bare302): the ceiling"
		begin := time.Now()
		s, err := h.startBare302()
		info.StartSeconds = time.Since(begin).Seconds()
		return s, err
	case SysNginx:
		if h.nginx == "" {
			return nil, fmt.Errorf("nginx not found")
		}
		info.Description = fmt.Sprintf("%s, worker_processes 1, map $uri of %d links, return 302, access_log off, keepalive_requests 1000000", h.rep.Machine.Nginx, n)
		dir := filepath.Join(h.cfg.WorkDir, "nginx")
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		begin := time.Now()
		conf, err := h.writeNginxConfig(dir, addr)
		if err != nil {
			return nil, err
		}
		gen := time.Since(begin)
		s, took, err := h.startNginx(dir, addr, conf)
		if err != nil {
			return nil, err
		}
		info.StartSeconds = took.Seconds()
		info.LoadSeconds = (gen + took).Seconds()
		info.Notes = append(info.Notes, fmt.Sprintf("map file written in %.1f s; nginx builds the map hash on every start", gen.Seconds()))
		return s, nil
	case SysLinkpopBase:
		info.Description = "another build of the edge (" + h.cfg.BaseEdge + "), its own replica bootstrapped from the same stream: the A/B of a hot-path change"
		if h.cfg.BaseAnalytics {
			info.Description += "; click analytics on, as linkpop-analytics"
		}
		return h.startBaseEdge(info)
	case SysRedisPG:
		rp, err := h.startRedisPG(info)
		if err != nil {
			return nil, err
		}
		h.redispg = rp
		return rp.server(), nil
	case SysGolink:
		if h.golink == "" {
			return nil, fmt.Errorf("golink binary not found (bench/run.sh builds it; BENCH_SKIP_GOLINK=1 skips it)")
		}
		info.Description = fmt.Sprintf("tailscale golink v1.0.0 -dev-listen (net/http, SQLite via modernc.org/sqlite), %d links imported with -snapshot", n)
		db, err := h.prepareGolink(info)
		if err != nil {
			return nil, err
		}
		s, took, err := h.startGolink(db)
		if err != nil {
			return nil, err
		}
		info.StartSeconds = took.Seconds()
		return s, nil
	}
	return nil, fmt.Errorf("unknown system %q", info.Name)
}

// verify requests a sample of known and unknown codes and checks every
// answer: the status mix, and the first wrong answers.
func (h *harness) verify(s *server) (map[string]int, []string) {
	mix := map[string]int{}
	var errs []string
	bad := func(format string, args ...any) {
		if len(errs) < 5 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	n := len(h.data.codes)
	step := max(n/verifySample, 1)
	check := func(code, wantLoc string, want int) {
		st, loc, _, err := h.get("http://" + s.addr + "/" + code)
		if err != nil {
			mix["error"]++
			bad("GET /%s: %v", code, err)
			return
		}
		mix[strconv.Itoa(st)]++
		switch {
		case st != want:
			bad("GET /%s: %d, want %d", code, st, want)
		case wantLoc != "" && loc != wantLoc:
			bad("GET /%s: Location %q, want %q", code, loc, wantLoc)
		}
	}
	for i := 0; i < n; i += step {
		want := h.data.targets[i]
		if s.name == SysBare302 {
			want = ""
		}
		check(h.data.codes[i], want, 302)
	}
	for range verifySample / 4 {
		want := 404
		if s.name == SysBare302 {
			want = 302
		}
		check(h.data.unknownCode(), "", want)
	}
	return mix, errs
}

// measure runs wrk against s once and samples the server's CPU and
// memory.
func (h *harness) measure(s *server, dist string, conns, round, offset int, d time.Duration) (RedirectRun, error) {
	if err := h.ctx.Err(); err != nil {
		return RedirectRun{}, err
	}
	pids := s.pids()
	cpu0 := cpuSeconds(pids)
	res, err := h.runWrk(wrkJob{url: s.url(), paths: h.paths[dist], offset: offset, conns: conns, duration: d})
	if err != nil {
		return RedirectRun{}, fmt.Errorf("%s %s c=%d: %w", s.name, dist, conns, err)
	}
	cpu := cpuSeconds(pids) - cpu0
	run := RedirectRun{
		Distribution: dist, Connections: conns, Round: round, System: s.name,
		RPS: res.RPS(), P50US: res.LatencyUS.P50, P99US: res.LatencyUS.P99, P999US: res.LatencyUS.P999,
		StatusErrors: res.Errors.Status, SocketErrors: res.SocketErrors(),
		LoadCPUCores: res.LoadCores(), Memory: readMemory(pids), Wrk: res,
	}
	if res.DurationUS > 0 {
		run.CPUCores = cpu / (float64(res.DurationUS) / 1e6)
	}
	if res.Requests > 0 {
		run.CPUMicrosPerRequest = cpu * 1e6 / float64(res.Requests)
	}
	return run, nil
}

// summarize takes medians over rounds and ratios to bare302 per round.
func summarize(runs []RedirectRun) []RedirectSummary {
	type key struct {
		dist  string
		conns int
	}
	type rk struct {
		key
		round int
	}
	bare := map[rk]RedirectRun{}
	lp := map[rk]RedirectRun{}
	var keys []key
	var systems []string
	for _, r := range runs {
		if r.Round < 0 {
			continue
		}
		k := key{r.Distribution, r.Connections}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		if !slices.Contains(systems, r.System) {
			systems = append(systems, r.System)
		}
		if r.System == SysBare302 {
			bare[rk{k, r.Round}] = r
		}
		if r.System == SysLinkpop {
			lp[rk{k, r.Round}] = r
		}
	}
	var out []RedirectSummary
	for _, k := range keys {
		for _, sys := range systems {
			var rps, p50, p99, p999, cpu, cpuReq, load, ratio, delta, cpuRatio, lpRatio []float64
			s := RedirectSummary{Distribution: k.dist, Connections: k.conns, System: sys}
			for _, r := range runs {
				if r.Round < 0 || r.System != sys || r.Distribution != k.dist || r.Connections != k.conns {
					continue
				}
				s.Rounds++
				rps = append(rps, r.RPS)
				p50 = append(p50, float64(r.P50US)/1e3)
				p99 = append(p99, float64(r.P99US)/1e3)
				p999 = append(p999, float64(r.P999US)/1e3)
				cpu = append(cpu, r.CPUCores)
				cpuReq = append(cpuReq, r.CPUMicrosPerRequest)
				load = append(load, r.LoadCPUCores)
				s.PeakRSS = max(s.PeakRSS, r.Memory.Peak)
				s.PSS = max(s.PSS, r.Memory.PSS)
				s.StatusErrors += r.StatusErrors
				s.SocketErrors += r.SocketErrors
				if l, ok := lp[rk{k, r.Round}]; ok && l.RPS > 0 {
					lpRatio = append(lpRatio, r.RPS/l.RPS)
				}
				if b, ok := bare[rk{k, r.Round}]; ok && b.RPS > 0 {
					ratio = append(ratio, r.RPS/b.RPS)
					delta = append(delta, float64(r.P99US-b.P99US)/1e3)
					if b.CPUMicrosPerRequest > 0 {
						cpuRatio = append(cpuRatio, r.CPUMicrosPerRequest/b.CPUMicrosPerRequest)
					}
				}
			}
			if s.Rounds == 0 {
				continue
			}
			s.RPS, s.P50Ms, s.P99Ms, s.P999Ms = median(rps), median(p50), median(p99), median(p999)
			s.CPUCores, s.CPUMicros, s.LoadCPUCores = median(cpu), median(cpuReq), median(load)
			s.RatioRPS, s.P99DeltaMs, s.RatioCPU = median(ratio), median(delta), median(cpuRatio)
			s.RatioLinkpop = median(lpRatio)
			out = append(out, s)
		}
	}
	return out
}
