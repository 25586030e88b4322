package harness

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is everything one run measured. It is written as JSON; Markdown
// renders the tables.
type Report struct {
	StartedAt  string `json:"started_at"`
	FinishedAt string `json:"finished_at"`
	// Mode is "quick", "full" or "smoke"; Command the command line.
	Mode    string  `json:"mode"`
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	// Settings are the effective configuration.
	Settings Settings `json:"config"`
	// Links and CaseCollisions describe the link table (see Settings).
	Dataset DatasetInfo `json:"dataset"`

	Redirect    *RedirectReport    `json:"redirect,omitempty"`
	Bootstrap   *BootstrapReport   `json:"bootstrap,omitempty"`
	Footprint   *FootprintReport   `json:"footprint,omitempty"`
	Flood       *FloodReport       `json:"flood,omitempty"`
	Catchup     *CatchupReport     `json:"catchup,omitempty"`
	Writes      *WritesReport      `json:"writes,omitempty"`
	Propagation *PropagationReport `json:"propagation,omitempty"`
	Clicks      *ClicksReport      `json:"clicks,omitempty"`
	// Restart is an edge's first seconds after a restart, warm and cold;
	// Peer is peer bootstrap.
	Restart *RestartReport `json:"restart,omitempty"`
	Peer    *PeerReport    `json:"peer,omitempty"`
	// Skipped maps a section to why it did not run.
	Skipped map[string]string `json:"skipped,omitempty"`
	// Errors are failures of sections that did not stop the run.
	Errors []string `json:"errors,omitempty"`
	// Pending are the sections not run yet when the report was written:
	// a report written as the run goes (Config.Progress) whose run was
	// cut lists what it lacks.
	Pending []string `json:"pending,omitempty"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	GoVersion   string `json:"go_version"`
	// LoadAvg is /proc/loadavg when the run started and when it ended:
	// other processes on the machine.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	Wrk          string `json:"wrk,omitempty"`
	Nginx        string `json:"nginx,omitempty"`
	Golink       string `json:"golink,omitempty"`
	Redis        string `json:"redis,omitempty"`
	PostgreSQL   string `json:"postgresql,omitempty"`
}

// Settings is the effective configuration of a run.
type Settings struct {
	Links                      int      `json:"links"`
	Seed                       uint64   `json:"seed"`
	PathsPerFile               int      `json:"paths_per_file"`
	ZipfS                      float64  `json:"zipf_s"`
	Systems                    []string `json:"systems"`
	Sections                   []string `json:"sections"`
	Distributions              []string `json:"distributions"`
	Connections                []int    `json:"connections"`
	WrkThreads                 int      `json:"wrk_threads"`
	RunSeconds                 float64  `json:"run_seconds"`
	WarmupSeconds              float64  `json:"warmup_seconds"`
	Rounds                     int      `json:"rounds"`
	Pinning                    string   `json:"pinning"`
	WriteConcurrency           []int    `json:"write_concurrency"`
	WriteSeconds               float64  `json:"write_seconds"`
	PropagationLinks           int      `json:"propagation_links"`
	PropagationWorkers         int      `json:"propagation_workers"`
	PropagationLoadConnections int      `json:"propagation_load_connections"`
	CatchupChanges             int      `json:"catchup_changes"`
	FloodSeconds               float64  `json:"flood_seconds"`
	FloodConnections           int      `json:"flood_connections"`
	FloodKnownConnections      int      `json:"flood_known_connections"`
}

// DatasetInfo describes the link table.
type DatasetInfo struct {
	Links int `json:"links"`
	// CaseCollisions is how many codes of the first uniform draw shared
	// their lower-case form with another code. nginx map keys and golink
	// IDs are case-insensitive, so each would have redirected to another
	// link's target; they were redrawn so all systems serve the same table.
	CaseCollisions int    `json:"case_collisions"`
	CodeLength     int    `json:"code_length"`
	TargetExample  string `json:"target_example"`
}

// RedirectReport is the side-by-side redirect comparison.
type RedirectReport struct {
	Systems []SystemInfo      `json:"systems"`
	Summary []RedirectSummary `json:"summary"`
	Runs    []RedirectRun     `json:"runs"`
	// Profiles are perf profiles of the edge and bare302 under the same
	// load, in extra runs; ProfileSkipped says why there are none.
	Profiles       []*Profile `json:"profiles,omitempty"`
	ProfileSkipped string     `json:"profile_skipped,omitempty"`
	// Cold is the edge right after a restart, next to bare302.
	Cold *ColdReport `json:"cold,omitempty"`
	// LoadAvg is /proc/loadavg when the section started and ended.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

// ColdReport is one run of a just restarted edge (hot cache and block
// cache empty, every request in the run a first touch of its code, read
// from the replica) and one run of bare302 right after.
type ColdReport struct {
	Distribution string      `json:"distribution"`
	Connections  int         `json:"connections"`
	Linkpop      RedirectRun `json:"linkpop"`
	Bare302      RedirectRun `json:"bare302"`
	RatioRPS     float64     `json:"ratio_rps_to_bare302"`
	// RedisPG is the reference architecture right after FLUSHALL: every
	// request a Redis miss, a SELECT and a SET.
	RedisPG      *RedirectRun `json:"redis_pg,omitempty"`
	RatioRedisPG float64      `json:"ratio_redis_pg_to_bare302,omitempty"`
}

// RedirectRun is one wrk run against one system.
type RedirectRun struct {
	Distribution string  `json:"distribution"`
	Connections  int     `json:"connections"`
	Round        int     `json:"round"` // -1 for the warm-up
	System       string  `json:"system"`
	RPS          float64 `json:"rps"`
	P50US        int64   `json:"p50_us"`
	P99US        int64   `json:"p99_us"`
	P999US       int64   `json:"p999_us"`
	// StatusErrors are responses >= 400 (must be 0: every code is known).
	StatusErrors int64 `json:"status_errors"`
	SocketErrors int64 `json:"socket_errors"`
	// CPUCores is the server's CPU seconds per second of the run;
	// CPUMicrosPerRequest its CPU time per request.
	CPUCores            float64 `json:"cpu_cores"`
	CPUMicrosPerRequest float64 `json:"cpu_us_per_request"`
	// LoadCPUCores is wrk's CPU seconds per second of the run: near 1 per
	// thread, the load generator limits the run.
	LoadCPUCores float64    `json:"load_cpu_cores"`
	Memory       memory     `json:"memory"`
	Wrk          *WrkResult `json:"wrk"`
}

// RedirectSummary is the median over rounds of one system at one
// (distribution, connections).
type RedirectSummary struct {
	Distribution string  `json:"distribution"`
	Connections  int     `json:"connections"`
	System       string  `json:"system"`
	Rounds       int     `json:"rounds"`
	RPS          float64 `json:"rps"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`
	CPUCores     float64 `json:"cpu_cores"`
	CPUMicros    float64 `json:"cpu_us_per_request"`
	LoadCPUCores float64 `json:"load_cpu_cores"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
	// PSS is the largest proportional set size after a run: the memory
	// of a multi-process system counted once.
	PSS int64 `json:"pss_bytes"`
	// RatioRPS is the median over rounds of this system's requests/s
	// divided by bare302's in the same round; P99DeltaMs likewise for
	// p99 minus bare302's p99, and RatioCPU for CPU time per request
	// (steadier than requests/s when other processes take CPU time).
	RatioRPS   float64 `json:"ratio_rps_to_bare302"`
	P99DeltaMs float64 `json:"p99_delta_ms_to_bare302"`
	RatioCPU   float64 `json:"ratio_cpu_per_request_to_bare302"`
	// RatioLinkpop is likewise this system's requests/s over linkpop's.
	RatioLinkpop float64 `json:"ratio_rps_to_linkpop"`
	StatusErrors int64   `json:"status_errors"`
	SocketErrors int64   `json:"socket_errors"`
}

// BootstrapReport is loading linkpop through the change stream.
type BootstrapReport struct {
	Links int `json:"links"`
	// PublishSeconds is filling the stream: publishing every link's create
	// event (asynchronously, at most PublishConcurrency awaiting their
	// ack), or, with StreamFromCache, copying the stream a previous run
	// with the same links and seed kept in the cache directory.
	PublishSeconds     float64 `json:"publish_seconds"`
	PublishPerSecond   float64 `json:"publish_per_second"`
	PublishConcurrency int     `json:"publish_concurrency"`
	StreamFromCache    bool    `json:"stream_from_cache,omitempty"`
	StreamLastSeq      uint64  `json:"stream_last_seq"`
	// ReadySeconds is a fresh edge's start to /readyz 200 (within the lag
	// threshold); CaughtUpSeconds to having applied the whole stream.
	ReadySeconds    float64 `json:"ready_seconds"`
	CaughtUpSeconds float64 `json:"caught_up_seconds"`
	// RestartReadySeconds is an edge with a complete replica restarted
	// with no changes missed, to /readyz 200.
	RestartReadySeconds float64 `json:"restart_ready_seconds,omitempty"`
	// SecondEdge is the propagation section's fresh edge.
	SecondEdgeReadySeconds    float64 `json:"second_edge_ready_seconds,omitempty"`
	SecondEdgeCaughtUpSeconds float64 `json:"second_edge_caught_up_seconds,omitempty"`
}

// FootprintReport is the edge's memory and disk at Links links.
type FootprintReport struct {
	Links int `json:"links"`
	// MemoryReady is right after bootstrap; MemoryAfterLoad after the
	// redirect runs filled the hot cache.
	MemoryReady       memory  `json:"memory_ready"`
	MemoryAfterLoad   memory  `json:"memory_after_load"`
	DiskBytes         int64   `json:"disk_bytes"`
	DiskBytesPerLink  float64 `json:"disk_bytes_per_link"`
	RSSBytesPerLink   float64 `json:"rss_bytes_per_link_after_load"`
	HotCacheEntries   int     `json:"hot_cache_entries,omitempty"`
	ReplicaLinksCount uint64  `json:"replica_links"`
}

// FloodReport is unknown codes at full speed against one edge.
type FloodReport struct {
	// Baseline is known codes alone; Known the same load during the
	// flood; Unknown the flood.
	Baseline *WrkResult `json:"baseline"`
	Known    *WrkResult `json:"known"`
	Unknown  *WrkResult `json:"unknown"`
	// KnownP99BaselineMs and KnownP99FloodMs compare the known-code p99
	// without and with the flood.
	KnownP99BaselineMs float64 `json:"known_p99_baseline_ms"`
	KnownP99FloodMs    float64 `json:"known_p99_flood_ms"`
	UnknownRPS         float64 `json:"unknown_rps"`
	// UnknownNot404 is unknown-code responses that were not >= 400
	// (must be 0).
	UnknownNot404 int64  `json:"unknown_not_4xx"`
	MemoryBefore  memory `json:"memory_before"`
	MemoryAfter   memory `json:"memory_after"`
	// RSSGrowthBytes is MemoryAfter.RSS - MemoryBefore.RSS.
	RSSGrowthBytes int64 `json:"rss_growth_bytes"`
	UniqueUnknown  int   `json:"unique_unknown_codes"`
}

// CatchupReport is an edge that was down while changes were made.
type CatchupReport struct {
	Changes          int     `json:"changes"`
	PublishSeconds   float64 `json:"publish_seconds"`
	ReadySeconds     float64 `json:"ready_seconds"`
	CaughtUpSeconds  float64 `json:"caught_up_seconds"`
	ChangesPerSecond float64 `json:"applied_per_second"`
}

// WritesReport is creates through the origin API and, when it runs,
// through the reference architecture (redis-pg), alternated in rounds.
type WritesReport struct {
	Runs    []WriteRun     `json:"runs"`
	Summary []WriteSummary `json:"summary"`
	// RelayMetrics are the origin's relay/outbox metric lines after the
	// runs.
	RelayMetrics []string `json:"relay_metrics,omitempty"`
	// RedisPGPIDs says which processes the reference's CPU and RSS cover.
	RedisPGPIDs string `json:"redis_pg_processes,omitempty"`
	// Skipped maps a system to why it was not measured.
	Skipped map[string]string `json:"skipped,omitempty"`
	// LoadAvg is /proc/loadavg when the section started and ended.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

// WriteRun is one system at one concurrency in one round.
type WriteRun struct {
	System      string         `json:"system"`
	Concurrency int            `json:"concurrency"`
	Round       int            `json:"round"`
	Seconds     float64        `json:"seconds"`
	Created     int            `json:"created"`
	Statuses    map[string]int `json:"statuses"`
	PerSecond   float64        `json:"creates_per_second"`
	P50Ms       float64        `json:"p50_ms"`
	P99Ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
	// CPUCores and CPUMicrosPerCreate are the system's CPU during the run:
	// linkpop the origin process (the JetStream server it publishes to
	// runs inside the harness and is not counted); redis-pg the app, Redis
	// and every PostgreSQL process.
	CPUCores           float64 `json:"cpu_cores"`
	CPUMicrosPerCreate float64 `json:"cpu_us_per_create"`
	Memory             memory  `json:"memory"`
	// CreatesPerCommit is linkpop's creates per group commit (one fsync
	// each) during the run, from linkpop_store_commit_batch_size.
	CreatesPerCommit float64 `json:"creates_per_commit,omitempty"`
	// DrainMs is from the last acknowledged create to the stream holding
	// every event of the run (outbox → relay → stream); linkpop only.
	DrainMs float64 `json:"drain_ms,omitempty"`
}

// WriteSummary is the median over rounds of one system at one
// concurrency.
type WriteSummary struct {
	System             string         `json:"system"`
	Concurrency        int            `json:"concurrency"`
	Rounds             int            `json:"rounds"`
	PerSecond          float64        `json:"creates_per_second"`
	P50Ms              float64        `json:"p50_ms"`
	P99Ms              float64        `json:"p99_ms"`
	CPUCores           float64        `json:"cpu_cores"`
	CPUMicrosPerCreate float64        `json:"cpu_us_per_create"`
	RSS                int64          `json:"rss_bytes"`
	PSS                int64          `json:"pss_bytes"`
	CreatesPerCommit   float64        `json:"creates_per_commit,omitempty"`
	DrainMs            float64        `json:"drain_ms,omitempty"`
	Statuses           map[string]int `json:"statuses"`
	// LinkpopRatio is, per round, linkpop's creates/s divided by this
	// system's at the same concurrency; the median (0 for linkpop).
	LinkpopRatio float64 `json:"linkpop_ratio,omitempty"`
}

// PropagationReport is create/deactivate → visible on every edge.
type PropagationReport struct {
	Links   int    `json:"links"`
	Edges   int    `json:"edges"`
	Workers int    `json:"workers"`
	Load    string `json:"load"`
	// Create is 201 → first 302 on each edge; Deactivate is the
	// deactivation's response → first 410.
	Create     LatencyStats `json:"create"`
	Deactivate LatencyStats `json:"deactivate"`
	LoadRuns   []*WrkResult `json:"load_runs,omitempty"`
	Failures   []string     `json:"failures,omitempty"`
}

// LatencyStats summarises visibility times. All is per link the slowest
// edge (visible everywhere); PerEdge per edge.
type LatencyStats struct {
	All     Percentiles            `json:"all_edges"`
	PerEdge map[string]Percentiles `json:"per_edge"`
}

// Percentiles of a sample in milliseconds.
type Percentiles struct {
	Count int     `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func percentiles(ms []float64) Percentiles {
	if len(ms) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Percentiles{Count: len(s), P50Ms: at(0.50), P99Ms: at(0.99), MaxMs: s[len(s)-1]}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// machine describes the host.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemoryBytes = kb << 10
				}
			}
		}
	}
	m.LoadAvgStart = loadAvg()
	if out, err := exec.Command("uname", "-srvm").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	} else if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// version runs prog with args and returns the first line of its output.
func version(prog string, args ...string) string {
	if prog == "" {
		return ""
	}
	out, _ := exec.Command(prog, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// WriteFiles writes the report as <dir>/<timestamp>.json and .md and
// copies both to latest.json and latest.md. It returns the JSON path.
func (r *Report) WriteFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	js = append(js, '\n')
	md := []byte(r.Markdown())
	stamp := r.StartedAt
	if t, err := time.Parse(time.RFC3339, r.StartedAt); err == nil {
		stamp = t.UTC().Format("20060102T150405Z")
	}
	base := filepath.Join(dir, stamp)
	for path, b := range map[string][]byte{
		base + ".json": js, base + ".md": md,
		filepath.Join(dir, "latest.json"): js, filepath.Join(dir, "latest.md"): md,
	} {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", err
		}
	}
	return base + ".json", nil
}
