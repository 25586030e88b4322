// Command origin runs linkpop's origin: the write API (JSON under /v1), the
// admin listener (/metrics, /healthz, /readyz), the Pebble store and the
// relay that feeds the JetStream change stream.
//
//	origin -data DIR [-listen 127.0.0.1:8081] [-admin 127.0.0.1:9081] [-nats URLS] [-dev] ...
//	origin republish -data DIR [-nats URLS] [-timeout 2m]
//	origin streams -nats URLS -nats-user operator -nats-password-file FILE [-stream-replicas 3 -click-stream-replicas 3]
//	origin restore -data DIR [-nats URLS] [-stream-replicas 3]
//	origin region -domain D -nats LEAF_URLS -nats-user operator -nats-password-file FILE [-replicas 3]
//	origin verify [-api URL] [-key KEY | -key-file FILE] [-edges URLS] [-wait 10s] [-detail]
//
// `origin republish` re-publishes the whole link table into the stream and
// exits; it opens the store itself, so the origin must be stopped first
// (Pebble's directory lock refuses a second process).
//
// `origin streams` is the operator's step: with the operator role's NATS
// credentials it creates the change, origin and click streams, or updates
// them to the flags' settings (replicas, storage). Only the operator role
// may; the origin, edges and collector only open streams that exist (-dev
// creates them in its embedded server itself).
//
// `origin region` is the operator's step for a region away from the
// origin (a leaf node with its own JetStream domain): against the
// region's servers it creates the mirror of the change stream and the
// regional click stream; `origin streams -regions D,...` then makes the
// hub's click stream source the regions'.
//
// `origin restore` rebuilds the store in DIR from the streams alone (the
// link stream and the origin stream of API keys and idempotency records),
// for when every origin's disk is lost; DIR/origin must not exist.
//
// `origin verify` compares each edge's replica with the origin by
// digest (the origin's GET /v1/digest, each edge's admin GET /digest) and
// exits 1 if an edge diverged, still lags or is unreachable; see package
// origin/verify.
//
// The bootstrap admin key comes from -admin-key, else LINKPOP_ADMIN_KEY,
// else DIR/admin.key, generated on the first start; it is printed at
// start-up unless it was given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/cmd/internal/natsflag"
	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
)

const adminKeyEnv = "LINKPOP_ADMIN_KEY"

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "verify" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := runVerify(ctx, args[1:])
		stop()
		os.Exit(code)
	}
	if len(args) > 0 && args[0] == "region" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := runRegion(ctx, args[1:])
		stop()
		os.Exit(code)
	}
	republish := len(args) > 0 && args[0] == "republish"
	streams := len(args) > 0 && args[0] == "streams"
	restore := len(args) > 0 && args[0] == "restore"
	if republish || streams || restore {
		args = args[1:]
	}
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	opts := registerFlags(fs)
	timeout := time.Duration(0)
	if republish || streams {
		fs.Init("origin "+args0(republish), flag.ExitOnError)
		fs.DurationVar(&timeout, "timeout", 2*time.Minute, "give up when NATS or the stream are not reachable within this time")
	}
	if restore {
		fs.Init("origin restore", flag.ExitOnError)
		fs.DurationVar(&timeout, "timeout", 30*time.Minute, "give up when the store is not rebuilt within this time")
	}
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "origin: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	cfg, err := opts.config(fs, !streams)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if streams {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := origin.CreateStreams(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "origin streams:", err)
			os.Exit(1)
		}
		fmt.Println("streams ready")
		return
	}
	if restore {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		n, err := origin.Restore(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "origin restore:", err)
			os.Exit(1)
		}
		fmt.Printf("restored %d links\n", n)
		return
	}
	if republish {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		n, err := origin.Republish(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "origin republish:", err)
			os.Exit(1)
		}
		fmt.Printf("republished %d links\n", n)
		return
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg origin.Config) error {
	given := cfg.AdminKey != ""
	srv, err := origin.New(cfg)
	if err != nil {
		return err
	}
	if !given {
		how := "stored in"
		if srv.AdminKeyGenerated() {
			how = "generated, stored in"
		}
		fmt.Printf("admin key: %s   (%s %s)\n", srv.AdminKey(), how, srv.AdminKeyPath())
	}
	fmt.Printf("origin API on http://%s/v1, admin on http://%s\n", srv.Addr(), srv.AdminAddr())
	if u := srv.NATSURL(); u != "" {
		fmt.Printf("embedded JetStream on %s\n", u)
	}
	// SIGHUP rereads the blocklist files (logged and counted by the
	// server either way).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = srv.ReloadBlocklists(ctx)
			}
		}
	}()
	return srv.Run(ctx)
}

// args0 names the subcommand of the flag set.
func args0(republish bool) string {
	if republish {
		return "republish"
	}
	return "streams"
}

// flags are the command line options shared by every mode.
type flags struct {
	listen, admin, data            string
	tlsCert, tlsKey                string
	nats, collectorNATS            *natsflag.Flags
	adminKey                       *cli.Secret
	stream                         string
	streamReplicas                 int
	streamMemory                   bool
	baseURL                        string
	codeLength                     int
	blockedDomains                 string
	blocklistFiles                 string
	blocklistRefresh               time.Duration
	allowPrivateTargets            bool
	dev                            bool
	devNATSAddr                    string
	logLevel, logFormat            string
	defaultRateLimit               float64
	defaultBurst                   int
	maxBodyBytes                   int64
	shutdownTimeout                time.Duration
	noCollector                    bool
	collectors, collectorTokenFile string
	collectorCA                    string
	clickStreamReplicas            int
	regions                        string
	minuteRetention, hourRetention time.Duration
	edgeRetireAfter                time.Duration
	ack                            string
	ackTimeout                     time.Duration
	ha                             bool
	advertise                      string
	leaseTTL, leaseRenew           time.Duration
	leaseStopAfter                 time.Duration
}

const defaultNATS = "nats://127.0.0.1:4222"

func registerFlags(fs *flag.FlagSet) *flags {
	f := &flags{}
	fs.StringVar(&f.listen, "listen", origin.DefaultListen, "API listen address (JSON under /v1)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file (chain first): the API listener speaks TLS only")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM file of the -tls-cert key")
	fs.StringVar(&f.admin, "admin", origin.DefaultAdminListen, "admin listen address: /metrics /healthz /readyz")
	fs.StringVar(&f.data, "data", "", "data directory: Pebble under DIR/origin, admin key in DIR/admin.key, -dev JetStream under DIR/nats (required)")
	f.nats = natsflag.Register(fs, "nats", "LINKPOP_NATS", defaultNATS)
	f.collectorNATS = natsflag.Register(fs, "collector-nats", "LINKPOP_COLLECTOR_NATS", "")
	fs.StringVar(&f.stream, "stream", "LINKPOP_LINKS", "JetStream stream name")
	fs.IntVar(&f.streamReplicas, "stream-replicas", 1, "stream replication factor (3 in production)")
	fs.BoolVar(&f.streamMemory, "stream-memory", false, "keep the stream in memory instead of on disk")
	fs.StringVar(&f.baseURL, "base-url", origin.DefaultBaseURL, "public base of short links; its host is refused as a target")
	fs.IntVar(&f.codeLength, "code-length", 7, "length of random codes")
	f.adminKey = cli.SecretVar(fs, "admin-key", adminKeyEnv, "bootstrap admin API key (default DIR/admin.key, generated on the first start)", true)
	fs.StringVar(&f.blockedDomains, "blocked-domains", "", "extra domains refused as targets, comma separated")
	fs.StringVar(&f.blocklistFiles, "blocklist-file", "", "files of hosts refused as targets (domain list, hosts file or URLhaus CSV), comma separated; reread on SIGHUP and every -blocklist-refresh, and newly listed hosts have their links disabled")
	fs.DurationVar(&f.blocklistRefresh, "blocklist-refresh", origin.DefaultBlocklistRefresh, "how often -blocklist-file is reread (negative: only on SIGHUP)")
	fs.BoolVar(&f.allowPrivateTargets, "allow-private-targets", false, "accept targets on loopback, private, link-local and cloud-metadata addresses and localhost names")
	fs.BoolVar(&f.dev, "dev", false, "embed a JetStream server (store DIR/nats) on -dev-nats-addr")
	fs.StringVar(&f.devNATSAddr, "dev-nats-addr", origin.DefaultDevNATSAddr, "client address of the embedded JetStream server")
	fs.Float64Var(&f.defaultRateLimit, "rate-limit", origin.DefaultRateLimit, "requests per second for keys minted without a rate_limit (negative: unlimited)")
	fs.IntVar(&f.defaultBurst, "burst", origin.DefaultBurst, "token bucket size for keys minted without a burst")
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", origin.DefaultMaxBodyBytes, "largest request body accepted")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", origin.DefaultShutdownTimeout, "how long in-flight requests may finish at shutdown")
	fs.BoolVar(&f.noCollector, "no-collector", false, "do not run the click collector in this process (the stats API then answers 503)")
	fs.StringVar(&f.collectors, "collectors", "", "partition API URLs of separate collectors (bin/collector -stats-listen), comma separated, in partition order; the stats API asks them and no collector runs in this process")
	fs.StringVar(&f.collectorTokenFile, "collector-token-file", "", "file holding the collectors' partition API token (required with -collectors)")
	fs.StringVar(&f.collectorCA, "collector-ca", "", "PEM `file` of the CAs https -collectors are verified against (bin/collector -stats-tls-cert; default the system's)")
	fs.IntVar(&f.clickStreamReplicas, "click-stream-replicas", 1, "click stream (LINKPOP_CLICKS) replication factor (3 in production)")
	fs.StringVar(&f.regions, "regions", "", "JetStream `domains` of the regions (see origin region) whose click streams the click stream sources, comma separated; set by origin streams")
	fs.DurationVar(&f.minuteRetention, "minute-retention", 7*24*time.Hour, "how long the collector keeps minute rollups")
	fs.DurationVar(&f.hourRetention, "hour-retention", 90*24*time.Hour, "how long the collector keeps hour rollups (day rollups are kept forever)")
	fs.DurationVar(&f.edgeRetireAfter, "edge-retire-after", time.Hour, "an edge this far behind the newest flush-through mark stops holding complete_through back")
	fs.StringVar(&f.ack, "ack", origin.AckLocal, "answer writes once durable here (local) or once the stream acknowledged them (replicated: no answered write is lost with this machine)")
	fs.DurationVar(&f.ackTimeout, "ack-timeout", origin.DefaultAckTimeout, "with -ack replicated, answer 503 if the stream has not acknowledged a write within this time")
	fs.BoolVar(&f.ha, "ha", false, "run with standbys: the leader lease (JetStream KV LINKPOP_LEASE) decides which origin takes writes; the others follow the streams and answer 503 not_leader")
	fs.StringVar(&f.advertise, "advertise", "", "with -ha, this origin's API URL as clients reach it, named in not_leader answers (default http://<-listen>)")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", origin.DefaultLeaseTTL, "with -ha, the lease bucket's TTL: a standby takes over this long after the leader's last renewal")
	fs.DurationVar(&f.leaseRenew, "lease-renew", origin.DefaultLeaseRenew, "with -ha, how often the leader renews the lease")
	fs.DurationVar(&f.leaseStopAfter, "lease-stop-after", origin.DefaultLeaseStopAfter, "with -ha, the leader stops taking writes this long after its last successful renewal (below -lease-ttl)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	return f
}

// config turns the flags into an origin.Config.
func (f *flags) config(fs *flag.FlagSet, needData bool) (origin.Config, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	logger, err := cli.NewLogger(f.logLevel, f.logFormat)
	if err != nil {
		return origin.Config{}, err
	}
	key, inline, err := f.adminKey.Value()
	if err != nil {
		return origin.Config{}, err
	}
	if inline {
		logger.Warn("the admin key was given on the command line, where every local user can read it; use -admin-key-file or $" + adminKeyEnv)
	}
	natsCfg, err := f.nats.Config(logger)
	if err != nil {
		return origin.Config{}, err
	}
	collectorNATS, err := f.collectorNATS.Config(logger)
	if err != nil {
		return origin.Config{}, err
	}
	cfg := origin.Config{
		Listen:      f.listen,
		TLSCertFile: f.tlsCert,
		TLSKeyFile:  f.tlsKey,
		AdminListen: f.admin,
		DataDir:     f.data,
		NATS:        natsCfg,
		Stream: replication.StreamConfig{
			Name:     f.stream,
			Replicas: f.streamReplicas,
			Memory:   f.streamMemory,
		},
		BaseURL:          f.baseURL,
		CodeLength:       f.codeLength,
		AdminKey:         key,
		BlockedDomains:   cli.SplitList(f.blockedDomains),
		MaxBodyBytes:     f.maxBodyBytes,
		DefaultRateLimit: f.defaultRateLimit,
		DefaultBurst:     f.defaultBurst,
		ShutdownTimeout:  f.shutdownTimeout,
		Dev:              f.dev,
		DevNATSAddr:      f.devNATSAddr,
		NoCollector:      f.noCollector,
		Collector: collector.Config{
			NATS:            collectorNATS,
			Stream:          replication.ClickStreamConfig{Replicas: f.clickStreamReplicas, Regions: cli.SplitList(f.regions)},
			MinuteRetention: f.minuteRetention,
			HourRetention:   f.hourRetention,
			RetireAfter:     f.edgeRetireAfter,
		},
		Ack:        f.ack,
		AckTimeout: f.ackTimeout,
		HA: origin.HAConfig{
			Enabled:      f.ha,
			AdvertiseURL: f.advertise,
			Lease:        replication.LeaseConfig{TTL: f.leaseTTL, Replicas: f.streamReplicas},
			Renew:        f.leaseRenew,
			StopAfter:    f.leaseStopAfter,
		},
		Logger: logger,
	}
	cfg.BlocklistFiles = cli.SplitList(f.blocklistFiles)
	cfg.Collectors = cli.SplitList(f.collectors)
	cfg.CollectorCAFile = f.collectorCA
	if f.collectorTokenFile != "" {
		if cfg.CollectorToken, err = cli.ReadSecretFile(f.collectorTokenFile); err != nil {
			return origin.Config{}, fmt.Errorf("-collector-token-file: %w", err)
		}
	}
	cfg.BlocklistRefresh = f.blocklistRefresh
	cfg.AllowPrivateTargets = f.allowPrivateTargets
	// With -dev, -nats defaults to the embedded server.
	if f.dev && !set["nats"] {
		cfg.NATS.URLs = nil
	}
	if f.data == "" && needData {
		return cfg, errors.New("-data is required")
	}
	return cfg, nil
}
