package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/replication"
)

// ClicksReport is the click analytics section: what recording costs a
// redirect (the analytics edge against the same edge without analytics,
// in the redirect section's rounds), what a click costs on the wire, and
// how long a click takes to show in the stats API.
type ClicksReport struct {
	// Cost is per (distribution, connections) of the redirect section.
	Cost []ClickCost `json:"cost,omitempty"`
	// Flush is the edge's click flush interval (its default).
	Flush string `json:"flush"`
	// Loads are wrk runs against the analytics edge with the origin's
	// collector consuming the click stream, one per distribution: clicks
	// and bytes shipped, and click → stats latency measured meanwhile.
	Loads []ClickLoad `json:"loads"`
	// Idle is click → stats latency with no other traffic.
	Idle ClickLatency `json:"idle"`
}

// ClickCost compares linkpop-analytics with linkpop: medians over rounds
// of the per-round ratios (the two ran in the same round, back to back).
type ClickCost struct {
	Distribution string  `json:"distribution"`
	Connections  int     `json:"connections"`
	Rounds       int     `json:"rounds"`
	OnRPS        float64 `json:"analytics_rps"`
	OffRPS       float64 `json:"plain_rps"`
	OnCPUMicros  float64 `json:"analytics_cpu_us_per_request"`
	OffCPUMicros float64 `json:"plain_cpu_us_per_request"`
	// RatioRPS is analytics requests/s over plain requests/s (target ≥
	// 0.95); RatioCPU CPU time per request likewise (target ≤ 1.10).
	RatioRPS float64 `json:"ratio_rps"`
	RatioCPU float64 `json:"ratio_cpu_per_request"`
}

// ClickLoad is one wrk run against the analytics edge.
type ClickLoad struct {
	Distribution string  `json:"distribution"`
	Connections  int     `json:"connections"`
	Seconds      float64 `json:"seconds"`
	Requests     int64   `json:"requests"`
	RPS          float64 `json:"rps"`
	// ClicksShipped, Batches and Bytes are the edge's deltas over the run
	// (linkpop_edge_clicks_shipped_total, ..._click_batches_published_total,
	// ..._click_batch_bytes_published_total), read once its journal is
	// empty.
	ClicksShipped uint64  `json:"clicks_shipped"`
	Batches       uint64  `json:"batches"`
	Bytes         uint64  `json:"bytes"`
	BytesPerClick float64 `json:"bytes_per_click"`
	// Latency is click → stats sampled during the run.
	Latency ClickLatency `json:"latency"`
}

// ClickLatency is click → stats API: Visible from sending the redirect to
// the first GET /v1/links/{code}/stats whose clicks include it; Complete
// to the first whose complete_through is at or after the click.
type ClickLatency struct {
	Samples  int         `json:"samples"`
	Visible  Percentiles `json:"visible"`
	Complete Percentiles `json:"complete"`
	// Failures are samples that did not become visible within
	// clickWaitMax, or redirects that were not a 302.
	Failures []string `json:"failures,omitempty"`
}

// clickWaitMax bounds one click → stats wait; clickPoll is the stats poll
// interval (the latency's resolution).
const (
	clickWaitMax = 30 * time.Second
	clickPoll    = 20 * time.Millisecond
)

// clickUA is a browser User-Agent, so the sampled redirects count as
// clicks (not bots).
const clickUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

// clicks runs the click analytics section.
func (h *harness) clicks() error {
	r := &ClicksReport{Flush: "1s (the default)"}
	h.rep.Clicks = r
	if h.rep.Redirect != nil {
		r.Cost = clickCost(h.rep.Redirect.Runs)
	}
	// The redirect section's analytics edge shipped every click of its
	// rounds into the click stream while no collector ran: millions of
	// one-click code-minutes, which this section is not about. The stream
	// is emptied first and the section's edge starts on a fresh data
	// directory (a new journal instance, seq 1) under the same name, so no
	// other edge holds complete_through back.
	if err := h.purgeClicks(); err != nil {
		return err
	}
	o, err := h.startOrigin()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(h.cfg.WorkDir, "analytics.key")
	if err := os.WriteFile(keyFile, []byte("bench-analytics-key-0123456789abcdef\n"), 0o600); err != nil {
		return err
	}
	begin := time.Now()
	e, err := h.startEdge("edge-analytics", filepath.Join(h.cfg.WorkDir, "edge-clicks"), h.cfg.ServerCPU, "-analytics-key-file", keyFile)
	if err != nil {
		return err
	}
	defer e.stop()
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	if _, _, err := h.waitEdge(h.ctx, e, begin, last, 30*time.Minute); err != nil {
		return fmt.Errorf("analytics edge: %w", err)
	}

	// Links of the origin, one per sampling worker, redirecting on the edge.
	const workers = 8
	codes := make([]string, workers)
	for i := range codes {
		code, _, err := o.create(h.ctx, fmt.Sprintf("https://example.com/clicks/%d", i))
		if err != nil {
			return err
		}
		codes[i] = code
	}
	err = waitFor(h.ctx, e.p, 2*time.Minute, 10*time.Millisecond, "sampled links on the analytics edge", func() bool {
		for _, c := range codes {
			if st, _, _, err := h.get(e.url() + c); err != nil || st != http.StatusFound {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	// The checks above were clicks: wait until they are shipped and
	// complete in the stats, so every sample starts from a settled count.
	if err := h.drainClicks(e); err != nil {
		return err
	}
	settled := time.Now()
	err = waitFor(h.ctx, e.p, 5*time.Minute, 50*time.Millisecond, "the checks' clicks complete in the stats", func() bool {
		for _, c := range codes {
			st, err := o.client.Stats(h.ctx, c, client.StatsQuery{From: begin.Add(-time.Hour)})
			if err != nil || st.CompleteThrough == nil || st.CompleteThrough.Before(settled) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}

	samples := h.cfg.ClickSamples
	h.log.Info("clicks: idle latency", "samples", samples)
	r.Idle = h.sample(h.ctx, o, e, codes, samples)

	if h.wrk == "" {
		return nil // the load runs need wrk; the idle latency is measured
	}
	for _, dist := range h.cfg.Distributions {
		conns := h.cfg.Connections[0]
		h.log.Info("clicks: load", "dist", dist, "conns", conns)
		m0, err := e.clickMetrics()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(h.ctx)
		var lat ClickLatency
		var wg sync.WaitGroup
		wg.Go(func() { lat = h.sample(ctx, o, e, codes, -1) })
		t0 := time.Now()
		res, err := h.runWrk(wrkJob{url: e.url(), paths: h.paths[dist], offset: 0, conns: conns, duration: h.cfg.ClickLoadDuration})
		cancel()
		wg.Wait()
		if err != nil {
			return err
		}
		load := ClickLoad{Distribution: dist, Connections: conns, Seconds: time.Since(t0).Seconds(),
			Requests: res.Requests, RPS: res.RPS(), Latency: lat}
		if err := h.drainClicks(e); err != nil {
			return err
		}
		m1, err := e.clickMetrics()
		if err != nil {
			return err
		}
		load.ClicksShipped = m1.shipped - m0.shipped
		load.Batches = m1.batches - m0.batches
		load.Bytes = m1.bytes - m0.bytes
		if load.ClicksShipped > 0 {
			load.BytesPerClick = float64(load.Bytes) / float64(load.ClicksShipped)
		}
		r.Loads = append(r.Loads, load)
	}
	return nil
}

// clickCost pairs linkpop-analytics with linkpop round by round.
func clickCost(runs []RedirectRun) []ClickCost {
	type key struct {
		dist         string
		conns, round int
	}
	plain := map[key]RedirectRun{}
	for _, r := range runs {
		if r.Round >= 0 && r.System == SysLinkpop {
			plain[key{r.Distribution, r.Connections, r.Round}] = r
		}
	}
	type dk struct {
		dist  string
		conns int
	}
	var order []dk
	type acc struct{ on, off, onCPU, offCPU, rps, cpu []float64 }
	accs := map[dk]*acc{}
	for _, r := range runs {
		if r.Round < 0 || r.System != SysLinkpopAnalytics {
			continue
		}
		p, ok := plain[key{r.Distribution, r.Connections, r.Round}]
		if !ok || p.RPS <= 0 || p.CPUMicrosPerRequest <= 0 {
			continue
		}
		k := dk{r.Distribution, r.Connections}
		a := accs[k]
		if a == nil {
			a = &acc{}
			accs[k] = a
			order = append(order, k)
		}
		a.on, a.off = append(a.on, r.RPS), append(a.off, p.RPS)
		a.onCPU, a.offCPU = append(a.onCPU, r.CPUMicrosPerRequest), append(a.offCPU, p.CPUMicrosPerRequest)
		a.rps = append(a.rps, r.RPS/p.RPS)
		a.cpu = append(a.cpu, r.CPUMicrosPerRequest/p.CPUMicrosPerRequest)
	}
	var out []ClickCost
	for _, k := range order {
		a := accs[k]
		out = append(out, ClickCost{Distribution: k.dist, Connections: k.conns, Rounds: len(a.rps),
			OnRPS: median(a.on), OffRPS: median(a.off), OnCPUMicros: median(a.onCPU), OffCPUMicros: median(a.offCPU),
			RatioRPS: median(a.rps), RatioCPU: median(a.cpu)})
	}
	return out
}

// sample runs one worker per code: click (a GET with a browser
// User-Agent), then poll the code's stats until the click is counted and
// complete_through passes it; n samples in all (-1: until ctx is done).
func (h *harness) sample(ctx context.Context, o *originProc, e *edgeProc, codes []string, n int) ClickLatency {
	var (
		mu                sync.Mutex
		visible, complete []float64
		fails             []string
		taken             int
		wg                sync.WaitGroup
	)
	next := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || (n >= 0 && taken >= n) {
			return false
		}
		taken++
		return true
	}
	fail := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(fails) < 20 {
			fails = append(fails, s)
		}
	}
	for _, code := range codes {
		wg.Go(func() {
			for next() {
				// The polls ask for the minutes since the click, not the
				// whole history: the 8 workers poll 400 times a second,
				// and a range of an hour at minute interval made the
				// sampler itself a load on the origin that ingests the
				// clicks. The link's clicks in that range before the
				// click are the base.
				from := time.Now().Truncate(time.Minute)
				base, err := o.client.Stats(h.ctx, code, client.StatsQuery{From: from})
				if err != nil {
					fail(err.Error())
					continue
				}
				t0 := time.Now()
				req, err := http.NewRequestWithContext(h.ctx, http.MethodGet, e.url()+code, nil)
				if err != nil {
					fail(err.Error())
					return
				}
				req.Header.Set("User-Agent", clickUA)
				resp, err := h.http.Do(req)
				if err != nil {
					fail(err.Error())
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusFound {
					fail(code + ": " + strconv.Itoa(resp.StatusCode))
					continue
				}
				want := base.Clicks + 1
				var vis time.Duration
				deadline := t0.Add(clickWaitMax)
				for {
					st, err := o.client.Stats(h.ctx, code, client.StatsQuery{From: from})
					now := time.Now()
					if err == nil {
						if vis == 0 && st.Clicks >= want {
							vis = now.Sub(t0)
						}
						if vis > 0 && st.CompleteThrough != nil && !st.CompleteThrough.Before(t0) {
							mu.Lock()
							visible = append(visible, float64(vis.Microseconds())/1e3)
							complete = append(complete, float64(now.Sub(t0).Microseconds())/1e3)
							mu.Unlock()
							break
						}
					}
					if now.After(deadline) || h.ctx.Err() != nil {
						fail(fmt.Sprintf("%s: click %d not visible and complete within %s (err %v)", code, want, clickWaitMax, err))
						break
					}
					time.Sleep(clickPoll)
				}
			}
		})
	}
	wg.Wait()
	return ClickLatency{Samples: len(visible), Visible: percentiles(visible), Complete: percentiles(complete), Failures: fails}
}

// purgeClicks empties the click stream, if there is one.
func (h *harness) purgeClicks() error {
	nc, err := replication.Dial(h.ctx, replication.ConnConfig{URLs: []string{h.natsURL}, Name: "linkpop-bench-clicks"})
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, "LINKPOP_CLICKS")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return st.Purge(ctx)
}

// clickMetrics are the edge's click shipping counters.
type clickMetrics struct {
	recorded, dropped, shipped, batches, bytes, pending uint64
}

func (e *edgeProc) clickMetrics() (clickMetrics, error) {
	var m clickMetrics
	code, body, err := e.adminGet("/metrics")
	if err != nil {
		return m, err
	}
	if code != http.StatusOK {
		return m, fmt.Errorf("%s /metrics: %d", e.name, code)
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			continue
		}
		switch name {
		case "linkpop_edge_clicks_recorded_total":
			m.recorded = uint64(f)
		case "linkpop_edge_clicks_dropped_total":
			m.dropped = uint64(f)
		case "linkpop_edge_clicks_shipped_total":
			m.shipped = uint64(f)
		case "linkpop_edge_click_batches_published_total":
			m.batches = uint64(f)
		case "linkpop_edge_click_batch_bytes_published_total":
			m.bytes = uint64(f)
		case "linkpop_edge_clicks_spill_batches":
			m.pending = uint64(f)
		}
	}
	return m, nil
}

// drainClicks waits, once no more clicks arrive, until the edge has
// shipped every click it recorded: past two flush intervals (the last
// clicks sealed), its journal empty and every recorded click shipped or
// dropped.
func (h *harness) drainClicks(e *edgeProc) error {
	begin := time.Now()
	return waitFor(h.ctx, e.p, 2*time.Minute, 50*time.Millisecond, "the analytics edge to ship its clicks", func() bool {
		m, err := e.clickMetrics()
		return err == nil && time.Since(begin) > 2500*time.Millisecond && m.pending == 0 && m.shipped+m.dropped >= m.recorded
	})
}

// clicksMarkdown renders the section.
func clicksMarkdown(b *strings.Builder, r *ClicksReport) {
	fmt.Fprintf(b, "#### Click analytics\n\n")
	if len(r.Cost) > 0 {
		fmt.Fprintf(b, "Cost of recording: linkpop-analytics (every redirect recorded, a batch a second shipped) against linkpop without analytics, in the same rounds of the redirect table above; medians over rounds of the per-round ratios. Target: ≥ 0.95× requests/s, CPU per request ≤ 1.10×.\n\n")
		b.WriteString("| distribution | conns | rounds | req/s analytics | req/s plain | ratio req/s | CPU µs/req analytics | CPU µs/req plain | ratio CPU/req |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range r.Cost {
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %.2f | %.1f | %.1f | %.2f× |\n", c.Distribution, c.Connections, c.Rounds,
				num(int(c.OnRPS)), num(int(c.OffRPS)), c.RatioRPS, c.OnCPUMicros, c.OffCPUMicros, c.RatioCPU)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "Click → visible: a GET with a browser User-Agent on the analytics edge (flush %s), then `GET /v1/links/{code}/stats` on the origin (in-process collector) every %s until its clicks include it (visible) and its `complete_through` is at or after it (complete); %d links sampled in parallel.\n\n", r.Flush, clickPoll, 8)
	b.WriteString("| while | samples | visible p50 ms | visible p99 ms | visible max ms | complete p50 ms | complete p99 ms | failures |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(what string, l ClickLatency) {
		fmt.Fprintf(b, "| %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %d |\n", what, l.Samples, l.Visible.P50Ms, l.Visible.P99Ms, l.Visible.MaxMs, l.Complete.P50Ms, l.Complete.P99Ms, len(l.Failures))
	}
	row("idle", r.Idle)
	for _, l := range r.Loads {
		row(fmt.Sprintf("wrk %s, %d conns, %s req/s, %.0f s", l.Distribution, l.Connections, num(int(l.RPS)), l.Seconds), l.Latency)
	}
	b.WriteString("\n")
	if len(r.Loads) > 0 {
		b.WriteString("Bytes shipped per click (encoded batches acknowledged by the stream, over the clicks in them), during those wrk runs:\n\n")
		b.WriteString("| distribution | conns | requests | clicks shipped | batches | bytes | bytes/click |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, l := range r.Loads {
			fmt.Fprintf(b, "| %s | %d | %s | %s | %d | %s | %.1f |\n", l.Distribution, l.Connections, num(int(l.Requests)),
				num(int(l.ClicksShipped)), l.Batches, num(int(l.Bytes)), l.BytesPerClick)
		}
		b.WriteString("\n")
	}
	for _, l := range append([]ClickLatency{r.Idle}, loadLatencies(r.Loads)...) {
		for _, f := range l.Failures {
			fmt.Fprintf(b, "- failure: %s\n", f)
		}
	}
}

func loadLatencies(loads []ClickLoad) []ClickLatency {
	var out []ClickLatency
	for _, l := range loads {
		out = append(out, l.Latency)
	}
	return out
}
