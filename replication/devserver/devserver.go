// Package devserver runs a NATS server with JetStream inside the process:
// for `origin -dev`, `make run` and tests. Production points linkpop at an
// external cluster instead. This package imports nats-server but not
// nats.go; edges never link it.
package devserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkpop/linkpop/replication/natsauth"
)

// Config says how to run the embedded server.
type Config struct {
	// Addr is the client listen address, host:port. Port 0 picks a free
	// port. The default is "127.0.0.1:0".
	Addr string
	// StoreDir holds JetStream's file store. Required.
	StoreDir string
	// SyncAlways makes JetStream fsync every write before acknowledging it
	// (server option sync_interval: always). The default (false) is the
	// server's own: fsync every two minutes, relying on replication. The
	// origin's outbox makes the stream rebuildable either way.
	SyncAlways bool
	// Debug turns on the server's own logging to stderr.
	Debug bool
	// Users turns authentication on: only these users may connect, each
	// with its role's permissions (natsauth) on Subjects. The default
	// (none) lets any client connect with every permission.
	Users []natsauth.User
	// Subjects are the streams the permissions cover. The default is
	// linkpop's default stream names.
	Subjects natsauth.Subjects
	// TLS, when set, makes the client listener require TLS with this
	// configuration (its certificate, and ClientCAs with
	// ClientAuth to verify clients). The default is plain TCP.
	TLS *tls.Config
	// Name is the server's name; in a cluster every server needs its
	// own. The default is "linkpop-dev".
	Name string
	// Cluster, when set, makes the server one node of a JetStream
	// cluster (`make run-ha`). The default is a single server.
	Cluster *ClusterConfig
}

// ClusterConfig makes a server one node of a cluster: every node lists the
// route address of every node, itself included (the server skips its
// own), and starts before any waits for the others (a node waits for its
// routes to form a quorum).
type ClusterConfig struct {
	// Name is the cluster's name, the same on every node. Required.
	Name string
	// Addr is this node's route listen address, host:port. Required.
	Addr string
	// Routes are the route addresses (host:port) of every node. Required.
	Routes []string
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("devserver: StoreDir is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devserver: addr %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("devserver: port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if cfg.Name == "" {
		cfg.Name = "linkpop-dev"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      !cfg.Debug,
		MaxPayload: 1 << 20,
	}
	if cfg.SyncAlways {
		opts.SyncAlways = true
	}
	opts.Users = ServerUsers(cfg.Users, cfg.Subjects)
	if c := cfg.Cluster; c != nil {
		chost, cport, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return nil, fmt.Errorf("devserver: cluster addr %q: %w", c.Addr, err)
		}
		cp, err := strconv.Atoi(cport)
		if err != nil || c.Name == "" || len(c.Routes) == 0 {
			return nil, fmt.Errorf("devserver: cluster needs Name, a host:port Addr (got %q) and Routes", c.Addr)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: chost, Port: cp}
		var routes []string
		for _, r := range c.Routes {
			routes = append(routes, "nats-route://"+r)
		}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	}
	if cfg.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = cfg.TLS
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("devserver: %w", err)
	}
	if cfg.Debug {
		ns.ConfigureLogger()
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("devserver: not ready for connections after 30s")
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ns.Addr().String() }

// Shutdown stops the server and waits for it to exit.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// ServerUsers turns users into nats-server users with their roles'
// permissions on s.
func ServerUsers(users []natsauth.User, s natsauth.Subjects) []*server.User {
	var out []*server.User
	for _, u := range users {
		su := &server.User{Username: string(u.Role), Password: u.Password}
		if p := u.Role.Permissions(s); p.Publish != nil {
			su.Permissions = &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: p.Publish},
				Subscribe: &server.SubjectPermission{Allow: p.Subscribe},
			}
		}
		out = append(out, su)
	}
	return out
}

// JetStreamReady reports, for a cluster node, whether JetStream is current
// with the cluster's meta leader (a fresh cluster elects one within
// seconds; a stream request sent before that may go unanswered), and
// whether this node is that leader. A single server is always ready.
func (s *Server) JetStreamReady() (current, metaLeader bool) {
	return s.ns.JetStreamIsCurrent(), s.ns.JetStreamIsLeader()
}
