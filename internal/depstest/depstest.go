// Package depstest checks what a binary links, for the TestDeps guard of
// each main package under cmd/ (in the way tailscale's cmd/derper guards
// its dependencies): one definition of how dependencies are listed and
// matched.
package depstest

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Forbidden reports whether pkg is one of the packages named in deny or
// below one of them ("github.com/linkpop/linkpop/origin" covers
// ".../origin/store" but not ".../originator").
func Forbidden(pkg string, deny []string) bool {
	for _, p := range deny {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// Check lists the dependencies of the main package in the current
// directory (`go list -deps .`, the binary itself, not its tests) and
// fails t for each one that deny forbids. lib is a package the binary
// must link (its own library): its absence means the listing is not of
// the binary it should be.
func Check(t *testing.T, lib string, deny []string) {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		goBin = "go"
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	seen := false
	for _, pkg := range deps {
		if pkg == lib {
			seen = true
		}
		if Forbidden(pkg, deny) {
			t.Errorf("the binary links %s", pkg)
		}
	}
	if !seen {
		t.Errorf("go list -deps does not list %s among %d packages; is this the right main package?", lib, len(deps))
	}
}
