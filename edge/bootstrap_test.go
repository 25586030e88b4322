package edge_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

const peerSecret = "fleet-secret-0123456789"

// bootPeer is a ready edge with data and the peer secret, gossiping.
func bootPeer(t *testing.T, st *stream, last uint64) *runningEdge {
	t.Helper()
	cfg := edgeConfig(t, st.ns.URL())
	cfg.NodeName, cfg.GossipBind, cfg.PeerSecret = "edge-a", "127.0.0.1:0", []byte(peerSecret)
	a := startEdge(t, cfg)
	wait.For(t, 30*time.Second, "peer applies and is ready", func() bool {
		return a.Status().Applied >= last && get(t, a.AdminAddr(), "/readyz").StatusCode == 200
	})
	return a
}

// freshEdge starts an edge with an empty data dir that joins a's gossip.
func freshEdge(t *testing.T, st *stream, a *runningEdge, name, secret string) *runningEdge {
	t.Helper()
	cfg := edgeConfig(t, st.ns.URL())
	cfg.NodeName, cfg.GossipBind, cfg.GossipJoin = name, "127.0.0.1:0", []string{a.GossipAddr()}
	cfg.PeerSecret = []byte(secret)
	return startEdge(t, cfg)
}

func replicaDigest(t testing.TB, e *runningEdge) string {
	t.Helper()
	sum, n, err := e.Replica().Digest()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%016x/%d", sum, n)
}

func seedLinks(t *testing.T, st *stream, prefix string, n int) uint64 {
	var last uint64
	for i := range n {
		last = st.publish(t, link.OpCreate, record(fmt.Sprintf("%s%d", prefix, i), "https://example.com/"+prefix, 302, 1))
	}
	return last
}

// TestPeerBootstrap: a fresh edge takes its peer's checkpoint before it
// opens its replica (the replica already holds the peer's position and
// digest when Run says started, before the consumer ran), then resumes
// the stream after it: a change published after the checkpoint reaches
// it.
func TestPeerBootstrap(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	last := seedLinks(t, st, "pb", 300)
	a := bootPeer(t, st, last)

	b := freshEdge(t, st, a, "edge-b", peerSecret)
	if got := metric(t, b.AdminAddr(), `linkpop_edge_peer_bootstrap_total{result="peer"}`); got != 1 {
		t.Fatalf("bootstrap from peer counted %v, want 1", got)
	}
	// Started is closed after the replica opened: what it holds came from
	// the checkpoint (the consumer may have applied nothing yet, and
	// there is nothing newer to apply).
	if pos, err := b.Replica().Position(); err != nil || pos != last {
		t.Fatalf("bootstrapped position %d (%v), want %d", pos, err, last)
	}
	if got, want := replicaDigest(t, b), replicaDigest(t, a); got != want {
		t.Fatalf("bootstrapped digest %s, peer's %s", got, want)
	}
	if r := get(t, b.Addr(), "/pb7"); r.StatusCode != 302 || r.Header.Get("Location") != "https://example.com/pb" {
		t.Fatalf("GET /pb7 on bootstrapped edge: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	after := st.publish(t, link.OpCreate, record("pbnew", "https://example.com/new", 302, 1))
	wait.For(t, 30*time.Second, "bootstrapped edge applies a change made after the checkpoint", func() bool {
		return b.Status().Applied >= after && get(t, b.Addr(), "/pbnew").StatusCode == 302
	})
	wait.For(t, 30*time.Second, "digests equal after the change", func() bool {
		return a.Status().Applied >= after && replicaDigest(t, a) == replicaDigest(t, b)
	})
}

// TestPeerBootstrapRefused: GET /checkpoint needs the fleet secret (401
// without or with a wrong one) and a configured one (403 on an edge
// without); a fresh edge with a wrong secret replays the stream instead
// and ends equal to its peer.
func TestPeerBootstrapRefused(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	last := seedLinks(t, st, "pr", 50)
	a := bootPeer(t, st, last)

	for _, tc := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong-secret-0123456789", 401}, {"Basic " + peerSecret, 401}, {"Bearer " + peerSecret + "x", 401}} {
		req, _ := http.NewRequest("GET", "http://"+a.AdminAddr()+"/checkpoint", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, resp.StatusCode, tc.want)
		}
	}
	plain := startEdge(t, edgeConfig(t, st.ns.URL()))
	req, _ := http.NewRequest("GET", "http://"+plain.AdminAddr()+"/checkpoint", nil)
	req.Header.Set("Authorization", "Bearer "+peerSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("edge without a secret: %d, want 403", resp.StatusCode)
	}

	c := freshEdge(t, st, a, "edge-c", "another-secret-0123456789")
	if got := metric(t, c.AdminAddr(), `linkpop_edge_peer_bootstrap_total{result="failed"}`); got != 1 {
		t.Fatalf("failed bootstrap counted %v, want 1", got)
	}
	wait.For(t, 30*time.Second, "refused edge replays the stream", func() bool {
		return c.Status().Applied >= last && replicaDigest(t, c) == replicaDigest(t, a)
	})
}

// TestPeerBootstrapCorrupt: a checkpoint whose bytes do not match their
// SHA-256 is discarded (every attempt) and the edge replays the stream.
func TestPeerBootstrapCorrupt(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	last := seedLinks(t, st, "pc", 50)
	a := bootPeer(t, st, last)
	edge.CorruptShips(t)
	d := freshEdge(t, st, a, "edge-d", peerSecret)
	if got := metric(t, d.AdminAddr(), `linkpop_edge_peer_bootstrap_total{result="failed"}`); got != 1 {
		t.Fatalf("failed bootstrap counted %v, want 1", got)
	}
	wait.For(t, 30*time.Second, "edge replays after corrupt checkpoints", func() bool {
		return d.Status().Applied >= last && replicaDigest(t, d) == replicaDigest(t, a)
	})
}
