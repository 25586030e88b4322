// Command benchctl runs linkpop's benchmark (bench/harness) and writes its
// report to bench/results/<timestamp>.json and .md, and latest.json and
// latest.md. bench/run.sh (`make bench`) builds the binaries and calls it.
//
//	benchctl -bin bench/.cache/bin [-full] [-links N] [-out bench/results]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/bench/harness"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchctl:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("benchctl", flag.ContinueOnError)
	var (
		bin       = fs.String("bin", "bench/.cache/bin", "`dir` holding edge, origin, bare302 (and golink)")
		work      = fs.String("work", "", "scratch `dir` (default: a new directory under bench/.cache, removed afterwards)")
		keepWork  = fs.Bool("keep-work", false, "keep the scratch directory (logs, data dirs)")
		cache     = fs.String("cache", "bench/.cache", "`dir` caching golink's imported database between runs")
		out       = fs.String("out", "bench/results", "results `dir`")
		full      = fs.Bool("full", false, "long version: 10M links, 20 s runs, 5 rounds")
		links     = fs.Int("links", 0, "links `N` (default 1,000,000; 10,000,000 with -full)")
		duration  = fs.Duration("duration", 0, "length of one redirect run (default 5s; 20s with -full)")
		writeDur  = fs.Duration("write-duration", 0, "length of one create run (default -duration)")
		rounds    = fs.Int("rounds", 0, "alternated rounds (default 3; 5 with -full)")
		conns     = fs.String("conns", "", "redirect connection counts, comma separated (default 64,256)")
		threads   = fs.Int("threads", 0, "wrk threads (default 1)")
		systems   = fs.String("systems", "", "systems, comma separated (default linkpop,linkpop-analytics,bare302,nginx,golink,redis-pg)")
		sections  = fs.String("sections", "", "sections, comma separated, run in this order (default redirect,flood,catchup,writes,propagation,clicks,restart,peer)")
		dists     = fs.String("dists", "", "request distributions (default uniform,zipf)")
		skipGL    = fs.Bool("skip-golink", false, "do not measure golink")
		noPin     = fs.Bool("no-pin", false, "do not pin server and wrk to separate cores")
		seed      = fs.Uint64("seed", 0, "seed of codes and request streams (default 1)")
		command   = fs.String("command", "", "command line recorded in the report (default this one)")
		verbose   = fs.Bool("v", false, "log every run")
		baseEdge  = fs.String("base-edge", "", "edge `binary` of another build, measured as system linkpop-base (add it to -systems)")
		baseClk   = fs.Bool("base-analytics", false, "run linkpop-base with click analytics on (the A/B of an analytics change; needs -base-edge)")
		propLinks = fs.Int("propagation-links", 0, "links created and deactivated in the propagation section (default 1000)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg := harness.Config{
		BinDir: *bin, CacheDir: *cache, Links: *links, Duration: *duration, Rounds: *rounds,
		Threads: *threads, NoPin: *noPin, Seed: *seed, PropagationLinks: *propLinks, WriteDuration: *writeDur, BaseEdge: *baseEdge, BaseAnalytics: *baseClk,
		Mode: "quick", Command: *command, Logger: log,
	}
	if cfg.Command == "" {
		cfg.Command = strings.Join(os.Args, " ")
	}
	if *full {
		cfg.Mode = "full"
		cfg.Links = or(cfg.Links, 10_000_000)
		cfg.Duration = or(cfg.Duration, 20*time.Second)
		cfg.Rounds = or(cfg.Rounds, 5)
	}
	var err error
	if cfg.Connections, err = ints(*conns); err != nil {
		return fmt.Errorf("-conns: %w", err)
	}
	cfg.Systems = list(*systems)
	if *skipGL {
		if len(cfg.Systems) == 0 {
			cfg.Systems = harness.AllSystems
		}
		var keep []string
		for _, s := range cfg.Systems {
			if s != harness.SysGolink {
				keep = append(keep, s)
			}
		}
		cfg.Systems = keep
	}
	cfg.Sections = list(*sections)
	cfg.Distributions = list(*dists)

	if *work == "" {
		if err := os.MkdirAll("bench/.cache", 0o755); err != nil {
			return err
		}
		dir, err := os.MkdirTemp("bench/.cache", "work-")
		if err != nil {
			return err
		}
		*work = dir
		if !*keepWork {
			defer os.RemoveAll(dir)
		}
	}
	if cfg.WorkDir, err = filepath.Abs(*work); err != nil {
		return err
	}
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return err
	}
	if cfg.BaseEdge != "" {
		if cfg.BaseEdge, err = filepath.Abs(cfg.BaseEdge); err != nil {
			return err
		}
	}
	if cfg.CacheDir != "" {
		if cfg.CacheDir, err = filepath.Abs(cfg.CacheDir); err != nil {
			return err
		}
	}

	// The report is written as the run goes, so a run cut short (a
	// signal, a deadline) leaves what it measured.
	cfg.Progress = func(rep *harness.Report) {
		if _, err := rep.WriteFiles(*out); err != nil {
			log.Warn("partial report", "err", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	begin := time.Now()
	rep, err := harness.Run(ctx, cfg)
	if err != nil {
		return err
	}
	path, err := rep.WriteFiles(*out)
	if err != nil {
		return err
	}
	fmt.Print(rep.Markdown())
	fmt.Printf("\nwrote %s (and latest.json, latest.md) in %v\n", path, time.Since(begin).Round(time.Second))
	if *keepWork {
		fmt.Printf("scratch directory kept: %s\n", cfg.WorkDir)
	}
	return nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func ints(s string) ([]int, error) {
	var out []int
	for _, p := range list(s) {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
