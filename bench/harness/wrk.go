package harness

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

//go:embed wrk.lua
var wrkScript []byte

// WrkResult is what wrk's done() reports for one run.
type WrkResult struct {
	DurationUS int64 `json:"duration_us"`
	Requests   int64 `json:"requests"`
	Bytes      int64 `json:"bytes"`
	Errors     struct {
		Connect int64 `json:"connect"`
		Read    int64 `json:"read"`
		Write   int64 `json:"write"`
		// Status counts responses with a status of 400 or more: for
		// known codes every response must be a redirect, so it must be 0.
		Status  int64 `json:"status"`
		Timeout int64 `json:"timeout"`
	} `json:"errors"`
	// RunCPUSeconds is wrk's own CPU time during the run (loading the
	// paths excluded): near the run's length per thread, the load
	// generator is at the limit of its core.
	RunCPUSeconds float64 `json:"run_cpu_seconds"`
	LatencyUS     struct {
		Min   int64   `json:"min"`
		Mean  float64 `json:"mean"`
		Stdev float64 `json:"stdev"`
		Max   int64   `json:"max"`
		P50   int64   `json:"p50"`
		P90   int64   `json:"p90"`
		P99   int64   `json:"p99"`
		P999  int64   `json:"p999"`
	} `json:"latency_us"`
}

// RPS is completed requests per second.
func (w *WrkResult) RPS() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// LoadCores is wrk's CPU seconds per second of the run.
func (w *WrkResult) LoadCores() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return w.RunCPUSeconds / (float64(w.DurationUS) / 1e6)
}

// SocketErrors sums connect, read, write and timeout errors.
func (w *WrkResult) SocketErrors() int64 {
	return w.Errors.Connect + w.Errors.Read + w.Errors.Write + w.Errors.Timeout
}

// wrkJob is one wrk invocation.
type wrkJob struct {
	url      string
	paths    string // request-path file
	offset   int    // line the first thread starts at
	conns    int
	duration time.Duration // whole seconds (wrk's unit), at least 1; 0: until stopped
}

var wrkSeq atomic.Int64

// wrkRun is a running wrk.
type wrkRun struct {
	p   *proc
	out string
}

// startWrk starts wrk pinned to the load core.
func (h *harness) startWrk(j wrkJob) (*wrkRun, error) {
	if h.wrk == "" {
		return nil, fmt.Errorf("wrk: %w", errSkipped)
	}
	n := wrkSeq.Add(1)
	script := filepath.Join(h.cfg.WorkDir, "wrk.lua")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, wrkScript, 0o644); err != nil {
			return nil, err
		}
	}
	out := filepath.Join(h.cfg.WorkDir, fmt.Sprintf("wrk-%d.json", n))
	d := j.duration
	if d == 0 {
		d = 24 * time.Hour
	}
	threads := min(h.cfg.Threads, j.conns)
	name := fmt.Sprintf("wrk-%d", n)
	env := []string{
		"BENCH_PATHS=" + j.paths,
		"BENCH_OUT=" + out,
		"BENCH_THREADS=" + strconv.Itoa(threads),
		"BENCH_OFFSET=" + strconv.Itoa(j.offset),
	}
	p, err := h.start(name, h.cfg.LoadCPU, env, h.wrk,
		"-t", strconv.Itoa(threads), "-c", strconv.Itoa(j.conns),
		"-d", strconv.Itoa(max(int(math.Ceil(d.Seconds())), 1))+"s", "--timeout", "5s",
		"-s", script, j.url)
	if err != nil {
		return nil, err
	}
	return &wrkRun{p: p, out: out}, nil
}

// wait waits for wrk to finish (a timed run) and reads its result.
func (w *wrkRun) wait(ctx context.Context, timeout time.Duration) (*WrkResult, error) {
	select {
	case <-w.p.done:
	case <-ctx.Done():
		w.p.stop(syscall.SIGKILL, time.Second)
		return nil, ctx.Err()
	case <-time.After(timeout):
		w.p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("wrk did not finish within %v", timeout)
	}
	return w.result()
}

// stop interrupts an open-ended run; wrk then reports what it measured.
func (w *wrkRun) stop() (*WrkResult, error) {
	w.p.stop(syscall.SIGINT, 10*time.Second)
	return w.result()
}

func (w *wrkRun) result() (*WrkResult, error) {
	b, err := os.ReadFile(w.out)
	if err != nil {
		return nil, fmt.Errorf("wrk result (exit %v): %w\n%s", w.p.err, err, w.p.tail())
	}
	var r WrkResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("wrk result %s: %w", w.out, err)
	}
	return &r, nil
}

// runWrk runs a timed wrk job to completion.
func (h *harness) runWrk(j wrkJob) (*WrkResult, error) {
	w, err := h.startWrk(j)
	if err != nil {
		return nil, err
	}
	return w.wait(h.ctx, j.duration+60*time.Second)
}
