package verify

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// WriteMetrics writes the report in the Prometheus text format, for
// node_exporter's textfile collector (`origin verify -metrics-file`), so
// the LinkpopDivergence alert (deploy/prometheus) sees what a periodic
// verify found:
//
//	linkpop_verify_edges{state="ok|diverged|lagging|unreachable"}  edges in each state
//	linkpop_verify_edge_diverged{edge="<url>"}                      1 if that edge diverged
//	linkpop_verify_differing_buckets{edge="<url>"}                  buckets that differed in every round
//	linkpop_verify_last_run_timestamp_seconds                       when this report was made
func (r *Report) WriteMetrics(w io.Writer, now time.Time) error {
	count := map[State]int{}
	for _, e := range r.Edges {
		count[e.State]++
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# HELP linkpop_verify_edges Edges in each verify state.\n# TYPE linkpop_verify_edges gauge\n")
	for _, s := range []State{OK, Diverged, Lagging, Unreachable} {
		p("linkpop_verify_edges{state=%q} %d\n", string(s), count[s])
	}
	p("# HELP linkpop_verify_edge_diverged 1 if the edge's replica diverged from the origin.\n# TYPE linkpop_verify_edge_diverged gauge\n")
	for _, e := range r.Edges {
		d := 0
		if e.State == Diverged {
			d = 1
		}
		p("linkpop_verify_edge_diverged{edge=%s} %d\n", strconv.Quote(e.URL), d)
	}
	p("# HELP linkpop_verify_differing_buckets Digest buckets that differed in every round.\n# TYPE linkpop_verify_differing_buckets gauge\n")
	for _, e := range r.Edges {
		p("linkpop_verify_differing_buckets{edge=%s} %d\n", strconv.Quote(e.URL), len(e.Buckets))
	}
	p("# HELP linkpop_verify_last_run_timestamp_seconds When the verify ran.\n# TYPE linkpop_verify_last_run_timestamp_seconds gauge\n")
	_, err := fmt.Fprintf(w, "linkpop_verify_last_run_timestamp_seconds %d\n", now.Unix())
	return err
}
