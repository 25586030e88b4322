package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkpop/linkpop/client"
)

// errProbeFailed is the error of a probe that found a mismatch: exit 1.
var errProbeFailed = errors.New("probe failed")

// probeResult is one check of one link on one edge.
type probeResult struct {
	Edge     string        `json:"edge"`
	Code     string        `json:"code"`
	Status   int           `json:"status"`
	Location string        `json:"location"`
	Want     int           `json:"want_status"`
	WantLoc  string        `json:"want_location"`
	Latency  time.Duration `json:"latency_ns"`
	Error    string        `json:"error,omitempty"`
	OK       bool          `json:"ok"`
}

func (a *app) probeCmd() *cobra.Command {
	var (
		o          output
		edges      []string
		discover   []string
		codes      []string
		top        int
		from       string
		maxLatency time.Duration
		reqTimeout time.Duration
		metrics    string
	)
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Synthetic check: the top links answered right by every edge",
		Long: `probe takes the top links by clicks from the stats API (and any --code),
reads each from the origin, and asks every edge for it with HEAD (not a
click): the status must be the link's redirect (410 when disabled or
expired) and Location its target, byte for byte. Edges are the --edge
redirect URLs and the members of the PoP of each --discover edge admin
URL (its /status). Exit status 1 on any mismatch, error, or answer
slower than --max-latency; --metrics-file writes the results for
node_exporter's textfile collector (deploy/systemd/linkpop-probe.timer).`,
		Example: `  linkpop probe --edge http://127.0.0.1:8080 --edge http://127.0.0.1:8082
  linkpop probe --discover http://127.0.0.1:9080 --top 50 --metrics-file /var/lib/node_exporter/linkpop_probe.prom`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if top < 0 || top > 1000 {
				return usagef("--top %d: want 0 to 1000", top)
			}
			if len(edges) == 0 && len(discover) == 0 {
				return usagef("give at least one --edge or --discover")
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			defer cancel()
			hc := &http.Client{
				Timeout:       reqTimeout,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			targets, err := probeEdges(ctx, hc, edges, discover)
			if err != nil {
				return err
			}
			want, err := probeLinks(ctx, c, codes, top, from)
			if err != nil {
				return err
			}
			var results []probeResult
			for _, e := range targets {
				for _, l := range want {
					results = append(results, probeOne(ctx, hc, e, l, maxLatency))
				}
			}
			if metrics != "" {
				if err := writeProbeMetrics(metrics, results, time.Now()); err != nil {
					return err
				}
			}
			failed := 0
			for _, r := range results {
				if !r.OK {
					failed++
				}
			}
			if o.json() {
				if err := writeJSON(a.io.Stdout, results); err != nil {
					return err
				}
			} else {
				tw := newTable(a.io.Stdout)
				fmt.Fprintln(tw, "EDGE\tCODE\tSTATUS\tLATENCY\tRESULT")
				for _, r := range results {
					res := "ok"
					if !r.OK {
						res = "FAIL: " + r.Error
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Edge, r.Code, r.Status, r.Latency.Round(time.Microsecond), res)
				}
				fmt.Fprintf(tw, "\n%d checks (%d links on %d edges), %d failed\n", len(results), len(want), len(targets), failed)
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%w: %d of %d checks", errProbeFailed, failed, len(results))
			}
			return nil
		},
	}
	o.add(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&edges, "edge", nil, "edge redirect base URL to check (repeatable)")
	f.StringSliceVar(&discover, "discover", nil, "edge admin URL whose /status members are checked too (repeatable)")
	f.StringSliceVar(&codes, "code", nil, "code to check besides the top links (repeatable)")
	f.IntVar(&top, "top", 20, "how many top links to check (0: only --code)")
	f.StringVar(&from, "from", "24h", "top links over this range before now: a duration or RFC 3339")
	f.DurationVar(&maxLatency, "max-latency", 0, "fail an answer slower than this (0: no bound)")
	f.DurationVar(&reqTimeout, "request-timeout", 5*time.Second, "bound on each edge request")
	f.StringVar(&metrics, "metrics-file", "", "write the results as Prometheus metrics to this file (atomically)")
	return cmd
}

// probeLink is what one link should answer.
type probeLink struct {
	code, location string
	status         int
}

// probeLinks are the links to check: the top links, then codes, each as
// the origin has it now.
func probeLinks(ctx context.Context, c *client.Client, codes []string, top int, from string) ([]probeLink, error) {
	var all []string
	if top > 0 {
		f, t, err := statsRange(from, "", time.Now())
		if err != nil {
			return nil, err
		}
		tl, err := c.Top(ctx, client.StatsQuery{From: f, To: t, Limit: top})
		if err != nil {
			return nil, fmt.Errorf("top links: %w", err)
		}
		for _, l := range tl.Links {
			all = append(all, l.Code)
		}
	}
	for _, code := range codes {
		if !slices.Contains(all, code) {
			all = append(all, code)
		}
	}
	if len(all) == 0 {
		return nil, errors.New("no links to probe: no clicks in the range (give --code)")
	}
	now := time.Now()
	out := make([]probeLink, 0, len(all))
	for _, code := range all {
		l, err := c.GetLink(ctx, code)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", code, err)
		}
		p := probeLink{code: code, status: http.StatusGone}
		if l.Status == client.StatusActive && (l.ExpiresAt == nil || now.Before(*l.ExpiresAt)) {
			p.status, p.location = l.Redirect, l.URL
		}
		out = append(out, p)
	}
	return out, nil
}

// probeEdges returns the redirect base URLs to check: edges, then the
// members of each discover edge's PoP, without duplicates.
func probeEdges(ctx context.Context, hc *http.Client, edges, discover []string) ([]string, error) {
	var out []string
	add := func(u string) {
		u = strings.TrimSuffix(u, "/")
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	for _, e := range edges {
		add(e)
	}
	for _, d := range discover {
		st, err := edgeStatus(ctx, hc, strings.TrimSuffix(d, "/")+"/status")
		if err != nil {
			return nil, fmt.Errorf("discover %s: %w", d, err)
		}
		if len(st.Members) == 0 {
			return nil, fmt.Errorf("discover %s: no members (is gossip on?)", d)
		}
		for _, m := range st.Members {
			if m.Listen == "" {
				return nil, fmt.Errorf("discover %s: member %s does not announce its listener", d, m.Name)
			}
			add("http://" + m.Listen)
		}
	}
	return out, nil
}

func edgeStatus(ctx context.Context, hc *http.Client, url string) (client.EdgeStatus, error) {
	var st client.EdgeStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	// /status answers 503 with the same body while the edge is not ready.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
	return st, err
}

// probeOne asks edge for l with HEAD and judges the answer.
func probeOne(ctx context.Context, hc *http.Client, edge string, l probeLink, maxLatency time.Duration) probeResult {
	r := probeResult{Edge: edge, Code: l.code, Want: l.status, WantLoc: l.location}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, edge+"/"+l.code, nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	req.Header.Set("User-Agent", "linkpop-probe/"+Version)
	start := time.Now()
	resp, err := hc.Do(req)
	r.Latency = time.Since(start)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	resp.Body.Close()
	r.Status, r.Location = resp.StatusCode, resp.Header.Get("Location")
	switch {
	case r.Status != l.status:
		r.Error = fmt.Sprintf("status %d, want %d", r.Status, l.status)
	case r.Location != l.location:
		r.Error = fmt.Sprintf("Location %q, want %q", r.Location, l.location)
	case maxLatency > 0 && r.Latency > maxLatency:
		r.Error = fmt.Sprintf("%v slower than %v", r.Latency.Round(time.Microsecond), maxLatency)
	default:
		r.OK = true
	}
	return r
}

// writeProbeMetrics writes, per edge, the checks made, the failures and
// the slowest answer, and the time of the run, in the Prometheus text
// format, through a temporary file and a rename.
func writeProbeMetrics(name string, results []probeResult, now time.Time) error {
	type agg struct {
		checks, failures int
		slowest          time.Duration
	}
	per := map[string]*agg{}
	var order []string
	for _, r := range results {
		a := per[r.Edge]
		if a == nil {
			a = &agg{}
			per[r.Edge] = a
			order = append(order, r.Edge)
		}
		a.checks++
		if !r.OK {
			a.failures++
		}
		a.slowest = max(a.slowest, r.Latency)
	}
	var b strings.Builder
	b.WriteString("# HELP linkpop_probe_checks Links checked on the edge by the last linkpop probe.\n# TYPE linkpop_probe_checks gauge\n")
	for _, e := range order {
		fmt.Fprintf(&b, "linkpop_probe_checks{edge=%s} %d\n", strconv.Quote(e), per[e].checks)
	}
	b.WriteString("# HELP linkpop_probe_failures Checks that failed (status, Location, latency or error).\n# TYPE linkpop_probe_failures gauge\n")
	for _, e := range order {
		fmt.Fprintf(&b, "linkpop_probe_failures{edge=%s} %d\n", strconv.Quote(e), per[e].failures)
	}
	b.WriteString("# HELP linkpop_probe_duration_seconds The slowest answer of the edge in the last probe.\n# TYPE linkpop_probe_duration_seconds gauge\n")
	for _, e := range order {
		fmt.Fprintf(&b, "linkpop_probe_duration_seconds{edge=%s} %g\n", strconv.Quote(e), per[e].slowest.Seconds())
	}
	b.WriteString("# HELP linkpop_probe_last_run_timestamp_seconds When the probe ran.\n# TYPE linkpop_probe_last_run_timestamp_seconds gauge\n")
	fmt.Fprintf(&b, "linkpop_probe_last_run_timestamp_seconds %d\n", now.Unix())
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
