// Command edge serves linkpop redirects from a local replica of the link
// table, kept current from the NATS JetStream change stream.
//
//	edge -data DIR [-listen 127.0.0.1:8080] [-admin 127.0.0.1:9080] [-nats nats://127.0.0.1:4222]
//	     [-origin URL -origin-key KEY] [-gossip-bind HOST:PORT -gossip-join HOST:PORT,...]
//	     [-analytics-key-file FILE [-trusted-proxies CIDR,...] [-click-flush 1s]]
//
// Run "edge -h" for every flag.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/linkpop/linkpop/cmd/internal/cli"
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
		admin         = fs.String("admin", edge.DefaultAdminListen, "admin listener `address` (/metrics /healthz /readyz /status /digest, POST /resync /repair; operator-only, never public)")
		data          = fs.String("data", "", "data `dir` holding the replica (required)")
		natsURLs      = fs.String("nats", "nats://127.0.0.1:4222", "NATS `URLs`, comma separated")
		natsCreds     = fs.String("nats-creds", "", "NATS credentials `file`")
		natsToken     = fs.String("nats-token", "", "NATS `token`")
		stream        = fs.String("stream", "LINKPOP_LINKS", "change stream `name`")
		origin        = fs.String("origin", "", "origin API base `URL` asked about misses while the replica lags (empty disables)")
		originKey     = fs.String("origin-key", "", "origin API `key` with links:read, for the fallback")
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
		analyticsKey  = fs.String("analytics-key", "", "click analytics `key` (at least 16 bytes, the same on every edge, never the API key); with it every GET redirect is recorded and shipped to the click stream")
		analyticsFile = fs.String("analytics-key-file", "", "`file` holding the click analytics key (surrounding white space ignored)")
		trusted       = fs.String("trusted-proxies", "", "`CIDRs` of proxies whose X-Forwarded-For / Forwarded name the client, comma separated")
		clickStream   = fs.String("click-stream", "LINKPOP_CLICKS", "click stream `name`")
		clickFlush    = fs.Duration("click-flush", edge.DefaultClickFlush, "`interval` between two click batches (the most a SIGKILL can lose)")
		clickSpill    = fs.Int64("click-spill-max-bytes", edge.DefaultClickSpillMaxBytes, "`bytes` of click batches kept on disk while the stream is unreachable")
		clickEntries  = fs.Int("click-max-entries", edge.DefaultClickMaxEntries, "click aggregate `entries` held in memory per flush interval")
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
	key, err := analyticsKeyConfig(*analyticsKey, *analyticsFile)
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
		Listen:      *listen,
		AdminListen: *admin,
		DataDir:     *data,
		NATS: replication.ConnConfig{
			URLs:      cli.SplitList(*natsURLs),
			CredsFile: *natsCreds,
			Token:     *natsToken,
			Logger:    log.With("component", "nats"),
		},
		Stream:               replication.StreamConfig{Name: *stream},
		OriginURL:            *origin,
		OriginKey:            *originKey,
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
		AnalyticsKey:         key,
		TrustedProxies:       proxies,
		ClickStream:          replication.ClickStreamConfig{Name: *clickStream},
		ClickFlush:           *clickFlush,
		ClickSpillMaxBytes:   *clickSpill,
		ClickMaxEntries:      *clickEntries,
		Logger:               log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Run(ctx)
}

// analyticsKeyConfig returns the analytics key from the flag or the file
// (not both).
func analyticsKeyConfig(key, file string) ([]byte, error) {
	switch {
	case key != "" && file != "":
		return nil, errors.New("give -analytics-key or -analytics-key-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("analytics key: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("analytics key file %s is empty", file)
		}
		return b, nil
	}
	return []byte(key), nil
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
