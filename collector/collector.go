// Package collector turns the click stream into per-link rollups and
// answers stats queries from them. It consumes LINKPOP_CLICKS through a
// durable JetStream consumer (replication.ClickConsumer) and merges each
// group of batches into its own Pebble store (never the origin's link
// store) in one synced batch, together with the last applied sequence of
// every edge instance: a redelivered batch is refused by sequence, so
// every click counts exactly once through crashes and redeliveries.
//
// Rollups per link: minute (kept 7 days by default), hour (90 days) and
// day (kept forever), each with clicks, bots, a HyperLogLog sketch of the
// visitors (precision link.HLLPrecision, standard error 0.81 %,
// mergeable across edges and intervals) and bounded breakdowns
// (referrers, countries, devices, browsers, OS, edges).
//
// The collector runs inside the origin by default (origin.Config) and as
// its own binary (cmd/collector).
package collector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
	"github.com/linkpop/linkpop/tlsconf"
)

// Config configures a Collector.
type Config struct {
	// Dir holds the rollup store. Required unless FS is set.
	Dir string
	// FS is the store's file system; tests may use vfs.NewMem(). The
	// default is the local disk.
	FS vfs.FS
	// NATS says how to reach the cluster holding the click stream.
	// Required.
	NATS replication.ConnConfig
	// Stream describes the click stream. The defaults are
	// replication.ClickStreamConfig's.
	Stream replication.ClickStreamConfig
	// Durable is the name of the collector's durable consumer. The
	// default is "linkpop-collector", and "linkpop-collector-<i>-of-<n>"
	// for partition i of n.
	Durable string
	// Partition and Partitions split the links between several
	// collectors by code (PartitionOf): this one keeps the rollups of
	// partition Partition of Partitions, reading the whole stream through
	// its own durable consumer. The origin asks each partition over its
	// StatsListen. The default is 0 of 1 (every code).
	Partition, Partitions int
	// StatsListen, if set, is the address of the partition API (the
	// stats the origin asks for; see remote.go), behind StatsToken. Port
	// 0 picks a free port; StatsAddr reports it. The default ("") serves
	// nothing (an in-process collector is asked directly).
	StatsListen string
	// StatsToken is the bearer token of the partition API. Required
	// with StatsListen.
	StatsToken string
	// StatsTLSCertFile and StatsTLSKeyFile, a PEM certificate (chain
	// first) and its key, make the partition API speak TLS only
	// (tlsconf.Server); the origin then asks it at an https URL and
	// verifies it (origin.Config.CollectorCAFile). The default is plain
	// HTTP, for a private network.
	StatsTLSCertFile, StatsTLSKeyFile string
	// AckWait is how long the stream waits for an acknowledgement before
	// redelivering (after a crash). The default is 30s.
	AckWait time.Duration
	// MinuteRetention, HourRetention, BreakdownLimit, GapTimeout,
	// RetireAfter, StaleAfter and ForgetAfter are StoreOptions'; the
	// defaults are its.
	MinuteRetention, HourRetention       time.Duration
	BreakdownLimit                       int
	GapTimeout                           time.Duration
	RetireAfter, StaleAfter, ForgetAfter time.Duration
	// AdminListen, if set, is the address of an operator listener that
	// serves /metrics (Metrics in Prometheus text form) and /healthz,
	// for a collector that runs as its own process. Port 0 picks a free
	// port; AdminAddr reports it. The default ("") serves nothing (the
	// origin serves its metrics set itself).
	AdminListen string
	// PruneInterval is how often expired minute and hour rollups are
	// deleted. The default is 10 minutes.
	PruneInterval time.Duration
	// Logger receives operational logs. The default discards.
	Logger *slog.Logger
	// Metrics receives the linkpop_collector_* metrics. The default is a
	// set of its own.
	Metrics *metrics.Set
	// Now is the clock of retention and gap timing. The default is
	// time.Now.
	Now func() time.Time
}

// Validate reports every bad field.
func (c *Config) Validate() error {
	var errs []error
	if c.Dir == "" && c.FS == nil {
		errs = append(errs, errors.New("collector: Dir is required"))
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	so := c.storeOptions()
	if err := so.Validate(); err != nil {
		errs = append(errs, err)
	}
	cc := c.consumerConfig(nil)
	cc.Applier = (*Store)(nil)
	if err := cc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.StatsListen != "" && c.StatsToken == "" {
		errs = append(errs, errors.New("collector: StatsToken is required with StatsListen"))
	}
	if err := tlsconf.PairError("collector: StatsTLSCertFile/StatsTLSKeyFile", c.StatsTLSCertFile, c.StatsTLSKeyFile); err != nil {
		errs = append(errs, err)
	}
	if c.StatsTLSCertFile != "" && c.StatsListen == "" {
		errs = append(errs, errors.New("collector: StatsTLSCertFile needs StatsListen"))
	}
	if c.PruneInterval < 0 {
		errs = append(errs, errors.New("collector: PruneInterval must not be negative"))
	}
	gap, ack := so.withDefaults().GapTimeout, c.AckWait
	if ack == 0 {
		ack = 30 * time.Second // ClickConsumerConfig's default
	}
	if gap <= ack {
		errs = append(errs, fmt.Errorf("collector: GapTimeout %v must exceed AckWait %v (a gap after a crash fills after AckWait)", gap, ack))
	}
	return errors.Join(errs...)
}

func (c *Config) storeOptions() StoreOptions {
	return StoreOptions{
		Dir: c.Dir, FS: c.FS,
		BreakdownLimit:  c.BreakdownLimit,
		MinuteRetention: c.MinuteRetention, HourRetention: c.HourRetention,
		GapTimeout:  c.GapTimeout,
		RetireAfter: c.RetireAfter, StaleAfter: c.StaleAfter, ForgetAfter: c.ForgetAfter,
		Partition: c.Partition, Partitions: c.Partitions,
		Logger: c.Logger, Metrics: c.Metrics, Now: c.Now,
	}
}

func (c *Config) consumerConfig(st *Store) replication.ClickConsumerConfig {
	durable := c.Durable
	if durable == "" && c.Partitions > 1 {
		durable = fmt.Sprintf("linkpop-collector-%d-of-%d", c.Partition, c.Partitions)
	}
	cc := replication.ClickConsumerConfig{
		Stream:  c.Stream,
		Durable: durable,
		AckWait: c.AckWait,
		Logger:  c.Logger,
		Metrics: c.Metrics,
	}
	if st != nil {
		cc.Applier = st
	}
	return cc
}

// Collector is the click consumer, its rollup store and the queries.
// New opens the store and connects; Run consumes until its context ends,
// then closes the connection and the store. The query methods (Store's)
// work from New until Run returns.
type Collector struct {
	*Store
	cfg Config
	log *slog.Logger
	nc  interface {
		Close()
		IsConnected() bool
	}
	cons    *replication.ClickConsumer
	adminLn net.Listener
	statsLn net.Listener

	ranOnce sync.Once
}

// New validates cfg, opens the store and connects to NATS (an
// unreachable server is retried in the background).
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("collector config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.PruneInterval == 0 {
		cfg.PruneInterval = 10 * time.Minute
	}
	st, err := OpenStore(cfg.storeOptions())
	if err != nil {
		return nil, err
	}
	c := &Collector{Store: st, cfg: cfg, log: cfg.Logger}
	natsCfg := cfg.NATS.ForRole(natsauth.Collector)
	if natsCfg.Name == "" {
		natsCfg.Name = "linkpop-collector"
	}
	if natsCfg.Logger == nil {
		natsCfg.Logger = cfg.Logger.With("component", "nats")
	}
	nc, err := replication.Dial(context.Background(), natsCfg)
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	c.nc = nc
	c.cons, err = replication.NewClickConsumer(nc, cfg.consumerConfig(st))
	if err != nil {
		nc.Close()
		return nil, errors.Join(err, st.Close())
	}
	if cfg.AdminListen != "" {
		if c.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			nc.Close()
			return nil, errors.Join(fmt.Errorf("listen admin: %w", err), st.Close())
		}
	}
	if cfg.StatsListen != "" {
		var statsTLS *tls.Config
		if cfg.StatsTLSCertFile != "" {
			statsTLS, err = tlsconf.Server(cfg.StatsTLSCertFile, cfg.StatsTLSKeyFile)
			if err != nil {
				err = fmt.Errorf("stats listener: %w", err)
			}
		}
		if err == nil {
			c.statsLn, err = net.Listen("tcp", cfg.StatsListen)
			if err != nil {
				err = fmt.Errorf("listen stats: %w", err)
			}
		}
		if err != nil {
			if c.adminLn != nil {
				_ = c.adminLn.Close()
			}
			nc.Close()
			return nil, errors.Join(err, st.Close())
		}
		if statsTLS != nil {
			c.statsLn = tls.NewListener(c.statsLn, statsTLS)
		}
	}
	cfg.Metrics.NewGauge("linkpop_collector_oldest_incomplete_edge_seconds", func() float64 {
		return c.oldestIncomplete().Seconds()
	})
	cfg.Metrics.NewGauge("linkpop_collector_edges", func() float64 {
		c.emu.RLock()
		defer c.emu.RUnlock()
		return float64(len(c.edges))
	})
	return c, nil
}

// AdminAddr is the address of the admin listener, "" without one.
func (c *Collector) AdminAddr() string {
	if c.adminLn == nil {
		return ""
	}
	return c.adminLn.Addr().String()
}

// StatsAddr is the address of the partition API listener, "" without
// one.
func (c *Collector) StatsAddr() string {
	if c.statsLn == nil {
		return ""
	}
	return c.statsLn.Addr().String()
}

// adminHandler serves /metrics and /healthz (200 while the NATS
// connection is up, 503 otherwise, with the consumer's lag).
func (c *Collector) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		c.cfg.Metrics.WritePrometheus(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := c.cons.Status()
		status := http.StatusOK
		if !c.nc.IsConnected() {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"nats_connected": c.nc.IsConnected(), "pending": st.Pending, "ack_pending": st.AckPending,
			"complete_through": c.Completeness(time.Now()).CompleteThrough,
		})
	})
	return mux
}

// Consumer is the click consumer (for its Status).
func (c *Collector) Consumer() *replication.ClickConsumer { return c.cons }

// oldestIncomplete is how far the oldest edge that still holds
// complete_through back is behind the newest mark.
func (c *Collector) oldestIncomplete() time.Duration {
	cp := c.Completeness(time.Now())
	if cp.CompleteThrough == nil {
		return 0
	}
	var newest time.Time
	for _, e := range c.Edges() {
		if e.Through.After(newest) {
			newest = e.Through
		}
	}
	return newest.Sub(*cp.CompleteThrough)
}

// Run consumes the click stream and prunes expired rollups until ctx
// ends; then it closes the connection and the store. It returns nil
// after a clean stop, or the store error that stopped it.
func (c *Collector) Run(ctx context.Context) error {
	first := false
	c.ranOnce.Do(func() { first = true })
	if !first {
		return errors.New("collector: Run called twice")
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.prune(rctx) })
	var srvs []*http.Server
	serve := func(ln net.Listener, h http.Handler, what string) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
		srvs = append(srvs, srv)
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				c.log.Error("collector "+what+" listener", "err", err)
			}
		})
	}
	if c.adminLn != nil {
		serve(c.adminLn, c.adminHandler(), "admin")
	}
	if c.statsLn != nil {
		so := c.Store.o
		serve(c.statsLn, statsHandler(c.Store, c.cfg.StatsToken, so.Partition, so.Partitions), "stats")
	}
	err := c.cons.Run(rctx)
	cancel()
	for _, srv := range srvs {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	c.nc.Close()
	if cerr := c.Store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close collector store: %w", cerr)
	}
	return err
}

// Close releases a Collector whose Run was never called.
func (c *Collector) Close() error {
	first := false
	c.ranOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	for _, ln := range []net.Listener{c.adminLn, c.statsLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	c.nc.Close()
	return c.Store.Close()
}

func (c *Collector) prune(ctx context.Context) {
	t := time.NewTicker(c.cfg.PruneInterval)
	defer t.Stop()
	for {
		if n, err := c.Prune(); err != nil {
			if !errors.Is(err, ErrClosed) {
				c.log.Error("prune rollups", "err", err)
			}
		} else if n > 0 {
			c.log.Info("pruned expired rollups", "rollups", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
