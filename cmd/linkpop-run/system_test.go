package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/replication/natsauth"
)

func TestLoadAdminKey(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(adminKeyEnv, "")

	key, source, err := loadAdminKey(dir)
	if err != nil || len(key) < 16 || !strings.HasSuffix(source, "(new)") {
		t.Fatalf("first run: key %q, source %q, err %v", key, source, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again, source, err := loadAdminKey(dir)
	if err != nil || again != key || source != filepath.Join(dir, "admin.key") {
		t.Fatalf("second run: key %q (want %q), source %q, err %v", again, key, source, err)
	}

	t.Setenv(adminKeyEnv, " from-the-environment-0123 ")
	key, source, err = loadAdminKey(dir)
	if err != nil || key != "from-the-environment-0123" || source != adminKeyEnv {
		t.Fatalf("with %s: key %q, source %q, err %v", adminKeyEnv, key, source, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "admin.key")); strings.TrimSpace(string(b)) != again {
		t.Fatalf("the environment's key overwrote admin.key: %q", b)
	}
}

func TestPrefixWriter(t *testing.T) {
	f := func(writes []string, flush bool, want string) {
		t.Helper()
		var out bytes.Buffer
		w := &prefixWriter{out: &out, prefix: "edge-a | "}
		for _, s := range writes {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", s, n, err)
			}
		}
		if flush {
			w.flush()
		}
		if out.String() != want {
			t.Fatalf("writes %q: got %q, want %q", writes, out.String(), want)
		}
	}
	f([]string{"one\n"}, false, "edge-a | one\n")
	f([]string{"one\ntwo\n"}, false, "edge-a | one\nedge-a | two\n")
	f([]string{"o", "ne\ntw", "o\n"}, false, "edge-a | one\nedge-a | two\n")
	f([]string{"partial"}, false, "")
	f([]string{"partial"}, true, "edge-a | partial\n")
	f([]string{"a\n", "b"}, true, "edge-a | a\nedge-a | b\n")
	f(nil, true, "")
}

func TestConfigValidate(t *testing.T) {
	c := Config{}
	err := c.validate()
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, want := range []string{"DataDir", "BinDir", "NATS", "at least one edge"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	c = Config{DataDir: "d", BinDir: "b", Layout: DefaultLayout()}
	if err := c.validate(); err != nil {
		t.Fatalf("default layout: %v", err)
	}
}

// TestSystem builds the real binaries and runs the whole local system on
// free ports: a link created at the origin redirects on both edges, and
// keeps redirecting after the origin is SIGKILLed; the death is reported,
// and stopping ends every child.
func TestSystem(t *testing.T) {
	leaktest.Check(t)
	bin := t.TempDir()
	began := time.Now()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/linkpop/linkpop/cmd/origin", "github.com/linkpop/linkpop/cmd/edge", "github.com/linkpop/linkpop/cmd/linkpop")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built origin and edge in %v", time.Since(began).Round(time.Millisecond))
	t.Setenv(adminKeyEnv, "")
	free := func() string { return proctest.FreeAddr(t) }
	cfg := Config{
		DataDir: t.TempDir(),
		BinDir:  bin,
		Layout: Layout{
			NATS: free(), OriginAPI: free(), OriginAdmin: free(),
			Edges: []EdgeLayout{
				{Name: "edge-a", Listen: free(), Admin: free(), Gossip: free()},
				{Name: "edge-b", Listen: free(), Admin: free(), Gossip: free()},
			},
		},
		Out:         &syncBuffer{},
		StopTimeout: 15 * time.Second,
	}
	out := cfg.Out.(*syncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.stop()
		}
	}()
	usage := s.usage()
	for _, want := range []string{"$(cat '" + filepath.Join(cfg.DataDir, "admin.key") + "')", "curl -si http://" + cfg.Layout.Edges[1].Listen + "/<code>", "Ctrl-C",
		"LINKPOP_API=http://" + cfg.Layout.OriginAPI, "linkpop create https://example.com/ --code hello",
		"dashboard: http://" + cfg.Layout.OriginAPI + "/"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage block lacks %q:\n%s", want, usage)
		}
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- s.wait(ctx) }()

	// The dashboard is served where the usage block says.
	if resp, err := http.Get("http://" + cfg.Layout.OriginAPI + "/"); err != nil || resp.StatusCode != http.StatusOK ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET the dashboard: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The CLI lines of the usage block, as a user runs them.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "linkpop"), args...)
		cmd.Env = []string{"HOME=" + t.TempDir(), "LINKPOP_API=http://" + cfg.Layout.OriginAPI, "LINKPOP_KEY=" + s.key}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("linkpop %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	if out := cli("create", "https://example.com/", "--code", "hello"); !strings.Contains(out, "hello") {
		t.Errorf("linkpop create: %s", out)
	}
	if out := cli("list"); !strings.Contains(out, "hello") || !strings.Contains(out, "https://example.com/") {
		t.Errorf("linkpop list: %s", out)
	}

	code := createLink(t, "http://"+cfg.Layout.OriginAPI, s.key, "https://example.com/local-system")
	redirects := func(edge EdgeLayout) bool {
		resp, err := noRedirect.Get("http://" + edge.Listen + "/" + code)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusFound && resp.Header.Get("Location") == "https://example.com/local-system"
	}
	for _, e := range cfg.Layout.Edges {
		wait.For(t, 30*time.Second, e.Name+" redirects the new link", func() bool { return redirects(e) })
	}

	// Both edges record the redirects and ship them to the click stream.
	for _, e := range cfg.Layout.Edges {
		wait.For(t, 30*time.Second, e.Name+" ships clicks", func() bool {
			return adminMetric(e.Admin, "linkpop_edge_clicks_shipped_total") >= 1
		})
	}

	// A browser's redirect on each edge is a click (the checks above are
	// Go's User-Agent, a bot): the stats show both once complete_through
	// has passed them.
	const browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	for _, e := range cfg.Layout.Edges {
		req, err := http.NewRequest(http.MethodGet, "http://"+e.Listen+"/"+code, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", browser)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("browser GET on %s: %v", e.Name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("browser GET on %s: %d", e.Name, resp.StatusCode)
		}
	}
	clicked := time.Now()
	api, err := client.New(client.Config{BaseURL: "http://" + cfg.Layout.OriginAPI, Key: s.key})
	if err != nil {
		t.Fatal(err)
	}
	var st client.Stats
	wait.For(t, 30*time.Second, "stats with both clicks and complete_through past them", func() bool {
		st, err = api.Stats(context.Background(), code, client.StatsQuery{})
		return err == nil && st.CompleteThrough != nil && st.CompleteThrough.After(clicked)
	})
	if st, err = api.Stats(context.Background(), code, client.StatsQuery{}); err != nil || st.Clicks != 2 || len(st.Edges) != 2 {
		t.Fatalf("stats of %s: clicks %d over edges %v (err %v), want 2 over both edges", code, st.Clicks, st.Edges, err)
	}

	// The system is in use (links made, redirects followed, clicks
	// shipped): none of its secrets is on a command line of the
	// processes it started, or in their logs.
	checkSecretsHidden(t, s, out)

	originPID := s.origin.cmd.Process.Pid
	if err := syscall.Kill(originPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill origin: %v", err)
	}
	<-s.origin.done
	wait.For(t, 10*time.Second, "the origin's death reported", func() bool {
		return strings.Contains(out.String(), "origin (pid "+strconv.Itoa(originPID)+") exited")
	})
	for _, e := range cfg.Layout.Edges {
		if !redirects(e) {
			t.Errorf("%s stopped redirecting when the origin died", e.Name)
		}
	}

	cancel()
	if err := <-waitErr; err != nil {
		t.Errorf("wait: %v", err)
	}
	s.stop()
	stopped = true
	for _, c := range s.all() {
		if !c.exitedNow() {
			t.Errorf("%s still running after stop", c.name)
		}
	}
	for _, c := range s.edges {
		if c.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", c.name, c.err)
		}
	}
}

// adminMetric reads one series from an admin /metrics, or -1.
func adminMetric(admin, series string) float64 {
	resp, err := noRedirect.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && name == series {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

var noRedirect = &http.Client{
	Timeout:       5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func createLink(t *testing.T, origin, key, target string) string {
	t.Helper()
	c, err := client.New(client.Config{BaseURL: origin, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.CreateLink(context.Background(), client.CreateLink{URL: target}, client.CreateOptions{})
	if err != nil {
		t.Fatalf("create link: %v", err)
	}
	return l.Code
}

// syncBuffer is a bytes.Buffer safe for the children's writers and the
// test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkSecretsHidden looks for every secret the running system uses (the
// admin key, the analytics and gossip keys, every NATS role's password) in
// /proc/PID/cmdline of each process it started and of this one, and in
// everything they logged so far.
func checkSecretsHidden(t *testing.T, s *system, out *syncBuffer) {
	t.Helper()
	secrets := map[string]string{"admin key": s.key}
	read := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		secrets[name] = strings.TrimSpace(string(b))
	}
	read("analytics key", filepath.Join(s.cfg.DataDir, "analytics.key"))
	read("gossip key", filepath.Join(s.cfg.DataDir, "gossip.key"))
	for _, role := range []string{"operator", "origin", "edge", "collector"} {
		path := filepath.Join(s.cfg.DataDir, "origin", "nats-auth", role+".password")
		if s.cfg.Layout.ha() {
			path = s.haPasswordFile(natsauth.Role(role))
		}
		read("NATS "+role+" password", path)
	}
	procs := map[string]int{"linkpop-run": os.Getpid()}
	for _, c := range s.all() {
		procs[c.name] = c.cmd.Process.Pid
	}
	for name, pid := range procs {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil && runtime.GOOS != "linux" {
			t.Logf("no /proc/PID/cmdline on %s: the command lines are not checked", runtime.GOOS)
			break
		}
		if err != nil {
			t.Fatalf("cmdline of %s: %v", name, err)
		}
		if len(raw) == 0 {
			t.Fatalf("cmdline of %s (pid %d) is empty", name, pid)
		}
		for what, v := range secrets {
			if len(v) < 16 {
				t.Fatalf("%s is only %d bytes: not a secret worth the check", what, len(v))
			}
			if bytes.Contains(raw, []byte(v)) {
				t.Errorf("the %s is on the command line of %s (pid %d)", what, name, pid)
			}
		}
	}
	logs := out.String()
	if !strings.Contains(logs, "edge-b") || !strings.Contains(logs, "origin") {
		t.Fatalf("the captured output does not look like the system's logs:\n%s", logs)
	}
	for what, v := range secrets {
		if strings.Contains(logs, v) {
			t.Errorf("the %s is in the logs", what)
		}
	}
}
