package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

const killUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

// killEdge is a running edge process with analytics on.
type killEdge struct {
	proc          *proctest.Process
	listen, admin string
}

// TestClickLossOnKill runs a real edge process under click load, SIGKILLs
// it, restarts it on the same data directory and reads the click stream:
// every click whose answer the client had received is shipped exactly
// once, those sealed before the kill from the journal and those after the
// last seal from the click log the restarted edge reads back; a request
// recorded but not answered when the kill came may be counted too (at most
// one per connection). Then the restarted edge takes more clicks and is
// stopped with SIGTERM: it loses none.
func TestClickLossOnKill(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
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
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := link.Record{Code: "kill01", URL: "https://example.com/k", Redirect: 302, Status: link.StatusActive, CreatedAt: now, UpdatedAt: now, Revision: 1}
	if _, _, err := pub.Publish(ctx, &link.Change{Op: link.OpCreate, Record: rec, CommittedAt: now}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replication.EnsureClickStream(ctx, js, replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}

	bin := proctest.Build(t, "github.com/linkpop/linkpop/cmd/edge")
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "analytics.key")
	if err := os.WriteFile(keyFile, []byte("kill-test-fleet-analytics-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const flush = time.Second // the default
	start := func(name string) *killEdge {
		e := &killEdge{listen: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)}
		e.proc = proctest.Start(t, proctest.Spec{Name: name, Path: bin, Quiet: true, Args: []string{
			"-listen", e.listen, "-admin", e.admin, "-data", data, "-nats", ns.URL(),
			"-node", "kill-edge", "-analytics-key-file", keyFile, "-click-flush", flush.String(),
		}})
		wait.For(t, 30*time.Second, name+" redirects", func() bool {
			resp, err := http.Get("http://" + e.admin + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			code, _ := clickOnce(noRedirect, e.listen)
			return code == 302
		})
		return e
	}

	// Phase 1: load, then SIGKILL.
	e := start("edge-1")
	var warm uint64 = 1 // the click of the readiness probe
	// Clicks until the stream holds three batches of this run with clicks
	// in them, so the kill lands a few flush intervals into the load,
	// with requests in flight.
	var killAt time.Time
	answered, attempted := hammer(t, e.listen, 2_000_000, func() bool {
		n := 0
		for _, b := range readClicks(t, js) {
			if len(b.Links) > 0 {
				n++
			}
		}
		if n < 3 {
			return false
		}
		killAt = time.Now()
		e.proc.Kill()
		return true
	})

	// Restart: the journal ships under the same instance.
	e = start("edge-2")
	warm++
	restartAt := time.Now()
	wait.For(t, 30*time.Second, "the restarted edge ships a batch sealed after its start", func() bool {
		for _, b := range readClicks(t, js) {
			if b.ThroughUnixMs > restartAt.UnixMilli() {
				return true
			}
		}
		return false
	})
	batches := readClicks(t, js)
	checkSeqs(t, batches)
	var markBeforeKill int64
	var shipped uint64
	for _, b := range batches {
		if b.ThroughUnixMs < killAt.UnixMilli() {
			markBeforeKill = max(markBeforeKill, b.ThroughUnixMs)
		}
		for _, lm := range b.Links {
			shipped += lm.Clicks + lm.Bots
		}
	}
	mustHave := uint64(0)
	for _, at := range answered {
		if at.UnixMilli() < markBeforeKill {
			mustHave++
		}
	}
	if markBeforeKill == 0 || mustHave == 0 {
		t.Fatalf("no flush mark journaled before the kill (mark %d, %d clicks before it)", markBeforeKill, mustHave)
	}
	if shipped < uint64(len(answered))+warm || shipped > uint64(attempted)+warm {
		t.Fatalf("shipped %d clicks; want every one of the %d answered (+%d probes), at most the %d attempted (+%d probes); %d were answered before the last mark journaled before the kill",
			shipped, len(answered), warm, attempted, warm, mustHave)
	}
	elapsed := answered[len(answered)-1].Sub(answered[0]).Seconds()
	restored := metricValue(t, e.admin, "linkpop_edge_clicks_restored_total")
	t.Logf("SIGKILL with %v flush: %d clicks answered (%.0f/s), %d attempted, %d shipped (%d of them answered after the last journaled mark, %v before the kill; %d restored from the click log), 0 lost",
		flush, len(answered), float64(len(answered))/elapsed, attempted, shipped-warm, uint64(len(answered))-mustHave,
		killAt.Sub(time.UnixMilli(markBeforeKill)).Round(time.Millisecond), restored)

	// Phase 2: load, then SIGTERM: nothing lost.
	before := shipped
	answered2, attempted2 := hammer(t, e.listen, 1000, func() bool { return false })
	if len(answered2) != attempted2 {
		t.Fatalf("%d of %d requests failed before SIGTERM", attempted2-len(answered2), attempted2)
	}
	if err := e.proc.Stop(30 * time.Second); err != nil {
		t.Fatalf("edge after SIGTERM: %v", err)
	}
	batches = readClicks(t, js)
	checkSeqs(t, batches)
	shipped = 0
	for _, b := range batches {
		for _, lm := range b.Links {
			shipped += lm.Clicks + lm.Bots
		}
	}
	// The second probe click is in the stream now.
	if got, want := shipped-before, uint64(len(answered2)); got != want && got != want+1 {
		t.Fatalf("after SIGTERM: %d more clicks shipped, want %d (+1 probe)", got, want)
	}
}

// metricValue reads one counter from an edge's admin /metrics.
func metricValue(t *testing.T, admin, name string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, v)
			}
			return n
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

// noRedirect never follows a redirect: the test talks to the edge only.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

// clickOnce sends one GET /kill01 and returns the status.
func clickOnce(c *http.Client, addr string) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/kill01", nil)
	req.Header.Set("User-Agent", killUA)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// hammer sends clicks from 8 connections until n were sent or done
// (polled between clicks, every 20ms at most) says so, and returns when
// each answer arrived, in order, and how many were sent.
func hammer(t *testing.T, addr string, n int, done func() bool) ([]time.Time, int) {
	t.Helper()
	client := &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var answered []time.Time
	var sent atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			if done() {
				stop.Store(true)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	var workers sync.WaitGroup
	for range 8 {
		workers.Go(func() {
			for !stop.Load() {
				if sent.Add(1) > int64(n) {
					sent.Add(-1)
					return
				}
				code, err := clickOnce(client, addr)
				if err != nil || code != 302 {
					return
				}
				at := time.Now()
				mu.Lock()
				answered = append(answered, at)
				mu.Unlock()
			}
		})
	}
	workers.Wait()
	stop.Store(true)
	wg.Wait()
	sort.Slice(answered, func(i, j int) bool { return answered[i].Before(answered[j]) })
	return answered, int(sent.Load())
}

func readClicks(t *testing.T, js jetstream.JetStream) []*linkpb.ClickBatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "LINKPOP_CLICKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*linkpb.ClickBatch
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := link.UnmarshalClickBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkSeqs checks one instance numbered 1, 2, 3, ... in stream order.
func checkSeqs(t *testing.T, batches []*linkpb.ClickBatch) {
	t.Helper()
	for i, b := range batches {
		if b.Seq != uint64(i+1) || b.Instance != batches[0].Instance {
			t.Fatalf("batch %d: instance %s seq %d, want %s seq %d", i, b.Instance, b.Seq, batches[0].Instance, i+1)
		}
	}
}
