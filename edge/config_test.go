package edge_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/replication"
)

func TestConfigValidate(t *testing.T) {
	valid := func() edge.Config {
		return edge.Config{DataDir: "/tmp/x", NATS: replication.ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}}}
	}
	f := func(mod func(*edge.Config), wantErrs ...string) {
		t.Helper()
		c := valid()
		mod(&c)
		err := c.Validate()
		if len(wantErrs) == 0 {
			if err != nil {
				t.Errorf("unexpected error: %v", err)
			}
			return
		}
		if err == nil {
			t.Errorf("no error, want %q", wantErrs)
			return
		}
		for _, w := range wantErrs {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	}
	f(func(*edge.Config) {})
	f(func(c *edge.Config) { c.MaxAge = 24 * time.Hour; c.LagThreshold = -1; c.GossipBind = "127.0.0.1:0" })
	f(func(c *edge.Config) { c.DataDir = "" }, "DataDir")
	f(func(c *edge.Config) { c.NATS.URLs = nil }, "URL")
	f(func(c *edge.Config) { c.MaxAge = 25 * time.Hour }, "MaxAge")
	f(func(c *edge.Config) { c.MaxAge = -time.Second }, "MaxAge")
	f(func(c *edge.Config) { c.OriginURL = "ftp://x" }, "OriginURL")
	f(func(c *edge.Config) { c.OriginURL = "http://x/?a=b" }, "OriginURL")
	f(func(c *edge.Config) { c.Listen = "nocolon" }, "Listen")
	f(func(c *edge.Config) { c.GossipJoin = []string{"127.0.0.1:7946"} }, "GossipBind")
	f(func(c *edge.Config) { c.PeerSecret = []byte("short") }, "PeerSecret")
	f(func(c *edge.Config) { c.PeerSecret = []byte("0123456789abcdef") })
	f(func(c *edge.Config) {
		c.AnalyticsKey = []byte("0123456789abcdef")
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		c.ClickFlush, c.ClickSpillMaxBytes, c.ClickMaxEntries = 100*time.Millisecond, 1<<20, 1000
	})
	f(func(c *edge.Config) { c.AnalyticsKey = []byte("short") }, "AnalyticsKey")
	f(func(c *edge.Config) {
		c.AnalyticsKey = []byte("the-api-key-0123456")
		c.OriginKey = "the-api-key-0123456"
	}, "not be the API key")
	f(func(c *edge.Config) { c.TrustedProxies = []netip.Prefix{{}} }, "TrustedProxies")
	f(func(c *edge.Config) { c.ClickFlush = time.Millisecond }, "ClickFlush")
	f(func(c *edge.Config) { c.ClickFlush = 2 * time.Minute }, "ClickFlush")
	f(func(c *edge.Config) { c.ClickSpillMaxBytes = -1 }, "ClickSpillMaxBytes")
	f(func(c *edge.Config) { c.ClickMaxEntries = -1 }, "ClickMaxEntries")
	f(func(c *edge.Config) { c.ClickStream.Replicas = 7 }, "click stream")
	// Every bad field is reported at once.
	f(func(c *edge.Config) {
		c.DataDir, c.HotCacheEntries, c.FallbackBudget, c.FallbackTimeout = "", -1, -1, -time.Second
		c.Stream.Replicas = 9
	}, "DataDir", "HotCacheEntries", "FallbackBudget", "FallbackTimeout", "Replicas")
	if _, err := edge.New(edge.Config{}); err == nil {
		t.Error("New accepted an empty Config")
	}
}
