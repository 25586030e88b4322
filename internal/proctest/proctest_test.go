package proctest_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
)

func TestKillReportsSignal(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this machine")
	}
	p := proctest.Start(t, proctest.Spec{Name: "sleeper", Path: sh, Args: []string{"-c", "echo started; exec sleep 60"}})
	if done, _ := p.Exited(); done {
		t.Fatal("child exited before it was killed")
	}
	p.Kill()
	done, err := p.Exited()
	var ee *exec.ExitError
	if !done || !errors.As(err, &ee) {
		t.Fatalf("after Kill: exited=%v err=%v, want an exit error", done, err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("exit status %v, want killed by SIGKILL", ee)
	}
	p.Kill() // a second kill of an exited child does nothing
}

func TestStopIsGraceful(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this machine")
	}
	ready := filepath.Join(t.TempDir(), "ready")
	p := proctest.Start(t, proctest.Spec{Path: sh, Args: []string{"-c", "trap 'exit 0' TERM; touch " + ready + "; while :; do sleep 0.01; done"}})
	wait.For(t, 10*time.Second, "child to install its SIGTERM trap", func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("Stop: %v, want a clean exit", err)
	}
}
