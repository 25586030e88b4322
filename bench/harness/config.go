package harness

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// System names, in the order a round measures them.
const (
	SysLinkpop = "linkpop"
	// SysLinkpopAnalytics is the same edge with click analytics on (its
	// own replica, recording every redirect and shipping batches to the
	// click stream), to compare with SysLinkpop in the same rounds.
	SysLinkpopAnalytics = "linkpop-analytics"
	SysBare302          = "bare302"
	SysNginx            = "nginx"
	SysGolink           = "golink"
	// SysRedisPG is the design documents' reference architecture: an app
	// server doing cache-aside against Redis in front of PostgreSQL
	// (bench/cmd/redispg). It is measured for redirects and for creates.
	SysRedisPG = "redis-pg"
	// SysLinkpopBase is another build of the edge (Config.BaseEdge, for
	// example the main branch's) on its own replica of the same stream, in
	// the same rounds: an A/B of a hot-path change. Only measured when
	// asked for.
	SysLinkpopBase = "linkpop-base"
)

// Distribution names of request streams.
const (
	DistUniform = "uniform"
	DistZipf    = "zipf"
)

// Section names: the parts of a run, each reported separately.
const (
	SecRedirect    = "redirect"
	SecFlood       = "flood"
	SecCatchup     = "catchup"
	SecWrites      = "writes"
	SecPropagation = "propagation"
	SecClicks      = "clicks"
	// SecRestart is a restarted edge's first seconds under Zipf, warming
	// on and off, next to bare302; SecPeer is peer bootstrap (a fresh
	// edge takes the first edge's checkpoint) and the first edge's
	// redirects while it ships.
	SecRestart = "restart"
	SecPeer    = "peer"
)

// AllSystems and AllSections are the defaults of Config.Systems and
// Config.Sections.
var (
	AllSystems  = []string{SysLinkpop, SysLinkpopAnalytics, SysBare302, SysNginx, SysGolink, SysRedisPG}
	AllSections = []string{SecRedirect, SecFlood, SecCatchup, SecWrites, SecPropagation, SecClicks, SecRestart, SecPeer}
)

// Config says what to measure and how. Zero fields take the quick-mode
// defaults `make bench` uses.
type Config struct {
	// BinDir holds the edge, origin and bare302 binaries (`go build -o
	// BinDir/ ./cmd/... ./bench/cmd/...`). Required.
	BinDir string
	// WorkDir is scratch space: data directories, generated files, logs.
	// It must be on the disk the edge would use in production, because the
	// footprint section reports its bytes. Required; the caller removes it.
	WorkDir string
	// CacheDir keeps the golink database between runs: importing 1M links
	// through golink's -snapshot takes minutes. The default ("") imports
	// into WorkDir every run.
	CacheDir string

	// Links is the number of links loaded into every system. The default
	// is 1,000,000.
	Links int
	// Seed makes codes, targets and request streams reproducible. The
	// default is 1.
	Seed uint64
	// PathsPerFile is the length of each pre-generated request stream; wrk
	// walks it in a loop and loads it before every run (about 1 s per
	// 500,000 lines). The default is Links/2 clamped to [10,000,
	// 1,000,000].
	PathsPerFile int
	// ZipfS is the exponent of the Zipf request distribution. The default
	// is 1.1.
	ZipfS float64

	// Systems are measured in the redirect section, in this order (the
	// first system of each round rotates). The default is AllSystems.
	Systems []string
	// Sections run, in this order. The default is AllSections.
	Sections []string
	// Distributions of known codes requested. The default is uniform and
	// zipf.
	Distributions []string
	// Connections are the keep-alive connection counts of the redirect
	// section. The default is 64 and 256.
	Connections []int
	// Threads is wrk's thread count. The default is 1: wrk is pinned to
	// one core.
	Threads int
	// Duration is the length of one measured run. wrk counts whole
	// seconds: every wrk duration is rounded up to one. The default is 5s.
	Duration time.Duration
	// Warmup is an unreported run per system before the rounds of each
	// distribution; linkpop's warm-up then walks the rest of the request
	// stream once, so its hot cache holds every code the rounds ask for.
	// The default is 2s; negative disables it.
	Warmup time.Duration
	// Rounds is how many times every system is measured per
	// (distribution, connections); medians are over rounds. The default is
	// 3.
	Rounds int

	// BaseEdge is the binary of another edge build measured as
	// SysLinkpopBase. The default ("") measures none.
	BaseEdge string
	// BaseAnalytics runs SysLinkpopBase with click analytics on, as
	// SysLinkpopAnalytics: the A/B of a change to the analytics path. The
	// default is off.
	BaseAnalytics bool

	// Wrk, Nginx, Golink and Taskset are the paths of those programs. The
	// default ("") looks wrk, nginx and taskset up in PATH (and /usr/sbin)
	// and golink in BinDir. A missing wrk skips the sections that need it,
	// a missing nginx or golink skips that system; the report says so.
	Wrk, Nginx, Golink, Taskset string
	// NoPin disables taskset pinning. The default pins the measured server
	// to ServerCPU and wrk to LoadCPU when taskset exists and the machine
	// has at least two CPUs.
	NoPin bool
	// ServerCPU and LoadCPU are the cores of the pinning. The defaults
	// are 1 and 0.
	ServerCPU, LoadCPU int

	// WriteConcurrency are the client concurrencies of the origin write
	// section. The default is 1, 16 and 64.
	WriteConcurrency []int
	// WriteDuration is the length of one write run. The default is
	// Duration.
	WriteDuration time.Duration
	// PropagationLinks is how many links are created (then deactivated)
	// and timed to every edge. The default is 1,000.
	PropagationLinks int
	// PropagationWorkers create and poll in parallel. The default is 8.
	PropagationWorkers int
	// PropagationLoadConnections is the wrk load on each edge during the
	// propagation section. The default is 32; negative runs without load.
	PropagationLoadConnections int
	// ClickSamples is how many click → stats samples the clicks section
	// takes with no other traffic. The default is 200.
	ClickSamples int
	// ClickLoadDuration is the length of each wrk run of the clicks
	// section, during which the click → stats samples are taken (eight
	// workers, about one sample each a second with the default flush):
	// long enough for a p99 of more than a few dozen samples. The default
	// is 4 × Duration.
	ClickLoadDuration time.Duration
	// CatchupChanges is how many changes are published while an edge is
	// down. The default is Links/10, at most 100,000.
	CatchupChanges int
	// FloodDuration is the length of the negative-flood runs. The default
	// is 2 × Duration.
	FloodDuration time.Duration
	// FloodConnections and FloodKnownConnections are wrk's connections
	// for unknown and known codes during the flood. The defaults are 128
	// and 16.
	FloodConnections, FloodKnownConnections int

	// Progress, if set, is called with the report so far after the first
	// edge's bootstrap and after every section (Report.Pending lists the
	// sections left), so that a long run that is cut still leaves its
	// figures. The default (nil) is not to.
	Progress func(*Report)

	// Mode and Command are recorded in the report ("quick", "full",
	// "smoke"; the command line that started the run).
	Mode, Command string
	// Logger receives progress. nil discards.
	Logger *slog.Logger
}

// Validate reports every bad field at once.
func (c *Config) Validate() error {
	var errs []error
	if c.BinDir == "" {
		errs = append(errs, errors.New("BinDir is required"))
	}
	if c.WorkDir == "" {
		errs = append(errs, errors.New("WorkDir is required"))
	}
	if c.Links < 0 {
		errs = append(errs, fmt.Errorf("Links %d is negative", c.Links))
	}
	if c.Links > 0 && c.Links < 10 {
		errs = append(errs, fmt.Errorf("Links %d: at least 10", c.Links))
	}
	if c.ZipfS != 0 && c.ZipfS <= 1 {
		errs = append(errs, fmt.Errorf("ZipfS %v: must be > 1", c.ZipfS))
	}
	for _, s := range c.Systems {
		if s == SysLinkpopBase && c.BaseEdge == "" || c.BaseAnalytics && c.BaseEdge == "" {
			errs = append(errs, fmt.Errorf("system %s needs BaseEdge", s))
		}
		if !slices.Contains(AllSystems, s) && s != SysLinkpopBase {
			errs = append(errs, fmt.Errorf("unknown system %q", s))
		}
	}
	for _, s := range c.Sections {
		if !slices.Contains(AllSections, s) {
			errs = append(errs, fmt.Errorf("unknown section %q", s))
		}
	}
	for _, d := range c.Distributions {
		if d != DistUniform && d != DistZipf {
			errs = append(errs, fmt.Errorf("unknown distribution %q", d))
		}
	}
	for _, n := range append(slices.Clone(c.Connections), c.WriteConcurrency...) {
		if n <= 0 {
			errs = append(errs, fmt.Errorf("connection count %d must be positive", n))
		}
	}
	for name, d := range map[string]time.Duration{"Duration": c.Duration, "WriteDuration": c.WriteDuration, "FloodDuration": c.FloodDuration, "ClickLoadDuration": c.ClickLoadDuration} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	for name, n := range map[string]int{"Threads": c.Threads, "Rounds": c.Rounds, "PropagationLinks": c.PropagationLinks,
		"PropagationWorkers": c.PropagationWorkers, "CatchupChanges": c.CatchupChanges, "PathsPerFile": c.PathsPerFile,
		"FloodConnections": c.FloodConnections, "FloodKnownConnections": c.FloodKnownConnections, "ClickSamples": c.ClickSamples} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", name, n))
		}
	}
	if c.ServerCPU < 0 || c.LoadCPU < 0 {
		errs = append(errs, errors.New("ServerCPU and LoadCPU must not be negative"))
	}
	if c.ServerCPU == c.LoadCPU && (c.ServerCPU != 0 || c.LoadCPU != 0) {
		errs = append(errs, errors.New("ServerCPU and LoadCPU must differ"))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Links == 0 {
		c.Links = 1_000_000
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.PathsPerFile == 0 {
		c.PathsPerFile = min(max(c.Links/2, 10_000), 1_000_000)
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.1
	}
	if len(c.Systems) == 0 {
		c.Systems = AllSystems
	}
	if len(c.Sections) == 0 {
		c.Sections = AllSections
	}
	if len(c.Distributions) == 0 {
		c.Distributions = []string{DistUniform, DistZipf}
	}
	if len(c.Connections) == 0 {
		c.Connections = []int{64, 256}
	}
	if c.Threads == 0 {
		c.Threads = 1
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.ServerCPU == 0 && c.LoadCPU == 0 {
		c.ServerCPU, c.LoadCPU = 1, 0
	}
	if len(c.WriteConcurrency) == 0 {
		c.WriteConcurrency = []int{1, 16, 64}
	}
	if c.WriteDuration == 0 {
		c.WriteDuration = c.Duration
	}
	if c.PropagationLinks == 0 {
		c.PropagationLinks = 1000
	}
	if c.PropagationWorkers == 0 {
		c.PropagationWorkers = 8
	}
	if c.PropagationLoadConnections == 0 {
		c.PropagationLoadConnections = 32
	}
	if c.ClickSamples == 0 {
		c.ClickSamples = 200
	}
	if c.CatchupChanges == 0 {
		c.CatchupChanges = max(min(c.Links/10, 100_000), 1)
	}
	if c.FloodDuration == 0 {
		c.FloodDuration = 2 * c.Duration
	}
	if c.ClickLoadDuration == 0 {
		c.ClickLoadDuration = 4 * c.Duration
	}
	if c.FloodConnections == 0 {
		c.FloodConnections = 128
	}
	if c.FloodKnownConnections == 0 {
		c.FloodKnownConnections = 16
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Config) section(name string) bool { return slices.Contains(c.Sections, name) }

func (c *Config) system(name string) bool { return slices.Contains(c.Systems, name) }
