package harness

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Markdown renders the report as the tables the README embeds.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := r.Machine
	p("### linkpop benchmark, %s (%s mode)\n\n", r.StartedAt, r.Mode)
	p("Machine: %d × %s, %s RAM, %s, %s; load average %s at the start, %s at the end. Load generator: %s. Command: `%s`.\n\n",
		m.CPUs, orDash(m.CPUModel), bytesStr(m.MemoryBytes), orDash(m.Kernel), m.GoVersion, orDash(m.LoadAvgStart), orDash(m.LoadAvgEnd), orDash(m.Wrk), r.Command)
	if m.Redis != "" || m.PostgreSQL != "" {
		p("Reference architecture: %s; %s.\n\n", orDash(m.Redis), orDash(m.PostgreSQL))
	}
	p("%s links, base62 codes of %d characters (%d case-insensitive collisions in the first draw, redrawn: nginx map keys and golink IDs ignore case). ",
		num(r.Dataset.Links), r.Dataset.CodeLength, r.Dataset.CaseCollisions)
	p("Pinning: %s.\n\n", r.Settings.Pinning)

	if rr := r.Redirect; rr != nil {
		p("#### Redirects: %s links, keep-alive, wrk -t %d, %g s runs, %d alternated rounds, medians\n\n",
			num(r.Dataset.Links), r.Settings.WrkThreads, r.Settings.RunSeconds, r.Settings.Rounds)
		p("Ratio is the median over rounds of the system's requests/s divided by bare302's in the same round; Δp99 likewise. Only ratios are comparable between runs: the same configuration can vary 2× from one run to the next on a shared machine. Server CPU and wrk CPU are cores used during the run (1.00 = the whole pinned core): whichever is near 1.00 is the limit; when neither is, other processes took the cores and CPU per request (and its ratio to bare302) is the steadier figure. Every system is warmed up before the rounds of each distribution; linkpop's warm-up walks the whole request stream once, so these rows are its steady state with every requested code in its hot cache (a just restarted edge is measured below).\n\n")
		var keys []string
		for _, s := range rr.Summary {
			k := s.Distribution + "\x00" + strconv.Itoa(s.Connections)
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		p("Load average at the start of the section %s, at the end %s.\n\n", orDash(rr.LoadAvgStart), orDash(rr.LoadAvgEnd))
		p("| distribution | conns | system | req/s | ratio to bare302 | ratio to linkpop | p50 ms | p99 ms | p99.9 ms | Δp99 ms | server CPU | CPU µs/req | CPU/req vs bare302 | wrk CPU | peak RSS | PSS | ≥400 / socket errors |\n")
		p("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, k := range keys {
			for _, s := range rr.Summary {
				if s.Distribution+"\x00"+strconv.Itoa(s.Connections) != k {
					continue
				}
				p("| %s | %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %+.2f | %.2f | %.1f | %.2f× | %.2f | %s | %s | %d / %d |\n",
					s.Distribution, s.Connections, s.System, num(int(s.RPS)), s.RatioRPS, s.RatioLinkpop, s.P50Ms, s.P99Ms, s.P999Ms,
					s.P99DeltaMs, s.CPUCores, s.CPUMicros, s.RatioCPU, s.LoadCPUCores, bytesStr(s.PeakRSS), bytesStr(s.PSS), s.StatusErrors, s.SocketErrors)
			}
		}
		if c := rr.Cold; c != nil {
			l, b := c.Linkpop, c.Bare302
			p("\nEdge just restarted (hot cache and Pebble block cache empty; each request in the run is the first for its code and is read from the replica), %s, %d connections, one run each; redis-pg right after FLUSHALL (each request a Redis miss, a SELECT and a SET):\n\n", c.Distribution, c.Connections)
			p("| system | req/s | ratio to bare302 | p50 ms | p99 ms | p99.9 ms | server CPU | CPU µs/req | wrk CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			rows := []RedirectRun{l, b}
			if c.RedisPG != nil {
				rows = append(rows, *c.RedisPG)
			}
			for _, x := range rows {
				ratio := 1.0
				switch x.System {
				case SysLinkpop:
					ratio = c.RatioRPS
				case SysRedisPG:
					ratio = c.RatioRedisPG
				}
				p("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.2f |\n", x.System, num(int(x.RPS)), ratio,
					float64(x.P50US)/1e3, float64(x.P99US)/1e3, float64(x.P999US)/1e3, x.CPUCores, x.CPUMicrosPerRequest, x.LoadCPUCores)
			}
		}
		p("\n| system | what runs | load with %s links | start with links loaded | RSS loaded | PSS loaded | check (status mix) |\n|---|---|---:|---:|---:|---:|---|\n", num(r.Dataset.Links))
		for _, s := range rr.Systems {
			check := mix(s.Verify)
			if s.Skipped != "" {
				check = "not measured: " + s.Skipped
			}
			p("| %s | %s | %s | %s | %s | %s | %s |\n", s.Name, mdEscape(s.Description), secs(s.LoadSeconds), secs(s.StartSeconds), bytesStr(s.MemoryLoaded.RSS), bytesStr(s.MemoryLoaded.PSS), mdEscape(check))
		}
		for _, s := range rr.Systems {
			for _, n := range s.Notes {
				p("\n- %s: %s", s.Name, mdEscape(n))
			}
		}
		p("\n\n")
		for _, pr := range rr.Profiles {
			p("<details><summary>perf profile of %s, %s, %d connections (%s req/s while profiled)</summary>\n\n```\n%s\n\nself:\n%s\n\nincluding callees:\n%s\n```\n</details>\n\n",
				pr.System, pr.Distribution, pr.Connections, num(int(pr.RPS)), strings.Join(pr.DSOs, "\n"),
				strings.Join(pr.Symbols, "\n"), strings.Join(pr.Inclusive, "\n"))
		}
	}

	if bs := r.Bootstrap; bs != nil {
		p("#### Bootstrap and catch-up\n\n| measure | value |\n|---|---:|\n")
		if bs.StreamFromCache {
			p("| copy the cached stream of %s links (a previous run's, same links and seed) | %s |\n", num(bs.Links), secs(bs.PublishSeconds))
		} else {
			p("| publish %s links into the stream (Publisher.Fill: ≤ %d unacknowledged) | %s (%s/s) |\n", num(bs.Links), bs.PublishConcurrency, secs(bs.PublishSeconds), num(int(bs.PublishPerSecond)))
		}
		p("| fresh edge → /readyz | %s |\n| fresh edge → whole stream applied | %s |\n", secs(bs.ReadySeconds), secs(bs.CaughtUpSeconds))
		if bs.RestartReadySeconds > 0 {
			p("| edge restart with its replica → /readyz | %s |\n", secs(bs.RestartReadySeconds))
		}
		if bs.SecondEdgeCaughtUpSeconds > 0 {
			p("| second fresh edge (origin running) → whole stream applied | %s |\n", secs(bs.SecondEdgeCaughtUpSeconds))
		}
		if c := r.Catchup; c != nil {
			p("| edge down while %s changes were published (%s) → /readyz | %s |\n", num(c.Changes), secs(c.PublishSeconds), secs(c.ReadySeconds))
			p("| … → lag 0 | %s (%s changes/s) |\n", secs(c.CaughtUpSeconds), num(int(c.ChangesPerSecond)))
		}
		p("\n")
	}

	if f := r.Footprint; f != nil {
		p("#### Edge footprint at %s links\n\n| measure | value |\n|---|---:|\n", num(f.Links))
		p("| RSS after bootstrap | %s |\n| RSS after the redirect runs (hot cache %s entries) | %s (%.0f B/link) |\n| peak RSS | %s |\n| RSS after the redirect runs per million links held | %.0f MB |\n| replica on disk | %s (%.0f B/link) |\n\n",
			bytesStr(f.MemoryReady.RSS), num(f.HotCacheEntries), bytesStr(f.MemoryAfterLoad.RSS), f.RSSBytesPerLink,
			bytesStr(max(f.MemoryAfterLoad.Peak, f.MemoryReady.Peak)), f.RSSBytesPerLink, bytesStr(f.DiskBytes), f.DiskBytesPerLink)
	}

	if f := r.Flood; f != nil && f.Known != nil {
		p("#### Negative flood: unknown random codes at full speed on one edge\n\n")
		p("| measure | value |\n|---|---:|\n")
		p("| unknown codes answered | %s req/s, %s requests, %d not 4xx |\n", num(int(f.UnknownRPS)), num(int(f.Unknown.Requests)), f.UnknownNot404)
		p("| known-code p99 (%d connections) alone → during the flood | %.2f ms → %.2f ms |\n", r.Settings.FloodKnownConnections, f.KnownP99BaselineMs, f.KnownP99FloodMs)
		p("| known-code req/s alone → during the flood | %s → %s |\n", num(int(f.Baseline.RPS())), num(int(f.Known.RPS())))
		p("| edge RSS before → after | %s → %s (%+.1f MiB) |\n\n", bytesStr(f.MemoryBefore.RSS), bytesStr(f.MemoryAfter.RSS), float64(f.RSSGrowthBytes)/(1<<20))
	}

	if w := r.Writes; w != nil {
		p("#### Creates: each acknowledged after a synced commit, %d alternated rounds, medians\n\n", r.Settings.Rounds)
		p("linkpop: `POST /v1/links` on the origin (Pebble group commit, outbox → relay → JetStream); CPU and RSS are the origin process's (the JetStream server runs inside the harness and is not counted). redis-pg: `POST /v1/links` on the reference app, one `INSERT` with synchronous_commit=on; CPU and RSS are the whole system's (app + Redis + every PostgreSQL process). Neither is pinned; the client is the harness (Go net/http, keep-alive). Ratio: linkpop's creates/s over the reference's in the same round. Load average at the start of the section %s, at the end %s.\n\n", orDash(w.LoadAvgStart), orDash(w.LoadAvgEnd))
		p("| concurrency | system | creates/s | linkpop ÷ this | p50 ms | p99 ms | CPU cores | CPU µs/create | RSS | PSS | creates per fsync | outbox → stream drain | statuses |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, s := range w.Summary {
			ratio, perCommit, drain := "-", "-", "-"
			if s.LinkpopRatio > 0 {
				ratio = fmt.Sprintf("%.2f", s.LinkpopRatio)
			}
			if s.CreatesPerCommit > 0 {
				perCommit = fmt.Sprintf("%.1f", s.CreatesPerCommit)
			}
			if s.System == SysLinkpop {
				drain = fmt.Sprintf("%.1f ms", s.DrainMs)
			}
			p("| %d | %s | %s | %s | %.2f | %.2f | %.2f | %.0f | %s | %s | %s | %s | %s |\n", s.Concurrency, s.System, num(int(s.PerSecond)), ratio,
				s.P50Ms, s.P99Ms, s.CPUCores, s.CPUMicrosPerCreate, bytesStr(s.RSS), bytesStr(s.PSS), perCommit, drain, mix(s.Statuses))
		}
		for _, k := range slices.Sorted(maps.Keys(w.Skipped)) {
			p("\n%s not measured: %s\n", k, mdEscape(w.Skipped[k]))
		}
		p("\n")
	}

	if pr := r.Propagation; pr != nil {
		p("#### Propagation to %d edges, %s links, load: %s\n\n", pr.Edges, num(pr.Links), pr.Load)
		p("| event | edge | count | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|\n")
		for _, ev := range []struct {
			name string
			ls   LatencyStats
		}{{"create (201) → 302", pr.Create}, {"deactivate → 410", pr.Deactivate}} {
			a := ev.ls.All
			p("| %s | every edge | %d | %.2f | %.2f | %.2f |\n", ev.name, a.Count, a.P50Ms, a.P99Ms, a.MaxMs)
			for _, name := range slices.Sorted(maps.Keys(ev.ls.PerEdge)) {
				e := ev.ls.PerEdge[name]
				p("| | %s | %d | %.2f | %.2f | %.2f |\n", name, e.Count, e.P50Ms, e.P99Ms, e.MaxMs)
			}
		}
		if len(pr.Failures) > 0 {
			p("\nFailures: %s\n", mdEscape(strings.Join(pr.Failures, "; ")))
		}
		p("\n")
	}

	if r.Clicks != nil {
		clicksMarkdown(&b, r.Clicks)
	}

	if rs := r.Restart; rs != nil && len(rs.Rounds) > 0 {
		p("#### Just restarted edge: the first %g s of %s traffic, %d connections, warming on and off, next to bare302\n\n", rs.WindowSeconds, rs.Distribution, rs.Connections)
		p("The edge is restarted on its replica (%s links) and measured from its first request for %g s. Warming on: %s; it loads the hot set it saved when it stopped (ranked by the requests of a %g s %s run before the rounds and of the previous warm run) into the hot cache before it reports ready. Warming off: `-warm-entries -1`, the hot cache starts empty. Ratio: the run's requests/s over bare302's in the same round (same offset of the request stream); medians over %d rounds. Load average at the start %s, at the end %s.\n\n",
			num(r.Dataset.Links), rs.WindowSeconds, rs.WarmEntries, rs.TrainSeconds, rs.Distribution, len(rs.Rounds), orDash(rs.LoadAvgStart), orDash(rs.LoadAvgEnd))
		p("| round | warm req/s | ÷ bare302 | restart → ready | hot entries at ready | cold req/s | ÷ bare302 | restart → ready | bare302 req/s | warm CPU µs/req | cold CPU µs/req | bare302 CPU µs/req |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, rd := range rs.Rounds {
			p("| %d | %s | %.2f | %s | %s | %s | %.2f | %s | %s | %.1f | %.1f | %.1f |\n", rd.Round+1, num(int(rd.Warm.RPS)), rd.RatioWarm, secs(rd.WarmReadySeconds), num(rd.WarmHotEntries),
				num(int(rd.Cold.RPS)), rd.RatioCold, secs(rd.ColdReadySeconds), num(int(rd.Bare302.RPS)),
				rd.Warm.CPUMicrosPerRequest, rd.Cold.CPUMicrosPerRequest, rd.Bare302.CPUMicrosPerRequest)
		}
		p("| median | | **%.2f** | %s | | | **%.2f** | %s | | | | |\n\n", rs.RatioWarm, secs(rs.WarmReadySeconds), rs.RatioCold, secs(rs.ColdReadySeconds))
	}

	if pe := r.Peer; pe != nil {
		p("#### Peer bootstrap: a fresh edge takes a ready peer's checkpoint, %s links\n\n", num(pe.Links))
		p("The first edge (replica complete) is restarted as a PoP member with the fleet secret; a fresh edge (`-gossip-join`, `-peer-secret-file`, `-warm-entries -1`, not pinned) joins its gossip and takes its checkpoint over the admin listener. Load average at the start %s, at the end %s.\n\n", orDash(pe.LoadAvgStart), orDash(pe.LoadAvgEnd))
		p("| measure | value |\n|---|---:|\n")
		p("| result (linkpop_edge_peer_bootstrap_total) | %s |\n", pe.Result)
		p("| fresh edge → /readyz, from a peer | %s |\n| … → whole stream applied | %s |\n| transfer (gossip join → checkpoint installed) | %s |\n", secs(pe.ReadySeconds), secs(pe.CaughtUpSeconds), secs(pe.TransferSeconds))
		if bs := r.Bootstrap; bs != nil {
			p("| for comparison: fresh edge → /readyz by replaying the stream | %s |\n", secs(bs.ReadySeconds))
		}
		eq := "**not equal**"
		if pe.DigestEqual {
			eq = "equal"
		}
		p("| replica shipped | %s |\n| digest of the bootstrapped replica vs its peer's (%s links) | %s (%s) |\n", bytesStr(pe.ReplicaBytes), num(int(pe.DigestLinks)), eq, pe.FreshDigest)
		if pe.ServeIdle.RPS > 0 {
			p("| peer's redirects/s alone → while shipping (a second fresh edge at nice 10 on the load generator's core; transfer %s of the %s run) | %s → %s (%.2f×) |\n",
				secs(pe.ShippingTransferSeconds), secs(float64(pe.ServeIdle.Wrk.DurationUS)/1e6), num(int(pe.ServeIdle.RPS)), num(int(pe.ServeShipping.RPS)), pe.RatioShippingRPS)
			p("| peer's CPU µs per redirect alone → while shipping | %.1f → %.1f |\n| peer's p99 ms alone → while shipping | %.2f → %.2f |\n",
				pe.ServeIdle.CPUMicrosPerRequest, pe.ServeShipping.CPUMicrosPerRequest, float64(pe.ServeIdle.P99US)/1e3, float64(pe.ServeShipping.P99US)/1e3)
		}
		p("\n")
	}

	if len(r.Skipped) > 0 || len(r.Errors) > 0 || len(r.Pending) > 0 {
		p("#### Not measured\n\n")
		if len(r.Pending) > 0 {
			p("- not run yet when this report was written (the run was cut or is still going): %s\n", strings.Join(r.Pending, ", "))
		}
		for _, k := range slices.Sorted(maps.Keys(r.Skipped)) {
			p("- %s: skipped, %s\n", k, mdEscape(r.Skipped[k]))
		}
		for _, e := range r.Errors {
			p("- error: %s\n", mdEscape(firstLine(e)))
		}
		p("\n")
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func mix(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func secs(s float64) string {
	if s == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", s)
}

func bytesStr(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// num formats n with thousands separators.
func num(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
