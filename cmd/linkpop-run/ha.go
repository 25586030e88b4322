package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// NATSNode is one node of the JetStream cluster of `make run-ha`: its
// client and route listeners.
type NATSNode struct {
	Client, Route string
}

// HALayout is `make run-ha`'s fixed layout: DefaultLayout with a
// three-node JetStream cluster in this process (clients 4222-4224, routes
// 6222-6224), a standby origin (API 8083, admin 9084) and a collector
// (admin 9083, partition API 9085).
func HALayout() Layout {
	l := DefaultLayout()
	l.NATS = ""
	for i := range 3 {
		l.NATSCluster = append(l.NATSCluster, NATSNode{
			Client: "127.0.0.1:" + strconv.Itoa(4222+i),
			Route:  "127.0.0.1:" + strconv.Itoa(6222+i),
		})
	}
	l.StandbyAPI, l.StandbyAdmin = "127.0.0.1:8083", "127.0.0.1:9084"
	l.CollectorAdmin = "127.0.0.1:9083"
	l.CollectorStats = "127.0.0.1:9085"
	return l
}

// ha reports whether the layout is the highly available one.
func (l Layout) ha() bool { return len(l.NATSCluster) > 0 }

// natsURLs are the client URLs the components connect to, comma
// separated.
func (s *system) natsURLs() string {
	l := s.cfg.Layout
	if !l.ha() {
		return "nats://" + l.NATS
	}
	var urls []string
	for _, n := range l.NATSCluster {
		urls = append(urls, "nats://"+n.Client)
	}
	return strings.Join(urls, ",")
}

// haPasswordFile is where run-ha keeps the password of role's NATS user:
// DataDir/nats-auth/<role>.password, mode 0600.
func (s *system) haPasswordFile(role natsauth.Role) string {
	return filepath.Join(s.cfg.DataDir, "nats-auth", string(role)+".password")
}

// startHA starts the JetStream cluster in this process with a user per
// role, runs the operator's step (`origin streams`, R3), starts both
// origins with -ha -ack replicated and waits until one leads and the other
// follows, then starts the collector, which both origins' stats API asks
// over its partition API (one partition of one).
func (s *system) startHA(ctx context.Context, adminKey string) error {
	l := s.cfg.Layout
	if err := os.MkdirAll(filepath.Join(s.cfg.DataDir, "nats-auth"), 0o700); err != nil {
		return fmt.Errorf("nats auth: %w", err)
	}
	var users []natsauth.User
	for _, r := range natsauth.Roles {
		path, err := ensureKeyFile(s.haPasswordFile(r), func() string { return rand.Text() + rand.Text() })
		if err != nil {
			return fmt.Errorf("nats password of %s: %w", r, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("nats password of %s: %w", r, err)
		}
		users = append(users, natsauth.User{Role: r, Password: strings.TrimSpace(string(b))})
	}
	var routes []string
	for _, n := range l.NATSCluster {
		routes = append(routes, n.Route)
	}
	// Start every node before waiting for any: a node waits for its
	// routes to form a quorum.
	servers := make([]*devserver.Server, len(l.NATSCluster))
	errs := make([]error, len(l.NATSCluster))
	var wg sync.WaitGroup
	for i, n := range l.NATSCluster {
		wg.Go(func() {
			servers[i], errs[i] = devserver.Start(devserver.Config{
				Addr:     n.Client,
				StoreDir: filepath.Join(s.cfg.DataDir, "nats", "n"+strconv.Itoa(i)),
				Name:     "n" + strconv.Itoa(i),
				Users:    users,
				Cluster:  &devserver.ClusterConfig{Name: "linkpop-run", Addr: n.Route, Routes: routes},
			})
		})
	}
	wg.Wait()
	for _, srv := range servers {
		if srv != nil {
			s.nats = append(s.nats, srv)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nats cluster: %w", err)
	}
	if err := s.waitNATS(ctx); err != nil {
		return err
	}
	s.logf("started a three-node JetStream cluster: %s", s.natsURLs())

	if err := s.createStreams(ctx); err != nil {
		return err
	}

	pass := s.haPasswordFile(natsauth.Origin)
	statsToken, err := ensureKeyFile(filepath.Join(s.cfg.DataDir, "collector.token"), func() string { return rand.Text() + rand.Text() })
	if err != nil {
		return fmt.Errorf("collector token: %w", err)
	}
	for _, o := range []struct {
		name, api, admin string
		c                **child
	}{
		{"origin-a", l.OriginAPI, l.OriginAdmin, &s.origin},
		{"origin-b", l.StandbyAPI, l.StandbyAdmin, &s.standby},
	} {
		c, err := s.spawn(o.name, "origin", o.admin, []string{
			"-data", filepath.Join(s.cfg.DataDir, o.name),
			"-listen", o.api,
			"-admin", o.admin,
			"-advertise", "http://" + o.api,
			"-base-url", "http://" + l.Edges[0].Listen + "/",
			"-nats", s.natsURLs(),
			"-nats-user", string(natsauth.Origin),
			"-nats-password-file", pass,
			"-stream-replicas", "3",
			"-ha", "-ack", "replicated",
			"-collectors", "http://" + l.CollectorStats,
			"-collector-token-file", statsToken,
		}, []string{adminKeyEnv + "=" + adminKey})
		if err != nil {
			return err
		}
		*o.c = c
	}
	// Either may take the lease (after a restart, the lease of the
	// previous run expires first: up to the lease TTL).
	if err := s.waitRoles(ctx); err != nil {
		return err
	}

	c, err := s.spawn("collector", "collector", l.CollectorAdmin, []string{
		"-data", filepath.Join(s.cfg.DataDir, "collector"),
		"-admin", l.CollectorAdmin,
		"-nats", s.natsURLs(),
		"-nats-user", string(natsauth.Collector),
		"-nats-password-file", s.haPasswordFile(natsauth.Collector),
		"-click-stream-replicas", "3",
		"-stats-listen", l.CollectorStats,
		"-stats-token-file", statsToken,
	}, nil)
	if err != nil {
		return err
	}
	s.collector = c
	return nil
}

// waitNATS waits until the cluster has a meta leader and every node is
// current with it: before that, a stream request may go unanswered until
// its client gives up.
func (s *system) waitNATS(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		leaders, current := 0, 0
		for _, srv := range s.nats {
			c, l := srv.JetStreamReady()
			if c {
				current++
			}
			if l {
				leaders++
			}
		}
		if leaders == 1 && current == len(s.nats) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats cluster: no meta leader with every node current after %v", s.cfg.ReadyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createStreams runs the operator's step, `origin streams` with the
// operator's credentials: the change, origin and click streams and the
// lease bucket, R3. It retries while the fresh cluster elects its leaders.
func (s *system) createStreams(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		// One attempt is bounded: a request the cluster does not answer
		// is tried again rather than waited for.
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cmd := exec.CommandContext(actx, filepath.Join(s.cfg.BinDir, "origin"), "streams",
			"-nats", s.natsURLs(),
			"-nats-user", string(natsauth.Operator),
			"-nats-password-file", s.haPasswordFile(natsauth.Operator),
			"-stream-replicas", "3", "-click-stream-replicas", "3")
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			s.logf("created the streams and the lease bucket (origin streams, R3)")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("origin streams: %v: %s", err, strings.TrimSpace(string(out)))
		}
		s.logf("origin streams: %v: %s (retrying while the cluster elects its leaders)", err, lastLine(out))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// role reads an -ha origin's /readyz: 200 with role leader, or 503 with
// role standby ("" while it cannot tell).
func role(admin string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var rd struct {
		Role string `json:"role"`
	}
	if json.NewDecoder(resp.Body).Decode(&rd) != nil {
		return ""
	}
	if rd.Role == "leader" && resp.StatusCode != http.StatusOK {
		return "" // still taking over
	}
	return rd.Role
}

// waitRoles waits until one origin leads and the other is its standby,
// and records which one leads in s.leader.
func (s *system) waitRoles(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	for {
		for _, o := range s.all() {
			if o.exitedNow() {
				return fmt.Errorf("%s exited while starting: %v", o.name, exitReason(o.err))
			}
		}
		a, b := role(s.origin.admin), role(s.standby.admin)
		switch {
		case a == "leader" && b == "standby":
			s.leader = s.origin
			return nil
		case a == "standby" && b == "leader":
			s.leader = s.standby
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("origins not leader and standby after %v (origin-a %q, origin-b %q)", s.cfg.ReadyTimeout, a, b)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// usageHA is the part of the usage block about the failover.
func (s *system) usageHA(b *strings.Builder, key string) {
	l := s.cfg.Layout
	standby := s.standby
	if s.leader == s.standby {
		standby = s.origin
	}
	api := map[*child]string{s.origin: l.OriginAPI, s.standby: l.StandbyAPI}
	fmt.Fprintf(b, "\n  High availability: %s leads (pid %d, API http://%s), %s is its standby (pid %d, API http://%s).\n",
		s.leader.name, s.leader.cmd.Process.Pid, api[s.leader], standby.name, standby.cmd.Process.Pid, api[standby])
	fmt.Fprintf(b, "  Every API answer says which in its Linkpop-Role header; the edges ask the leader first.\n")
	fmt.Fprintf(b, "  Kill the leader and watch the standby take over (the lease TTL, about 15-20 s):\n")
	fmt.Fprintf(b, "    kill -9 %d\n", s.leader.cmd.Process.Pid)
	fmt.Fprintf(b, "    until curl -sf http://%s/readyz; do sleep 1; done\n", standby.admin)
	fmt.Fprintf(b, "    curl -si -H %s -H 'Content-Type: application/json' \\\n", key)
	fmt.Fprintf(b, "      -d '{\"url\": \"https://example.com/after\"}' http://%s/v1/links\n", api[standby])
	fmt.Fprintf(b, "  Writes before the takeover answer 503 not_leader on the standby; reads it answers anyway.\n")
	fmt.Fprintf(b, "  NATS: %s (users per role, passwords in %s)\n", s.natsURLs(), filepath.Join(s.cfg.DataDir, "nats-auth"))
}

// lastLine is the last non-empty line of out.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
