// Command edge serves linkpop redirects from a local replica of the link
// table, kept current from the NATS JetStream change stream.
//
//	edge -data DIR [-listen 127.0.0.1:8080] [-admin 127.0.0.1:9080] [-nats nats://127.0.0.1:4222]
//	     [-origin URL -origin-key-file FILE] [-gossip-bind HOST:PORT -gossip-join HOST:PORT,... -gossip-key-file FILE]
//	     [-analytics-key-file FILE [-trusted-proxies CIDR,...] [-click-flush 1s]]
//
// Run "edge -h" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/cmd/internal/natsflag"
	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/replication"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	var (
		listen        = fs.String("listen", edge.DefaultListen, "redirect listener `address`")
		tlsCert       = fs.String("tls-cert", "", "PEM certificate `file` (chain first): the redirect listener speaks TLS only")
		tlsKey        = fs.String("tls-key", "", "PEM `file` of the -tls-cert key")
		originCA      = fs.String("origin-ca", "", "PEM `file` of the CAs an https -origin is verified against (default the system's)")
		admin         = fs.String("admin", edge.DefaultAdminListen, "admin listener `address` (/metrics /healthz /readyz /status /digest, POST /resync /repair; operator-only, never public)")
		data          = fs.String("data", "", "data `dir` holding the replica (required)")
		natsFlags     = natsflag.Register(fs, "nats", "LINKPOP_NATS", "nats://127.0.0.1:4222")
		stream        = fs.String("stream", "LINKPOP_LINKS", "change stream `name`")
		hubNATS       = fs.String("hub-nats", "", "the origin region's NATS server `URLs`, comma separated, for an edge whose -nats is a region's leaf with a mirror of the stream: the change stream is read there while the region's servers cannot be, with -nats's credentials (empty disables)")
		origin        = fs.String("origin", "", "origin API base `URLs`, comma separated (an origin with HA and its standbys: the leader is asked first), asked about misses while the replica lags (empty disables)")
		originKey     = cli.SecretVar(fs, "origin-key", "LINKPOP_ORIGIN_KEY", "origin API key with links:read, for the fallback", true)
		lagThreshold  = fs.Int64("lag-threshold", edge.DefaultLagThreshold, "stream `messages` of lag under which a miss is authoritative and /readyz is ready")
		peerLag       = fs.Int64("peer-lag-threshold", 0, "stream `messages` the replica may trail the most advanced ready PoP peer before /readyz says behind_peers (0: the -lag-threshold value; negative disables)")
		maxStale      = fs.Duration("max-stale", edge.DefaultMaxStale, "`duration` without contact with the stream before the lag is considered unknown")
		maxAge        = fs.Duration("max-age", edge.DefaultMaxAge, "Cache-Control max-age `duration` for 301/308 (at most 24h)")
		hotCache      = fs.Int("hot-cache", edge.DefaultHotCacheEntries, "hot cache `entries`")
		negativeCache = fs.Int("negative-cache", edge.DefaultNegativeCacheEntries, "negative cache `entries`")
		warmEntries   = fs.Int("warm-entries", edge.DefaultWarmEntries, "hot set `codes` saved in DATA/hotset and loaded into the hot cache at start (negative disables warming)")
		warmTimeout   = fs.Duration("warm-timeout", edge.DefaultWarmTimeout, "bound on loading the hot set at start (`duration`)")
		warmSave      = fs.Duration("warm-save-interval", edge.DefaultWarmSaveInterval, "`interval` between two saves of the hot set (it is also saved on stop)")
		blockCache    = fs.Int64("block-cache", edge.DefaultBlockCacheBytes, "Pebble block cache `bytes`")
		node          = fs.String("node", "", "node `name` in gossip and /status (default host name and listen port)")
		gossipBind    = fs.String("gossip-bind", "", "gossip `address` (port 0 = random; empty disables gossip)")
		gossipJoin    = fs.String("gossip-join", "", "gossip `addresses` of PoP peers to join, comma separated")
		gossipKey     = cli.SecretVar(fs, "gossip-key", "LINKPOP_GOSSIP_KEY", "fleet gossip encryption keys, base64, one per line (the first encrypts, all decrypt; plaintext is refused)", false)
		peerSecret    = cli.SecretVar(fs, "peer-secret", "LINKPOP_PEER_SECRET", "fleet secret of peer bootstrap (at least 16 bytes, the same on every edge of the PoP): serves GET /checkpoint to peers, and a fresh edge with -gossip-join takes a peer's replica instead of replaying the stream", false)
		analyticsKey  = cli.SecretVar(fs, "analytics-key", "LINKPOP_ANALYTICS_KEY", "click analytics key (at least 16 bytes, the same on every edge, never the API key); with it every GET redirect is recorded and shipped to the click stream", true)
		trusted       = fs.String("trusted-proxies", "", "`CIDRs` of proxies whose X-Forwarded-For / Forwarded name the client, comma separated")
		clickStream   = fs.String("click-stream", "LINKPOP_CLICKS", "click stream `name`")
		clickSubject  = fs.String("click-subject", "linkpop.clicks", "subject `prefix` of this edge's click batches (<prefix>.<node>); in a region with its own JetStream domain, linkpop.clicks.<domain>")
		clickFlush    = fs.Duration("click-flush", edge.DefaultClickFlush, "`interval` between two click batches (the usual delay before a click ships)")
		clickSpill    = fs.Int64("click-spill-max-bytes", edge.DefaultClickSpillMaxBytes, "`bytes` of click batches kept on disk while the stream is unreachable")
		clickEntries  = fs.Int("click-max-entries", edge.DefaultClickMaxEntries, "click aggregate `entries` held in memory per flush interval")
		nfRate        = fs.Float64("notfound-rate", edge.DefaultNotFoundRate, "enumeration limiter: unknown codes per `second` a client address may collect after its burst; beyond, 429")
		nfBurst       = fs.Int("notfound-burst", edge.DefaultNotFoundBurst, "enumeration limiter: unknown codes a client address may collect at once")
		nfClients     = fs.Int("notfound-clients", edge.DefaultNotFoundClients, "enumeration limiter: client `buckets` kept (fixed memory, about 24 bytes each)")
		noNF          = fs.Bool("no-notfound-limit", false, "turn the enumeration limiter off: every unknown code is a 404")
		logLevel      = fs.String("log-level", "info", "log `level`: debug, info, warn or error")
		logFormat     = fs.String("log-format", "text", "log `format`: text or json")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := cli.NewLogger(*logLevel, *logFormat)
	if err != nil {
		return err
	}
	key, inline, err := analyticsKey.Value()
	if err != nil {
		return err
	}
	warnInline(log, inline, analyticsKey)
	okey, inline, err := originKey.Value()
	if err != nil {
		return err
	}
	warnInline(log, inline, originKey)
	natsCfg, err := natsFlags.Config(log.With("component", "nats"))
	if err != nil {
		return err
	}
	var gossipKeys [][]byte
	if gk, _, err := gossipKey.Value(); err != nil {
		return err
	} else if gk != "" {
		if gossipKeys, err = edge.ParseGossipKeys([]byte(strings.ReplaceAll(gk, ",", "\n"))); err != nil {
			return err
		}
	}
	psecret, _, err := peerSecret.Value()
	if err != nil {
		return err
	}
	proxies, err := prefixes(*trusted)
	if err != nil {
		return err
	}
	if len(key) == 0 {
		log.Info("click analytics off: no -analytics-key or -analytics-key-file")
	}
	srv, err := edge.New(edge.Config{
		Listen:               *listen,
		AdminListen:          *admin,
		DataDir:              *data,
		NATS:                 natsCfg,
		Stream:               replication.StreamConfig{Name: *stream},
		HubNATSURLs:          cli.SplitList(*hubNATS),
		OriginURL:            *origin,
		OriginKey:            okey,
		OriginCAFile:         *originCA,
		TLSCertFile:          *tlsCert,
		TLSKeyFile:           *tlsKey,
		LagThreshold:         lagThresholdConfig(*lagThreshold),
		PeerLagThreshold:     *peerLag,
		MaxStale:             *maxStale,
		MaxAge:               *maxAge,
		HotCacheEntries:      *hotCache,
		NegativeCacheEntries: *negativeCache,
		BlockCacheBytes:      *blockCache,
		WarmEntries:          *warmEntries,
		WarmTimeout:          *warmTimeout,
		WarmSaveInterval:     *warmSave,
		NodeName:             *node,
		GossipBind:           *gossipBind,
		GossipJoin:           cli.SplitList(*gossipJoin),
		GossipKeys:           gossipKeys,
		PeerSecret:           []byte(strings.TrimSpace(psecret)),
		AnalyticsKey:         []byte(key),
		TrustedProxies:       proxies,
		ClickStream:          replication.ClickStreamConfig{Name: *clickStream, SubjectPrefix: *clickSubject},
		ClickFlush:           *clickFlush,
		ClickSpillMaxBytes:   *clickSpill,
		ClickMaxEntries:      *clickEntries,
		NotFoundRate:         *nfRate,
		NotFoundBurst:        *nfBurst,
		NotFoundClients:      *nfClients,
		NoNotFoundLimit:      *noNF,
		Logger:               log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Run(ctx)
}

// warnInline logs that secret s was given on the command line.
func warnInline(log *slog.Logger, inline bool, s *cli.Secret) {
	if inline {
		log.Warn("the " + s.Name + " was given on the command line, where every local user can read it; use -" + s.Name + "-file or $" + s.Env)
	}
}

// prefixes parses comma-separated CIDRs; a bare address is one host.
func prefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range cli.SplitList(list) {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies %q: not a CIDR or address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// lagThresholdConfig maps the flag (where 0 means no lag tolerated) to
// Config.LagThreshold (where 0 means the default).
func lagThresholdConfig(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
