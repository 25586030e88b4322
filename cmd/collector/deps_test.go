package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDeps: the collector binary links neither the origin, the edge
// (fasthttp, memberlist), the NATS server nor the testing package.
func TestDeps(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	seen := false
	for _, pkg := range deps {
		if pkg == "github.com/linkpop/linkpop/collector" {
			seen = true
		}
		if pkg == "testing" || strings.HasPrefix(pkg, "testing/") ||
			pkg == "github.com/linkpop/linkpop/origin" || strings.HasPrefix(pkg, "github.com/linkpop/linkpop/origin/") ||
			pkg == "github.com/linkpop/linkpop/edge" || strings.HasPrefix(pkg, "github.com/linkpop/linkpop/edge/") ||
			strings.HasPrefix(pkg, "github.com/nats-io/nats-server") ||
			strings.HasPrefix(pkg, "github.com/valyala/fasthttp") ||
			strings.HasPrefix(pkg, "github.com/hashicorp/memberlist") {
			t.Errorf("cmd/collector links %s", pkg)
		}
	}
	if !seen {
		t.Errorf("go list -deps does not list the collector package")
	}
}
