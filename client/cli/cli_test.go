package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
)

const adminKey = "cli-test-admin-key-0123456789"

// bin is the linkpop binary built for these tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linkpop-cli-test")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "linkpop")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../../cmd/linkpop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build linkpop: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startOrigin runs a real origin (Pebble in a temp dir, embedded
// JetStream) until the test ends and returns its API base URL.
func startOrigin(t testing.TB) (string, *origin.Server) {
	t.Helper()
	ns := natstest.Start(t)
	srv, err := origin.New(origin.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     t.TempDir(),
		NATS:        replication.ConnConfig{URLs: []string{ns.URL()}},
		AdminKey:    adminKey,
		BaseURL:     "https://lnk.test/",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("origin Run: %v", err)
		}
	})
	return "http://" + srv.Addr(), srv
}

// env is a child environment with only what the CLI should see.
type env struct {
	t    testing.TB
	vars []string
	dir  string
}

func newEnv(t testing.TB, api, key string) *env {
	e := &env{t: t, dir: t.TempDir()}
	e.vars = []string{"HOME=" + e.dir, "XDG_CONFIG_HOME=" + filepath.Join(e.dir, ".config"), "PATH=" + os.Getenv("PATH")}
	if api != "" {
		e.vars = append(e.vars, "LINKPOP_API="+api)
	}
	if key != "" {
		e.vars = append(e.vars, "LINKPOP_KEY="+key)
	}
	return e
}

type result struct {
	code           int
	stdout, stderr string
	cpu            time.Duration // the child's user and system time
}

func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = e.vars
	cmd.Dir = e.dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if cmd.ProcessState != nil {
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("linkpop %v: %v", args, err)
	}
	return r
}

// must runs and requires exit status want.
func (e *env) must(want int, args ...string) result {
	e.t.Helper()
	r := e.run("", args...)
	if r.code != want {
		e.t.Fatalf("linkpop %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

func decodeLink(t *testing.T, s string) client.Link {
	t.Helper()
	var l client.Link
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		t.Fatalf("not a link object: %v\n%s", err, s)
	}
	return l
}

// TestCommands runs every link and key command against a real origin and
// checks output, -o json and exit codes.
func TestCommands(t *testing.T) {
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)

	r := e.must(0, "create", "https://example.com/launch?a=1&b=2", "--code", "launch", "--redirect", "301", "--expires", "720h", "--tag", "q4", "--tag", "web", "-o", "json")
	l := decodeLink(t, r.stdout)
	if l.Code != "launch" || l.Redirect != 301 || l.URL != "https://example.com/launch?a=1&b=2" || !slices.Equal(l.Tags, []string{"q4", "web"}) ||
		l.ExpiresAt == nil || l.ExpiresAt.Before(time.Now().Add(700*time.Hour)) || l.ShortURL != "https://lnk.test/launch" {
		t.Fatalf("create: %+v", l)
	}
	if strings.Contains(r.stdout+r.stderr, adminKey) {
		t.Fatal("the key was printed")
	}
	r = e.must(0, "create", "https://example.com/plain")
	if !strings.Contains(r.stdout, "short_url") || !strings.Contains(r.stdout, "https://example.com/plain") {
		t.Fatalf("create table: %s", r.stdout)
	}
	// An Idempotency-Key answers the first link again.
	a := decodeLink(t, e.must(0, "create", "https://example.com/idem", "--idempotency-key", "k-1", "-o", "json").stdout)
	b := decodeLink(t, e.must(0, "create", "https://example.com/idem", "--idempotency-key", "k-1", "-o", "json").stdout)
	if a.Code != b.Code {
		t.Fatalf("idempotent create made %s and %s", a.Code, b.Code)
	}

	if g := decodeLink(t, e.must(0, "get", "launch", "-o", "json").stdout); g.Revision != l.Revision {
		t.Fatalf("get: %+v", g)
	}
	r = e.must(0, "get", "launch")
	for _, want := range []string{"code", "launch", "revision", "q4,web"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("get table lacks %q:\n%s", want, r.stdout)
		}
	}

	u := decodeLink(t, e.must(0, "update", "launch", "--url", "https://example.com/v2", "--no-expiry", "--tag", "q1", "--if-revision", fmt.Sprint(l.Revision), "-o", "json").stdout)
	if u.URL != "https://example.com/v2" || u.ExpiresAt != nil || !slices.Equal(u.Tags, []string{"q1"}) || u.Revision <= l.Revision {
		t.Fatalf("update: %+v", u)
	}
	r = e.must(1, "update", "launch", "--redirect", "302", "--if-revision", fmt.Sprint(l.Revision))
	if !strings.Contains(r.stderr, "revision_mismatch") {
		t.Fatalf("stale --if-revision: %s", r.stderr)
	}
	d := decodeLink(t, e.must(0, "disable", "launch", "-o", "json").stdout)
	if d.Status != client.StatusDisabled {
		t.Fatalf("disable: %+v", d)
	}

	// list: table, JSON array, --tag, --limit, --all.
	var all []client.Link
	if err := json.Unmarshal([]byte(e.must(0, "list", "--all", "-o", "json").stdout), &all); err != nil || len(all) != 3 {
		t.Fatalf("list --all: %d links, %v", len(all), err)
	}
	var one []client.Link
	if err := json.Unmarshal([]byte(e.must(0, "list", "--limit", "1", "-o", "json").stdout), &one); err != nil || len(one) != 1 || one[0].Code != all[0].Code {
		t.Fatalf("list --limit 1: %+v %v", one, err)
	}
	var tagged []client.Link
	if err := json.Unmarshal([]byte(e.must(0, "list", "--tag", "q1", "-o", "json").stdout), &tagged); err != nil || len(tagged) != 1 || tagged[0].Code != "launch" {
		t.Fatalf("list --tag q1: %+v %v", tagged, err)
	}
	if r := e.must(0, "list"); !strings.HasPrefix(r.stdout, "CODE") || strings.Count(r.stdout, "\n") != 4 {
		t.Fatalf("list table:\n%s", r.stdout)
	}

	// Keys.
	r = e.must(0, "keys", "create", "--name", "ci", "--scope", "links:read", "-o", "json")
	var k client.Key
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil || k.Key == "" || k.ID == "" {
		t.Fatalf("keys create: %s %v", r.stdout, err)
	}
	reader := newEnv(t, api, k.Key)
	reader.must(0, "get", "launch")
	if r := reader.must(1, "create", "https://example.com/"); !strings.Contains(r.stderr, "forbidden") {
		t.Fatalf("read key creates: %s", r.stderr)
	}
	if r := e.must(0, "keys", "list"); !strings.Contains(r.stdout, k.ID) || strings.Contains(r.stdout, k.Key) {
		t.Fatalf("keys list:\n%s", r.stdout)
	}
	e.must(0, "keys", "revoke", k.ID)
	if r := reader.must(1, "get", "launch"); !strings.Contains(r.stderr, "unauthorized") {
		t.Fatalf("revoked key: %s", r.stderr)
	}

	// QR to a file.
	file := filepath.Join(e.dir, "launch.png")
	e.must(0, "qr", "launch", "-o", file, "--size", "300")
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("qr file is not a PNG: %v", err)
	}
	if r := e.must(0, "qr", "launch", "--format", "svg"); !strings.Contains(r.stdout, "<svg") {
		t.Fatalf("qr svg to stdout: %.100s", r.stdout)
	}

	// The origin's collector answers stats: no clicks yet.
	if r := e.must(0, "stats", "launch"); !strings.Contains(r.stdout, "clicks") || !strings.Contains(r.stdout, "launch") {
		t.Fatalf("stats launch: %s", r.stdout)
	}
	if r := e.must(0, "stats", "launch", "-o", "json"); !strings.Contains(r.stdout, `"clicks":0`) {
		t.Fatalf("stats launch -o json: %s", r.stdout)
	}
	if r := e.must(0, "top"); !strings.Contains(strings.ToLower(r.stdout), "clicks") {
		t.Fatalf("top: %s", r.stdout)
	}
	if r := e.must(1, "stats", "nope404"); !strings.Contains(r.stderr, "not_found") {
		t.Fatalf("stats of an unknown link: %s", r.stderr)
	}

	if r := e.must(0, "version"); !strings.HasPrefix(r.stdout, "linkpop ") {
		t.Fatalf("version: %s", r.stdout)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := e.must(0, "completion", sh); !strings.Contains(r.stdout, "linkpop") {
			t.Fatalf("completion %s: %.200s", sh, r.stdout)
		}
	}
}

// TestBadInput checks exit codes and messages for usage errors, API
// refusals and connection failures.
func TestBadInput(t *testing.T) {
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)
	f := func(code int, want string, args ...string) {
		t.Helper()
		r := e.run("", args...)
		if r.code != code || !strings.Contains(r.stderr, want) {
			t.Errorf("linkpop %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
		}
	}
	f(2, "unknown flag", "create", "https://example.com/", "--bogus")
	f(2, "unknown command", "frobnicate")
	f(2, "takes URL", "create")
	f(2, "--redirect 200", "create", "https://example.com/", "--redirect", "200")
	f(2, "--expires", "create", "https://example.com/", "--expires", "soon")
	f(2, "-o \"yaml\"", "get", "x", "-o", "yaml")
	f(2, "--on-conflict", "import", "x.jsonl", "--on-conflict", "rename")
	f(2, "unknown format", "import", "testdata/links.csv", "--format", "xml")
	f(2, "update needs", "update", "x")
	f(2, "--api", "get", "x", "--api", "ftp://host")
	f(1, "invalid_url", "create", "not a url")
	f(1, "url_scheme_not_allowed", "create", "javascript:alert(1)")
	f(1, "not_found", "get", "nope404")
	f(1, "no such file", "import", "missing.jsonl")
	f(1, "unauthorized", "get", "x", "--key", "wrong-key")
	f(1, "connection refused", "get", "x", "--api", "http://127.0.0.1:1")
	if r := e.run("", "create", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Examples:") {
		t.Errorf("create --help: %d %s", r.code, r.stdout)
	}
	noKey := newEnv(t, api, "")
	if r := noKey.run("", "list"); r.code != 1 || !strings.Contains(r.stderr, "unauthorized") || !strings.Contains(r.stderr, "LINKPOP_KEY") {
		t.Errorf("no key: %d %s", r.code, r.stderr)
	}
}

// TestConfigFile checks configure: the file is mode 0600, later commands
// use it, and flags and environment win over it.
func TestConfigFile(t *testing.T) {
	api, _ := startOrigin(t)
	e := newEnv(t, "", "")
	r := e.run(adminKey, "configure", "--api", api, "--key-stdin")
	if r.code != 0 {
		t.Fatalf("configure: %d %s", r.code, r.stderr)
	}
	path := strings.TrimSpace(strings.TrimPrefix(r.stdout, "saved "))
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file %s: %v %v", path, st.Mode(), err)
	}
	if !strings.HasPrefix(path, e.dir) {
		t.Fatalf("config file %s is not under the user's config dir", path)
	}
	if strings.Contains(r.stdout+r.stderr, adminKey) {
		t.Fatal("configure printed the key")
	}
	e.must(0, "create", "https://example.com/from-config", "--code", "cfg")
	e.must(0, "get", "cfg")
	if r := e.run("", "get", "cfg", "--key", "wrong-key"); r.code != 1 {
		t.Fatalf("--key does not win over the file: %d", r.code)
	}
	e.vars = append(e.vars, "LINKPOP_API=http://127.0.0.1:1")
	if r := e.run("", "get", "cfg"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("LINKPOP_API does not win over the file: %d %s", r.code, r.stderr)
	}
}
