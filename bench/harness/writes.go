package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/client"
)

// originProc is a running bin/origin.
type originProc struct {
	p      *proc
	api    string // http://host:port
	admin  string // host:port
	key    string
	client *client.Client
}

// startOrigin starts bin/origin against the harness's stream with its
// store on disk.
func (h *harness) startOrigin() (*originProc, error) {
	if h.origin != nil {
		return h.origin, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var kb [24]byte
	if _, err := rand.Read(kb[:]); err != nil {
		return nil, err
	}
	key := "bench-" + hex.EncodeToString(kb[:])
	p, err := h.start("origin", -1, nil, filepath.Join(h.cfg.BinDir, "origin"),
		"-listen", addr, "-admin", admin, "-data", filepath.Join(h.cfg.WorkDir, "origin"),
		"-nats", h.natsURL, "-admin-key", key, "-log-level", "warn")
	if err != nil {
		return nil, err
	}
	o := &originProc{p: p, api: "http://" + addr, admin: admin, key: key}
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	err = waitFor(h.ctx, p, 2*time.Minute, 10*time.Millisecond, "origin /readyz", func() bool {
		resp, err := probe.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, err
	}
	o.client, err = client.New(client.Config{
		BaseURL:     o.api,
		Key:         key,
		HTTPClient:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512}},
		MaxAttempts: 1, // a benchmark counts refusals, it does not hide them
		UserAgent:   "linkpop-bench",
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, err
	}
	h.origin = o
	return o, nil
}

// create creates a link to url and returns its code and the answer's
// status (0 when there was none).
func (o *originProc) create(ctx context.Context, url string) (string, int, error) {
	l, err := o.client.CreateLink(ctx, client.CreateLink{URL: url}, client.CreateOptions{})
	if err != nil {
		return "", apiStatus(err), fmt.Errorf("create: %w", err)
	}
	return l.Code, http.StatusCreated, nil
}

// apiStatus is the HTTP status of an API error, 0 for no answer.
func apiStatus(err error) int {
	var ae *client.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// writes measures creates/s at each concurrency, every create
// acknowledged only once synced: through the origin API (and how long the
// relay then needs to get the run's events into the stream), and through
// the reference architecture's INSERT when it runs. The systems alternate
// within each round, the first rotating from round to round.
func (h *harness) writes() error {
	o, err := h.startOrigin()
	if err != nil {
		return err
	}
	w := &WritesReport{LoadAvgStart: loadAvg()}
	h.rep.Writes = w
	defer func() { w.LoadAvgEnd = loadAvg() }()
	systems := []string{SysLinkpop}
	if h.redispg == nil && h.cfg.system(SysRedisPG) {
		// The redirect section did not run (or skipped it): start it here.
		info := SystemInfo{Name: SysRedisPG}
		rp, err := h.startRedisPG(&info)
		if err != nil {
			w.Skipped = map[string]string{SysRedisPG: err.Error()}
			h.log.Warn("writes: reference not measured", "err", err)
		} else {
			h.redispg = rp
		}
	}
	if h.redispg != nil {
		systems = append(systems, SysRedisPG)
		w.RedisPGPIDs = "app + Redis + every PostgreSQL process"
	}
	refClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 512}}
	defer refClient.CloseIdleConnections()
	var seq int64
	for round := range h.cfg.Rounds {
		for _, conc := range h.cfg.WriteConcurrency {
			order := slices.Clone(systems)
			k := (round + len(w.Runs)) % len(order)
			order = append(order[k:], order[:k]...)
			for _, sys := range order {
				h.log.Info("writes", "system", sys, "concurrency", conc, "round", round+1)
				run, err := h.writeRun(o, refClient, sys, conc, round, &seq)
				if err != nil {
					return err
				}
				w.Runs = append(w.Runs, run)
			}
		}
	}
	w.Summary = summarizeWrites(w.Runs)
	w.RelayMetrics = o.relayMetrics()
	return nil
}

// writeRun is one timed run of conc clients creating on sys.
func (h *harness) writeRun(o *originProc, refClient *http.Client, sys string, conc, round int, seq *int64) (WriteRun, error) {
	run := WriteRun{System: sys, Concurrency: conc, Round: round, Statuses: map[string]int{}}
	var (
		pids      []int
		seq0      uint64
		batches0  histSums
		createOne func(url string) int
	)
	switch sys {
	case SysLinkpop:
		var err error
		if seq0, err = h.lastSeq(); err != nil {
			return run, err
		}
		pids = procTree(o.p.pid())
		batches0 = o.batchSizes()
		createOne = func(url string) int {
			_, st, _ := o.create(h.ctx, url)
			return st
		}
	case SysRedisPG:
		rp := h.redispg
		pids = rp.pids()
		createOne = func(url string) int { return rp.create(h.ctx, refClient, url) }
	}
	var (
		mu   sync.Mutex
		lats []float64
		wg   sync.WaitGroup
	)
	cpu0 := cpuSeconds(pids)
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.WriteDuration)
	begin := time.Now()
	var lastAck time.Time
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				*seq++
				url := fmt.Sprintf("https://example.com/w/%d", *seq)
				mu.Unlock()
				t0 := time.Now()
				st := createOne(url)
				t1 := time.Now()
				mu.Lock()
				switch {
				case st == http.StatusCreated:
					run.Created++
					lats = append(lats, float64(t1.Sub(t0).Microseconds())/1e3)
					if t1.After(lastAck) {
						lastAck = t1
					}
					run.Statuses["201"]++
				case st != 0:
					run.Statuses[strconv.Itoa(st)]++
				default:
					run.Statuses["error"]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	cancel()
	run.Seconds = time.Since(begin).Seconds()
	cpu := cpuSeconds(pids) - cpu0
	run.PerSecond = float64(run.Created) / run.Seconds
	run.CPUCores = cpu / run.Seconds
	if run.Created > 0 {
		run.CPUMicrosPerCreate = cpu * 1e6 / float64(run.Created)
	}
	run.Memory = readMemory(pids)
	p := percentiles(lats)
	run.P50Ms, run.P99Ms, run.MaxMs = p.P50Ms, p.P99Ms, p.MaxMs
	if sys != SysLinkpop {
		return run, nil
	}
	if b := o.batchSizes(); b.count > batches0.count {
		run.CreatesPerCommit = (b.sum - batches0.sum) / (b.count - batches0.count)
	}
	// Every acknowledged create is one event in the stream.
	want := seq0 + uint64(run.Created)
	err := waitFor(h.ctx, o.p, 5*time.Minute, time.Millisecond, "relay to publish the run's events", func() bool {
		last, err := h.lastSeq()
		return err == nil && last >= want
	})
	if err != nil {
		return run, err
	}
	if !lastAck.IsZero() {
		run.DrainMs = float64(time.Since(lastAck).Microseconds()) / 1e3
	}
	return run, nil
}

// summarizeWrites takes medians over rounds per system and concurrency,
// and the ratio of linkpop's creates/s to the reference's in each round.
func summarizeWrites(runs []WriteRun) []WriteSummary {
	type key struct {
		sys  string
		conc int
	}
	type rk struct {
		conc, round int
	}
	lp := map[rk]WriteRun{}
	var keys []key
	for _, r := range runs {
		k := key{r.System, r.Concurrency}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		if r.System == SysLinkpop {
			lp[rk{r.Concurrency, r.Round}] = r
		}
	}
	slices.SortStableFunc(keys, func(a, b key) int { return a.conc - b.conc })
	var out []WriteSummary
	for _, k := range keys {
		s := WriteSummary{System: k.sys, Concurrency: k.conc, Statuses: map[string]int{}}
		var ps, p50, p99, cpu, cpuReq, ratio, perCommit, drain []float64
		for _, r := range runs {
			if r.System != k.sys || r.Concurrency != k.conc {
				continue
			}
			s.Rounds++
			ps = append(ps, r.PerSecond)
			p50 = append(p50, r.P50Ms)
			p99 = append(p99, r.P99Ms)
			cpu = append(cpu, r.CPUCores)
			cpuReq = append(cpuReq, r.CPUMicrosPerCreate)
			perCommit = append(perCommit, r.CreatesPerCommit)
			drain = append(drain, r.DrainMs)
			s.RSS = max(s.RSS, r.Memory.RSS)
			s.PSS = max(s.PSS, r.Memory.PSS)
			for st, n := range r.Statuses {
				s.Statuses[st] += n
			}
			if l, ok := lp[rk{r.Concurrency, r.Round}]; ok && r.PerSecond > 0 {
				ratio = append(ratio, l.PerSecond/r.PerSecond)
			}
		}
		s.PerSecond, s.P50Ms, s.P99Ms = median(ps), median(p50), median(p99)
		s.CPUCores, s.CPUMicrosPerCreate = median(cpu), median(cpuReq)
		s.CreatesPerCommit, s.DrainMs = median(perCommit), median(drain)
		if k.sys != SysLinkpop {
			s.LinkpopRatio = median(ratio)
		}
		out = append(out, s)
	}
	return out
}

// histSums are a histogram's _sum and _count.
type histSums struct{ sum, count float64 }

// batchSizes reads the store's group-commit batch histogram: creates per
// commit, and a commit is one fsync.
func (o *originProc) batchSizes() histSums {
	var hs histSums
	for _, line := range o.metricLines() {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "linkpop_store_commit_batch_size_sum":
			hs.sum = v
		case "linkpop_store_commit_batch_size_count":
			hs.count = v
		}
	}
	return hs
}

// metricLines are the origin's /metrics lines without comments.
func (o *originProc) metricLines() []string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + o.admin + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// relayMetrics returns the origin's metric lines about its relay and
// outbox.
func (o *originProc) relayMetrics() []string {
	var out []string
	for _, line := range o.metricLines() {
		if strings.Contains(line, "relay") || strings.Contains(line, "outbox") {
			out = append(out, line)
		}
	}
	return out
}
