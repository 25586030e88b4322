package edge_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// peerView is what s's gossip says about peer, or false if it lists no
// such member.
func peerView(s *runningEdge, peer string) (edge.Member, bool) {
	for _, m := range s.Members() {
		if m.Name == peer && !m.Self {
			return m, true
		}
	}
	return edge.Member{}, false
}

// gossipFollowBound is the documented bound on how far behind a peer's
// own position its gossiped position may be.
const gossipFollowBound = 2 * time.Second

// TestGossipPositionsFollow: an edge's view of its peer's position follows
// what the peer applied. The peers restart with data (applied > 0 from the
// first announcement) and then apply one change at a time; for each, the
// delay from the peer's own Applied reaching it to the other edge's view
// reaching it is measured. The median must be within gossipFollowBound
// (the median, not the maximum, so a load spike on a shared machine does
// not fail the test) and every sample within 10 s; before position
// messages, a lost or raced metadata broadcast left a peer at an old
// position until memberlist's push-pull, 30 s later.
func TestGossipPositionsFollow(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	first := st.publish(t, link.OpCreate, record("gfa", "https://example.com/a", 302, 1))
	cfgA := edgeConfig(t, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind = "edge-a", "127.0.0.1:0"
	cfgB := edgeConfig(t, st.ns.URL())
	cfgB.NodeName, cfgB.GossipBind = "edge-b", "127.0.0.1:0"
	// A first run gives both replicas data, so the second run announces
	// a position from its first gossip message.
	for _, cfg := range []edge.Config{cfgA, cfgB} {
		e := startEdge(t, cfg)
		wait.For(t, 20*time.Second, "first run applies", func() bool { return e.Status().Applied >= first })
		e.stop()
	}
	a := startEdge(t, cfgA)
	cfgB.GossipJoin = []string{a.GossipAddr()}
	b := startEdge(t, cfgB)
	wait.For(t, 20*time.Second, "a sees b's position from the start", func() bool {
		m, ok := peerView(a, "edge-b")
		return ok && m.Applied == first && m.Ready
	})

	var delays []time.Duration
	for i := range 8 {
		seq := st.publish(t, link.OpCreate, record(fmt.Sprintf("gf%d", i), "https://example.com/", 302, uint64(i+2)))
		wait.For(t, 20*time.Second, "b applies", func() bool { return b.Status().Applied >= seq })
		applied := time.Now()
		wait.For(t, 20*time.Second, "a sees b's new position", func() bool {
			m, ok := peerView(a, "edge-b")
			return ok && m.Applied >= seq
		})
		delays = append(delays, time.Since(applied))
		if m, _ := peerView(b, "edge-a"); m.SecondsSinceUpdate > 10 {
			t.Errorf("b last heard a's position %.1fs ago", m.SecondsSinceUpdate)
		}
	}
	slices.Sort(delays)
	t.Logf("gossiped position delays: %v", delays)
	if med := delays[len(delays)/2]; med > gossipFollowBound {
		t.Errorf("median delay %v > %v", med, gossipFollowBound)
	}
	if max := delays[len(delays)-1]; max > 10*time.Second {
		t.Errorf("max delay %v > 10s", max)
	}
}

// TestBehindPeersNotReady: an edge that trails a ready peer of its PoP by
// more than PeerLagThreshold fails /readyz with "behind_peers" while its
// own stream says it is caught up; it is ready again once its peer no
// longer is ahead (here: the peer leaves). Edge b reads a second NATS
// server whose stream holds nothing, as an edge cut off from the change
// stream would see it.
func TestBehindPeersNotReady(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	other := startStream(t)
	cfgA := edgeConfig(t, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind = "edge-a", "127.0.0.1:0"
	a := startEdge(t, cfgA)
	cfgB := edgeConfig(t, other.ns.URL())
	cfgB.NodeName, cfgB.GossipBind, cfgB.GossipJoin = "edge-b", "127.0.0.1:0", []string{a.GossipAddr()}
	cfgB.PeerLagThreshold = 2
	b := startEdge(t, cfgB)
	// b is bootstrapped on its own (empty-but-for-one) stream.
	other.publish(t, link.OpCreate, record("bp0", "https://example.com/0", 302, 1))
	wait.For(t, 20*time.Second, "b ready", func() bool { return get(t, b.AdminAddr(), "/readyz").StatusCode == 200 })

	var last uint64
	for i := range 5 {
		last = st.publish(t, link.OpCreate, record(fmt.Sprintf("bp%d", i+1), "https://example.com/", 302, uint64(i+2)))
	}
	wait.For(t, 20*time.Second, "b fails readiness behind a", func() bool {
		r := get(t, b.AdminAddr(), "/readyz")
		return r.StatusCode == 503 && r.body == "behind_peers\n"
	})
	if s := b.Status(); s.Lag != 0 || s.Reason != "behind_peers" || s.Ready {
		t.Errorf("b status: lag %d reason %q ready %v", s.Lag, s.Reason, s.Ready)
	}
	if m, ok := peerView(b, "edge-a"); !ok || m.Applied != last {
		t.Errorf("b's view of a: %+v", m)
	}
	// a, ahead, stays ready.
	if r := get(t, a.AdminAddr(), "/readyz"); r.StatusCode != 200 {
		t.Errorf("a /readyz = %d %q", r.StatusCode, r.body)
	}
	a.stop()
	wait.For(t, 30*time.Second, "b ready once a left", func() bool { return get(t, b.AdminAddr(), "/readyz").StatusCode == 200 })
}
