package edge_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// BenchmarkPeerBootstrap compares a fresh edge's two ways to its first
// ready: N links (LINKPOP_PEER_BOOT_N, default 200,000) are published to
// an embedded stream; edge a starts empty without peers and replays them
// (replay-s: Run to /readyz 200); then each iteration starts a fresh edge
// with the peer secret that joins a's gossip and takes its checkpoint
// (peer-s: Run to /readyz 200, bloom scan and hot-set warm included). Four
// clients keep requesting a's redirects throughout; peer-rps-idle and
// peer-rps-shipping are a's redirects per second before and while it
// ships. The digests of a and the bootstrapped edge are compared.
func BenchmarkPeerBootstrap(b *testing.B) {
	n := 200_000
	if s := os.Getenv("LINKPOP_PEER_BOOT_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("LINKPOP_PEER_BOOT_N=%q: want a positive integer", s)
		}
		n = v
	}
	st := startStream(b)
	codes := publishMany(b, st.pub, n)

	cfgA := edgeConfig(b, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind, cfgA.PeerSecret = "edge-a", "127.0.0.1:0", []byte(peerSecret)
	cfgA.WarmEntries = -1 // ready time without the hot-set load (bounded by WarmTimeout)
	start := time.Now()
	a := startEdge(b, cfgA)
	readyIn(b, a, 10*time.Minute)
	replay := time.Since(start)

	// bootstrap starts a fresh edge that takes a's checkpoint and returns
	// the time to Started (checkpoint installed, replica open) and to
	// /readyz 200.
	bootstrap := func() (opened, ready time.Duration) {
		cfg := edgeConfig(b, st.ns.URL())
		cfg.NodeName, cfg.GossipBind, cfg.GossipJoin = "edge-b", "127.0.0.1:0", []string{a.GossipAddr()}
		cfg.PeerSecret, cfg.WarmEntries = []byte(peerSecret), -1
		if os.Getenv("LINKPOP_BENCH_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		at := time.Now()
		e := startEdge(b, cfg)
		opened = time.Since(at)
		readyIn(b, e, 10*time.Minute)
		ready = time.Since(at)
		if got := metric(b, e.AdminAddr(), `linkpop_edge_peer_bootstrap_total{result="peer"}`); got != 1 {
			b.Fatalf("the edge did not bootstrap from its peer (%v)", got)
		}
		if x, y := replicaDigest(b, e), replicaDigest(b, a); x != y {
			b.Fatalf("digest %s, peer's %s", x, y)
		}
		e.stop()
		return opened, ready
	}
	var opened, peer time.Duration
	b.ResetTimer()
	for range b.N {
		o, r := bootstrap()
		opened += o
		peer += r
	}
	b.StopTimer()

	// Then the same with four clients requesting a's redirects
	// throughout: a's redirects per second before and while it ships.
	var served atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	hc := &fasthttp.HostClient{Addr: a.Addr(), MaxConns: 8}
	for w := range 4 {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := w; ctx.Err() == nil; i += 4 {
				req.SetRequestURI("http://sho.rt/" + codes[(i*7919)%len(codes)])
				if err := hc.DoTimeout(req, resp, 5*time.Second); err == nil && resp.StatusCode() == 302 {
					served.Add(1)
				}
			}
		})
	}
	from, at := served.Load(), time.Now()
	time.Sleep(3 * time.Second) // a measurement window, not a wait for a condition
	idle := float64(served.Load()-from) / time.Since(at).Seconds()
	from, at = served.Load(), time.Now()
	_, loaded := bootstrap()
	shipping := float64(served.Load()-from) / time.Since(at).Seconds()
	cancel()
	wg.Wait()

	b.ReportMetric(float64(n), "links")
	b.ReportMetric(replay.Seconds(), "replay-s")
	b.ReportMetric(opened.Seconds()/float64(b.N), "peer-opened-s")
	b.ReportMetric(peer.Seconds()/float64(b.N), "peer-s")
	b.ReportMetric(loaded.Seconds(), "peer-s-under-load")
	b.ReportMetric(idle, "peer-rps-idle")
	b.ReportMetric(shipping, "peer-rps-shipping")
}

func readyIn(b testing.TB, e *runningEdge, limit time.Duration) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for get(b, e.AdminAddr(), "/readyz").StatusCode != 200 {
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready within %v: %+v", e.NodeName(), limit, e.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publishMany publishes n creations of distinct codes, a few thousand acks
// in flight at a time, and returns the codes.
func publishMany(b testing.TB, pub *replication.Publisher, n int) []string {
	b.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	const window = 2048
	pending := make([]*replication.PendingAck, 0, window)
	flush := func() {
		for _, p := range pending {
			if _, _, err := p.Wait(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		pending = pending[:0]
	}
	codes := make([]string, n)
	code := make([]byte, link.DefaultCodeLen)
	for i := range n {
		v := uint64(i)
		for j := range code {
			code[j] = link.Base62[v%62]
			v /= 62
		}
		codes[i] = string(code)
		c := link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
			Code: codes[i], URL: fmt.Sprintf("https://www.example.com/articles/2026/01/some-longer-slug-%d?utm_source=newsletter", i),
			Redirect: 302, Status: link.StatusActive, CreatedAt: now, UpdatedAt: now, Revision: 1,
		}}
		data, err := link.MarshalChange(&c)
		if err != nil {
			b.Fatal(err)
		}
		p, err := pub.PublishRawAsync(c.Record.Code, c.Record.Revision, data)
		if err != nil {
			b.Fatal(err)
		}
		if pending = append(pending, p); len(pending) == window {
			flush()
		}
	}
	flush()
	return codes
}
