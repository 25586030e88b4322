package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDeps keeps the origin binary to its role: it links neither the
// edge (nor its fasthttp and memberlist), nor the CLI, nor the test-only
// OpenAPI validator and QR decoder, nor the testing package. (It does
// link the NATS server: origin -dev embeds one.)
func TestDeps(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	forbidden := func(pkg string) bool {
		for _, p := range []string{
			"github.com/linkpop/linkpop/edge", "github.com/linkpop/linkpop/client/cli", "github.com/linkpop/linkpop/internal",
			"github.com/valyala/fasthttp", "github.com/hashicorp/memberlist", "github.com/spf13/cobra",
			"github.com/pb33f", "github.com/makiuchi-d/gozxing", "testing",
		} {
			if pkg == p || strings.HasPrefix(pkg, p+"/") {
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
	f("github.com/linkpop/linkpop/edge/replica", true)
	f("github.com/pb33f/libopenapi-validator", true)
	f("github.com/linkpop/linkpop/origin", false)
	f("github.com/linkpop/linkpop/client", false)
	f("github.com/linkpop/linkpop/edgeless", false)
	var seen bool
	for _, pkg := range deps {
		if pkg == "github.com/linkpop/linkpop/origin" {
			seen = true
		}
		if forbidden(pkg) {
			t.Errorf("cmd/origin links %s", pkg)
		}
	}
	if !seen {
		t.Error("go list -deps does not list origin; is this the origin main package?")
	}
}
