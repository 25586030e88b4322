package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/edge/clicks"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/tlsconf"
)

// Defaults for the zero values of Config.
const (
	DefaultListen               = "127.0.0.1:8080"
	DefaultAdminListen          = "127.0.0.1:9080"
	DefaultLagThreshold         = 1000
	DefaultMaxStale             = 30 * time.Second
	DefaultMaxAge               = time.Hour
	MaxMaxAge                   = 24 * time.Hour
	DefaultHotCacheEntries      = 1_000_000
	DefaultNegativeCacheEntries = 100_000
	DefaultBlockCacheBytes      = 64 << 20
	DefaultWarmEntries          = 200_000
	DefaultWarmTimeout          = 5 * time.Second
	DefaultWarmSaveInterval     = time.Minute
	DefaultFallbackBudget       = 50
	DefaultFallbackBurst        = 100
	DefaultFallbackTimeout      = 500 * time.Millisecond
	DefaultClickFlush           = clicks.DefaultFlush
	DefaultClickSpillMaxBytes   = clicks.DefaultSpillMaxBytes
	DefaultClickMaxEntries      = 1 << 20
)

// The enumeration limiter's defaults are in notfound.go
// (DefaultNotFoundRate, DefaultNotFoundBurst, DefaultNotFoundClients).

// Config configures an edge Server. The zero value of every field but
// DataDir and NATS.URLs is usable; see each field for its default.
type Config struct {
	// Listen is the address of the redirect listener (fasthttp). Port 0
	// picks a free port; Server.Addr reports it. The default is
	// "127.0.0.1:8080".
	Listen string
	// TLSCertFile and TLSKeyFile, a PEM certificate (chain first) and its
	// key, make the redirect listener speak TLS only (tlsconf.Server).
	// The default (empty) is plain HTTP, for an edge behind a TLS
	// terminating load balancer.
	TLSCertFile, TLSKeyFile string
	// AdminListen is the address of the admin listener serving /metrics,
	// /healthz, /readyz, /status, /hotset and /digest, and POST /resync and
	// /repair. It has no authentication and changes the replica: bind it
	// to loopback or a management network, never a public one. Port 0
	// picks a free port; Server.AdminAddr reports it. The default is
	// "127.0.0.1:9080".
	AdminListen string
	// DataDir holds the replica (a Pebble store in DataDir/replica) and,
	// with analytics on, the click journal (DataDir/clicks). Both survive
	// restarts: the edge serves from the replica at once, before it has
	// contacted the stream, and ships the journal's batches. Required.
	DataDir string

	// NATS says how to reach the change stream. URLs is required.
	NATS replication.ConnConfig
	// Stream names the change stream. The default is
	// replication.StreamConfig's.
	Stream replication.StreamConfig
	// HubNATSURLs are the origin region's NATS servers, for an edge in a
	// region whose NATS (a leaf node with its own JetStream domain) holds
	// a mirror of the change stream: while the region's servers cannot
	// be read (their connection is down for a poll, or a session there
	// failed), the edge reads the change stream itself on the hub, from
	// its position on (a mirror keeps the stream's sequences), and
	// returns to the region's mirror once that holds what the edge has
	// applied and heard from the hub within the last 3 s. The connection
	// has NATS's credentials and TLS settings. Clicks keep going to the
	// region's click stream (spilled to disk while it is unreachable).
	// The default (none) reads only NATS.
	HubNATSURLs []string

	// OriginURL is the origin API base (for example
	// "http://127.0.0.1:8081"), or several, comma-separated: an origin
	// with HA and its standbys. While the replica lags, a miss asks the
	// origin for GET /v1/links/{code}, bounded by FallbackBudget; with
	// several, the one that last answered as the leader first, then the
	// others (a standby answers reads too). The default ("") disables the
	// fallback: a miss is always a 404.
	OriginURL string
	// OriginKey is the API key (scope links:read) sent as a Bearer token
	// to the origin. The default is none.
	OriginKey string
	// OriginCAFile is a PEM file of the CAs an https OriginURL's
	// certificate is verified against. The default ("") is the system's
	// roots; verification is never off.
	OriginCAFile string

	// LagThreshold is the number of stream messages the replica may be
	// behind while a miss still counts as authoritative and /readyz says
	// ready. The default (0) is 1000; a negative value tolerates no lag.
	LagThreshold int64
	// PeerLagThreshold is how many stream messages the replica may be
	// behind the most advanced ready peer of its PoP (as gossiped) while
	// /readyz says ready: past it /readyz answers 503 "behind_peers", so
	// the load balancer sends visitors to that peer. It catches an edge
	// cut off from the stream while its peers are not. The default (0) is
	// LagThreshold's value; a negative value turns the check off.
	PeerLagThreshold int64
	// MaxStale is how long the edge may go without contact with the
	// stream before its lag is considered unknown: it then serves its
	// last state as stale. The default is 30s.
	MaxStale time.Duration
	// MaxAge is the Cache-Control max-age sent with 301 and 308 redirects,
	// bounded so a changed permanent link heals in browsers. At most 24h.
	// The default is 1h. 302 and 307 carry "private, max-age=0" so shared
	// caches never hide clicks.
	MaxAge time.Duration

	// HotCacheEntries bounds the in-memory cache of resolved links. The
	// default is 1,000,000.
	HotCacheEntries int
	// NegativeCacheEntries bounds the cache of codes known to be absent.
	// The default is 100,000.
	NegativeCacheEntries int
	// WarmEntries is how many codes of the hot cache the hot set keeps
	// (recently requested first): saved in DataDir/hotset every
	// WarmSaveInterval and on stop, and loaded into the hot cache at
	// start, before /readyz says ready; a fresh edge takes a ready
	// peer's. The default is 200,000; negative turns warming off.
	WarmEntries int
	// WarmTimeout bounds the loading of the hot set at start. The
	// default is 5s.
	WarmTimeout time.Duration
	// WarmSaveInterval is how often the hot set is saved. The default
	// is 1m.
	WarmSaveInterval time.Duration
	// BlockCacheBytes is the size of the replica's Pebble block cache:
	// bytes for blocks, the memtables are not charged to it (see
	// pebbledb.Shared). The default is 64 MiB.
	BlockCacheBytes int64

	// FallbackBudget is how many origin requests per second the edge may
	// make across all codes; misses over budget are answered 404 without
	// asking. The default is 50.
	FallbackBudget float64
	// FallbackBurst is the number of origin requests the budget allows at
	// once. The default is 100.
	FallbackBurst int
	// FallbackTimeout bounds one origin request; a timeout answers 404.
	// The default is 500ms.
	FallbackTimeout time.Duration

	// NodeName names this edge in gossip and /status. It must be unique
	// within a PoP. The default is the host name and the redirect port.
	NodeName string
	// GossipBind is the host:port memberlist binds (UDP and TCP) to
	// exchange replication positions with the other edges of its PoP.
	// Port 0 picks a free port; Server.GossipAddr reports it. The default
	// ("") disables gossip.
	GossipBind string
	// GossipJoin are host:port addresses of other edges' gossip
	// listeners. Joining is retried in the background while no peer
	// answers. The default is none.
	GossipJoin []string
	// GossipKeys encrypt and authenticate gossip (memberlist's AES-GCM,
	// keys of 16, 24 or 32 bytes, the same on every edge of the fleet).
	// The first key encrypts; every key is accepted when decrypting, so a
	// key can be rotated without a partition (README, "Gossip
	// encryption"). With keys set, plaintext gossip is refused in both
	// directions and a peer without a key cannot join. ParseGossipKeys
	// reads -gossip-key-file. The default (none) gossips in plaintext.
	GossipKeys [][]byte
	// PeerSecret is the fleet secret of peer bootstrap (bootstrap.go): an
	// edge with it serves GET /checkpoint on its admin listener to a peer
	// presenting it, and a fresh edge with it and GossipJoin asks the most
	// caught-up ready peer for its replica instead of replaying the
	// stream. At least 16 bytes, the same on every edge of the PoP. The
	// default (none) serves no checkpoint and always replays.
	PeerSecret []byte

	// AnalyticsKey turns click analytics on: every GET answered with a
	// redirect is recorded and shipped to the click stream. It keys the
	// visitor hash (of client address and User-Agent), so it must be the
	// same on every edge of the fleet and must never be the API key; at
	// least 16 bytes. The default (empty) records nothing.
	AnalyticsKey []byte
	// TrustedProxies are the networks of proxies in front of the edge:
	// only from a socket peer in one of them are X-Forwarded-For and
	// Forwarded believed (the client is the right-most address of the
	// chain that is not a trusted proxy). The default is none: the client
	// is the socket peer.
	TrustedProxies []netip.Prefix

	// NotFoundRate and NotFoundBurst are the enumeration limiter's token
	// bucket per client address (TrustedProxies decides the address; an
	// IPv6 client is its /64): each answer that would be 404 for a
	// well-formed code spends a token, and with none left the answer is
	// 429 with Retry-After. Redirects and 410s never spend one. The
	// defaults are 2 per second and 100: a person mistyping or a page of
	// dead links stays far below, a scan of the code space is held to 2
	// guesses a second per address.
	NotFoundRate  float64
	NotFoundBurst int
	// NotFoundClients is how many client buckets the limiter keeps, in
	// fixed memory (about 24 bytes each); beyond it the fullest bucket of
	// a set is reused. The default is 65,536.
	NotFoundClients int
	// NoNotFoundLimit turns the enumeration limiter off. The default
	// (false) has it on.
	NoNotFoundLimit bool

	// ClickStream names the click stream. The default is
	// replication.ClickStreamConfig's (LINKPOP_CLICKS).
	ClickStream replication.ClickStreamConfig
	// ClickFlush is how often recorded clicks are sealed into a batch,
	// journaled in DataDir/clicks and published: the usual delay before a
	// click ships. Clicks not sealed yet are in DataDir/clicks/log, which
	// a SIGKILL does not lose. The default is 1s.
	ClickFlush time.Duration
	// ClickSpillMaxBytes bounds the click journal, where batches wait
	// while the stream is unreachable. At the bound a batch keeps only its
	// counts (no uniques, no breakdowns); when even that does not fit its
	// clicks are dropped and counted (metrics and the next batch's
	// dropped). The default is 256 MiB.
	ClickSpillMaxBytes int64
	// ClickMaxEntries bounds the click aggregates held in memory per flush
	// interval (distinct code-minutes, dimension combinations and
	// visitors); past it clicks still count where their code is held,
	// without detail, and are dropped and counted otherwise. The default
	// is 1,048,576.
	ClickMaxEntries int

	// Logger receives operational logs. The default (nil) discards them.
	Logger *slog.Logger
	// Metrics is the set the server, its replica and its consumer
	// register their metrics in; /metrics writes it. Use one set per
	// Server. The default (nil) is a new set.
	Metrics *metrics.Set
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.LagThreshold == 0 {
		c.LagThreshold = DefaultLagThreshold
	}
	if c.LagThreshold < 0 {
		c.LagThreshold = 0
	}
	if c.PeerLagThreshold == 0 {
		c.PeerLagThreshold = c.LagThreshold
	}
	if c.MaxStale == 0 {
		c.MaxStale = DefaultMaxStale
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.HotCacheEntries == 0 {
		c.HotCacheEntries = DefaultHotCacheEntries
	}
	if c.NegativeCacheEntries == 0 {
		c.NegativeCacheEntries = DefaultNegativeCacheEntries
	}
	if c.WarmEntries == 0 {
		c.WarmEntries = DefaultWarmEntries
	}
	if c.WarmTimeout == 0 {
		c.WarmTimeout = DefaultWarmTimeout
	}
	if c.WarmSaveInterval == 0 {
		c.WarmSaveInterval = DefaultWarmSaveInterval
	}
	if c.BlockCacheBytes == 0 {
		c.BlockCacheBytes = DefaultBlockCacheBytes
	}
	if c.FallbackBudget == 0 {
		c.FallbackBudget = DefaultFallbackBudget
	}
	if c.FallbackBurst == 0 {
		c.FallbackBurst = DefaultFallbackBurst
	}
	if c.FallbackTimeout == 0 {
		c.FallbackTimeout = DefaultFallbackTimeout
	}
	if c.ClickFlush == 0 {
		c.ClickFlush = DefaultClickFlush
	}
	if c.ClickSpillMaxBytes == 0 {
		c.ClickSpillMaxBytes = DefaultClickSpillMaxBytes
	}
	if c.ClickMaxEntries == 0 {
		c.ClickMaxEntries = DefaultClickMaxEntries
	}
	if c.NotFoundRate == 0 {
		c.NotFoundRate = DefaultNotFoundRate
	}
	if c.NotFoundBurst == 0 {
		c.NotFoundBurst = DefaultNotFoundBurst
	}
	if c.NotFoundClients == 0 {
		c.NotFoundClients = DefaultNotFoundClients
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return c
}

// Validate reports every bad field at once. Zero fields take their
// defaults and are valid.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := tlsconf.PairError("TLSCertFile/TLSKeyFile", c.TLSCertFile, c.TLSKeyFile); err != nil {
		errs = append(errs, err)
	}
	addr := func(field, v string) {
		if v == "" {
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad("%s %q: %v", field, v, err)
		}
	}
	addr("Listen", c.Listen)
	addr("AdminListen", c.AdminListen)
	addr("GossipBind", c.GossipBind)
	for _, j := range c.GossipJoin {
		addr("GossipJoin", j)
	}
	if c.DataDir == "" {
		bad("DataDir is required")
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, ou := range originURLs(c.OriginURL) {
		u, err := url.Parse(ou)
		switch {
		case err != nil:
			bad("OriginURL %q: %v", ou, err)
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			bad("OriginURL %q: want an absolute http or https URL", ou)
		case u.RawQuery != "" || u.Fragment != "":
			bad("OriginURL %q: must not carry a query or fragment", ou)
		}
	}
	if c.MaxStale < 0 {
		bad("MaxStale %v must not be negative", c.MaxStale)
	}
	if c.MaxAge < 0 || c.MaxAge > MaxMaxAge {
		bad("MaxAge %v outside (0, %v]", c.MaxAge, MaxMaxAge)
	}
	if c.MaxAge > 0 && c.MaxAge < time.Second {
		bad("MaxAge %v is below one second", c.MaxAge)
	}
	if c.HotCacheEntries < 0 {
		bad("HotCacheEntries %d must not be negative", c.HotCacheEntries)
	}
	if c.NegativeCacheEntries < 0 {
		bad("NegativeCacheEntries %d must not be negative", c.NegativeCacheEntries)
	}
	if c.WarmTimeout < 0 {
		bad("WarmTimeout %v must not be negative", c.WarmTimeout)
	}
	if c.WarmSaveInterval < 0 {
		bad("WarmSaveInterval %v must not be negative", c.WarmSaveInterval)
	}
	if c.BlockCacheBytes < 0 {
		bad("BlockCacheBytes %d must not be negative", c.BlockCacheBytes)
	}
	if c.FallbackBudget < 0 {
		bad("FallbackBudget %v must not be negative", c.FallbackBudget)
	}
	if c.FallbackBurst < 0 {
		bad("FallbackBurst %d must not be negative", c.FallbackBurst)
	}
	if c.FallbackTimeout < 0 {
		bad("FallbackTimeout %v must not be negative", c.FallbackTimeout)
	}
	if len(c.AnalyticsKey) > 0 && len(c.AnalyticsKey) < clicks.MinKeyLen {
		bad("AnalyticsKey is %d bytes, want at least %d", len(c.AnalyticsKey), clicks.MinKeyLen)
	}
	if len(c.AnalyticsKey) > 0 && c.OriginKey != "" && string(c.AnalyticsKey) == c.OriginKey {
		bad("AnalyticsKey must not be the API key")
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			bad("TrustedProxies: invalid prefix %v", p)
		}
	}
	if err := c.ClickStream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ClickFlush < 0 || c.ClickFlush > time.Minute {
		bad("ClickFlush %v outside (0, 1m]", c.ClickFlush)
	}
	if c.ClickFlush > 0 && c.ClickFlush < 10*time.Millisecond {
		bad("ClickFlush %v is below 10ms", c.ClickFlush)
	}
	if c.ClickSpillMaxBytes < 0 {
		bad("ClickSpillMaxBytes %d must not be negative", c.ClickSpillMaxBytes)
	}
	if c.ClickMaxEntries < 0 {
		bad("ClickMaxEntries %d must not be negative", c.ClickMaxEntries)
	}
	for i, k := range c.GossipKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			bad("GossipKeys[%d] is %d bytes; want 16, 24 or 32", i, n)
		}
	}
	if c.NotFoundRate < 0 || c.NotFoundRate > 0 && c.NotFoundRate < 0.001 {
		bad("NotFoundRate %v must be at least 0.001 per second", c.NotFoundRate)
	}
	if c.NotFoundBurst < 0 {
		bad("NotFoundBurst %d must not be negative", c.NotFoundBurst)
	}
	if c.NotFoundClients < 0 || c.NotFoundClients > 1<<26 {
		bad("NotFoundClients %d outside [0, %d]", c.NotFoundClients, 1<<26)
	}
	if n := len(c.PeerSecret); n > 0 && n < minPeerSecret {
		bad("PeerSecret is %d bytes; want at least %d", n, minPeerSecret)
	}
	if len(c.GossipJoin) > 0 && c.GossipBind == "" {
		bad("GossipJoin needs GossipBind")
	}
	return errors.Join(errs...)
}
