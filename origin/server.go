package origin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/relay"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
	"github.com/linkpop/linkpop/tlsconf"
)

// ErrAlreadyRun is returned by a second call to Run: a Server serves once.
var ErrAlreadyRun = errors.New("origin: Run called twice")

// natsConn is what the server needs of the connection replication.Dial
// returns; only package replication imports nats.go.
type natsConn interface {
	IsConnected() bool
	Close()
}

// Server is the origin: the API and admin listeners, the store and the
// relay that feeds the change stream. New acquires every resource (store,
// listeners, embedded NATS, connection); Run serves until its context ends
// and releases them in order; Close releases them when Run is never
// called.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Set

	store *store.Store
	dev   *devserver.Server
	nc    natsConn
	raw   *replication.Conn
	pub   *replication.Publisher
	opub  *replication.Publisher // the origin stream
	relay *relay.Relay
	ha    haState
	// collector is the in-process click collector; nil with NoCollector
	// or Collectors.
	collector *collector.Collector
	// stats answers the stats API: the in-process collector, the
	// partitions of Collectors, or nil (503).
	stats collector.Source
	// feeds are the collectors' click feeds max_visits follows: the
	// in-process collector's, or one per partition of Collectors.
	feeds []clickFeed
	// mMaxVisits counts the links disabled for reaching max_visits;
	// mFeedErrors the failed reads and sweeps of a feed, mFeedSweeps the
	// sweeps of every limited link (after a feed could not be followed).
	mMaxVisits, mFeedErrors, mFeedSweeps *metrics.Counter
	// quit is closed when Run begins to stop: long-lived answers (the
	// live stats stream) end on it.
	quit chan struct{}

	apiLn, adminLn net.Listener
	apiSrv         *http.Server
	adminSrv       *http.Server
	handler        http.Handler

	// blocks holds the target policy (blocklist files reloaded in place);
	// writeGate is held for reading by every create and update from the
	// policy check to the commit, and for writing while a reload swaps
	// the policy (see ReloadBlocklists).
	blocks    *blocklists
	writeGate sync.RWMutex
	reserved  link.Reserved
	shortBase string

	adminKey       string
	adminKeyHash   [32]byte
	adminPrincipal principal // what the admin key authenticates as (read only)
	adminGenerated bool
	keys           *keyCache
	limits         *limiters
	scans          chan struct{} // digest scan slots; see maxDigestScans

	// storeMu is held for reading while a request uses the store, and
	// for writing while release closes it: Pebble must not be read after
	// Close.
	storeMu      sync.RWMutex
	streamReady  atomic.Bool
	relayRunning atomic.Bool
	shutting     atomic.Bool
	closed       atomic.Bool
	ran          atomic.Bool
	closeOnce    sync.Once
	closeErr     error
}

// New validates cfg and acquires the server's resources: it opens the
// store, loads or generates the admin key, starts the embedded JetStream
// server (Dev), connects to NATS (which never fails for an unreachable
// server: the connection retries in the background) and binds both
// listeners. Call Run to serve, or Close to release everything unused.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("origin config: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		metrics:     cfg.Metrics,
		reserved:    link.NewReserved(cfg.Reserved),
		shortBase:   cfg.BaseURL,
		keys:        newKeyCache(),
		limits:      newLimiters(),
		scans:       make(chan struct{}, maxDigestScans),
		mMaxVisits:  cfg.Metrics.GetOrCreateCounter("linkpop_origin_max_visits_disabled_total"),
		mFeedErrors: cfg.Metrics.GetOrCreateCounter("linkpop_origin_max_visits_feed_errors_total"),
		mFeedSweeps: cfg.Metrics.GetOrCreateCounter("linkpop_origin_max_visits_sweeps_total"),
		quit:        make(chan struct{}),
	}
	host, _ := baseHost(cfg.BaseURL) // validated
	blocks, err := newBlocklists(&cfg, host, cfg.Metrics)
	if err != nil { // validated too
		return nil, fmt.Errorf("origin config: %w", err)
	}
	if err := blocks.loadInitial(); err != nil {
		return nil, err
	}
	s.blocks = blocks

	ok := false
	defer func() {
		if !ok {
			s.release()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := s.loadAdminKey(); err != nil {
		return nil, err
	}
	st, err := openStore(&cfg, s.reserved)
	if err != nil {
		return nil, err
	}
	s.store = st

	natsCfg := cfg.NATS
	collectorNATS := natsCfg
	if hasCredentials(cfg.Collector.NATS) {
		collectorNATS = withCredentials(natsCfg, cfg.Collector.NATS)
	}
	if cfg.Dev {
		dev, err := startDevNATS(&cfg)
		if err != nil {
			return nil, err
		}
		s.dev = dev.srv
		natsCfg, collectorNATS = dev.origin, dev.collector
		s.log.Info("embedded JetStream started", "url", dev.srv.ClientURL(), "store", filepath.Join(cfg.DataDir, devNATSSubdir),
			"passwords", filepath.Dir(DevPasswordFile(cfg.DataDir, natsauth.Origin)))
	}
	natsCfg = natsCfg.ForRole(natsauth.Origin)
	collectorNATS = collectorNATS.ForRole(natsauth.Collector)
	if natsCfg.Logger == nil {
		natsCfg.Logger = cfg.Logger.With("component", "nats")
	}
	if natsCfg.Name == "" {
		natsCfg.Name = "linkpop-origin"
	}
	nc, err := replication.Dial(context.Background(), natsCfg)
	if err != nil {
		return nil, err
	}
	s.nc, s.raw = nc, nc
	if cfg.inProcessCollector() {
		cc := cfg.collectorConfig(collectorNATS)
		cc.Logger = cfg.Logger.With("component", "collector")
		cc.NATS.Logger = cfg.Logger.With("component", "nats", "conn", "collector")
		cc.Metrics = cfg.Metrics
		if s.collector, err = collector.New(cc); err != nil {
			return nil, fmt.Errorf("collector: %w", err)
		}
		s.stats = s.collector
		s.feeds = []clickFeed{{ClickFeed: s.collector, Source: s.collector, part: 0, parts: 1}}
	}
	if len(cfg.Collectors) > 0 {
		parts := make([]collector.Source, len(cfg.Collectors))
		for i := range cfg.Collectors {
			rm, err := collector.NewRemote(cfg.remoteConfig(i))
			if err != nil {
				return nil, fmt.Errorf("collector partition %d: %w", i, err)
			}
			parts[i] = rm
			s.feeds = append(s.feeds, clickFeed{ClickFeed: rm, Source: rm, part: i, parts: len(cfg.Collectors)})
		}
		if s.stats, err = collector.NewPartitions(parts...); err != nil {
			return nil, err
		}
	}
	s.pub, err = replication.NewPublisher(nc, cfg.Stream)
	if err != nil {
		return nil, err
	}
	s.opub, err = replication.NewPublisher(nc, replication.OriginStream(cfg.Stream, idemStreamTTL(cfg.IdempotencyTTL)))
	if err != nil {
		return nil, err
	}
	s.relay, err = relay.New(relay.Config{
		Store:     st,
		Publisher: s.pub,
		Origin:    s.opub,
		Logger:    cfg.Logger.With("component", "relay"),
		Metrics:   cfg.Metrics,
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}

	s.handler = s.newAPIHandler()
	s.apiSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.adminSrv = &http.Server{
		Handler:           s.newAdminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.registerGauges()

	var apiTLS *tls.Config
	if cfg.TLSCertFile != "" {
		if apiTLS, err = tlsconf.Server(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	if s.apiLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen api: %w", err)
	}
	if apiTLS != nil {
		// Under the refusal listener: its rewritten answers go through TLS.
		s.apiLn = tls.NewListener(s.apiLn, apiTLS)
	}
	s.apiLn = &refusalListener{Listener: s.apiLn, s: s}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return nil, fmt.Errorf("listen admin: %w", err)
	}
	if s.cfg.HA.AdvertiseURL == "" {
		s.cfg.HA.AdvertiseURL = defaultAdvertise(s.Addr())
	}
	if s.cfg.HA.Holder == "" {
		s.cfg.HA.Holder = defaultHolder(s.Addr())
	}
	ok = true
	return s, nil
}

// Addr is the address the API listener is bound to.
func (s *Server) Addr() string { return s.apiLn.Addr().String() }

// AdminAddr is the address the admin listener is bound to.
func (s *Server) AdminAddr() string { return s.adminLn.Addr().String() }

// NATSURL is the client URL of the embedded JetStream server with Dev, or
// "" without it.
func (s *Server) NATSURL() string {
	if s.dev == nil {
		return ""
	}
	return s.dev.ClientURL()
}

// AdminKey is the bootstrap admin API key: Config.AdminKey, or the one
// read from or generated into DataDir/admin.key.
func (s *Server) AdminKey() string { return s.adminKey }

// AdminKeyGenerated says the admin key was generated by this New call
// (the first start without a configured key).
func (s *Server) AdminKeyGenerated() bool { return s.adminGenerated }

// AdminKeyPath is the file a key not given in Config is kept in.
func (s *Server) AdminKeyPath() string { return filepath.Join(s.cfg.DataDir, adminKeyFile) }

// Handler is the API handler (everything under /v1 and the JSON 404/405
// answers), for tests and fuzzing that serve it without the listener. It
// works as soon as New returns.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves the API and admin listeners, publishes the outbox through
// the relay and keeps trying to create the change stream until it
// exists. Startup never waits on NATS: writes are accepted and queued in
// the outbox while it is down. When ctx ends Run stops, in order: both
// listeners (graceful, bounded by ShutdownTimeout), the relay, the NATS
// connection, the store and the embedded JetStream server. It returns nil
// after a clean stop, or the error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) || s.closed.Load() {
		return ErrAlreadyRun
	}
	s.log.Info("origin serving", "api", s.Addr(), "admin", s.AdminAddr(), "base_url", s.shortBase)

	errc := make(chan error, 4)
	var httpWG sync.WaitGroup
	serve := func(name string, srv *http.Server, ln net.Listener) {
		httpWG.Add(1)
		go func() {
			defer httpWG.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", name, err)
			}
		}()
	}
	serve("api", s.apiSrv, s.apiLn)
	serve("admin", s.adminSrv, s.adminLn)

	relayCtx, stopRelay := context.WithCancel(context.Background())
	var relayWG sync.WaitGroup
	relayWG.Add(2)
	go func() {
		defer relayWG.Done()
		s.ensureStream(relayCtx)
	}()
	go func() {
		defer relayWG.Done()
		if s.cfg.HA.Enabled {
			if err := s.runHA(relayCtx); err != nil && relayCtx.Err() == nil {
				errc <- fmt.Errorf("ha: %w", err)
			}
			return
		}
		s.relayRunning.Store(true)
		defer s.relayRunning.Store(false)
		if err := s.relay.Run(relayCtx); err != nil && relayCtx.Err() == nil {
			errc <- fmt.Errorf("relay: %w", err)
		}
	}()

	collCtx, stopCollector := context.WithCancel(context.Background())
	var collWG sync.WaitGroup
	if s.collector != nil {
		collWG.Go(func() {
			if err := s.collector.Run(collCtx); err != nil {
				errc <- fmt.Errorf("collector: %w", err)
			}
		})
	}
	for _, f := range s.feeds {
		collWG.Go(func() { s.followClicks(collCtx, f) })
	}

	blockCtx, stopBlocklists := context.WithCancel(context.Background())
	var blockWG sync.WaitGroup
	if s.blocks.Len() > 0 || len(s.cfg.BlocklistFiles) > 0 {
		blockWG.Go(func() { s.runBlocklists(blockCtx) })
	}

	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("origin stopping")
	case runErr = <-errc:
		s.log.Error("origin stopping on error", "err", runErr)
	}
	s.shutting.Store(true)
	close(s.quit)

	shutdown := func(name string, srv *http.Server) {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("listener shutdown cut short", "listener", name, "err", err)
			_ = srv.Close()
		}
	}
	shutdown("api", s.apiSrv)
	shutdown("admin", s.adminSrv)
	httpWG.Wait()

	// The collector disables links through the store (max_visits): it
	// stops before the relay and the store.
	stopCollector()
	collWG.Wait()
	stopBlocklists() // disables links through the store too
	blockWG.Wait()

	stopRelay()
	relayWG.Wait()

	if err := s.release(); err != nil && runErr == nil {
		runErr = err
	}
	s.log.Info("origin stopped")
	return runErr
}

// Close releases what New acquired, for a Server whose Run was never
// called (Run releases everything itself). Closing twice does nothing.
func (s *Server) Close() error {
	if s.ran.Load() {
		return nil
	}
	s.ran.Store(true)
	s.shutting.Store(true)
	if s.apiLn != nil {
		_ = s.apiLn.Close()
	}
	if s.adminLn != nil {
		_ = s.adminLn.Close()
	}
	return s.release()
}

// release closes, in order, the listeners Run did not serve, the NATS
// connection, the store and the embedded server.
func (s *Server) release() error {
	s.closeOnce.Do(func() {
		s.shutting.Store(true)
		if !s.ran.Load() {
			for _, ln := range []net.Listener{s.apiLn, s.adminLn} {
				if ln != nil {
					_ = ln.Close()
				}
			}
		}
		if s.collector != nil {
			// A no-op after the collector's Run, which closes it itself.
			_ = s.collector.Close()
		}
		if s.nc != nil {
			s.nc.Close()
		}
		if s.store != nil {
			s.storeMu.Lock()
			s.closed.Store(true)
			s.storeMu.Unlock()
			if err := s.store.Close(); err != nil {
				s.closeErr = fmt.Errorf("close store: %w", err)
			}
		}
		if s.dev != nil {
			s.dev.Shutdown()
		}
	})
	return s.closeErr
}

// ensureStream creates or updates the change stream, retrying with
// backoff until it succeeds or ctx ends. The relay retries its publishes
// meanwhile; nothing waits for this.
func (s *Server) ensureStream(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.pub.OpenStream(actx)
		if err == nil {
			err = s.opub.OpenStream(actx)
		}
		cancel()
		if err == nil {
			s.streamReady.Store(true)
			s.log.Info("change stream ready")
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("change stream not ready; retrying", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// openStore opens the Pebble store in DataDir/origin.
func openStore(cfg *Config, reserved link.Reserved) (*store.Store, error) {
	st, err := store.Open(store.Options{
		Dir:            filepath.Join(cfg.DataDir, storeSubdir),
		Logger:         cfg.Logger.With("component", "store"),
		Metrics:        cfg.Metrics,
		CodeLength:     cfg.CodeLength,
		Reserved:       reserved,
		IdempotencyTTL: cfg.IdempotencyTTL,
		// With HA the lease decides when this origin may write.
		ReadOnly: cfg.HA.Enabled,
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}

// loadAdminKey sets the bootstrap admin key from the config, from
// DataDir/admin.key, or generates one there.
func (s *Server) loadAdminKey() error {
	key := s.cfg.AdminKey
	if key == "" {
		path := s.AdminKeyPath()
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			key = strings.TrimSpace(string(b))
			if err := validAdminKey(key); err != nil {
				return fmt.Errorf("admin key in %s: %w", path, err)
			}
		case errors.Is(err, fs.ErrNotExist):
			key = "lpk_" + rand.Text()
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
				return fmt.Errorf("write admin key: %w", err)
			}
			if err := os.Rename(tmp, path); err != nil {
				return fmt.Errorf("write admin key: %w", err)
			}
			s.adminGenerated = true
			s.log.Info("generated the bootstrap admin key", "path", path)
		default:
			return fmt.Errorf("read admin key: %w", err)
		}
	}
	s.adminKey = key
	s.adminKeyHash = sha256.Sum256([]byte(key))
	s.adminPrincipal = principal{id: AdminKeyID, scopes: []string{ScopeAdmin}, rate: s.cfg.AdminRateLimit, burst: s.cfg.AdminBurst}
	return nil
}
