package verify

import (
	"strings"
	"testing"
	"time"
)

// TestWriteMetrics: the text format names every state and each edge.
func TestWriteMetrics(t *testing.T) {
	r := &Report{Edges: []Edge{
		{URL: "http://a:9080", State: OK},
		{URL: "http://b:9080", State: Diverged, Buckets: []int{3, 9}},
	}}
	var b strings.Builder
	if err := r.WriteMetrics(&b, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`linkpop_verify_edges{state="ok"} 1`,
		`linkpop_verify_edges{state="diverged"} 1`,
		`linkpop_verify_edges{state="unreachable"} 0`,
		`linkpop_verify_edge_diverged{edge="http://b:9080"} 1`,
		`linkpop_verify_edge_diverged{edge="http://a:9080"} 0`,
		`linkpop_verify_differing_buckets{edge="http://b:9080"} 2`,
		"linkpop_verify_last_run_timestamp_seconds 1700000000",
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
}
