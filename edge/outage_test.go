package edge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestStaleOnError: with the stream down an edge keeps serving everything
// it holds, across a restart, stays in rotation saying it is stale, and
// catches up when the stream returns.
func TestStaleOnError(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfg := edgeConfig(t, st.ns.URL())
	a := startEdge(t, cfg)

	const n = 20
	var last uint64
	for i := range n {
		last = st.publish(t, link.OpCreate, record(fmt.Sprintf("out%02d", i), fmt.Sprintf("https://example.com/%d", i), 302, 1))
	}
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return a.Status().Applied >= last })
	servesAll := func(addr string) {
		t.Helper()
		for i := range n {
			r := get(t, addr, fmt.Sprintf("/out%02d", i))
			if want := fmt.Sprintf("https://example.com/%d", i); r.StatusCode != 302 || r.Header.Get("Location") != want {
				t.Fatalf("out%02d = %d %q, want 302 %q", i, r.StatusCode, r.Header.Get("Location"), want)
			}
		}
	}
	servesAll(a.Addr())

	st.ns.Stop()
	servesAll(a.Addr())
	wait.For(t, 10*time.Second, "edge notices the outage", func() bool {
		r := get(t, a.AdminAddr(), "/readyz")
		return r.StatusCode == 200 && r.body == "stale\n"
	})
	servesAll(a.Addr())
	if s := a.Status(); !s.Stale || !s.Ready || s.Connected {
		t.Errorf("during the outage: %+v", s)
	}

	// Restart the edge on the same data while the stream is still down.
	a.stop()
	b := startEdge(t, cfg)
	servesAll(b.Addr())
	if r := get(t, b.AdminAddr(), "/readyz"); r.StatusCode != 200 || r.body != "stale\n" {
		t.Errorf("restarted during the outage: /readyz = %d %q, want 200 stale", r.StatusCode, r.body)
	}
	if r := get(t, b.Addr(), "/nosuchcode"); r.StatusCode != 404 {
		t.Errorf("unknown code during the outage = %d, want 404", r.StatusCode)
	}

	st.ns.Restart()
	var seq uint64
	wait.For(t, 20*time.Second, "publisher reaches the restarted stream", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c := &link.Change{Op: link.OpCreate, Record: record("after", "https://example.com/after", 302, 1), CommittedAt: time.Now()}
		var err error
		seq, _, err = st.pub.Publish(ctx, c)
		return err == nil
	})
	wait.For(t, 20*time.Second, "edge applies changes after the outage", func() bool {
		r := get(t, b.Addr(), "/after")
		return r.StatusCode == 302 && r.Header.Get("Location") == "https://example.com/after"
	})
	wait.For(t, 10*time.Second, "edge ready and fresh again", func() bool {
		r := get(t, b.AdminAddr(), "/readyz")
		return r.StatusCode == 200 && r.body == "ok\n"
	})
	if s := b.Status(); s.Applied < seq || s.Stale || !s.Connected {
		t.Errorf("after the outage: %+v", s)
	}
	// It resumed because the connection came back, not because the stall
	// watchdog gave up on the consumer.
	if s := b.Status(); s.Stalls != 0 {
		t.Errorf("resumed by the stall watchdog after the outage: %+v", s)
	}
	servesAll(b.Addr())
}

// TestReadyzBootstrapping: a fresh replica that never reached the stream
// is not ready: it has nothing to serve.
func TestReadyzBootstrapping(t *testing.T) {
	leaktest.Check(t)
	e := startEdge(t, edgeConfig(t, unreachableNATS(t)))
	if r := get(t, e.AdminAddr(), "/readyz"); r.StatusCode != 503 || r.body != "bootstrapping\n" {
		t.Errorf("/readyz = %d %q, want 503 bootstrapping", r.StatusCode, r.body)
	}
	if r := get(t, e.AdminAddr(), "/healthz"); r.StatusCode != 200 {
		t.Errorf("/healthz = %d, want 200", r.StatusCode)
	}
	if r := get(t, e.Addr(), "/abcdef"); r.StatusCode != 404 {
		t.Errorf("miss without fallback = %d, want 404", r.StatusCode)
	}
	if got := metric(t, e.AdminAddr(), "linkpop_edge_ready"); got != 0 {
		t.Errorf("linkpop_edge_ready = %v, want 0", got)
	}
}
