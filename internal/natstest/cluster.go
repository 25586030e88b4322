package natstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// ClusterReadyTimeout bounds StartCluster, Restart and the waits for a
// stream leader. A fresh in-process cluster elects its meta leader in
// well under a second; an election after a leader is lost takes the
// server's election timeout (seconds).
const ClusterReadyTimeout = 30 * time.Second

// account is the account JetStream state lives in when the servers
// configure none.
const account = "$G"

// Cluster is a JetStream cluster owned by one test: n servers
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
	mport []int // monitoring (HTTP) ports, used by child processes
	mod   []func(i int, o *server.Options)
	bin   string // the nats-server binary, child processes only
	auth  auth

	mu      sync.Mutex
	members []member // nil while stopped
}

// member is one running server, in this process or a child.
type member interface {
	metaLeader() bool
	// current: JetStream is current with the meta leader.
	current() bool
	// peersOnline: as the meta leader, how many servers (itself
	// included) it sees online with JetStream, which is what stream
	// placement asks; -1 if it is not the leader.
	peersOnline() int
	streamLeader(stream string) bool
	// streamCurrent: the replica of stream it holds, if any, is current
	// with the stream's leader; up lists the running servers by name.
	streamCurrent(stream string, up map[string]bool) bool
	// stop shuts the server down in order; kill crashes it.
	stop()
	kill()
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
	c := newCluster(t, n)
	c.mod = mod
	c.startAll()
	return c
}

// ServerProcsEnv names the environment variable that sets GOMAXPROCS of
// the servers StartClusterProcesses runs (unset: Go's default, one per
// core). The servers share the machine with the origin in the
// benchmarks; with one P each they spent 137–193 µs of CPU per
// replicated create instead of 197–260 µs (four alternated pairs; a third
// of their CPU with the default is Go's scheduler, README, High
// availability). The default leaves them as a server would run.
const ServerProcsEnv = "LINKPOP_NATS_GOMAXPROCS"

// StartClusterProcesses is StartCluster with every server a child process
// of the test (nats-server built from the module's pinned version), so
// that Kill is a real SIGKILL: a crash, where the in-process Stop is an
// orderly shutdown in which a leader hands its leadership over. A killed
// stream leader is replaced after the servers' election timeout (seconds).
func StartClusterProcesses(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: cluster of %d servers", n)
	}
	c := newCluster(t, n)
	c.bin = proctest.Build(t, "github.com/nats-io/nats-server/v2")
	c.startAll()
	return c
}

func newCluster(t testing.TB, n int) *Cluster {
	c := &Cluster{t: t, name: "linkpop-test", members: make([]member, n), auth: newAuth()}
	ports := make([]int, 3*n)
	for i := range ports {
		ports[i] = proctest.FreePort(t)
	}
	for i := range n {
		c.dirs = append(c.dirs, t.TempDir())
		c.ports = append(c.ports, ports[3*i])
		c.cport = append(c.cport, ports[3*i+1])
		c.mport = append(c.mport, ports[3*i+2])
	}
	t.Cleanup(c.Shutdown)
	return c
}

func (c *Cluster) startAll() {
	c.t.Helper()
	// Start all before waiting for any: a server waits for its routes to
	// form a quorum.
	for i := range c.Size() {
		c.start(c.t, i)
	}
	c.WaitReady(c.t)
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
		Users:  devserver.ServerUsers(c.auth.users(), natsauth.Subjects{}),
	}
	for _, m := range c.mod {
		m(i, o)
	}
	return o
}

func (c *Cluster) start(t testing.TB, i int) {
	t.Helper()
	var m member
	if c.bin != "" {
		m = c.startProcess(t, i)
	} else {
		s, err := server.NewServer(c.options(i))
		if err != nil {
			t.Fatalf("natstest: server n%d: %v", i, err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			s.Shutdown()
			t.Fatalf("natstest: server n%d not ready for connections", i)
		}
		m = inProcess{s}
	}
	c.mu.Lock()
	c.members[i] = m
	c.mu.Unlock()
}

// PID is server i's process id when the servers are child processes
// (StartClusterProcesses), else 0 (in-process, or stopped).
func (c *Cluster) PID(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.members[i].(*process); ok {
		return p.p.PID()
	}
	return 0
}

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.ports) }

// URL is server i's client URL with the operator's credentials in it (see
// Server.URL); it stays the same across Restart.
func (c *Cluster) URL(i int) string {
	return "nats://" + c.auth.userinfo(natsauth.Operator) + "@127.0.0.1:" + strconv.Itoa(c.ports[i])
}

// Conn is what a client of role connects to every server with (see
// Server.Conn).
func (c *Cluster) Conn(role natsauth.Role) replication.ConnConfig {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(c.ports[i])
	}
	return c.auth.conn(role, urls...)
}

// URLs are the client URLs of every server, for a client that should
// fail over between them.
func (c *Cluster) URLs() []string {
	urls := make([]string, c.Size())
	for i := range urls {
		urls[i] = c.URL(i)
	}
	return urls
}

// Name is server i's server_name.
func (c *Cluster) Name(i int) string { return fmt.Sprintf("n%d", i) }

// Server is server i, or nil while it is stopped or if it runs as a child
// process: for checks this package does not offer.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.members[i].(inProcess); ok {
		return s.s
	}
	return nil
}

// running returns the running servers by index.
func (c *Cluster) running() map[int]member {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int]member, len(c.members))
	for i, s := range c.members {
		if s != nil {
			m[i] = s
		}
	}
	return m
}

// take removes server i from the running ones and returns it (nil if it
// was not running).
func (c *Cluster) take(i int) member {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	c.members[i] = nil
	return m
}

// Stop shuts server i down in order and waits until it is down; its
// clients reconnect to the others. A leader hands its leadership over
// before it goes, as on SIGTERM. Stopping a stopped server does nothing.
func (c *Cluster) Stop(i int) {
	if m := c.take(i); m != nil {
		m.stop()
	}
}

// Kill crashes server i: SIGKILL for a child process, nothing written or
// handed over. In-process servers cannot crash; for them Kill is Stop.
func (c *Cluster) Kill(i int) {
	if m := c.take(i); m != nil {
		m.kill()
	}
}

// Restart stops server i if it runs, starts it again with the same name,
// store and ports, and waits until the cluster is ready (WaitReady),
// failing t if it is not.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Stop(i)
	c.start(t, i)
	c.WaitReady(t)
}

// Shutdown stops every server. t.Cleanup calls it.
func (c *Cluster) Shutdown() {
	for i := range c.members {
		c.Stop(i)
	}
}

// WaitReady waits until one running server is the meta leader and every
// running server's JetStream is current, failing t after
// ClusterReadyTimeout.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	wait.For(t, ClusterReadyTimeout, "natstest: meta leader and every server current", func() bool {
		leaders := 0
		running := c.running()
		for _, s := range running {
			if !s.current() {
				return false
			}
			if s.metaLeader() {
				leaders++
				// Without this a stream create right after start can
				// find "no suitable peers for placement, peer offline":
				// the leader marks a peer online only once it has that
				// peer's statistics.
				if s.peersOnline() < len(running) {
					return false
				}
			}
		}
		return leaders == 1
	})
}

// StreamLeader returns the index of the server leading stream, or -1 if
// no running server leads it.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s.streamLeader(stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until stream has a leader and every running
// server that holds a replica of it is current, and returns the leader's
// index; it fails t after ClusterReadyTimeout.
func (c *Cluster) WaitStreamLeader(t testing.TB, stream string) int {
	t.Helper()
	leader := -1
	wait.For(t, ClusterReadyTimeout, "natstest: stream "+stream+" leader and current replicas", func() bool {
		leader = c.StreamLeader(stream)
		if leader < 0 {
			return false
		}
		running := c.running()
		up := make(map[string]bool, len(running))
		for i := range running {
			up[c.Name(i)] = true
		}
		for _, s := range running {
			if !s.streamCurrent(stream, up) {
				return false
			}
		}
		return true
	})
	return leader
}

// KillStreamLeader kills (see Kill) the server leading stream and waits
// until another server leads it. It returns the killed server's index;
// bring it back with Restart. It fails t after ClusterReadyTimeout.
func (c *Cluster) KillStreamLeader(t testing.TB, stream string) int {
	t.Helper()
	old := c.WaitStreamLeader(t, stream)
	c.Kill(old)
	wait.For(t, ClusterReadyTimeout, "natstest: stream "+stream+" to elect another leader", func() bool {
		l := c.StreamLeader(stream)
		return l >= 0 && l != old
	})
	return old
}

// inProcess is a server running in the test's process.
type inProcess struct{ s *server.Server }

func (m inProcess) metaLeader() bool { return m.s.JetStreamIsLeader() }

func (m inProcess) current() bool { return m.s.JetStreamIsCurrent() }

func (m inProcess) peersOnline() int {
	if !m.s.JetStreamIsLeader() {
		return -1
	}
	return len(m.s.JetStreamClusterPeers())
}

func (m inProcess) streamLeader(stream string) bool {
	return m.s.JetStreamIsStreamLeader(account, stream)
}

func (m inProcess) streamCurrent(stream string, _ map[string]bool) bool {
	return !m.s.JetStreamIsStreamAssigned(account, stream) || m.s.JetStreamIsStreamCurrent(account, stream)
}

func (m inProcess) stop() {
	m.s.Shutdown()
	m.s.WaitForShutdown()
}

func (m inProcess) kill() { m.stop() }

// startProcess writes server i's configuration (the same settings as
// options) and starts it as a child process.
func (c *Cluster) startProcess(t testing.TB, i int) member {
	t.Helper()
	var routes []string
	for _, p := range c.cport {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 1MB
jetstream { store_dir: %q, sync_interval: always }
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s`, c.Name(i), c.ports[i], c.mport[i], c.dirs[i], c.name, c.cport[i], strings.Join(routes, ", "),
		natsauth.AuthorizationConfig(c.auth.users(), natsauth.Subjects{}))
	path := filepath.Join(c.dirs[i], "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	m := &process{name: c.Name(i), size: c.Size(), base: fmt.Sprintf("http://127.0.0.1:%d", c.mport[i]),
		http: &http.Client{Timeout: time.Second}}
	// The child lives as long as the cluster, not the (sub)test restarting
	// it.
	var env []string
	if v := os.Getenv(ServerProcsEnv); v != "" {
		env = []string{"GOMAXPROCS=" + v}
	}
	m.p = proctest.Start(c.t, proctest.Spec{Name: c.Name(i), Path: c.bin, Args: []string{"-c", path}, Quiet: true, Env: env})
	deadline := time.Now().Add(10 * time.Second)
	for !m.get("/healthz?js-enabled-only=true", nil) {
		if exited, err := m.p.Exited(); exited || time.Now().After(deadline) {
			m.p.Kill()
			t.Fatalf("natstest: server %s did not come up (exited %v: %v)", m.name, exited, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// process is a server running as a child process, watched through its
// monitoring endpoints.
type process struct {
	name string
	size int // servers in the cluster
	base string
	http *http.Client
	p    *proctest.Process
}

// get fetches path and decodes it into v if v is not nil; it reports
// whether the answer was 200 and decoded.
func (m *process) get(path string, v any) bool {
	resp, err := m.http.Get(m.base + path)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if v == nil {
		return true
	}
	return json.NewDecoder(resp.Body).Decode(v) == nil
}

func (m *process) metaLeader() bool {
	var info server.JSInfo
	return m.get("/jsz", &info) && info.Meta != nil && info.Meta.Leader == m.name
}

// current: healthy towards the meta leader, which it knows, in a cluster
// of the full size (else a stream create may find "no suitable peers").
func (m *process) current() bool {
	var info server.JSInfo
	return m.get("/healthz?js-server-only=true", nil) && m.get("/jsz", &info) &&
		info.Meta != nil && info.Meta.Leader != "" && info.Meta.Size == m.size
}

func (m *process) peersOnline() int {
	var info server.JSInfo
	if !m.get("/jsz", &info) || info.Meta == nil || info.Meta.Leader != m.name {
		return -1
	}
	n := 1 // the leader itself
	for _, p := range info.Meta.Replicas {
		if !p.Offline {
			n++
		}
	}
	return n
}

// streamDetail is stream as this server sees it.
func (m *process) streamDetail(stream string) (server.StreamDetail, bool) {
	var info server.JSInfo
	if !m.get("/jsz?accounts=true&streams=true", &info) {
		return server.StreamDetail{}, false
	}
	for _, a := range info.AccountDetails {
		for _, sd := range a.Streams {
			if a.Name == account && sd.Name == stream && sd.Cluster != nil {
				return sd, true
			}
		}
	}
	return server.StreamDetail{}, false
}

func (m *process) streamLeader(stream string) bool {
	sd, ok := m.streamDetail(stream)
	return ok && sd.Cluster.Leader == m.name
}

// streamCurrent is decided by the leader, which knows how far behind each
// replica is: every running one must be current. (The server's own
// stream health check also covers the stream's consumers, which a test's
// clients may be rebuilding.)
func (m *process) streamCurrent(stream string, up map[string]bool) bool {
	sd, ok := m.streamDetail(stream)
	if !ok {
		return false
	}
	if sd.Cluster.Leader != m.name {
		return true
	}
	for _, r := range sd.Cluster.Replicas {
		if up[r.Name] && (!r.Current || r.Offline) {
			return false
		}
	}
	return true
}

// stop sends SIGTERM; a server that has not exited 10s later is killed,
// and is down either way.
func (m *process) stop() { _ = m.p.Stop(10 * time.Second) }

func (m *process) kill() { m.p.Kill() }
