package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestMain builds the edge binary once for the whole package.
func TestMain(m *testing.M) {
	dir, err := buildEdge()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runGo runs the go command of the toolchain running the tests.
func runGo(args ...string) ([]byte, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	return exec.Command(goBin, args...).CombinedOutput()
}
