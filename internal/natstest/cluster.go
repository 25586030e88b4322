package natstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkpop/linkpop/internal/wait"
)

// ClusterReadyTimeout bounds StartCluster, Restart and the waits for a
// stream leader. A fresh in-process cluster elects its meta leader in
// well under a second; an election after a leader is lost takes the
// server's election timeout (seconds).
const ClusterReadyTimeout = 30 * time.Second

// account is the account JetStream state lives in when the servers
// configure none.
const account = "$G"

// Cluster is an in-process JetStream cluster owned by one test: n servers
// named n0…n(n-1) on loopback ports reserved at start, each with its store
// in its own t.TempDir(), fully meshed by explicit routes, fsyncing every
// write before acknowledging it (sync_interval: always, the production
// recommendation). A server keeps its name, store and ports across Stop and
// Restart, so clients reconnect to the same URLs and the server rejoins
// with its Raft state. Everything is shut down by t.Cleanup.
type Cluster struct {
	t     testing.TB
	name  string
	dirs  []string
	ports []int // client ports
	cport []int // cluster (route) ports
	mod   []func(i int, o *server.Options)

	mu   sync.Mutex
	srvs []*server.Server // nil while stopped
}

// StartCluster starts an n-server cluster and waits until it has a meta
// leader and every server is current, failing t after
// ClusterReadyTimeout. Each mod, if any, may change server i's options
// (on every start of it) before the server is made: benchmarks turn
// SyncAlways off to compare.
func StartCluster(t testing.TB, n int, mod ...func(i int, o *server.Options)) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d servers", n)
	}
	c := &Cluster{t: t, name: "linkpop-test", srvs: make([]*server.Server, n), mod: mod}
	ports := reservePorts(t, 2*n)
	for i := range n {
		c.dirs = append(c.dirs, t.TempDir())
		c.ports = append(c.ports, ports[2*i])
		c.cport = append(c.cport, ports[2*i+1])
	}
	t.Cleanup(c.Shutdown)
	// Start all before waiting for any: a server waits for its routes to
	// form a quorum.
	for i := range n {
		c.start(i)
	}
	c.WaitReady()
	return c
}

// reservePorts returns n distinct free loopback ports. The listeners are
// closed again, so another process could take a port before the server
// binds it; on loopback in a test run that has not been seen.
func reservePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: reserve port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// options builds server i's options afresh (the server keeps and changes
// the ones it is given).
func (c *Cluster) options(i int) *server.Options {
	var routes []string
	for _, p := range c.cport {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}
	o := &server.Options{
		ServerName: fmt.Sprintf("n%d", i),
		Host:       "127.0.0.1",
		Port:       c.ports[i],
		NoLog:      true,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   c.dirs[i],
		SyncAlways: true,
		MaxPayload: 1 << 20,
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: c.cport[i],
		},
		// Every server lists every route, itself included (the server
		// skips its own): clustering needs configured routes.
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
	for _, m := range c.mod {
		m(i, o)
	}
	return o
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.options(i))
	if err != nil {
		c.t.Fatalf("natstest: server n%d: %v", i, err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		c.t.Fatalf("natstest: server n%d not ready for connections", i)
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.ports) }

// URL is server i's client URL; it stays the same across Restart.
func (c *Cluster) URL(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(c.ports[i]) }

// URLs are the client URLs of every server, for a client that should
// fail over between them.
func (c *Cluster) URLs() []string {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = c.URL(i)
	}
	return urls
}

// Server is server i, or nil while it is stopped: for checks this package
// does not offer.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srvs[i]
}

// running returns the running servers by index.
func (c *Cluster) running() map[int]*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int]*server.Server, len(c.srvs))
	for i, s := range c.srvs {
		if s != nil {
			m[i] = s
		}
	}
	return m
}

// Stop shuts server i down and waits until it is down; its clients
// reconnect to the others. Stopping a stopped server does nothing. An
// in-process shutdown is orderly: a leader hands its leadership over
// before it goes, as it does on SIGTERM.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart stops server i if it runs, starts it again with the same name,
// store and ports, and waits until the cluster is ready (WaitReady).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.start(i)
	c.WaitReady()
}

// Shutdown stops every server. t.Cleanup calls it.
func (c *Cluster) Shutdown() {
	for i := range c.srvs {
		c.Stop(i)
	}
}

// WaitReady waits until one running server is the meta leader and every
// running server's JetStream is current, failing t after
// ClusterReadyTimeout.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.waitFor("meta leader and every server current", func() bool {
		leaders := 0
		for _, s := range c.running() {
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		return leaders == 1
	})
}

// StreamLeader returns the index of the server leading stream, or -1 if
// no running server leads it.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until stream has a leader and every running
// server that holds a replica of it is current, and returns the leader's
// index; it fails t after ClusterReadyTimeout.
func (c *Cluster) WaitStreamLeader(stream string) int {
	c.t.Helper()
	leader := -1
	c.waitFor("stream "+stream+" leader and current replicas", func() bool {
		leader = c.StreamLeader(stream)
		if leader < 0 {
			return false
		}
		for _, s := range c.running() {
			if s.JetStreamIsStreamAssigned(account, stream) && !s.JetStreamIsStreamCurrent(account, stream) {
				return false
			}
		}
		return true
	})
	return leader
}

// KillStreamLeader stops the server leading stream and waits until
// another server leads it. It returns the stopped server's index; bring
// it back with Restart.
func (c *Cluster) KillStreamLeader(stream string) int {
	c.t.Helper()
	old := c.WaitStreamLeader(stream)
	c.Stop(old)
	c.waitFor("stream "+stream+" to elect another leader", func() bool {
		l := c.StreamLeader(stream)
		return l >= 0 && l != old
	})
	return old
}

func (c *Cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	wait.For(c.t, ClusterReadyTimeout, "natstest: "+what, cond)
}
