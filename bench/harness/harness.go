// Package harness is linkpop's benchmark: it measures the linkpop edge
// side by side with the references an operator would otherwise pick (a
// bare fasthttp server answering a fixed 302, which is the ceiling of the
// stack; nginx with a map of the same links; tailscale's golink) under
// the same load generator (wrk with one Lua script), in alternated rounds,
// and reports medians and ratios to the ceiling. It also measures the
// origin's write path, create/deactivate propagation to every edge,
// bootstrap and catch-up through the change stream, the edge's footprint
// and a flood of unknown codes.
//
// Every server runs as a child process started from the binaries in
// Config.BinDir; the change stream is an embedded JetStream server inside
// the harness. bench/cmd/benchctl is the command-line entry point and
// bench/run.sh (`make bench`) the way to run it.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
)

type harness struct {
	cfg  Config
	ctx  context.Context
	log  *slog.Logger
	data *dataset
	rep  *Report

	pin                         bool
	taskset, wrk, nginx, golink string

	mu    sync.Mutex
	procs []*proc

	nats     *devserver.Server
	natsURL  string
	natsStop func()
	pub      *replication.Publisher

	paths map[string]string // distribution (or "unknown") → request-path file

	edge1  *edgeProc
	origin *originProc
	// redispg is the reference architecture, kept running from the
	// redirect section to the writes section.
	redispg *redisPG

	// http asks the servers directly (checks, polls, admin); it never
	// follows a redirect.
	http *http.Client
}

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 256, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get requests url and returns the status, the Location header and the
// body.
func (h *harness) get(url string) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(h.ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", nil, err
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), b, err
}

// Run measures everything cfg asks for and returns the report. It fails
// only for bad configuration, a cancelled ctx or when the link table
// cannot be loaded; a failing section is recorded in Report.Errors and the
// next one runs.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, ctx: ctx, log: cfg.Logger, paths: map[string]string{}, http: newHTTPClient()}
	defer h.cleanup()
	h.tools()
	h.rep = &Report{
		StartedAt: time.Now().UTC().Format(time.RFC3339),
		Mode:      cfg.Mode,
		Command:   cfg.Command,
		Machine:   machine(),
		Settings:  h.settings(),
		Skipped:   map[string]string{},
	}
	h.rep.Machine.Wrk = version(h.wrk, "-v")
	h.rep.Machine.Nginx = strings.TrimPrefix(version(h.nginx, "-v"), "nginx version: ")
	if h.golink != "" {
		h.rep.Machine.Golink = "github.com/tailscale/golink v1.0.0 (" + h.golink + ")"
	}

	h.log.Info("generating links and request streams", "links", cfg.Links)
	h.data = newDataset(cfg.Links, cfg.Seed)
	h.rep.Dataset = DatasetInfo{Links: len(h.data.codes), CaseCollisions: h.data.caseCollisions,
		CodeLength: len(h.data.codes[0]), TargetExample: h.data.targets[0]}
	for _, d := range append(slices.Clone(cfg.Distributions), DistUniform, "unknown") {
		if _, done := h.paths[d]; done {
			continue
		}
		p := filepath.Join(cfg.WorkDir, "paths-"+d+".txt")
		if err := h.data.writePaths(p, d, cfg.PathsPerFile, cfg.ZipfS); err != nil {
			return nil, fmt.Errorf("request paths: %w", err)
		}
		h.paths[d] = p
	}

	if err := h.loadStream(); err != nil {
		return nil, err
	}
	if err := h.bootstrapEdge(); err != nil {
		return nil, err
	}

	sections := map[string]func() error{
		SecRedirect:    h.redirect,
		SecFlood:       h.flood,
		SecCatchup:     h.catchup,
		SecWrites:      h.writes,
		SecPropagation: h.propagation,
		SecClicks:      h.clicks,
		SecRestart:     h.restart,
		SecPeer:        h.peer,
	}
	progress := func(left []string) {
		if cfg.Progress != nil {
			h.rep.Pending = left
			h.rep.Machine.LoadAvgEnd = loadAvg()
			cfg.Progress(h.rep)
			h.rep.Pending = nil
		}
	}
	progress(cfg.Sections)
	for i, name := range cfg.Sections {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h.log.Info("section", "name", name)
		switch err := sections[name](); {
		case errors.Is(err, errSkipped):
			h.rep.Skipped[name] = err.Error()
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			h.log.Error("section failed", "name", name, "err", err)
			h.rep.Errors = append(h.rep.Errors, name+": "+err.Error())
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		progress(cfg.Sections[i+1:])
	}
	h.rep.FinishedAt = time.Now().UTC().Format(time.RFC3339)
	h.rep.Machine.LoadAvgEnd = loadAvg()
	return h.rep, nil
}

// tools finds wrk, nginx, golink and taskset and decides on pinning.
func (h *harness) tools() {
	find := func(set, name string) string {
		if set != "" {
			if _, err := os.Stat(set); err == nil {
				return set
			}
			return ""
		}
		return lookPath(name)
	}
	h.wrk = find(h.cfg.Wrk, "wrk")
	h.nginx = find(h.cfg.Nginx, "nginx")
	h.taskset = find(h.cfg.Taskset, "taskset")
	golink := h.cfg.Golink
	if golink == "" {
		golink = filepath.Join(h.cfg.BinDir, "golink")
	}
	if _, err := os.Stat(golink); err == nil {
		h.golink = golink
	}
	h.pin = !h.cfg.NoPin && h.taskset != "" && runtimeCPUs() > max(h.cfg.ServerCPU, h.cfg.LoadCPU)
}

func (h *harness) settings() Settings {
	c := h.cfg
	pinning := "none: server and load generator share every core"
	if h.pin {
		pinning = fmt.Sprintf("taskset: measured server on CPU %d, wrk on CPU %d (the harness, NATS and other processes are not pinned)", c.ServerCPU, c.LoadCPU)
	}
	return Settings{
		Links: c.Links, Seed: c.Seed, PathsPerFile: c.PathsPerFile, ZipfS: c.ZipfS,
		Systems: c.Systems, Sections: c.Sections, Distributions: c.Distributions,
		Connections: c.Connections, WrkThreads: c.Threads, RunSeconds: c.Duration.Seconds(),
		WarmupSeconds: max(c.Warmup, 0).Seconds(), Rounds: c.Rounds, Pinning: pinning,
		WriteConcurrency: c.WriteConcurrency, WriteSeconds: c.WriteDuration.Seconds(),
		PropagationLinks: c.PropagationLinks, PropagationWorkers: c.PropagationWorkers,
		PropagationLoadConnections: c.PropagationLoadConnections, CatchupChanges: c.CatchupChanges,
		FloodSeconds: c.FloodDuration.Seconds(), FloodConnections: c.FloodConnections,
		FloodKnownConnections: c.FloodKnownConnections,
	}
}

// cleanup stops every process the harness started, newest first, then
// the stream.
func (h *harness) cleanup() {
	h.mu.Lock()
	procs := slices.Clone(h.procs)
	h.mu.Unlock()
	if h.redispg != nil {
		h.redispg.stop() // PostgreSQL wants SIGINT
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(syscall.SIGTERM, 15*time.Second)
	}
	h.http.CloseIdleConnections()
	if h.origin != nil && h.origin.client != nil {
		h.origin.client.CloseIdleConnections()
	}
	if h.natsStop != nil {
		h.natsStop()
	}
	if h.nats != nil {
		h.nats.Shutdown()
	}
}
