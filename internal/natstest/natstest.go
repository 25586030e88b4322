// Package natstest starts embedded JetStream servers for tests, on
// loopback, with stores in t.TempDir(), shut down by t.Cleanup: one server
// (Start; Stop and Restart simulate an outage on the same address and
// store), or a cluster (StartCluster in-process, StartClusterProcesses as
// child processes that Kill crashes with SIGKILL) whose servers can be
// stopped, killed and restarted with the same name, store and ports, and
// whose meta and stream leaders can be waited for and killed.
package natstest

import (
	"sync"
	"testing"

	"github.com/linkpop/linkpop/replication/devserver"
)

// Server is an embedded JetStream server owned by one test.
type Server struct {
	t        testing.TB
	storeDir string
	addr     string

	mu  sync.Mutex
	srv *devserver.Server
}

// Start starts a server and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, storeDir: t.TempDir()}
	srv, err := devserver.Start(devserver.Config{Addr: "127.0.0.1:0", StoreDir: s.storeDir})
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	s.srv, s.addr = srv, srv.Addr()
	t.Cleanup(s.Stop)
	return s
}

// URL is the client URL; it stays the same across Restart.
func (s *Server) URL() string { return "nats://" + s.addr }

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Stop shuts the server down; clients see a disconnect. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv = nil
	}
}

// Restart starts the server again on the same address with the same store.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv = nil
	}
	srv, err := devserver.Start(devserver.Config{Addr: s.addr, StoreDir: s.storeDir})
	if err != nil {
		s.t.Fatalf("restart embedded nats: %v", err)
	}
	s.srv = srv
}
