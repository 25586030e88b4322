package main

import (
	"testing"

	"github.com/linkpop/linkpop/internal/depstest"
)

// TestDeps keeps the CLI a pure API client: it links neither the servers
// (origin, edge, collector, the NATS client and server, Pebble), nor the
// edge's fasthttp and memberlist, nor the testing package.
func TestDeps(t *testing.T) {
	depstest.Check(t, "github.com/linkpop/linkpop/client/cli", []string{
		"github.com/linkpop/linkpop/origin", "github.com/linkpop/linkpop/edge", "github.com/linkpop/linkpop/collector",
		"github.com/linkpop/linkpop/replication", "github.com/linkpop/linkpop/internal",
		"github.com/valyala/fasthttp", "github.com/hashicorp/memberlist",
		"github.com/nats-io/nats.go", "github.com/nats-io/nats-server", "github.com/cockroachdb/pebble", "testing",
	})
}
