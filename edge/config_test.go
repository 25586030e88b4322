package edge_test

import (
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
	// Every bad field is reported at once.
	f(func(c *edge.Config) {
		c.DataDir, c.HotCacheEntries, c.FallbackBudget, c.FallbackTimeout = "", -1, -1, -time.Second
		c.Stream.Replicas = 9
	}, "DataDir", "HotCacheEntries", "FallbackBudget", "FallbackTimeout", "Replicas")
	if _, err := edge.New(edge.Config{}); err == nil {
		t.Error("New accepted an empty Config")
	}
}
