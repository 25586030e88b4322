// Package natstest starts embedded JetStream servers for tests, on
// loopback, with stores in t.TempDir(), shut down by t.Cleanup: one server
// (Start; Stop and Restart simulate an outage on the same address and
// store), or a cluster (StartCluster in-process, StartClusterProcesses as
// child processes that Kill crashes with SIGKILL) whose servers can be
// stopped, killed and restarted with the same name, store and ports, and
// whose meta and stream leaders can be waited for and killed. Every server
// runs with authentication on: a user per natsauth role; URL carries the
// operator's credentials, Conn gives a role's.
package natstest

import (
	"crypto/rand"
	"crypto/tls"
	"net/url"
	"sync"
	"testing"

	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// Server is an embedded JetStream server owned by one test, with
// authentication on: one user per natsauth role, each with its role's
// permissions on the default streams and a password made for this server.
type Server struct {
	t        testing.TB
	storeDir string
	addr     string
	auth     auth
	tls      *tls.Config

	mu  sync.Mutex
	srv *devserver.Server
}

// Start starts a server and registers its shutdown with t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartTLS(t, nil)
}

// StartTLS is Start with the client listener requiring TLS with cfg (nil:
// plain TCP, as Start).
func StartTLS(t testing.TB, cfg *tls.Config) *Server {
	t.Helper()
	s := &Server{t: t, storeDir: t.TempDir(), auth: newAuth(), tls: cfg}
	srv, err := devserver.Start(s.config("127.0.0.1:0"))
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	s.srv, s.addr = srv, srv.Addr()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) config(addr string) devserver.Config {
	return devserver.Config{Addr: addr, StoreDir: s.storeDir, Users: s.auth.users(), TLS: s.tls}
}

// URL is the client URL with the operator's user and password in it, so
// a client given only the URL may do everything (create and delete
// streams, as most tests' setup does); it stays the same across Restart.
// Components under test connect with their own role's credentials through
// Conn.
func (s *Server) URL() string { return "nats://" + s.auth.userinfo(natsauth.Operator) + "@" + s.addr }

// Conn is what a client of role connects with: the server's URL without
// credentials, the role's user and password and its inbox prefix.
func (s *Server) Conn(role natsauth.Role) replication.ConnConfig {
	return s.auth.conn(role, "nats://"+s.addr)
}

// Password is role's password on this server.
func (s *Server) Password(role natsauth.Role) string { return s.auth[role] }

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
	srv, err := devserver.Start(s.config(s.addr))
	if err != nil {
		s.t.Fatalf("restart embedded nats: %v", err)
	}
	s.srv = srv
}

// auth is a password per role.
type auth map[natsauth.Role]string

func newAuth() auth {
	a := auth{}
	for _, r := range natsauth.Roles {
		a[r] = string(r) + "-" + rand.Text()
	}
	return a
}

func (a auth) users() []natsauth.User {
	var us []natsauth.User
	for _, r := range natsauth.Roles {
		us = append(us, natsauth.User{Role: r, Password: a[r]})
	}
	return us
}

func (a auth) userinfo(r natsauth.Role) string {
	return url.UserPassword(string(r), a[r]).String()
}

func (a auth) conn(r natsauth.Role, urls ...string) replication.ConnConfig {
	return replication.ConnConfig{URLs: urls, User: string(r), Password: a[r], InboxPrefix: r.InboxPrefix()}
}
