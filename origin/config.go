package origin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/tlsconf"
)

// Defaults for the zero values of Config.
const (
	DefaultListen          = "127.0.0.1:8081"
	DefaultAdminListen     = "127.0.0.1:9081"
	DefaultBaseURL         = "http://127.0.0.1:8080/"
	DefaultMaxBodyBytes    = 64 << 10
	DefaultMaxBatchBytes   = 16 << 20
	DefaultRateLimit       = 100
	DefaultBurst           = 200
	DefaultShutdownTimeout = 10 * time.Second
	DefaultDevNATSAddr     = "127.0.0.1:4222"
	DefaultIdempotencyTTL  = 24 * time.Hour
	DefaultStatsHeartbeat  = 15 * time.Second
	MinAdminKeyLen         = 16
	MaxAdminKeyLen         = 256
	adminKeyFile           = "admin.key"
	storeSubdir            = "origin"
	collectorSubdir        = "collector"
	devNATSSubdir          = "nats"
)

// Config configures an origin Server. Only DataDir (and NATS.URLs unless
// Dev is set) is required; every other zero field takes the default its
// comment states.
type Config struct {
	// Listen is the address of the API listener (JSON under /v1). Port 0
	// picks a free port; Server.Addr reports it. The default is
	// "127.0.0.1:8081".
	Listen string
	// TLSCertFile and TLSKeyFile, a PEM certificate (chain first) and its
	// key, make the API listener speak TLS only (tlsconf.Server). The
	// admin listener stays plain: bind it to loopback or a management
	// network. The default (empty) is plain HTTP.
	TLSCertFile, TLSKeyFile string
	// AdminListen is the address of the admin listener serving /metrics,
	// /healthz and /readyz. Port 0 picks a free port; Server.AdminAddr
	// reports it. The default is "127.0.0.1:9081".
	AdminListen string
	// DataDir holds the Pebble store (DataDir/origin), the generated
	// admin key (DataDir/admin.key) and, with Dev, the embedded JetStream
	// store (DataDir/nats). Required.
	DataDir string

	// NATS says how to reach the cluster holding the change stream. URLs
	// is required unless Dev is set, in which case it defaults to the
	// embedded server.
	NATS replication.ConnConfig
	// Stream describes the change stream. The default is
	// replication.StreamConfig's.
	Stream replication.StreamConfig

	// BaseURL is the public base of short links: a link's short_url is
	// BaseURL followed by its code. A missing trailing slash is added. Its
	// host is always refused as a target. The default is
	// "http://127.0.0.1:8080/".
	BaseURL string
	// CodeLength is the length of random codes. The default is 7
	// (link.DefaultCodeLen); it must lie in [link.MinCodeLen,
	// link.MaxCodeLen].
	CodeLength int
	// AdminKey is the bootstrap admin API key: it has every scope and is
	// never stored, only compared against in memory. The default ("")
	// reads DataDir/admin.key, or, on the first start, generates a key
	// from crypto/rand and writes it there with mode 0600;
	// Server.AdminKey returns it so main can print it. A given key must
	// be 16-256 printable ASCII characters.
	AdminKey string
	// BlockedDomains are refused as link targets, with all their
	// subdomains, in addition to BaseURL's host. Entries are domain names
	// in any spelling (Unicode or punycode, any case, a trailing dot) or
	// IP addresses; each is canonicalised like a target host
	// (link.CanonicalHost), and one that cannot be is a Validate error
	// naming it. The default is none.
	BlockedDomains []string
	// BlocklistFiles are files of hosts refused as targets like
	// BlockedDomains, in any of the formats link.ParseBlocklist reads (a
	// domain list, a hosts file, a URLhaus-style CSV). They are read at
	// New (an unreadable file stops the start), again on
	// Server.ReloadBlocklists (SIGHUP in cmd/origin) and every
	// BlocklistRefresh; a host a reload newly lists has its active links
	// disabled. The default is none.
	BlocklistFiles []string
	// BlocklistRefresh is how often BlocklistFiles are read again; a
	// negative value reads them only on ReloadBlocklists. The default is
	// 15 minutes (URLhaus publishes every 5).
	BlocklistRefresh time.Duration
	// AllowPrivateTargets accepts targets whose host is an internal
	// address (link.PrivateHost: loopback, RFC 1918, link-local, cloud
	// metadata, localhost names ...), for a deployment that shortens
	// intranet links. The default (false) refuses them as url_blocked.
	AllowPrivateTargets bool
	// Reserved are codes custom links may not take (case-insensitively).
	// The default (nil) is link.DefaultReserved; an empty non-nil slice
	// reserves nothing.
	Reserved []string

	// MaxBodyBytes bounds request bodies; larger ones are answered 413
	// payload_too_large. The default is 64 KiB.
	MaxBodyBytes int64
	// MaxBatchBytes bounds the body of POST /v1/links/batch (up to 1,000
	// creates). The default is 16 MiB.
	MaxBatchBytes int64
	// DefaultRateLimit is the request rate, per second, allowed to an API
	// key minted without its own rate_limit. A negative value means
	// unlimited. The default is 100.
	DefaultRateLimit float64
	// DefaultBurst is the token bucket size that goes with
	// DefaultRateLimit. The default is 200.
	DefaultBurst int
	// AdminRateLimit is the request rate, per second, allowed to the
	// bootstrap admin key. The default (0) is unlimited.
	AdminRateLimit float64
	// AdminBurst is the bucket size that goes with a positive
	// AdminRateLimit. The default is twice AdminRateLimit, at least 1.
	AdminBurst int
	// IdempotencyTTL is how long an Idempotency-Key is remembered; at
	// least 24h. The default is the store's, 48h.
	IdempotencyTTL time.Duration
	// ShutdownTimeout bounds the graceful shutdown of each listener when
	// Run's context ends; requests still running after it are cut off.
	// The default is 10s.
	ShutdownTimeout time.Duration

	// Dev embeds a JetStream server (replication/devserver) listening on
	// DevNATSAddr with its store in DataDir/nats, for `origin -dev` and
	// `make run`. Production points NATS at a real cluster. The default
	// is false.
	Dev bool
	// DevNATSAddr is the client address of the embedded server. Port 0
	// picks a free port. The default is "127.0.0.1:4222".
	DevNATSAddr string

	// NoCollector turns off the click collector that otherwise runs
	// inside the origin (consuming the click stream into DataDir/collector
	// and answering the stats API). Turn it off when a separate collector
	// runs (cmd/collector); the stats API then answers 503. The default
	// (false) runs it.
	NoCollector bool
	// Collectors, if set, are the partition API URLs of the separate
	// collectors (cmd/collector -stats-listen) that hold the click
	// rollups, in partition order: URL i is partition i of
	// len(Collectors). The stats API asks them (a link's stats from the
	// partition that holds its code, the top links from all, merged),
	// max_visits follows each partition's click feed, and the in-process
	// collector does not run. An https URL is verified against
	// CollectorCAFile. The default (none) is the in-process collector.
	Collectors []string
	// CollectorToken is the bearer token of the collectors' partition
	// API. Required with Collectors.
	CollectorToken string
	// CollectorCAFile is a PEM file of the CAs the https Collectors'
	// certificates are verified against (collector.Config's
	// StatsTLSCertFile). The default is the system's roots.
	CollectorCAFile string
	// Collector configures the in-process collector. Dir and NATS are
	// set by the origin (DataDir/collector, the origin's NATS settings);
	// every other field is collector.Config's, with its defaults.
	Collector collector.Config
	// Ack is when a mutation is answered: AckLocal ("local", once it is
	// durable on this machine) or AckReplicated ("replicated", once the
	// stream has acknowledged its events). The default is "local".
	Ack string
	// AckTimeout bounds the wait of a replicated ack; past it the answer
	// is 503 (the change is committed and will still be published). The
	// default is 10s.
	AckTimeout time.Duration
	// HA runs this origin with standbys under a leader lease. The default
	// is off.
	HA HAConfig
	// StatsHeartbeat is the interval of the comment heartbeat on the live
	// stats stream (GET /v1/links/{code}/stats/live). The default is 15s.
	StatsHeartbeat time.Duration

	// Logger receives operational logs: one line per request at debug,
	// errors at error. The default (nil) discards them.
	Logger *slog.Logger
	// Metrics is the set the server, its store and its relay register
	// their metrics in; the admin /metrics writes it. Use one set per
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
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	if !strings.HasSuffix(c.BaseURL, "/") {
		c.BaseURL += "/"
	}
	if c.CodeLength == 0 {
		c.CodeLength = link.DefaultCodeLen
	}
	if c.Reserved == nil {
		c.Reserved = link.DefaultReserved
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.DefaultRateLimit == 0 {
		c.DefaultRateLimit = DefaultRateLimit
	}
	if c.DefaultBurst == 0 {
		c.DefaultBurst = DefaultBurst
	}
	if c.AdminRateLimit > 0 && c.AdminBurst == 0 {
		c.AdminBurst = max(1, int(2*c.AdminRateLimit))
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.DevNATSAddr == "" {
		c.DevNATSAddr = DefaultDevNATSAddr
	}
	if c.BlocklistRefresh == 0 {
		c.BlocklistRefresh = DefaultBlocklistRefresh
	}
	if c.StatsHeartbeat == 0 {
		c.StatsHeartbeat = DefaultStatsHeartbeat
	}
	if c.Ack == "" {
		c.Ack = AckLocal
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	c.HA = c.HA.withDefaults(&c)
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
	if c.Dev {
		addr("DevNATSAddr", c.DevNATSAddr)
	}
	if c.DataDir == "" {
		bad("DataDir is required")
	}
	if !c.Dev || len(c.NATS.URLs) > 0 {
		if err := c.NATS.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.BaseURL != "" {
		if _, err := baseHost(c.BaseURL); err != nil {
			bad("BaseURL %q: %v", c.BaseURL, err)
		}
	}
	if c.CodeLength != 0 && (c.CodeLength < link.MinCodeLen || c.CodeLength > link.MaxCodeLen) {
		bad("CodeLength %d outside [%d, %d]", c.CodeLength, link.MinCodeLen, link.MaxCodeLen)
	}
	if c.AdminKey != "" {
		if err := validAdminKey(c.AdminKey); err != nil {
			bad("AdminKey: %v", err)
		}
	}
	for _, d := range c.BlockedDomains {
		// Entries are compared in canonical form (IDNA ASCII, lower
		// case, no trailing dot, IPv4 in dotted decimal); one without
		// such a form would silently block nothing.
		if strings.ContainsAny(d, "/@") {
			bad("BlockedDomains: %q is not a domain name or IP address", d)
		} else if _, err := link.CanonicalHost(d); err != nil {
			bad("BlockedDomains: %q is not a domain name or IP address", d)
		}
	}
	for _, f := range c.BlocklistFiles {
		if f == "" {
			bad("BlocklistFiles: empty file name")
		}
	}
	if c.BlocklistRefresh > 0 && c.BlocklistRefresh < time.Second {
		bad("BlocklistRefresh %v is below 1s", c.BlocklistRefresh)
	}
	if c.MaxBodyBytes < 0 {
		bad("MaxBodyBytes %d must not be negative", c.MaxBodyBytes)
	}
	if c.MaxBatchBytes < 0 {
		bad("MaxBatchBytes %d must not be negative", c.MaxBatchBytes)
	}
	if c.DefaultBurst < 0 {
		bad("DefaultBurst %d must not be negative", c.DefaultBurst)
	}
	if c.AdminRateLimit < 0 {
		bad("AdminRateLimit %v must not be negative (0 is unlimited)", c.AdminRateLimit)
	}
	if c.AdminBurst < 0 {
		bad("AdminBurst %d must not be negative", c.AdminBurst)
	}
	if c.IdempotencyTTL != 0 && c.IdempotencyTTL < store.MinIdempotencyTTL {
		bad("IdempotencyTTL %v is below %v", c.IdempotencyTTL, store.MinIdempotencyTTL)
	}
	if c.ShutdownTimeout < 0 {
		bad("ShutdownTimeout %v must not be negative", c.ShutdownTimeout)
	}
	if c.StatsHeartbeat < 0 {
		bad("StatsHeartbeat %v must not be negative", c.StatsHeartbeat)
	}
	if c.Ack != "" && c.Ack != AckLocal && c.Ack != AckReplicated {
		bad("Ack %q: want %q or %q", c.Ack, AckLocal, AckReplicated)
	}
	if c.AckTimeout < 0 {
		bad("AckTimeout %v must not be negative", c.AckTimeout)
	}
	if c.HA.Enabled {
		if err := c.HA.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.inProcessCollector() {
		cc := c.collectorConfig(replication.ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}})
		if err := cc.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range c.Collectors {
		rc := c.remoteConfig(i)
		if err := rc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("Collectors[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// inProcessCollector reports whether the collector runs in the origin.
func (c *Config) inProcessCollector() bool { return !c.NoCollector && len(c.Collectors) == 0 }

// remoteConfig is the client configuration of partition i of Collectors.
func (c *Config) remoteConfig(i int) collector.RemoteConfig {
	return collector.RemoteConfig{URL: c.Collectors[i], Token: c.CollectorToken, CAFile: c.CollectorCAFile, Partition: i, Partitions: len(c.Collectors)}
}

// collectorConfig is the in-process collector's configuration over the
// origin's NATS settings.
func (c *Config) collectorConfig(nats replication.ConnConfig) collector.Config {
	cc := c.Collector
	cc.Dir = filepath.Join(c.DataDir, collectorSubdir)
	cc.FS = nil
	cc.NATS = nats
	cc.NATS.Name = "linkpop-origin-collector"
	return cc
}

// baseHost returns the host of an absolute http(s) base URL, checked to
// have a canonical form (link.CanonicalHost), which is what the policy
// compares targets with: "Bücher.example." and "xn--bcher-kva.example" are
// one host.
func baseHost(base string) (string, error) {
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return "", err
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return "", errors.New("want an absolute http or https URL")
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "", errors.New("must not carry userinfo, a query or a fragment")
	}
	if _, err := link.CanonicalHost(u.Hostname()); err != nil {
		return "", fmt.Errorf("host %q has no canonical form", u.Hostname())
	}
	return u.Hostname(), nil
}

// validAdminKey checks a configured bootstrap key: long enough not to be
// guessed, and printable so it survives a header.
func validAdminKey(k string) error {
	if len(k) < MinAdminKeyLen || len(k) > MaxAdminKeyLen {
		return fmt.Errorf("length %d outside [%d, %d]", len(k), MinAdminKeyLen, MaxAdminKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f {
			return errors.New("must be printable ASCII without spaces")
		}
	}
	return nil
}
