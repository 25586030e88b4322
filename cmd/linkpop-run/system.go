package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// Layout says where every component listens.
type Layout struct {
	// NATS is the client address of the JetStream server the origin embeds.
	NATS string
	// OriginAPI and OriginAdmin are the origin's API and admin listeners.
	OriginAPI, OriginAdmin string
	// Edges are started in order; every edge after the first joins the
	// first one's gossip address.
	Edges []EdgeLayout

	// NATSCluster, when set, makes the system highly available (`make
	// run-ha`, HALayout): a JetStream cluster of these nodes in this
	// process instead of the origin's embedded server (NATS is then
	// unused), the origin at OriginAPI and a standby at StandbyAPI, both
	// with -ha -ack replicated and the collector process (admin at
	// CollectorAdmin, partition API at CollectorStats) as their stats
	// source. The default (none) is the single-machine system.
	NATSCluster []NATSNode
	// StandbyAPI and StandbyAdmin are the standby origin's listeners.
	StandbyAPI, StandbyAdmin string
	// CollectorAdmin is the collector's admin listener.
	CollectorAdmin string
	// CollectorStats is the collector's partition API listener, which the
	// origins' stats API asks (-collectors).
	CollectorStats string
}

// EdgeLayout is one edge's name (also its data directory under DataDir and
// its gossip node name) and listeners.
type EdgeLayout struct {
	Name, Listen, Admin, Gossip string
}

// DefaultLayout is the fixed local layout DESIGN.md documents.
func DefaultLayout() Layout {
	return Layout{
		NATS:        "127.0.0.1:4222",
		OriginAPI:   "127.0.0.1:8081",
		OriginAdmin: "127.0.0.1:9081",
		Edges: []EdgeLayout{
			{Name: "edge-a", Listen: "127.0.0.1:8080", Admin: "127.0.0.1:9080", Gossip: "127.0.0.1:7946"},
			{Name: "edge-b", Listen: "127.0.0.1:8082", Admin: "127.0.0.1:9082", Gossip: "127.0.0.1:7947"},
		},
	}
}

// Config says how to run the local system.
type Config struct {
	// DataDir holds DataDir/admin.key, DataDir/analytics.key (the edges'
	// click analytics key), DataDir/origin and one directory per
	// edge. It is created if missing and kept between runs. Required.
	DataDir string
	// BinDir holds the origin and edge executables. Required.
	BinDir string
	// Layout is where the components listen. Required.
	Layout Layout
	// Out receives the usage block, this program's own messages and every
	// child's output, each line prefixed with the component's name. The
	// default is io.Discard.
	Out io.Writer
	// ReadyTimeout bounds how long a component may take to answer 200 on
	// its /readyz. The default is 60s.
	ReadyTimeout time.Duration
	// StopTimeout is how long a child has to exit after SIGTERM before it
	// gets SIGKILL. The default is 10s.
	StopTimeout time.Duration
}

// adminKeyEnv is the environment variable the origin reads its bootstrap
// admin key from; originKeyEnv the one the edges read their origin API key
// from.
const (
	adminKeyEnv  = "LINKPOP_ADMIN_KEY"
	originKeyEnv = "LINKPOP_ORIGIN_KEY"
)

// run starts the system, prints how to use it and keeps it running until
// ctx is done, then stops it.
func run(ctx context.Context, cfg Config) error {
	s, err := start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: start stopped everything
		}
		return err
	}
	defer s.stop()
	fmt.Fprint(s.out, s.usage())
	return s.wait(ctx)
}

// system is the set of running children.
type system struct {
	cfg       Config
	key       string
	keySource string
	out       *lockedWriter
	nameWidth int

	origin *child
	edges  []*child
	// With Layout.NATSCluster: the standby origin (origin is the other
	// one), which of the two led at start, the collector and the
	// in-process NATS servers.
	standby, leader *child
	collector       *child
	nats            []*devserver.Server

	exited chan *child // every child sends itself once, when it exits
}

// child is one component process.
type child struct {
	name  string
	admin string // admin listener, for /readyz
	cmd   *exec.Cmd
	out   *prefixWriter
	done  chan struct{} // closed when the process has exited
	err   error         // exit status; read only after done is closed
}

func (c *child) exitedNow() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// start launches the origin, waits until it is ready, then launches the
// edges and waits for them. On any failure it stops what it started.
func start(ctx context.Context, cfg Config) (*system, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = time.Minute
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	bins := []string{"origin", "edge"}
	if cfg.Layout.ha() {
		bins = append(bins, "collector")
	}
	for _, bin := range bins {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s binary: %w (run `make build` first)", bin, err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	key, source, err := loadAdminKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	analyticsKey, err := ensureKeyFile(filepath.Join(cfg.DataDir, "analytics.key"), func() string { return rand.Text() + rand.Text() })
	if err != nil {
		return nil, fmt.Errorf("analytics key: %w", err)
	}
	gossipKey, err := ensureKeyFile(filepath.Join(cfg.DataDir, "gossip.key"), func() string {
		k := make([]byte, 32) // AES-256
		_, _ = rand.Read(k)   // never fails (crypto/rand)
		return base64.StdEncoding.EncodeToString(k)
	})
	if err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	s := &system{
		cfg:       cfg,
		key:       key,
		keySource: source,
		out:       &lockedWriter{w: cfg.Out},
		nameWidth: len("origin"),
		exited:    make(chan *child, 3+len(cfg.Layout.Edges)),
	}
	for _, e := range cfg.Layout.Edges {
		s.nameWidth = max(s.nameWidth, len(e.Name))
	}
	if cfg.Layout.ha() {
		s.nameWidth = max(s.nameWidth, len("collector"))
	}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()

	l := cfg.Layout
	originData := filepath.Join(cfg.DataDir, "origin")
	// Secrets never go on a command line (every local user reads those in
	// ps): the admin key goes by environment, the others by file. The
	// origin's embedded NATS runs with authentication on and writes each
	// role's password under originData/nats-auth; the edges connect as
	// the edge role with the edge's password file.
	natsUser, natsPass := "edge", filepath.Join(originData, "nats-auth", "edge.password")
	origins := "http://" + l.OriginAPI
	if l.ha() {
		if err := s.startHA(ctx, key); err != nil {
			return nil, err
		}
		natsPass = s.haPasswordFile(natsauth.Edge)
		origins += ",http://" + l.StandbyAPI
	} else {
		s.origin, err = s.spawn("origin", "origin", l.OriginAdmin, []string{
			"-dev",
			"-dev-nats-addr", l.NATS,
			"-data", originData,
			"-listen", l.OriginAPI,
			"-admin", l.OriginAdmin,
			"-base-url", "http://" + l.Edges[0].Listen + "/",
		}, []string{adminKeyEnv + "=" + key})
		if err != nil {
			return nil, err
		}
		if err := s.waitReady(ctx, s.origin); err != nil {
			return nil, err
		}
	}
	for i, e := range l.Edges {
		args := []string{
			"-listen", e.Listen,
			"-admin", e.Admin,
			"-data", filepath.Join(cfg.DataDir, e.Name),
			"-nats", s.natsURLs(),
			"-nats-user", natsUser,
			"-nats-password-file", natsPass,
			"-node", e.Name,
			"-gossip-bind", e.Gossip,
			"-gossip-key-file", gossipKey,
			"-origin", origins,
			"-analytics-key-file", analyticsKey,
		}
		if i > 0 {
			args = append(args, "-gossip-join", l.Edges[0].Gossip)
		}
		c, err := s.spawn(e.Name, "edge", e.Admin, args, []string{originKeyEnv + "=" + key})
		if err != nil {
			return nil, err
		}
		s.edges = append(s.edges, c)
	}
	for _, c := range s.edges {
		if err := s.waitReady(ctx, c); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required"))
	}
	if c.BinDir == "" {
		errs = append(errs, errors.New("BinDir is required"))
	}
	if (c.Layout.NATS == "" && !c.Layout.ha()) || c.Layout.OriginAPI == "" || c.Layout.OriginAdmin == "" {
		errs = append(errs, errors.New("layout: NATS (or NATSCluster), OriginAPI and OriginAdmin are required"))
	}
	if c.Layout.ha() {
		if len(c.Layout.NATSCluster) != 3 {
			errs = append(errs, errors.New("layout: NATSCluster needs three nodes (the streams are R3)"))
		}
		for i, n := range c.Layout.NATSCluster {
			if n.Client == "" || n.Route == "" {
				errs = append(errs, fmt.Errorf("layout: NATS node %d needs Client and Route", i))
			}
		}
		if c.Layout.StandbyAPI == "" || c.Layout.StandbyAdmin == "" || c.Layout.CollectorAdmin == "" || c.Layout.CollectorStats == "" {
			errs = append(errs, errors.New("layout: with NATSCluster, StandbyAPI, StandbyAdmin, CollectorAdmin and CollectorStats are required"))
		}
	}
	if len(c.Layout.Edges) == 0 {
		errs = append(errs, errors.New("layout: at least one edge is required"))
	}
	for i, e := range c.Layout.Edges {
		if e.Name == "" || e.Name == "origin" || e.Listen == "" || e.Admin == "" || e.Gossip == "" {
			errs = append(errs, fmt.Errorf("layout: edge %d needs a name other than origin, and Listen, Admin and Gossip", i))
		}
	}
	if c.ReadyTimeout < 0 || c.StopTimeout < 0 {
		errs = append(errs, errors.New("ReadyTimeout and StopTimeout must not be negative"))
	}
	return errors.Join(errs...)
}

// loadAdminKey returns the admin key and where it came from:
// LINKPOP_ADMIN_KEY when set, else DataDir/admin.key, created with a fresh
// random key on the first run.
func loadAdminKey(dataDir string) (key, source string, err error) {
	if k := strings.TrimSpace(os.Getenv(adminKeyEnv)); k != "" {
		return k, adminKeyEnv, nil
	}
	path := filepath.Join(dataDir, "admin.key")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if k := strings.TrimSpace(string(b)); k != "" {
			return k, path, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("admin key: %w", err)
	}
	k := "lpk_" + rand.Text() // 128 bits from crypto/rand
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("admin key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", "", fmt.Errorf("admin key: %w", err)
	}
	return k, path + " (new)", nil
}

// spawn starts one child with its output prefixed by name.
func (s *system) spawn(name, bin, admin string, args, env []string) (*child, error) {
	cmd := exec.Command(filepath.Join(s.cfg.BinDir, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	w := &prefixWriter{out: s.out, prefix: fmt.Sprintf("%-*s | ", s.nameWidth, name)}
	cmd.Stdout, cmd.Stderr = w, w // the same writer: one pipe, lines in order
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, admin: admin, cmd: cmd, out: w, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		w.flush()
		close(c.done)
		s.exited <- c
	}()
	s.logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	return c, nil
}

// waitReady polls c's /readyz until it answers 200. It gives up when c or
// any other child exits, ctx is done or ReadyTimeout passes.
func (s *system) waitReady(ctx context.Context, c *child) error {
	url := "http://" + c.admin + "/readyz"
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(s.cfg.ReadyTimeout)
	last := "no answer yet"
	for {
		for _, o := range s.all() {
			if o.exitedNow() {
				return fmt.Errorf("%s exited while starting: %v", o.name, exitReason(o.err))
			}
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (%s)", c.name, s.cfg.ReadyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// wait keeps the system running until ctx is done. A child that exits is
// reported and left down; the others keep running. It returns an error
// only when every child has exited.
func (s *system) wait(ctx context.Context) error {
	alive := 0
	for _, c := range s.all() {
		if !c.exitedNow() {
			alive++
		}
	}
	for alive > 0 {
		select {
		case <-ctx.Done():
			s.logf("stopping")
			return nil
		case c := <-s.exited:
			s.logf("%s (pid %d) exited: %v; not restarting it, the others keep running",
				c.name, c.cmd.Process.Pid, exitReason(c.err))
			alive--
		}
	}
	return errors.New("every component has exited")
}

// stop stops the edges (all at once), then the origin: SIGTERM, then
// SIGKILL after StopTimeout. It returns once every child has exited.
func (s *system) stop() {
	var wg sync.WaitGroup
	for _, c := range s.edges {
		wg.Go(func() { s.terminate(c) })
	}
	wg.Wait()
	if s.collector != nil {
		s.terminate(s.collector)
	}
	for _, c := range []*child{s.origin, s.standby} {
		if c != nil {
			wg.Go(func() { s.terminate(c) })
		}
	}
	wg.Wait()
	for _, srv := range s.nats {
		srv.Shutdown()
	}
	s.nats = nil
}

func (s *system) terminate(c *child) {
	if c.exitedNow() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		s.logf("%s stopped", c.name)
	case <-time.After(s.cfg.StopTimeout):
		s.logf("%s still running %v after SIGTERM; killing it", c.name, s.cfg.StopTimeout)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (s *system) all() []*child {
	var cs []*child
	for _, c := range []*child{s.origin, s.standby, s.collector} {
		if c != nil {
			cs = append(cs, c)
		}
	}
	return append(cs, s.edges...)
}

// ensureKeyFile returns path, first writing a fresh key from gen to it
// (mode 0600) if it does not exist or is empty: the edges' shared click
// analytics key (DataDir/analytics.key) and gossip key (DataDir/gossip.key).
func ensureKeyFile(path string, gen func() string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		return path, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(gen()+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}

// keyPath is the admin key's file when it did not come from the
// environment.
func (s *system) keyPath() string { return filepath.Join(s.cfg.DataDir, "admin.key") }

func (s *system) logf(format string, args ...any) {
	fmt.Fprintf(s.out, "%-*s | %s\n", s.nameWidth, "run", fmt.Sprintf(format, args...))
}

// usage is the block printed once everything is ready.
func (s *system) usage() string {
	l := s.cfg.Layout
	var b strings.Builder
	// The key itself is never printed: the commands read it from where it
	// is (a terminal's scrollback and a captured log are not secret).
	keyRef := `"$` + adminKeyEnv + `"`
	if s.keySource != adminKeyEnv {
		keyRef = `"$(cat ` + shellQuote(s.keyPath()) + `)"`
	}
	key := `"Authorization: Bearer "` + keyRef
	fmt.Fprintf(&b, "\nlinkpop is running (data in %s).\n\n", s.cfg.DataDir)
	fmt.Fprintf(&b, "  admin key: in %s\n\n", s.keySource)
	fmt.Fprintf(&b, "  dashboard: http://%s/   (sign in with the admin key)\n\n", l.OriginAPI)
	fmt.Fprintf(&b, "  create a link:\n")
	fmt.Fprintf(&b, "    curl -s -H %s -H 'Content-Type: application/json' \\\n", key)
	fmt.Fprintf(&b, "      -d '{\"url\": \"https://example.com/\"}' http://%s/v1/links\n", l.OriginAPI)
	cli := filepath.Join(s.cfg.BinDir, "linkpop")
	if rel, err := filepath.Rel(".", cli); err == nil && !strings.HasPrefix(rel, "..") {
		cli = "./" + rel
	}
	fmt.Fprintf(&b, "  or with the CLI:\n")
	fmt.Fprintf(&b, "    export LINKPOP_API=http://%s LINKPOP_KEY=%s\n", l.OriginAPI, keyRef)
	fmt.Fprintf(&b, "    %s create https://example.com/ --code hello\n", cli)
	fmt.Fprintf(&b, "    %s list\n", cli)
	fmt.Fprintf(&b, "  follow it on every edge (<code> is the \"code\" in the answer):\n")
	for _, e := range l.Edges {
		fmt.Fprintf(&b, "    curl -si http://%s/<code>\n", e.Listen)
	}
	fmt.Fprintf(&b, "  every GET redirect is a click shipped to LINKPOP_CLICKS (curl's own User-Agent\n")
	fmt.Fprintf(&b, "  counts as a bot; add -A 'Mozilla/5.0' to count a click)\n")
	fmt.Fprintf(&b, "\n  %-*s  pid %-7d API http://%s/v1  metrics http://%s/metrics\n",
		s.nameWidth, s.origin.name, s.origin.cmd.Process.Pid, l.OriginAPI, l.OriginAdmin)
	for i, e := range l.Edges {
		fmt.Fprintf(&b, "  %-*s  pid %-7d http://%s  status http://%s/status  metrics http://%s/metrics\n",
			s.nameWidth, e.Name, s.edges[i].cmd.Process.Pid, e.Listen, e.Admin, e.Admin)
	}
	if s.standby != nil {
		fmt.Fprintf(&b, "  %-*s  pid %-7d API http://%s/v1  metrics http://%s/metrics\n",
			s.nameWidth, s.standby.name, s.standby.cmd.Process.Pid, l.StandbyAPI, l.StandbyAdmin)
		fmt.Fprintf(&b, "  %-*s  pid %-7d metrics http://%s/metrics\n",
			s.nameWidth, s.collector.name, s.collector.cmd.Process.Pid, l.CollectorAdmin)
		s.usageHA(&b, key)
	} else {
		fmt.Fprintf(&b, "\n  Kill the origin (kill %d) and the edges keep redirecting from their replicas.\n", s.origin.cmd.Process.Pid)
	}
	fmt.Fprintf(&b, "  Ctrl-C to stop.\n\n")
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func exitReason(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lockedWriter serialises whole lines from several children.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// maxLine bounds a buffered partial line; a longer one is written in
// pieces.
const maxLine = 64 << 10

// prefixWriter writes each complete line it is given to out, prefixed. One
// goroutine (exec's copier) writes to it; flush writes a trailing partial
// line after the process has exited.
type prefixWriter struct {
	out    io.Writer
	prefix string
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	start := 0
	for {
		i := bytes.IndexByte(w.buf[start:], '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[start : start+i+1])
		start += i + 1
	}
	n := copy(w.buf, w.buf[start:])
	w.buf = w.buf[:n]
	if len(w.buf) >= maxLine {
		w.flush()
	}
	return len(p), nil
}

func (w *prefixWriter) flush() {
	if len(w.buf) > 0 {
		w.emit(append(w.buf, '\n'))
		w.buf = w.buf[:0]
	}
}

func (w *prefixWriter) emit(line []byte) {
	msg := make([]byte, 0, len(w.prefix)+len(line))
	msg = append(append(msg, w.prefix...), line...)
	_, _ = w.out.Write(msg)
}
