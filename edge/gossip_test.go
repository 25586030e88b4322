package edge_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestGossip: the edges of a PoP see each other and each other's
// replication position.
func TestGossip(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfgA := edgeConfig(t, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind = "edge-a", "127.0.0.1:0"
	a := startEdge(t, cfgA)
	cfgB := edgeConfig(t, st.ns.URL())
	cfgB.NodeName, cfgB.GossipBind, cfgB.GossipJoin = "edge-b", "127.0.0.1:0", []string{a.GossipAddr()}
	b := startEdge(t, cfgB)
	if a.GossipAddr() == "" || a.GossipAddr() == b.GossipAddr() {
		t.Fatalf("gossip addresses %q and %q", a.GossipAddr(), b.GossipAddr())
	}

	var last uint64
	for _, code := range []string{"gos1", "gos2", "gos3"} {
		last = st.publish(t, link.OpCreate, record(code, "https://example.com/"+code, 302, 1))
	}
	sees := func(s *runningEdge, peer string) bool {
		ms := s.Members()
		if len(ms) != 2 {
			return false
		}
		for _, m := range ms {
			if m.Name == peer && !m.Self && m.Applied == last && m.StreamLast == last && m.Lag == 0 && m.Ready {
				return true
			}
		}
		return false
	}
	wait.For(t, 20*time.Second, "each edge sees the other caught up", func() bool {
		return sees(a, "edge-b") && sees(b, "edge-a")
	})
	var status edge.Status
	r := get(t, a.AdminAddr(), "/status")
	if err := json.Unmarshal([]byte(r.body), &status); err != nil {
		t.Fatal(err)
	}
	if len(status.Members) != 2 {
		t.Errorf("/status members = %+v", status.Members)
	}
	if got := metric(t, b.AdminAddr(), "linkpop_edge_gossip_members"); got != 2 {
		t.Errorf("linkpop_edge_gossip_members = %v, want 2", got)
	}

	// A leaving edge drops out of its peer's view.
	b.stop()
	wait.For(t, 20*time.Second, "edge-b leaves", func() bool { return len(a.Members()) == 1 })
}
