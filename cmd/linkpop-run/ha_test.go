package main

import (
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
)

func TestConfigValidateHA(t *testing.T) {
	c := Config{DataDir: "d", BinDir: "b", Layout: HALayout()}
	if err := c.validate(); err != nil {
		t.Fatalf("HA layout: %v", err)
	}
	c.Layout.NATSCluster = c.Layout.NATSCluster[:2]
	c.Layout.StandbyAPI = ""
	err := c.validate()
	if err == nil {
		t.Fatal("two NATS nodes and no standby accepted")
	}
	for _, want := range []string{"three nodes", "StandbyAPI"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestSystemHA runs what `make run-ha` runs, on free ports: a three-node
// JetStream cluster in this process with a user per role, two -ha
// origins, a collector and two edges whose -origin lists both origins.
// It kills the leading origin by PID and sees the standby take over: a
// create accepted there, and the links from before and after the
// failover redirected by both edges.
func TestSystemHA(t *testing.T) {
	leaktest.Check(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/linkpop/linkpop/cmd/origin",
		"github.com/linkpop/linkpop/cmd/edge", "github.com/linkpop/linkpop/cmd/collector")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Setenv(adminKeyEnv, "")
	free := func() string { return proctest.FreeAddr(t) }
	l := Layout{
		OriginAPI: free(), OriginAdmin: free(),
		StandbyAPI: free(), StandbyAdmin: free(), CollectorAdmin: free(), CollectorStats: free(),
		Edges: []EdgeLayout{
			{Name: "edge-a", Listen: free(), Admin: free(), Gossip: free()},
			{Name: "edge-b", Listen: free(), Admin: free(), Gossip: free()},
		},
	}
	for range 3 {
		l.NATSCluster = append(l.NATSCluster, NATSNode{Client: free(), Route: free()})
	}
	cfg := Config{
		DataDir:      t.TempDir(),
		BinDir:       bin,
		Layout:       l,
		Out:          &syncBuffer{},
		ReadyTimeout: 3 * time.Minute,
		StopTimeout:  15 * time.Second,
	}
	out := cfg.Out.(*syncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	began := time.Now()
	s, err := start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("system ready in %v", time.Since(began).Round(time.Millisecond))
	stopped := false
	defer func() {
		if !stopped {
			s.stop()
		}
	}()
	waitErr := make(chan error, 1)
	go func() { waitErr <- s.wait(ctx) }()

	leader, standby := s.leader, s.standby
	leaderAPI, standbyAPI := l.OriginAPI, l.StandbyAPI
	if leader == s.standby {
		standby, leaderAPI, standbyAPI = s.origin, l.StandbyAPI, l.OriginAPI
	}
	usage := s.usage()
	for _, want := range []string{"kill -9 " + strconv.Itoa(leader.cmd.Process.Pid),
		"until curl -sf http://" + standby.admin + "/readyz", "http://" + standbyAPI + "/v1/links", "Linkpop-Role"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage block lacks %q:\n%s", want, usage)
		}
	}
	checkSecretsHidden(t, s, out)

	redirects := func(e EdgeLayout, code, target string) bool {
		resp, err := noRedirect.Get("http://" + e.Listen + "/" + code)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusFound && resp.Header.Get("Location") == target
	}
	before := createLink(t, "http://"+leaderAPI, s.key, "https://example.com/before")
	for _, e := range l.Edges {
		wait.For(t, time.Minute, e.Name+" redirects the link created on the leader", func() bool {
			return redirects(e, before, "https://example.com/before")
		})
	}
	// The standby refuses writes and says so.
	resp, err := http.Post("http://"+standbyAPI+"/v1/links", "application/json", strings.NewReader(`{"url":"https://example.com/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Linkpop-Role"); got != "standby" {
		t.Fatalf("standby answers with Linkpop-Role %q", got)
	}

	pid := leader.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the leader: %v", err)
	}
	killed := time.Now()
	<-leader.done
	wait.For(t, 2*time.Minute, "the standby takes over", func() bool { return role(standby.admin) == "leader" })
	t.Logf("standby ready as the leader %v after the kill", time.Since(killed).Round(time.Millisecond))

	api, err := client.New(client.Config{BaseURL: "http://" + standbyAPI, Key: s.key, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	var after client.Link
	wait.For(t, time.Minute, "a create accepted on the new leader", func() bool {
		after, err = api.CreateLink(context.Background(), client.CreateLink{URL: "https://example.com/after"}, client.CreateOptions{})
		return err == nil
	})
	t.Logf("first create accepted %v after the kill", time.Since(killed).Round(time.Millisecond))
	for _, e := range l.Edges {
		wait.For(t, time.Minute, e.Name+" redirects the link created after the failover", func() bool {
			return redirects(e, after.Code, "https://example.com/after")
		})
		if !redirects(e, before, "https://example.com/before") {
			t.Errorf("%s lost the link created before the failover", e.Name)
		}
	}
	// The new leader's stats API answers from the collector process: the
	// one redirect of the new link on each edge (the waits above stop at
	// the first 302; Go's User-Agent, so a bot) is counted once
	// complete_through has passed it.
	clicked := time.Now()
	var st client.Stats
	wait.For(t, time.Minute, "the new link's stats with complete_through past its redirects", func() bool {
		st, err = api.Stats(context.Background(), after.Code, client.StatsQuery{})
		return err == nil && st.CompleteThrough != nil && st.CompleteThrough.After(clicked)
	})
	if st.Bots != 2 || st.Clicks != 0 {
		t.Errorf("stats of %s on the new leader: %d bots and %d other clicks, want 2 bots (one per edge) and none other", after.Code, st.Bots, st.Clicks)
	}
	if !strings.Contains(out.String(), leader.name+" (pid "+strconv.Itoa(pid)+") exited") {
		t.Errorf("the leader's death was not reported")
	}

	cancel()
	if err := <-waitErr; err != nil {
		t.Errorf("wait: %v", err)
	}
	s.stop()
	stopped = true
	for _, c := range s.all() {
		if !c.exitedNow() {
			t.Errorf("%s still running after stop", c.name)
		}
	}
}
