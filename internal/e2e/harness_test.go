package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// testAdminKey is the origin's bootstrap admin key in every test.
const testAdminKey = "e2e-admin-key-0123456789abcdef"

// testAnalyticsKey keys the edges' visitor hashes in every test.
const testAnalyticsKey = "e2e-analytics-key-fedcba9876543210"

// testClickFlush is the edges' click flush interval in every test.
const testClickFlush = 200 * time.Millisecond

// convergeTimeout bounds how long the edges may take to reflect every
// write. Generous: the machine is shared and has two cores.
const convergeTimeout = 45 * time.Second

// system is one test's origin, JetStream server and edges, all in-process.
type system struct {
	t      *testing.T
	log    *slog.Logger
	ns     *natstest.Server
	stream replication.StreamConfig
	origin *originNode
	edges  []*edgeNode
	api    *apiClient
	client *client.Client // the current origin's, through the client package
	// originOpts change the origin's configuration (newSystem's opts).
	originOpts []func(*origin.Config)
	// collectorAdmins are the admin listeners of separate collectors
	// (collectorFleet); empty: the origin's own collector.
	collectorAdmins []string
}

// newSystem starts JetStream, an origin and two edges: edge-a asks the
// origin on a lagging miss, edge-b never does (so its answers come from
// its replica alone); b joins a's gossip. Everything stops in t.Cleanup:
// edges, origin, then NATS.
func newSystem(t *testing.T, originOpts ...func(*origin.Config)) *system {
	t.Helper()
	s := &system{t: t, log: testLogger(t), ns: natstest.Start(t), originOpts: originOpts}
	s.createStreams()
	s.startOrigin(t.TempDir())
	a := s.startEdge("edge-a", t.TempDir(), true)
	s.startEdge("edge-b", t.TempDir(), false, a.srv.GossipAddr())
	s.waitReady()
	return s
}

// testGossipKey is the fleet's gossip key: the edges gossip encrypted.
const testGossipKey = "e2e-gossip-key-0123456789abcdef!" // 32 bytes: AES-256

// conn is how a component of role connects: with its own role's NATS
// user, as in production (deploy/nats/), so the end-to-end tests prove
// the least-privilege permissions are enough.
func (s *system) conn(role natsauth.Role) replication.ConnConfig {
	c := s.ns.Conn(role)
	c.ReconnectWait, c.Logger = 50*time.Millisecond, s.log
	return c
}

// createStreams is the operator's step (`origin streams`): with role
// credentials the components only open streams that exist.
func (s *system) createStreams() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{s.ns.URL()}, Name: "e2e-operator"})
	if err != nil {
		s.t.Fatal(err)
	}
	defer nc.Close()
	if err := replication.EnsureStreams(ctx, nc, s.stream, replication.OriginStream(s.stream, 25*time.Hour), replication.ClickStreamConfig{}); err != nil {
		s.t.Fatalf("operator: create streams: %v", err)
	}
}

// originNode is an origin.Server running in a goroutine.
type originNode struct {
	dir    string
	srv    *origin.Server
	cancel context.CancelFunc
	done   chan error
}

func (s *system) startOrigin(dir string) {
	t := s.t
	t.Helper()
	cfg := origin.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     dir,
		NATS:        s.conn(natsauth.Origin),
		Stream:      s.stream,
		AdminKey:    testAdminKey,
		// A collector restarted mid-ingest gets its unacknowledged
		// batches back after AckWait: keep that short of the 30s default.
		Collector: collector.Config{AckWait: 2 * time.Second, NATS: s.conn(natsauth.Collector)},
		Logger:    s.log.With("component", "origin"),
	}
	for _, o := range s.originOpts {
		o(&cfg)
	}
	srv, err := origin.New(cfg)
	if err != nil {
		t.Fatalf("origin.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &originNode{dir: dir, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { o.done <- srv.Run(ctx) }()
	t.Cleanup(func() { s.stopOrigin(o) })
	s.origin = o
	base := "http://" + srv.Addr()
	c, err := client.New(client.Config{BaseURL: base, Key: testAdminKey, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	s.api = &apiClient{base: base, c: c}
	s.client = c
}

// stopOrigin cancels the origin's Run and waits for it. Stopping a stopped
// origin does nothing.
func (s *system) stopOrigin(o *originNode) {
	if o.cancel == nil {
		return
	}
	o.cancel()
	o.cancel = nil
	select {
	case err := <-o.done:
		if err != nil {
			s.t.Errorf("origin Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Errorf("origin did not stop within 30s")
	}
}

// edgeNode is an edge.Server running in a goroutine.
type edgeNode struct {
	name   string
	cfg    edge.Config
	srv    *edge.Server
	base   string                 // http://host:port of the redirect listener
	url    atomic.Pointer[string] // base, for goroutines sending traffic while the edge restarts
	cancel context.CancelFunc
	done   chan error
}

func (s *system) startEdge(name, dir string, fallback bool, join ...string) *edgeNode {
	s.t.Helper()
	cfg := edge.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     dir,
		NATS:        s.conn(natsauth.Edge),
		Stream:      s.stream,
		NodeName:    name,
		GossipBind:  "127.0.0.1:0",
		GossipJoin:  join,
		GossipKeys:  [][]byte{[]byte(testGossipKey)},
		// Declare the stream unreachable soon after contact is lost, so
		// the outage tests see "stale" without waiting the 30s default.
		MaxStale: 2 * time.Second,
		// Analytics on: 127.0.0.1 is a trusted proxy, so the tests choose
		// each click's client address with X-Forwarded-For; a short flush
		// makes complete_through follow the traffic closely.
		AnalyticsKey:   []byte(testAnalyticsKey),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		ClickFlush:     testClickFlush,
		// The checks ask for unknown codes over and over from 127.0.0.1:
		// the enumeration limiter stays on, with a bucket they never
		// empty (edge TestNotFoundLimiter tests it).
		NotFoundBurst: 1 << 30,
		Logger:        s.log.With("component", name),
	}
	if fallback {
		cfg.OriginURL, cfg.OriginKey = s.api.base, testAdminKey
	}
	e := &edgeNode{name: name, cfg: cfg}
	s.runEdge(e)
	s.edges = append(s.edges, e)
	return e
}

// runEdge starts e's server (again) on its data directory.
func (s *system) runEdge(e *edgeNode) {
	t := s.t
	t.Helper()
	srv, err := edge.New(e.cfg)
	if err != nil {
		t.Fatalf("edge.New %s: %v", e.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.srv, e.cancel, e.done = srv, cancel, make(chan error, 1)
	go func() { e.done <- srv.Run(ctx) }()
	t.Cleanup(func() { s.stopEdge(e) })
	select {
	case <-srv.Started():
	case err := <-e.done:
		t.Fatalf("edge %s Run: %v", e.name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("edge %s did not start within 30s", e.name)
	}
	e.base = "http://" + srv.Addr()
	base := e.base
	e.url.Store(&base)
}

// stopEdge cancels e's Run and waits for it. Stopping a stopped edge does
// nothing.
func (s *system) stopEdge(e *edgeNode) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			s.t.Errorf("edge %s Run: %v", e.name, err)
		}
	case <-time.After(30 * time.Second):
		s.t.Errorf("edge %s did not stop within 30s", e.name)
	}
}

// waitReady waits until every edge's /readyz answers 200.
func (s *system) waitReady() {
	s.t.Helper()
	for _, e := range s.edges {
		url := "http://" + e.srv.AdminAddr() + "/readyz"
		wait.For(s.t, convergeTimeout, e.name+" ready", func() bool {
			code, _ := httpGet(url)
			return code == http.StatusOK
		})
	}
}

// lastSeq is the change stream's last sequence.
func (s *system) lastSeq() uint64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{s.ns.URL()}})
	if err != nil {
		s.t.Fatalf("dial nats: %v", err)
	}
	defer nc.Close()
	p, err := replication.NewPublisher(nc, s.stream)
	if err != nil {
		s.t.Fatalf("publisher: %v", err)
	}
	var last uint64
	wait.For(s.t, 10*time.Second, "stream info", func() bool {
		last, err = p.LastSequence(ctx)
		return err == nil
	})
	return last
}

// converge waits until every edge answers exactly as m predicts, then until
// every edge has applied the whole stream, and then checks once more
// without retrying: after apply, no edge may answer from an older state.
func (s *system) converge(m model, unknown []string) {
	s.t.Helper()
	eventually(s.t, convergeTimeout, func() error { return s.check(m, unknown) })
	last := s.lastSeq()
	for _, e := range s.edges {
		wait.For(s.t, convergeTimeout, fmt.Sprintf("%s applied through %d", e.name, last), func() bool {
			return e.srv.Status().Applied >= last
		})
	}
	if err := s.check(m, unknown); err != nil {
		s.t.Fatalf("after every edge applied the stream: %v", err)
	}
}

// check asks every edge for every code of m and every unknown code and
// reports the mismatches.
func (s *system) check(m model, unknown []string) error {
	var errs []error
	for _, e := range s.edges {
		if err := checkEdge(e.name, e.base, m, unknown); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// eventually polls fn until it returns nil, failing the test with fn's
// last error after timeout.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after %v:\n%v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// want is what the model holds for one code: the state the origin
// acknowledged last.
type want struct {
	url      string
	redirect int
	active   bool
	expires  time.Time // zero: never
}

// model maps every code the test created to its expected state.
type model map[string]want

// answer is what an edge should answer at now, and whether now is too
// close to the link's expiry to say (then the check is skipped).
func (w want) answer(now time.Time) (status int, location string, unsure bool) {
	if !w.active {
		return http.StatusGone, "", false
	}
	if !w.expires.IsZero() {
		d := w.expires.Sub(now)
		if d > -time.Second && d < time.Second {
			return 0, "", true
		}
		if d <= 0 {
			return http.StatusGone, "", false
		}
	}
	return w.redirect, w.url, false
}

// edgeClient never follows redirects: the redirect is the answer.
var edgeClient = &http.Client{
	Timeout: 5 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Transport: &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 5 * time.Second},
}

// checkEdge compares one edge's answers with the model; at most ten
// mismatches are listed.
func checkEdge(name, base string, m model, unknown []string) error {
	var bad []string
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for i, code := range codes {
		now := time.Now()
		status, loc, unsure := m[code].answer(now)
		if unsure {
			continue
		}
		if msg := checkCode(http.MethodGet, base, code, status, loc); msg != "" {
			bad = append(bad, msg)
		}
		if i%4 == 0 { // HEAD answers like GET
			if msg := checkCode(http.MethodHead, base, code, status, loc); msg != "" {
				bad = append(bad, msg)
			}
		}
	}
	for _, code := range unknown {
		if msg := checkCode(http.MethodGet, base, code, http.StatusNotFound, ""); msg != "" {
			bad = append(bad, msg)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	more := ""
	if len(bad) > 10 {
		more = fmt.Sprintf("\n  ... and %d more", len(bad)-10)
		bad = bad[:10]
	}
	return fmt.Errorf("%s: %d mismatches:\n  %s%s", name, len(bad), strings.Join(bad, "\n  "), more)
}

// checkCode asks base for code with method (GET or HEAD) and returns ""
// if the answer matches.
func checkCode(method, base, code string, status int, location string) string {
	req, err := http.NewRequest(method, base+"/"+code, nil)
	if err != nil {
		return fmt.Sprintf("%s: %v", code, err)
	}
	resp, err := edgeClient.Do(req)
	if err != nil {
		return fmt.Sprintf("%s %s: %v", method, code, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	gotLoc := resp.Header.Get("Location")
	switch {
	case resp.StatusCode != status || gotLoc != location:
		return fmt.Sprintf("%s %s: got %d %q, want %d %q", method, code, resp.StatusCode, gotLoc, status, location)
	case (status == 301 || status == 308) && !strings.Contains(resp.Header.Get("Cache-Control"), "max-age="):
		return fmt.Sprintf("%s %s: %d without a bounded Cache-Control (got %q)", method, code, status, resp.Header.Get("Cache-Control"))
	}
	return ""
}

// apiClient calls the origin API with the admin key through package
// client (the one definition of the wire types), failing the test on an
// answer it did not expect.
type apiClient struct {
	base string
	c    *client.Client
}

// wantOf converts an acknowledged link object to its model entry.
func wantOf(t testing.TB, o client.Link) want {
	t.Helper()
	if _, err := o.Record(); err != nil {
		t.Fatalf("link %s: %v", o.Code, err)
	}
	w := want{url: o.URL, redirect: o.Redirect, active: o.Status == client.StatusActive}
	if o.ExpiresAt != nil {
		w.expires = *o.ExpiresAt
	}
	return w
}

// create makes a link and returns the acknowledged object.
func (a *apiClient) create(t testing.TB, in client.CreateLink) client.Link {
	t.Helper()
	l, err := a.c.CreateLink(context.Background(), in, client.CreateOptions{})
	if err != nil {
		t.Fatalf("POST /v1/links %+v: %v", in, err)
	}
	return l
}

// get reads a link.
func (a *apiClient) get(t testing.TB, code string) client.Link {
	t.Helper()
	l, err := a.c.GetLink(context.Background(), code)
	if err != nil {
		t.Fatalf("GET /v1/links/%s: %v", code, err)
	}
	return l
}

// update changes a link and returns the acknowledged object.
func (a *apiClient) update(t testing.TB, code string, in client.UpdateLink) client.Link {
	t.Helper()
	l, err := a.c.UpdateLink(context.Background(), code, in, 0)
	if err != nil {
		t.Fatalf("PATCH /v1/links/%s %+v: %v", code, in, err)
	}
	return l
}

// disable deactivates a link and returns the acknowledged object.
func (a *apiClient) disable(t testing.TB, code string) client.Link {
	t.Helper()
	l, err := a.c.DisableLink(context.Background(), code, 0)
	if err != nil {
		t.Fatalf("DELETE /v1/links/%s: %v", code, err)
	}
	return l
}

func httpGet(url string) (int, string) {
	resp, err := edgeClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// testLogger writes warnings and errors (everything with
// LINKPOP_E2E_LOG=debug) to the test log until the test's cleanups are
// done; the servers may still log while they stop.
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("LINKPOP_E2E_LOG") == "debug" {
		level = slog.LevelDebug
	}
	w := &testWriter{t: t}
	t.Cleanup(w.close) // registered first, so it runs after every server stopped
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}

// edgeBinary is bin/edge, built once by TestMain for the tests that need
// an edge as a child process.
var edgeBinary string

func buildEdge() (dir string, err error) {
	dir, err = os.MkdirTemp("", "linkpop-e2e-")
	if err != nil {
		return "", err
	}
	edgeBinary = filepath.Join(dir, "edge")
	out, err := runGo("build", "-o", edgeBinary, "github.com/linkpop/linkpop/cmd/edge")
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build cmd/edge: %v\n%s", err, out)
	}
	return dir, nil
}
