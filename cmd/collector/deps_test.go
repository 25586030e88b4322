package main

import (
	"testing"

	"github.com/linkpop/linkpop/internal/depstest"
)

// TestDeps: the collector binary links neither the origin, the edge
// (fasthttp, memberlist), the NATS server, the test helpers nor the
// testing package.
func TestDeps(t *testing.T) {
	depstest.Check(t, "github.com/linkpop/linkpop/collector", []string{
		"testing", "github.com/linkpop/linkpop/origin", "github.com/linkpop/linkpop/edge",
		"github.com/linkpop/linkpop/internal", "github.com/nats-io/nats-server",
		"github.com/valyala/fasthttp", "github.com/hashicorp/memberlist",
	})
}
