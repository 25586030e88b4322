// Package proctest builds a command of this module and runs it as a child
// process of a test: its output goes to the test log, it is killed by PID
// (SIGKILL, for crash tests) or stopped with SIGTERM, and it never outlives
// the test.
package proctest

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/freeport"
)

// Build compiles the main package pkg (an import path such as
// "github.com/linkpop/linkpop/cmd/origin") into t's temporary directory and
// returns the binary's path. Go's build cache makes a second build of an
// unchanged package cheap.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// FreeAddr returns a loopback host:port that had no listener a moment ago,
// for a child process whose flags need a fixed address (see freeport:
// drawn from below the kernel's ephemeral range).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort is FreeAddr's port, for configurations that take a port alone.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Spec describes a child process.
type Spec struct {
	// Name prefixes every output line in the test log. The default is the
	// binary's base name.
	Name string
	// Path is the binary. Required.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is added to the test process's environment.
	Env []string
	// Quiet drops the child's output instead of logging it; the last 64
	// KiB are still kept and logged if the test fails.
	Quiet bool
}

// Process is a running child.
type Process struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *lineLogger

	done chan struct{} // closed when the child has exited and its output is drained
	err  error         // cmd.Wait's result, valid after done
}

// Start starts the child and registers a cleanup that kills it (if still
// running) and waits for it, so no child outlives its test.
func Start(t testing.TB, s Spec) *Process {
	t.Helper()
	name := s.Name
	if name == "" {
		name = filepath.Base(s.Path)
	}
	out := &lineLogger{t: t, prefix: name + ": ", quiet: s.Quiet}
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = procAttr()
	cmd.WaitDelay = 5 * time.Second // a grandchild holding the pipes must not hang Wait
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{t: t, name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.flush()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() && s.Quiet {
			t.Logf("%s: last output:\n%s", name, out.tail())
		}
	})
	return p
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited, and its Wait error if so.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Kill sends SIGKILL to the child (by PID; os.Process guards against PID
// reuse) and waits until it has exited. Killing an exited child does
// nothing.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("kill %s (pid %d): %v", p.name, p.PID(), err)
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for the child to exit, then
// kills it. It returns the child's exit error (nil for a clean exit), or
// an error saying it had to be killed.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("stop %s (pid %d): %v", p.name, p.PID(), err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return errors.New(p.name + ": did not exit within " + timeout.String() + " of SIGTERM; killed")
	}
}

// lineLogger writes each complete line to the test log, or keeps a tail
// of them when quiet.
type lineLogger struct {
	t      testing.TB
	prefix string
	quiet  bool

	mu      sync.Mutex
	partial []byte
	last    []string // quiet: the most recent lines, about tailBytes in all
	size    int
}

const tailBytes = 64 << 10

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

func (l *lineLogger) line(s string) {
	if !l.quiet {
		l.t.Log(l.prefix + s)
		return
	}
	l.last = append(l.last, s)
	l.size += len(s) + 1
	for l.size > tailBytes && len(l.last) > 1 {
		l.size -= len(l.last[0]) + 1
		l.last = l.last[1:]
	}
}

func (l *lineLogger) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}
