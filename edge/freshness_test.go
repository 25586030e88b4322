package edge_test

import (
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestStrictFreshness: a strict link is redirected while the edge can
// prove it is within MaxStale of the stream, and answered 503 with
// Retry-After once it cannot (the stream is down for longer than
// MaxStale), while a relaxed link keeps its redirect (stale-on-error);
// when the stream is back the strict link redirects again. A restarted
// edge that cannot reach the stream has no proof at all: its strict links
// are 503 from the first request.
func TestStrictFreshness(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfg := edgeConfig(t, st.ns.URL())
	cfg.MaxStale = 2 * time.Second
	e := startEdge(t, cfg)
	strict := record("strict1", "https://example.com/s", 302, 1)
	strict.Freshness = link.FreshnessStrict
	st.publish(t, link.OpCreate, strict)
	last := st.publish(t, link.OpCreate, record("relax1", "https://example.com/r", 302, 2))
	wait.For(t, 20*time.Second, "both redirect", func() bool {
		return get(t, e.Addr(), "/strict1").StatusCode == 302 && get(t, e.Addr(), "/relax1").StatusCode == 302
	})
	wait.For(t, 20*time.Second, "proof of the last sequence", func() bool {
		s := e.Status()
		return s.ProvenSeq == last && s.ProofAgeSeconds <= cfg.MaxStale.Seconds()
	})

	st.ns.Stop()
	wait.For(t, 30*time.Second, "strict link unavailable", func() bool { return get(t, e.Addr(), "/strict1").StatusCode == 503 })
	r := get(t, e.Addr(), "/strict1")
	if r.Header.Get("Retry-After") != "5" || r.Header.Get("Location") != "" {
		t.Errorf("strict 503 headers: %q", r.raw)
	}
	if s := e.Status(); s.ProofAgeSeconds <= cfg.MaxStale.Seconds() || !s.Stale {
		t.Errorf("status while cut: proof age %.1fs stale %v", s.ProofAgeSeconds, s.Stale)
	}
	if r := get(t, e.Addr(), "/relax1"); r.StatusCode != 302 || r.Header.Get("Location") != "https://example.com/r" {
		t.Errorf("relaxed link while cut: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if got := metric(t, e.AdminAddr(), "linkpop_edge_strict_unavailable_total"); got == 0 {
		t.Error("strict refusals not counted")
	}

	st.ns.Restart()
	wait.For(t, 30*time.Second, "strict link redirects once the stream is back", func() bool { return get(t, e.Addr(), "/strict1").StatusCode == 302 })

	// A restart with the stream unreachable: no proof yet.
	e.stop()
	st.ns.Stop()
	cfg.NATS.URLs = []string{unreachableNATS(t)}
	e2 := startEdge(t, cfg)
	if r := get(t, e2.Addr(), "/strict1"); r.StatusCode != 503 {
		t.Errorf("restarted edge without the stream: strict link %d", r.StatusCode)
	}
	if r := get(t, e2.Addr(), "/relax1"); r.StatusCode != 302 {
		t.Errorf("restarted edge without the stream: relaxed link %d", r.StatusCode)
	}
}
