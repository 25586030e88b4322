package main

import (
	"testing"

	"github.com/linkpop/linkpop/internal/depstest"
)

// TestDeps keeps the origin binary to its role: it links neither the
// edge (nor its fasthttp and memberlist), nor the CLI, nor the test-only
// OpenAPI validator and QR decoder, nor the testing package. (It does
// link the NATS server: origin -dev embeds one.)
func TestDeps(t *testing.T) {
	depstest.Check(t, "github.com/linkpop/linkpop/origin", []string{
		"github.com/linkpop/linkpop/edge", "github.com/linkpop/linkpop/client/cli", "github.com/linkpop/linkpop/internal",
		"github.com/valyala/fasthttp", "github.com/hashicorp/memberlist", "github.com/spf13/cobra",
		"github.com/pb33f", "github.com/makiuchi-d/gozxing", "testing",
	})
}
