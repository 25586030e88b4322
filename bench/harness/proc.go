package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/internal/freeport"
)

// proc is a child process the harness started. It is stopped by its PID
// only.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error // cmd.Wait's result, valid after done
}

// start runs bin with args and env added to the harness's environment,
// pinned to cpu when cpu >= 0 and taskset is available. Output goes to WorkDir/logs/<name>.log.
func (h *harness) start(name string, cpu int, env []string, bin string, args ...string) (*proc, error) {
	return h.startCmd(name, cpu, env, nil, bin, args...)
}

// startAs is start as another user (PostgreSQL refuses to run as root).
func (h *harness) startAs(name string, cpu int, cred *syscall.Credential, bin string, args ...string) (*proc, error) {
	return h.startCmd(name, cpu, nil, cred, bin, args...)
}

func (h *harness) startCmd(name string, cpu int, env []string, cred *syscall.Credential, bin string, args ...string) (*proc, error) {
	if err := os.MkdirAll(filepath.Join(h.cfg.WorkDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(h.cfg.WorkDir, "logs", name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	path, argv := bin, args
	if cpu >= 0 && h.pin {
		path, argv = h.taskset, append([]string{"-c", strconv.Itoa(cpu), bin}, args...)
	}
	cmd := exec.Command(path, argv...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	cmd.SysProcAttr.Credential = cred
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	h.log.Debug("started", "proc", name, "pid", cmd.Process.Pid, "args", strings.Join(argv, " "))
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace, then kills. Stopping a stopped
// process does nothing.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freeAddr returns a loopback address that had no listener a moment ago
// (freeport: drawn from below the kernel's ephemeral range, so no port-0
// listener or outgoing connection takes it before the child binds).
func freeAddr() (string, error) { return freeport.Addr() }

// waitFor polls cond every interval until it is true, p exits, ctx ends
// or timeout passes.
func waitFor(ctx context.Context, p *proc, timeout, interval time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v\n%s", p.name, what, p.err, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// dialable reports whether something accepts connections on addr.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// procTree returns pid and its descendants (nginx's workers).
func procTree(pid int) []int {
	parents := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parents[ppid] = append(parents[ppid], child)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parents[out[i]]...)
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name:
// [0] is the state, [1] the ppid, [11] utime, [12] stime.
func statFields(b []byte) []string {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of the processes.
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return float64(ticks) / clockTicks
}

// memory is resident memory in bytes: now (VmRSS) and peak (VmHWM),
// summed over processes, and PSS (smaps_rollup), which counts a page
// shared by several processes (PostgreSQL's shared buffers, nginx's map)
// once in all: the sum of RSS counts it in each.
type memory struct {
	RSS  int64 `json:"rss_bytes"`
	Peak int64 `json:"peak_rss_bytes"`
	PSS  int64 `json:"pss_bytes"`
}

func readMemory(pids []int) memory {
	var m memory
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			f := strings.Fields(v)
			if len(f) == 0 {
				continue
			}
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			switch k {
			case "VmRSS":
				m.RSS += kb << 10
			case "VmHWM":
				m.Peak += kb << 10
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Pss:"); ok {
					if f := strings.Fields(v); len(f) > 0 {
						kb, _ := strconv.ParseInt(f[0], 10, 64)
						m.PSS += kb << 10
					}
					break
				}
			}
		}
	}
	return m
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// lookPath finds a program in PATH or, for daemons, /usr/sbin and /sbin.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

var errSkipped = errors.New("skipped")
