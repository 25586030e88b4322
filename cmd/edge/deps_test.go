package main

import (
	"testing"

	"github.com/linkpop/linkpop/internal/depstest"
)

// TestDeps keeps the edge binary small and free of what it must never
// carry: the origin and the collector with its store (other roles), the
// NATS server (the edge is only a client), the test helpers and the
// testing package.
func TestDeps(t *testing.T) {
	depstest.Check(t, "github.com/linkpop/linkpop/edge", []string{
		"testing", "github.com/linkpop/linkpop/origin", "github.com/linkpop/linkpop/collector",
		"github.com/nats-io/nats-server", "github.com/linkpop/linkpop/internal",
		"github.com/linkpop/linkpop/replication/devserver",
	})
}
