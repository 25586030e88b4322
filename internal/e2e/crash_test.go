package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// crashBacklog is how many links are in the stream before the edge starts;
// more keep arriving while it applies.
const crashBacklog = 3000

// TestFaultEdgeKilledDuringApply runs an edge as a child process, SIGKILLs
// it while it is applying a backlog that keeps growing, and restarts it on
// the same data directory with NATS down: it must report at least the
// position it had reached and serve every link up to the position it
// stored, which proves position and data were written together. With NATS
// back it resumes from there (no rebuild), converges and serves every link.
func TestFaultEdgeKilledDuringApply(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		published []uint64 // stream sequence of link i
	)
	publish := func(i int) error {
		now := time.Now().UTC()
		seq, _, err := pub.Publish(ctx, &link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
			Code: crashCode(i), URL: crashURL(i), Redirect: 302, Status: link.StatusActive,
			CreatedAt: now, UpdatedAt: now, Revision: 1,
		}})
		if err != nil {
			return err
		}
		mu.Lock()
		for len(published) <= i {
			published = append(published, 0)
		}
		published[i] = seq
		mu.Unlock()
		return nil
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < crashBacklog; i += 8 {
				if err := publish(i); err != nil {
					t.Errorf("publish backlog: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	listen, admin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	spec := proctest.Spec{
		Name: "edge",
		Path: edgeBinary,
		Args: []string{"-listen", listen, "-admin", admin, "-data", t.TempDir(), "-nats", ns.URL(),
			"-node", "crash-edge", "-max-stale", "2s", "-log-level", "warn"},
		Quiet: true,
	}
	first := proctest.Start(t, spec)

	// Keep publishing while the edge applies, so it is behind whenever it
	// is looked at.
	stop := make(chan struct{})
	var feeder sync.WaitGroup
	total := crashBacklog
	feeder.Go(func() {
		for i := crashBacklog; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := publish(i); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			total = i + 1
		}
	})
	var before edge.Status
	wait.For(t, convergeTimeout, "edge applying part of the stream", func() bool {
		st, ok := edgeStatus(admin)
		if !ok || st.Applied == 0 {
			return false
		}
		last, err := pub.LastSequence(ctx)
		if err != nil || st.Applied >= last {
			return false
		}
		before = st
		return true
	})
	first.Kill()
	close(stop)
	feeder.Wait()
	if t.Failed() {
		t.FailNow()
	}
	last, err := pub.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the edge at applied %d (stream at least %d); %d links, stream last %d", before.Applied, before.StreamLast, total, last)

	ns.Stop()
	second := proctest.Start(t, spec)
	var stored edge.Status
	wait.For(t, convergeTimeout, "restarted edge reporting", func() bool {
		st, ok := edgeStatus(admin)
		stored = st
		return ok && st.Reason != "starting"
	})
	if stored.Applied < before.Applied {
		t.Fatalf("after restart the edge is at %d, before the kill it had applied %d", stored.Applied, before.Applied)
	}
	base := "http://" + listen
	m := model{}
	for i := range total {
		if published[i] <= stored.Applied {
			m[crashCode(i)] = want{url: crashURL(i), redirect: 302, active: true}
		}
	}
	if err := checkEdge("restarted edge, NATS down", base, m, nil); err != nil {
		t.Fatalf("links up to the stored position %d: %v", stored.Applied, err)
	}
	wait.For(t, convergeTimeout, "restarted edge ready while NATS is down", func() bool {
		code, _ := httpGet("http://" + admin + "/readyz")
		return code == http.StatusOK
	})

	ns.Restart()
	wait.For(t, convergeTimeout, fmt.Sprintf("edge applied through %d", last), func() bool {
		st, ok := edgeStatus(admin)
		return ok && st.Applied >= last
	})
	for i := range total {
		m[crashCode(i)] = want{url: crashURL(i), redirect: 302, active: true}
	}
	if err := checkEdge("converged edge", base, m, unknownCodes(rand.New(rand.NewPCG(5, 6)), 20)); err != nil {
		t.Fatal(err)
	}
	// Resumed, not replayed: this process applied only what lay beyond
	// the stored position, and never restarted the stream from the top.
	applied, resets := edgeMetric(t, admin, "linkpop_replication_applied_total"), edgeMetric(t, admin, "linkpop_replication_stream_reset_total")
	if applied > float64(last-stored.Applied) || resets != 0 {
		t.Errorf("after restart the edge applied %v messages and reset %v times; want at most %d (from %d to %d) and no reset",
			applied, resets, last-stored.Applied, stored.Applied, last)
	}
	if err := second.Stop(15 * time.Second); err != nil {
		t.Errorf("stop edge: %v", err)
	}
}

func crashCode(i int) string { return fmt.Sprintf("k%06d", i) }
func crashURL(i int) string  { return fmt.Sprintf("https://example.com/k/%d", i) }

// edgeMetric reads one unlabelled metric from an edge's /metrics.
func edgeMetric(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := edgeClient.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q: %v", name, v, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

// edgeStatus reads an edge's /status.
func edgeStatus(admin string) (edge.Status, bool) {
	var st edge.Status
	resp, err := edgeClient.Get("http://" + admin + "/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, false
	}
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}
