package harness_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/bench/harness"
	"github.com/linkpop/linkpop/internal/leaktest"
)

// TestSmoke runs every section of the benchmark with tiny sizes, so the
// harness cannot rot: 200 links, 1-second runs, one round, linkpop,
// bare302 and nginx (golink is left to `make bench`). wrk and nginx are
// installed by .ci/run; without them the parts that need them are skipped
// and the report must say so.
func TestSmoke(t *testing.T) {
	leaktest.Check(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator),
		"github.com/linkpop/linkpop/cmd/edge", "github.com/linkpop/linkpop/cmd/origin",
		"github.com/linkpop/linkpop/bench/cmd/bare302", "github.com/linkpop/linkpop/bench/cmd/redispg")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_, wrkErr := exec.LookPath("wrk")
	haveWrk := wrkErr == nil
	haveNginx := nginxPath() != ""
	systems := []string{harness.SysLinkpop, harness.SysLinkpopAnalytics, harness.SysBare302}
	if haveNginx {
		systems = append(systems, harness.SysNginx)
	} else {
		t.Log("nginx not installed: the nginx reference is not smoke-tested (.ci/run installs it)")
	}
	refErr := harness.RedisPGAvailable()
	if refErr == nil {
		systems = append(systems, harness.SysRedisPG)
	} else {
		t.Logf("SKIP redis-pg reference (the redirect rows and the creates): %v", refErr)
	}
	if !haveWrk {
		t.Log("wrk not installed: the redirect and flood sections must report themselves skipped (.ci/run installs wrk)")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := harness.Config{
		BinDir:                     bin,
		WorkDir:                    t.TempDir(),
		Links:                      200,
		PathsPerFile:               2000,
		Systems:                    systems,
		Connections:                []int{8},
		Duration:                   time.Second,
		Warmup:                     time.Second,
		Rounds:                     1,
		WriteConcurrency:           []int{1, 4},
		WriteDuration:              500 * time.Millisecond,
		PropagationLinks:           20,
		PropagationWorkers:         4,
		PropagationLoadConnections: 4,
		CatchupChanges:             50,
		ClickSamples:               10,
		FloodDuration:              time.Second,
		ClickLoadDuration:          time.Second,
		FloodConnections:           8,
		FloodKnownConnections:      2,
		Mode:                       "smoke",
		Command:                    "go test ./bench/harness -run TestSmoke",
		Logger:                     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	rep, err := harness.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("sections failed: %q", rep.Errors)
	}
	out := t.TempDir()
	path, err := rep.WriteFiles(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"latest.json", "latest.md", filepath.Base(path)} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}

	// The JSON has every section.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	want := []string{"machine", "config", "dataset", "bootstrap", "footprint", "catchup", "writes", "propagation", "clicks"}
	if haveWrk {
		want = append(want, "redirect", "flood")
	} else {
		for _, s := range []string{harness.SecRedirect, harness.SecFlood} {
			if rep.Skipped[s] == "" {
				t.Errorf("wrk missing but section %s not reported skipped", s)
			}
		}
	}
	for _, k := range want {
		if len(doc[k]) == 0 || string(doc[k]) == "null" {
			t.Errorf("report has no %q section", k)
		}
	}

	if haveWrk {
		// Every measured system answered only redirects for known codes.
		measured := map[string]bool{}
		for _, s := range rep.Redirect.Summary {
			measured[s.System] = true
			if s.StatusErrors != 0 || s.SocketErrors != 0 {
				t.Errorf("%s %s c=%d: %d status and %d socket errors", s.System, s.Distribution, s.Connections, s.StatusErrors, s.SocketErrors)
			}
			if s.RPS <= 0 || s.RatioRPS <= 0 {
				t.Errorf("%s %s: rps %v ratio %v", s.System, s.Distribution, s.RPS, s.RatioRPS)
			}
		}
		for _, info := range rep.Redirect.Systems {
			if info.Skipped != "" {
				t.Errorf("system %s not measured: %s", info.Name, info.Skipped)
				continue
			}
			if !measured[info.Name] {
				t.Errorf("system %s has no summary", info.Name)
			}
			if info.Verify["302"] == 0 {
				t.Errorf("system %s: no 302 in its check: %v", info.Name, info.Verify)
			}
		}
		if c := rep.Redirect.Cold; c == nil || c.Linkpop.RPS <= 0 || c.Linkpop.StatusErrors != 0 || c.RatioRPS <= 0 {
			t.Errorf("cold run missing or wrong: %+v", c)
		}
		if f := rep.Flood; f.UnknownNot404 != 0 || f.Unknown.Requests == 0 {
			t.Errorf("flood: %d unknown requests, %d not 4xx", f.Unknown.Requests, f.UnknownNot404)
		}
	}
	if p := rep.Propagation; p.Create.All.Count != cfg.PropagationLinks || p.Deactivate.All.Count != cfg.PropagationLinks {
		t.Errorf("propagation: %d creates and %d deactivations seen on every edge, want %d; failures %q",
			p.Create.All.Count, p.Deactivate.All.Count, cfg.PropagationLinks, p.Failures)
	}
	for _, r := range rep.Writes.Runs {
		if r.Created == 0 {
			t.Errorf("writes %s c=%d: nothing created: %v", r.System, r.Concurrency, r.Statuses)
		}
		if r.CPUMicrosPerCreate <= 0 || r.Memory.RSS <= 0 {
			t.Errorf("writes %s c=%d: CPU %.0f µs/create, RSS %d", r.System, r.Concurrency, r.CPUMicrosPerCreate, r.Memory.RSS)
		}
	}
	if refErr == nil {
		// The reference ran in both sections, with its whole system's
		// CPU and memory, and a cold-Redis run.
		var wrote bool
		for _, s := range rep.Writes.Summary {
			if s.System == harness.SysRedisPG {
				wrote = s.PerSecond > 0 && s.LinkpopRatio > 0 && s.PSS > 0
			}
		}
		if !wrote {
			t.Errorf("writes: no redis-pg summary with creates, a ratio and PSS: %+v (skipped %v)", rep.Writes.Summary, rep.Writes.Skipped)
		}
		if haveWrk {
			if c := rep.Redirect.Cold; c == nil || c.RedisPG == nil || c.RedisPG.RPS <= 0 || c.RedisPG.StatusErrors != 0 {
				t.Errorf("cold redis-pg run missing or wrong: %+v", c)
			}
			for _, s := range rep.Redirect.Summary {
				if s.System == harness.SysRedisPG && (s.RatioLinkpop <= 0 || s.PSS <= 0) {
					t.Errorf("redis-pg summary lacks its ratio to linkpop or PSS: %+v", s)
				}
			}
		}
	}
	if c := rep.Clicks; c == nil || c.Idle.Samples != cfg.ClickSamples || len(c.Idle.Failures) > 0 || c.Idle.Visible.P50Ms <= 0 {
		t.Errorf("clicks: idle click → stats latency not measured: %+v", c)
	} else if haveWrk {
		if len(c.Cost) == 0 || c.Cost[0].RatioCPU <= 0 {
			t.Errorf("clicks: no analytics on/off ratio: %+v", c.Cost)
		}
		if len(c.Loads) == 0 {
			t.Errorf("clicks: no load runs")
		}
		for _, l := range c.Loads {
			if l.ClicksShipped == 0 || l.BytesPerClick <= 0 || l.Latency.Samples == 0 || len(l.Latency.Failures) > 0 {
				t.Errorf("clicks: load %s: %+v", l.Distribution, l)
			}
		}
	}
	if c := rep.Catchup; c.CaughtUpSeconds <= 0 {
		t.Errorf("catch-up not measured: %+v", c)
	}
	if f := rep.Footprint; f.DiskBytes <= 0 || f.ReplicaLinksCount < uint64(cfg.Links) {
		t.Errorf("footprint: %+v", f)
	}
	if p := rep.Peer; p == nil || p.Result != "peer" || !p.DigestEqual || p.DigestLinks < uint64(cfg.Links) || p.ReadySeconds <= 0 {
		t.Errorf("peer bootstrap: %+v", p)
	} else if haveWrk && (p.ServeIdle.RPS <= 0 || p.ServeShipping.RPS <= 0 || p.ServeShipping.StatusErrors != 0) {
		t.Errorf("peer serving while shipping: %+v", p)
	}
	if haveWrk {
		r := rep.Restart
		if r == nil || len(r.Rounds) != cfg.Rounds || r.RatioWarm <= 0 || r.RatioCold <= 0 {
			t.Errorf("restart: %+v", r)
		} else if rd := r.Rounds[0]; rd.Warm.StatusErrors != 0 || rd.Cold.StatusErrors != 0 || rd.WarmHotEntries == 0 || rd.ColdHotEntries != 0 {
			// Warming on loads the hot set before ready; off starts empty.
			t.Errorf("restart round: %+v", rd)
		}
	}
	md := rep.Markdown()
	heads := []string{"Bootstrap and catch-up", "Edge footprint", "Creates", "Propagation", "Click analytics", "Peer bootstrap"}
	if haveWrk {
		heads = append(heads, "Redirects", "Negative flood", "Just restarted edge")
	}
	for _, h := range heads {
		if !strings.Contains(md, h) {
			t.Errorf("markdown lacks %q:\n%s", h, md)
		}
	}
}

func nginxPath() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// testWriter sends the harness's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}
