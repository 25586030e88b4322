package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDeps keeps the edge binary small and free of what it must never
// carry: the origin and the collector with its store (other roles), the
// NATS server (the edge is only a client), and the testing package. It lists the dependencies of the main
// package itself, not of its tests.
func TestDeps(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		goBin = "go"
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %d packages:\n%s", len(deps), out)
	}
	forbidden := func(pkg string) bool {
		return pkg == "testing" || strings.HasPrefix(pkg, "testing/") ||
			pkg == "github.com/linkpop/linkpop/origin" || strings.HasPrefix(pkg, "github.com/linkpop/linkpop/origin/") ||
			strings.HasPrefix(pkg, "github.com/nats-io/nats-server") ||
			pkg == "github.com/linkpop/linkpop/collector" || strings.HasPrefix(pkg, "github.com/linkpop/linkpop/collector/") ||
			strings.HasPrefix(pkg, "github.com/linkpop/linkpop/internal/natstest") ||
			strings.HasPrefix(pkg, "github.com/linkpop/linkpop/replication/devserver")
	}
	f := func(pkg string, want bool) {
		t.Helper()
		if forbidden(pkg) != want {
			t.Errorf("forbidden(%q) = %v, want %v", pkg, !want, want)
		}
	}
	f("testing", true)
	f("testing/quick", true)
	f("github.com/linkpop/linkpop/origin", true)
	f("github.com/linkpop/linkpop/origin/store", true)
	f("github.com/linkpop/linkpop/collector", true)
	f("github.com/linkpop/linkpop/collector/rollup", true)
	f("github.com/linkpop/linkpop/collectorx", false)
	f("github.com/linkpop/linkpop/edge/clicks", false)
	f("github.com/nats-io/nats-server/v2/server", true)
	f("github.com/linkpop/linkpop/originator", false)
	f("github.com/nats-io/nats.go", false)
	f("github.com/linkpop/linkpop/edge", false)
	var seen bool
	for _, pkg := range deps {
		if pkg == "github.com/linkpop/linkpop/edge" {
			seen = true
		}
		if forbidden(pkg) {
			t.Errorf("cmd/edge links %s", pkg)
		}
	}
	if !seen {
		t.Errorf("go list -deps does not list github.com/linkpop/linkpop/edge; is it the edge main package?")
	}
}
