package harness

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Profile is a flat CPU profile of one server under the redirect load,
// taken with perf in an extra, unreported run.
type Profile struct {
	System       string  `json:"system"`
	Distribution string  `json:"distribution"`
	Connections  int     `json:"connections"`
	RPS          float64 `json:"rps"`
	// Symbols are perf's hottest functions by their own time ("12.3%
	// runtime.mallocgc"), kernel included; Inclusive the functions of the
	// server's own stack by time spent in them and their callees; DSOs
	// the split between the binary and the kernel.
	Symbols   []string `json:"symbols"`
	Inclusive []string `json:"inclusive"`
	DSOs      []string `json:"dsos"`
}

// profileSystems are profiled when perf is available: the edge and its
// ceiling, so the gap between them can be named.
var profileSystems = []string{SysLinkpop, SysBare302}

// profile runs wrk against s once more with perf recording the server.
func (h *harness) profile(s *server, dist string, conns int) (*Profile, error) {
	perf := lookPath("perf")
	if perf == "" {
		return nil, fmt.Errorf("perf not found: %w", errSkipped)
	}
	data := filepath.Join(h.cfg.WorkDir, "perf-"+s.name+".data")
	rec, err := h.start("perf-"+s.name, -1, nil, perf, "record", "-F", "999", "-g", "-o", data, "-p", strconv.Itoa(s.p.pid()))
	if err != nil {
		return nil, err
	}
	// perf needs a moment to attach; then the run.
	time.Sleep(500 * time.Millisecond)
	res, err := h.runWrk(wrkJob{url: s.url(), paths: h.paths[dist], conns: conns, duration: h.cfg.Duration})
	rec.stop(syscall.SIGINT, 30*time.Second)
	if err != nil {
		return nil, err
	}
	pr := &Profile{System: s.name, Distribution: dist, Connections: conns, RPS: res.RPS()}
	if pr.Symbols, err = perfReport(perf, data, "symbol", false, 25); err != nil {
		return nil, err
	}
	if pr.Inclusive, err = perfReport(perf, data, "symbol", true, 25); err != nil {
		return nil, err
	}
	if pr.DSOs, err = perfReport(perf, data, "dso", false, 6); err != nil {
		return nil, err
	}
	return pr, nil
}

// perfReport returns the top n lines of a perf report sorted by key: by
// self time, or (children) by the time in a function and its callees, then
// only functions of the server's stack with at least 2%.
func perfReport(perf, data, key string, children bool, n int) ([]string, error) {
	args := []string{"report", "-i", data, "--stdio", "-g", "none", "--sort", key, "--percent-limit", "0.3"}
	if children {
		args = append(args, "--children")
	} else {
		args = append(args, "--no-children")
	}
	out, err := exec.Command(perf, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		// "12.34%  [.] symbol" or "12.34%  dso"; with children
		// "12.34%  1.23%  [.] symbol" (total, self).
		if len(f) < 2 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		if children {
			pct, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			if err != nil || pct < 2 || len(f) < 4 || f[2] != "[.]" || !ownStack(f[3]) {
				continue
			}
			f = append(f[:1], f[2:]...)
		}
		var rest []string
		for _, w := range f[1:] {
			switch w {
			case "-", "[.]":
			case "[k]":
				rest = append(rest, "[kernel]")
			default:
				rest = append(rest, w)
			}
		}
		lines = append(lines, f[0]+" "+strings.Join(rest, " "))
		if len(lines) == n {
			break
		}
	}
	return lines, nil
}

// ownStack reports whether a symbol belongs to the redirect path of the
// servers measured (the HTTP server, the edge, its caches and store), as
// opposed to the runtime's and the standard library's plumbing.
func ownStack(sym string) bool {
	// Goroutine entry points and method-value wrappers repeat their callee.
	for _, w := range []string{"(*workerPool)", "-fm"} {
		if strings.Contains(sym, w) {
			return false
		}
	}
	for _, p := range []string{"github.com/", "google.golang.org/", "runtime.mallocgc", "runtime.gcBgMarkWorker"} {
		if strings.HasPrefix(sym, p) {
			return true
		}
	}
	return false
}
