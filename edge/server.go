package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/edge/clicks"
	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
	"github.com/linkpop/linkpop/tlsconf"
)

// ErrAlreadyRun is returned by a second call to Run.
var ErrAlreadyRun = errors.New("edge server already run")

// Redirect listener limits.
const (
	// maxConcurrency bounds the connections served at once; beyond it
	// fasthttp answers 503 rather than exhaust memory.
	maxConcurrency  = 64 << 10
	readBufferSize  = 8 << 10 // request line and headers, cookies included
	maxRequestBody  = 4 << 10
	readTimeout     = 5 * time.Second
	writeTimeout    = 5 * time.Second
	idleTimeout     = 60 * time.Second
	shutdownTimeout = 5 * time.Second
)

// Server is an edge: the redirect listener, its replica, the consumer that
// keeps the replica current, the admin listener and gossip with the PoP.
type Server struct {
	cfg                   Config
	log                   *slog.Logger
	met                   *serverMetrics
	lagThreshold          uint64
	cacheControlPermanent []byte

	rep    atomic.Pointer[replica.Replica]
	con    atomic.Pointer[replication.Consumer]
	gossip atomic.Pointer[gossip]
	fb     *fallback // nil without an origin; set before serving

	strictRefused *metrics.Counter // see registerFreshnessMetrics
	warmed        atomic.Bool      // runWarm is done (see warm.go)

	// clk records clicks (nil with analytics off); proxies selects the
	// client address.
	clk     *clicks.Recorder
	proxies *clicks.Proxies
	shipper atomic.Pointer[clicks.Shipper]
	nf      *notFoundLimiter // nil with NoNotFoundLimit

	ran      atomic.Bool
	started  chan struct{}
	startAt  time.Time
	startPos uint64 // replica position when Run opened it

	mu                         sync.Mutex
	name                       string
	addr, adminAddr, gossipBnd string

	// ops is canceled when Run stops, before the listeners shut down, so
	// a long admin call (a repair) ends with it.
	ops      context.Context
	scanMu   sync.Mutex  // one digest scan at a time
	repairMu sync.Mutex  // one repair at a time
	resynced atomic.Bool // a resync dropped the position the server opened
}

// New validates cfg and returns a Server. Nothing is opened or bound
// until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:                   cfg,
		log:                   cfg.Logger,
		lagThreshold:          uint64(cfg.LagThreshold),
		cacheControlPermanent: cacheControlMaxAge(cfg.MaxAge),
		started:               make(chan struct{}),
		startAt:               time.Now(),
	}
	s.met = newServerMetrics(cfg.Metrics, s)
	s.registerFreshnessMetrics(cfg.Metrics)
	if len(cfg.AnalyticsKey) > 0 {
		s.clk = clicks.NewRecorder(clicks.NewVisitorKey(cfg.AnalyticsKey), clicks.Limits{Entries: cfg.ClickMaxEntries})
	}
	s.proxies = clicks.NewProxies(cfg.TrustedProxies)
	if !cfg.NoNotFoundLimit {
		s.nf = newNotFoundLimiter(cfg.NotFoundRate, cfg.NotFoundBurst, cfg.NotFoundClients)
		cfg.Metrics.NewGauge("linkpop_edge_notfound_clients", func() float64 { return float64(s.nf.clients()) })
	}
	return s, nil
}

// Started is closed once Run has opened the replica and bound every
// listener: Addr, AdminAddr, GossipAddr and Replica are valid from then.
func (s *Server) Started() <-chan struct{} { return s.started }

// Addr is the redirect listener's bound address.
func (s *Server) Addr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.addr }

// AdminAddr is the admin listener's bound address.
func (s *Server) AdminAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.adminAddr }

// GossipAddr is the gossip address bound, or "" without gossip.
func (s *Server) GossipAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.gossipBnd }

// NodeName is this edge's name in gossip and /status.
func (s *Server) NodeName() string { s.mu.Lock(); defer s.mu.Unlock(); return s.name }

// Replica is the replica the server serves from, or nil before Run opened
// it. Tests use it to inspect or seed the store.
func (s *Server) Replica() *replica.Replica { return s.rep.Load() }

// Members lists the PoP's edges seen through gossip, this one included;
// nil without gossip.
func (s *Server) Members() []Member {
	if g := s.gossip.Load(); g != nil {
		return g.members()
	}
	return nil
}

// Run opens the replica and serves from it at once, then starts the
// consumer (which connects to NATS in the background: an unreachable
// stream never delays serving), gossip, and the redirect and admin
// listeners. It returns when ctx is done, after stopping, in order, the
// listeners, gossip (leaving the PoP), the consumer, the NATS connection
// and the replica; or earlier with the error of a part that failed.
func (s *Server) Run(ctx context.Context) (err error) {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	cfg := &s.cfg
	// stops run in reverse order of the starts, whatever happens.
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()

	s.peerBootstrap(ctx) // a fresh edge takes a peer's replica (bootstrap.go)
	rep, err := replica.Open(replica.Options{
		Dir:                  filepath.Join(cfg.DataDir, "replica"),
		BlockCacheBytes:      cfg.BlockCacheBytes,
		HotCacheEntries:      cfg.HotCacheEntries,
		NegativeCacheEntries: cfg.NegativeCacheEntries,
		Logger:               s.log.With("component", "replica"),
		Metrics:              cfg.Metrics,
	})
	if err != nil {
		return err
	}
	stops = append(stops, func() {
		if cerr := rep.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close replica: %w", cerr))
		}
	})
	if s.startPos, err = rep.Position(); err != nil {
		return fmt.Errorf("replica position: %w", err)
	}
	s.rep.Store(rep)
	// Stopped just before the replica closes, after the listeners, so
	// the hot set saved last is the final one.
	warmCtx, warmCancel := context.WithCancel(context.Background())
	// A restarted edge loads its own hot set before it serves (bounded
	// by WarmTimeout); a fresh one with gossip peers takes a peer's
	// once bootstrapped, and is not ready until then.
	if (s.startPos > 0 && s.warmFromFile(warmCtx)) || cfg.GossipBind == "" {
		s.warmed.Store(true)
	}
	var warmWG sync.WaitGroup
	warmWG.Go(func() { s.runWarm(warmCtx) })
	stops = append(stops, func() { warmCancel(); warmWG.Wait() })

	// Bind first, so the node name can default to the bound port.
	var lnTLS *tls.Config
	if cfg.TLSCertFile != "" {
		if lnTLS, err = tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if lnTLS != nil {
		ln = tls.NewListener(ln, lnTLS)
	}
	stops = append(stops, func() { _ = ln.Close() })
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	stops = append(stops, func() { _ = adminLn.Close() })
	name := cfg.NodeName
	if name == "" {
		name = defaultNodeName(ln.Addr())
	}
	s.mu.Lock()
	s.name, s.addr, s.adminAddr = name, ln.Addr().String(), adminLn.Addr().String()
	s.mu.Unlock()

	natsCfg := cfg.NATS.ForRole(natsauth.Edge)
	if natsCfg.Name == "" {
		natsCfg.Name = "linkpop-edge " + name
	}
	if natsCfg.Logger == nil {
		natsCfg.Logger = s.log.With("component", "nats")
	}
	nc, err := replication.Dial(ctx, natsCfg)
	if err != nil {
		return err
	}
	stops = append(stops, nc.Close)
	var hubNC *replication.Conn
	if len(cfg.HubNATSURLs) > 0 {
		hubCfg := natsCfg
		hubCfg.URLs = cfg.HubNATSURLs
		hubCfg.Name = natsCfg.Name + " (hub)"
		hubCfg.Logger = s.log.With("component", "nats-hub")
		if hubNC, err = replication.Dial(ctx, hubCfg); err != nil {
			return err
		}
		stops = append(stops, hubNC.Close)
	}
	con, err := replication.NewConsumer(nc, replication.ConsumerConfig{
		Stream:   cfg.Stream,
		Applier:  rep,
		Logger:   s.log.With("component", "consumer"),
		Metrics:  cfg.Metrics,
		Fallback: hubNC,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	s.con.Store(con)
	fatal := make(chan error, 4)
	conCtx, conCancel := context.WithCancel(context.Background())
	var conWG sync.WaitGroup
	conWG.Go(func() {
		if err := con.Run(conCtx); err != nil && conCtx.Err() == nil {
			fatal <- fmt.Errorf("consumer: %w", err)
		}
	})
	stops = append(stops, func() { conCancel(); conWG.Wait() })

	if s.clk != nil {
		// Stopped after the listeners (stops run in reverse), so the last
		// batch holds every click answered.
		pub, err := replication.NewClickPublisher(nc, cfg.ClickStream)
		if err != nil {
			return fmt.Errorf("click publisher: %w", err)
		}
		stop, err := s.startShipper(pub, name)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}

	if cfg.GossipBind != "" {
		g, err := startGossip(name, cfg.GossipBind, cfg.GossipKeys, s.nodeMeta(), s.log.With("component", "gossip"))
		if err != nil {
			return err
		}
		gCtx, gCancel := context.WithCancel(context.Background())
		var gWG sync.WaitGroup
		gWG.Go(func() { g.run(gCtx, cfg.GossipJoin, s.nodeMeta) })
		s.gossip.Store(g)
		s.mu.Lock()
		s.gossipBnd = g.addr()
		s.mu.Unlock()
		stops = append(stops, func() { gCancel(); gWG.Wait(); g.stop() })
	}

	fbCtx, fbCancel := context.WithCancel(context.Background())
	if cfg.OriginURL != "" {
		fb, err := newFallback(fbCtx, cfg, rep, s.met, s.log.With("component", "fallback"))
		if err != nil {
			fbCancel()
			return fmt.Errorf("origin fallback: %w", err)
		}
		s.fb = fb
		stops = append(stops, func() { fbCancel(); s.fb.close() })
	} else {
		stops = append(stops, fbCancel)
	}

	// The redirect listener's timeouts are swept, not set as socket
	// deadlines on every request (see connTimeouts).
	timeouts := newConnTimeouts(readTimeout, writeTimeout, idleTimeout)
	stops = append(stops, timeouts.stopSweeper) // after the listeners stop
	redirect := &fasthttp.Server{
		Handler:              s.Resolve,
		Name:                 "linkpop",
		Concurrency:          maxConcurrency,
		ReadBufferSize:       readBufferSize,
		MaxRequestBodySize:   maxRequestBody,
		ConnState:            timeouts.connState,
		NoDefaultContentType: true,
		CloseOnShutdown:      true,
		Logger:               fasthttpLogger{s.log.With("component", "redirect")},
	}
	admin := &fasthttp.Server{
		Handler:            s.serveAdmin,
		Name:               "linkpop",
		Concurrency:        256,
		MaxRequestBodySize: maxRequestBody,
		ReadTimeout:        readTimeout,
		WriteTimeout:       writeTimeout,
		IdleTimeout:        idleTimeout,
		CloseOnShutdown:    true,
		Logger:             fasthttpLogger{s.log.With("component", "admin")},
	}
	ops, opsCancel := context.WithCancel(context.Background())
	s.ops = ops
	var srvWG sync.WaitGroup
	serve := func(srv *fasthttp.Server, ln net.Listener, what string) {
		srvWG.Go(func() {
			if err := srv.Serve(ln); err != nil {
				fatal <- fmt.Errorf("serve %s: %w", what, err)
			}
		})
	}
	serve(redirect, timeouts.listener(ln), "redirects")
	serve(admin, adminLn, "admin")
	stops = append(stops, func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		for _, srv := range []*fasthttp.Server{redirect, admin} {
			if err := srv.ShutdownWithContext(sctx); err != nil {
				s.log.Warn("shutdown listener", "err", err)
			}
		}
		srvWG.Wait()
	})
	stops = append(stops, opsCancel) // runs before the listeners stop

	s.log.Info("edge serving", "node", name, "listen", s.Addr(), "admin", s.AdminAddr(),
		"gossip", s.GossipAddr(), "position", s.startPos, "fallback", cfg.OriginURL != "")
	close(s.started)

	select {
	case <-ctx.Done():
		s.log.Info("edge stopping", "node", name)
		return nil
	case err := <-fatal:
		s.log.Error("edge stopping", "node", name, "err", err)
		return err
	}
}

// startShipper opens the click journal and runs the shipper until the
// returned stop is called.
func (s *Server) startShipper(pub clicks.Publisher, name string) (func(), error) {
	sh, err := clicks.NewShipper(clicks.ShipperConfig{
		Edge:          ClickEdgeName(name),
		Dir:           filepath.Join(s.cfg.DataDir, "clicks"),
		Recorder:      s.clk,
		Publisher:     pub,
		Flush:         s.cfg.ClickFlush,
		SpillMaxBytes: s.cfg.ClickSpillMaxBytes,
		Logger:        s.log.With("component", "clicks"),
		Metrics:       s.cfg.Metrics,
	})
	if err != nil {
		return nil, err
	}
	s.shipper.Store(sh)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sh.Run(ctx); err != nil {
			s.log.Error("click shipper", "err", err)
		}
	})
	return func() { cancel(); wg.Wait() }, nil
}

// ClickEdgeName is the name an edge called node gives its click batches
// (link.EdgeNameFrom).
func ClickEdgeName(node string) string { return link.EdgeNameFrom(node) }

// SealClicks seals the clicks recorded so far into the click journal at
// once, as the shipper does every ClickFlush; it does nothing with
// analytics off or before Run. Tests use it.
func (s *Server) SealClicks() error {
	if sh := s.shipper.Load(); sh != nil {
		return sh.Seal()
	}
	return nil
}

func defaultNodeName(addr net.Addr) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "edge"
	}
	if a, ok := addr.(*net.TCPAddr); ok {
		return fmt.Sprintf("%s:%d", host, a.Port)
	}
	return host
}

// fasthttpLogger routes fasthttp's error log to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}
