package client

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestImports keeps the client linkable by the edge: it imports only
// package link and the standard library.
func TestImports(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-f", `{{join .Imports "\n"}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	imports := strings.Fields(string(out))
	var seen bool
	for _, p := range imports {
		first, _, _ := strings.Cut(p, "/")
		switch {
		case p == "github.com/linkpop/linkpop/link":
			seen = true
		case strings.Contains(first, "."):
			t.Errorf("client imports %s", p)
		}
	}
	if !seen {
		t.Errorf("go list does not show the import of link: %q", imports)
	}
}
