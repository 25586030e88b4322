package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDeps keeps the CLI a pure API client: it links neither the servers
// (origin, edge, the NATS server, Pebble), nor the edge's fasthttp and
// memberlist, nor the testing package. It lists the dependencies of the
// main package itself, not of its tests.
func TestDeps(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	forbidden := func(pkg string) bool {
		for _, p := range []string{
			"github.com/linkpop/linkpop/origin", "github.com/linkpop/linkpop/edge", "github.com/linkpop/linkpop/replication",
			"github.com/linkpop/linkpop/internal", "github.com/valyala/fasthttp", "github.com/hashicorp/memberlist",
			"github.com/nats-io/", "github.com/cockroachdb/pebble", "testing",
		} {
			if pkg == p || strings.HasPrefix(pkg, p+"/") || (strings.HasSuffix(p, "/") && strings.HasPrefix(pkg, p)) {
				return true
			}
		}
		return false
	}
	f := func(pkg string, want bool) {
		t.Helper()
		if forbidden(pkg) != want {
			t.Errorf("forbidden(%q) = %v, want %v", pkg, !want, want)
		}
	}
	f("testing", true)
	f("github.com/valyala/fasthttp/fasthttputil", true)
	f("github.com/hashicorp/memberlist", true)
	f("github.com/nats-io/nats.go", true)
	f("github.com/linkpop/linkpop/origin/store", true)
	f("github.com/linkpop/linkpop/client", false)
	f("github.com/linkpop/linkpop/originator", false)
	var seen bool
	for _, pkg := range deps {
		if pkg == "github.com/linkpop/linkpop/client/cli" {
			seen = true
		}
		if forbidden(pkg) {
			t.Errorf("cmd/linkpop links %s", pkg)
		}
	}
	if !seen {
		t.Error("go list -deps does not list client/cli; is this the linkpop main package?")
	}
}
