//go:build unix

package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
)

// The HA tests run bin/origin as child processes with -ha and -ack
// replicated against an in-process three-server JetStream cluster (R3
// streams and lease bucket), with short lease settings so a takeover
// takes seconds: TTL 3s, renewal every 500ms, writes stopped 2s after the
// last renewal.
var haLogLevel = cmpOr(os.Getenv("LINKPOP_HA_LOG"), "warn")

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

const haAdminKey = "lpk_ha_test_admin_key_0123456789"

// haLeaseArgs are the lease flags of the test origins: the short test
// settings, or with LINKPOP_HA_DEFAULT_LEASE=1 none (the defaults: TTL
// 15s, renewal every 2s, writes stopped 10s after the last renewal), to
// measure the takeover time a deployment gets.
func haLeaseArgs() []string {
	if os.Getenv("LINKPOP_HA_DEFAULT_LEASE") == "1" {
		return nil
	}
	return []string{"-lease-ttl", "3s", "-lease-renew", "500ms", "-lease-stop-after", "2s"}
}

type haHarness struct {
	t       *testing.T
	bin     string
	cluster *natstest.Cluster
	root    string
	client  *http.Client

	mu sync.Mutex
	// acked maps the URL of every create answered 201 to its code.
	acked map[string]string
	// idem maps an Idempotency-Key to the code its first 201 returned.
	idem map[string]string
	// sent holds every URL a create was sent with, answered or not.
	sent map[string]bool
}

type haOrigin struct {
	name, dir  string
	api, admin string
	p          *proctest.Process
}

func newHAHarness(t *testing.T) *haHarness {
	return newHAHarnessWith(t, natstest.StartCluster(t, 3))
}

// newHAHarnessWith is newHAHarness on cluster c.
func newHAHarnessWith(t *testing.T, c *natstest.Cluster) *haHarness {
	h := &haHarness{
		t:       t,
		bin:     proctest.Build(t, "github.com/linkpop/linkpop/cmd/origin"),
		cluster: c,
		root:    t.TempDir(),
		client: &http.Client{
			Timeout:   20 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true},
		},
		acked: map[string]string{},
		idem:  map[string]string{},
		sent:  map[string]bool{},
	}
	t.Cleanup(h.client.CloseIdleConnections)
	return h
}

func (h *haHarness) start(name string, extra ...string) *haOrigin {
	h.t.Helper()
	api, admin := proctest.FreeAddr(h.t), proctest.FreeAddr(h.t)
	o := &haOrigin{name: name, dir: filepath.Join(h.root, name), api: "http://" + api, admin: "http://" + admin}
	args := append([]string{
		"-listen", api, "-admin", admin, "-data", o.dir,
		"-nats", strings.Join(h.cluster.URLs(), ","), "-stream-replicas", "3",
		"-ha", "-ack", "replicated", "-no-collector", "-log-level", haLogLevel,
	}, append(haLeaseArgs(), extra...)...)
	o.p = proctest.Start(h.t, proctest.Spec{Name: "origin " + name, Path: h.bin, Quiet: true, Args: args,
		Env: []string{"LINKPOP_ADMIN_KEY=" + haAdminKey}})
	return o
}

// role reads the origin's /readyz: its HTTP status and role.
func (h *haHarness) role(o *haOrigin) (int, string) {
	resp, err := h.client.Get(o.admin + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var rd struct {
		Role string `json:"role"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rd)
	return resp.StatusCode, rd.Role
}

func (h *haHarness) waitRole(o *haOrigin, want string, timeout time.Duration) {
	h.t.Helper()
	wait.For(h.t, timeout, "origin "+o.name+" "+want, func() bool {
		if done, err := o.p.Exited(); done {
			h.t.Fatalf("origin %s exited: %v", o.name, err)
		}
		st, role := h.role(o)
		return role == want && (st == http.StatusOK) == (want == "leader")
	})
}

// do sends one request with the admin key (or key) and decodes a link or
// error answer.
func (h *haHarness) do(ctx context.Context, o *haOrigin, key, method, path string, body any, hdr map[string]string) (int, client.Link, client.ErrorObject, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, o.api+path, rd)
	if err != nil {
		return 0, client.Link{}, client.ErrorObject{}, err
	}
	if key == "" {
		key = haAdminKey
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, client.Link{}, client.ErrorObject{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, client.Link{}, client.ErrorObject{}, err
	}
	var l client.Link
	var eb client.ErrorBody
	if resp.StatusCode < 300 {
		err = json.Unmarshal(b, &l)
	} else {
		err = json.Unmarshal(b, &eb)
	}
	return resp.StatusCode, l, eb.Error, err
}

// create sends a create of url (with idemKey if not ""), records what was
// answered 201 and reports the status (0 for no answer).
func (h *haHarness) create(ctx context.Context, o *haOrigin, url, idemKey string) int {
	h.mu.Lock()
	h.sent[url] = true
	h.mu.Unlock()
	var hdr map[string]string
	if idemKey != "" {
		hdr = map[string]string{"Idempotency-Key": idemKey}
	}
	st, l, _, err := h.do(ctx, o, "", http.MethodPost, "/v1/links", map[string]string{"url": url}, hdr)
	if err != nil {
		return 0
	}
	if st == http.StatusCreated {
		h.mu.Lock()
		defer h.mu.Unlock()
		if prev, ok := h.acked[url]; ok && prev != l.Code {
			h.t.Errorf("url %s answered 201 with code %s and earlier %s: two links for one idempotent create", url, l.Code, prev)
		}
		if l.URL != url {
			h.t.Errorf("create of %s answered 201 with url %s", url, l.URL)
		}
		h.acked[url] = l.Code
		if idemKey != "" {
			if prev, ok := h.idem[idemKey]; ok && prev != l.Code {
				h.t.Errorf("Idempotency-Key %s answered %s and earlier %s", idemKey, l.Code, prev)
			}
			h.idem[idemKey] = l.Code
		}
	}
	return st
}

// load runs writers creating links against o until ctx ends; it returns
// the idempotent creates that got no 201 (to retry after the failover).
func (h *haHarness) load(ctx context.Context, o *haOrigin, tag string, writers int) []string {
	var mu sync.Mutex
	var unanswered []string
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				url := fmt.Sprintf("https://example.com/ha/%s/%d/%d", tag, w, i)
				key := ""
				if i%2 == 0 {
					key = fmt.Sprintf("%s-%d-%d", tag, w, i)
				}
				if st := h.create(ctx, o, url, key); st != http.StatusCreated && key != "" {
					mu.Lock()
					unanswered = append(unanswered, key+" "+url)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return unanswered
}

// retry sends each unanswered idempotent create again to o: it must be
// answered 201, with the code of an earlier 201 if there was one.
func (h *haHarness) retry(o *haOrigin, unanswered []string) {
	h.t.Helper()
	for _, ku := range unanswered {
		key, url, _ := strings.Cut(ku, " ")
		ok := false
		for attempt := 0; attempt < 50 && !ok; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			ok = h.create(ctx, o, url, key) == http.StatusCreated
			cancel()
			if !ok {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if !ok {
			h.t.Fatalf("idempotent create %s never answered 201 on the new leader", key)
		}
	}
}

// checkAcked reads every acknowledged link on o: same code, same URL.
func (h *haHarness) checkAcked(o *haOrigin) {
	h.t.Helper()
	h.mu.Lock()
	acked := make(map[string]string, len(h.acked))
	for u, c := range h.acked {
		acked[u] = c
	}
	h.mu.Unlock()
	for u, c := range acked {
		st, l, e, err := h.do(context.Background(), o, "", http.MethodGet, "/v1/links/"+c, nil, nil)
		if err != nil || st != http.StatusOK || l.URL != u {
			h.t.Fatalf("acknowledged link %s (%s) on %s: status %d %v %v, url %q: an acknowledged write was lost", c, u, o.name, st, e, err, l.URL)
		}
	}
}

// table lists every link on o: URL → codes.
func (h *haHarness) table(o *haOrigin) map[string][]string {
	h.t.Helper()
	out := map[string][]string{}
	cursor := ""
	for {
		q := "/v1/links?limit=1000"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		req, _ := http.NewRequest(http.MethodGet, o.api+q, nil)
		req.Header.Set("Authorization", "Bearer "+haAdminKey)
		resp, err := h.client.Do(req)
		if err != nil {
			h.t.Fatal(err)
		}
		var page client.ListPage
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			h.t.Fatalf("list: %d %v", resp.StatusCode, err)
		}
		for _, l := range page.Links {
			out[l.URL] = append(out[l.URL], l.Code)
		}
		if page.NextCursor == nil || *page.NextCursor == "" {
			return out
		}
		cursor = *page.NextCursor
	}
}

// checkTable: every acknowledged create is in o's table under its code,
// nothing is there that was never sent, and no URL has two links.
func (h *haHarness) checkTable(o *haOrigin) {
	h.t.Helper()
	tab := h.table(o)
	h.mu.Lock()
	defer h.mu.Unlock()
	for u, c := range h.acked {
		if !slices.Contains(tab[u], c) {
			h.t.Errorf("acknowledged %s (%s) missing from %s's table", c, u, o.name)
		}
	}
	for u, codes := range tab {
		if !h.sent[u] {
			h.t.Errorf("link %v for %s in the table was never created", codes, u)
		}
		if len(codes) > 1 && strings.Contains(u, "/ha/") {
			// Only idempotent creates are retried, and each URL is sent
			// by one create (and its retries).
			h.t.Errorf("url %s has %d links %v", u, len(codes), codes)
		}
	}
}

func (h *haHarness) mintKey(o *haOrigin) (id, secret string) {
	h.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": "ha", "scopes": []string{"links:read", "links:write"}})
	req, _ := http.NewRequest(http.MethodPost, o.api+"/v1/keys", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+haAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var k client.Key
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != http.StatusCreated {
		h.t.Fatalf("mint key: %d %v", resp.StatusCode, err)
	}
	return k.ID, k.Key
}

// keyWorks reports whether secret authenticates on o (a read answered
// 404 for an unknown code, not 401).
func (h *haHarness) keyWorks(o *haOrigin, secret string) bool {
	h.t.Helper()
	st, _, _, err := h.do(context.Background(), o, secret, http.MethodGet, "/v1/links/nosuchcode", nil, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if st != http.StatusNotFound && st != http.StatusUnauthorized {
		h.t.Fatalf("key check answered %d", st)
	}
	return st == http.StatusNotFound
}

// TestFailover: concurrent creates (half with an Idempotency-Key) against
// the leader; SIGKILL the leader and delete its data directory; the
// standby takes over; every create answered 201 is readable on the new
// leader with its code and URL, and is in the change stream; idempotent
// creates that got no answer are retried on the new leader and never make
// two links. A fresh standby joins for the next trial. One trial also
// stops the change stream's leader server under load. Keys minted and
// revoked on the first leader keep working (and stay revoked) on every
// later one. At the end both origins are killed, their data deleted, and
// `origin restore` rebuilds a store from the streams: the table and keys
// are as acknowledged.
//
// LINKPOP_FAILOVER_TRIALS sets the number of failovers (default 10;
// `make failover-soak` runs 200).
func TestFailover(t *testing.T) {
	trials := 10
	if v := os.Getenv("LINKPOP_FAILOVER_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LINKPOP_FAILOVER_TRIALS=%q", v)
		}
		trials = n
	}
	h := newHAHarness(t)
	leader := h.start("o0")
	h.waitRole(leader, "leader", 120*time.Second)
	standby := h.start("o1")
	h.waitRole(standby, "standby", 30*time.Second)

	_, keep := h.mintKey(leader)
	revokedID, revoked := h.mintKey(leader)
	if st, _, e, err := h.do(context.Background(), leader, "", http.MethodDelete, "/v1/keys/"+revokedID, nil, nil); err != nil || st != http.StatusOK {
		t.Fatalf("revoke: %d %v %v", st, e, err)
	}
	if !h.keyWorks(leader, keep) || h.keyWorks(leader, revoked) {
		t.Fatal("keys on the first leader: kept key refused or revoked key accepted")
	}
	// A standby that gets a write answers not_leader and names the leader
	// (once it has read the lease's holder: it may answer before that,
	// without the name).
	wait.For(t, 30*time.Second, "the standby to answer a write with not_leader naming "+leader.api, func() bool {
		st, _, e, _ := h.do(context.Background(), standby, "", http.MethodPost, "/v1/links", map[string]string{"url": "https://example.com/standby"}, nil)
		if st != http.StatusServiceUnavailable || e.Code != "not_leader" {
			t.Fatalf("write to the standby: %d %+v, want 503 not_leader", st, e)
		}
		return e.Leader == leader.api
	})

	// Every API answer names the role, for tools given several origins.
	for o, want := range map[*haOrigin]string{leader: "leader", standby: "standby"} {
		resp, err := h.client.Get(o.api + "/v1/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Linkpop-Role"); got != want {
			t.Fatalf("%s answers with Linkpop-Role %q, want %q", o.name, got, want)
		}
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var takeovers []time.Duration
	for trial := range trials {
		ctx, stop := context.WithCancel(context.Background())
		var unanswered []string
		done := make(chan struct{})
		go func() {
			defer close(done)
			unanswered = h.load(ctx, leader, "t"+strconv.Itoa(trial), 8)
		}()
		// Let some creates through, then kill the leader mid-flight.
		h.waitAcked(len(h.snapshotAcked()) + 20 + rng.IntN(200))
		if trial == 2 {
			// A NATS server dies under load: the stream elects another
			// leader and writes go on.
			killed := h.cluster.KillStreamLeader(t, "LINKPOP_LINKS")
			n := len(h.snapshotAcked())
			h.waitAcked(n + 50)
			h.cluster.Restart(t, killed)
		}
		leader.p.Kill()
		killedAt := time.Now()
		if err := os.RemoveAll(leader.dir); err != nil {
			t.Fatal(err)
		}
		stop()
		<-done
		h.waitRole(standby, "leader", 60*time.Second)
		// The first write the new leader accepts ends the takeover.
		for i := 0; ; i++ {
			cctx, c := context.WithTimeout(context.Background(), 15*time.Second)
			st := h.create(cctx, standby, fmt.Sprintf("https://example.com/ha/first/%d/%d", trial, i), "")
			c()
			if st == http.StatusCreated {
				break
			}
			if i > 200 {
				t.Fatalf("trial %d: the new leader accepts no write", trial)
			}
			time.Sleep(50 * time.Millisecond)
		}
		takeovers = append(takeovers, time.Since(killedAt))
		h.retry(standby, unanswered)
		h.checkAcked(standby)
		t.Logf("trial %d: takeover %v, %d acknowledged creates so far, none lost", trial, takeovers[len(takeovers)-1].Round(time.Millisecond), len(h.snapshotAcked()))
		if !h.keyWorks(standby, keep) || h.keyWorks(standby, revoked) {
			t.Fatalf("trial %d: keys after failover: kept key refused or revoked key accepted", trial)
		}
		leader, standby = standby, h.start("o"+strconv.Itoa(trial+2))
		h.waitRole(standby, "standby", 30*time.Second)
	}
	h.checkTable(leader)
	stream := streamState(t, h.cluster.URL(0))
	for u, c := range h.snapshotAcked() {
		if ch, ok := stream[c]; !ok || ch.Record.URL != u {
			t.Errorf("acknowledged %s (%s) not in the change stream", c, u)
		}
	}
	slices.Sort(takeovers)
	t.Logf("%d failovers, %d acknowledged creates, none lost; takeover (kill → first accepted write) p50 %v, max %v",
		trials, len(h.snapshotAcked()), takeovers[len(takeovers)/2].Round(time.Millisecond), takeovers[len(takeovers)-1].Round(time.Millisecond))

	// Disaster: both origins and their disks are gone.
	leader.p.Kill()
	standby.p.Kill()
	for _, o := range []*haOrigin{leader, standby} {
		if err := os.RemoveAll(o.dir); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(h.root, "restored")
	out, err := exec.Command(h.bin, "restore", "-data", dir, "-nats", strings.Join(h.cluster.URLs(), ","), "-stream-replicas", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("origin restore: %v\n%s", err, out)
	}
	t.Logf("origin restore: %s", bytes.TrimSpace(out))
	api, admin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	restored := &haOrigin{name: "restored", dir: dir, api: "http://" + api, admin: "http://" + admin}
	restored.p = proctest.Start(t, proctest.Spec{Name: "origin restored", Path: h.bin, Quiet: true,
		Args: append([]string{"-listen", api, "-admin", admin, "-data", dir, "-nats", strings.Join(h.cluster.URLs(), ","),
			"-stream-replicas", "3", "-ha", "-ack", "replicated", "-no-collector", "-log-level", haLogLevel},
			haLeaseArgs()...),
		Env: []string{"LINKPOP_ADMIN_KEY=" + haAdminKey}})
	h.waitRole(restored, "leader", 60*time.Second)
	h.checkAcked(restored)
	h.checkTable(restored)
	if !h.keyWorks(restored, keep) || h.keyWorks(restored, revoked) {
		t.Fatal("keys after restore: kept key refused or revoked key accepted")
	}
}

func (h *haHarness) snapshotAcked() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]string, len(h.acked))
	for u, c := range h.acked {
		out[u] = c
	}
	return out
}

// waitAcked waits until n creates were answered 201.
func (h *haHarness) waitAcked(n int) {
	h.t.Helper()
	wait.For(h.t, 60*time.Second, fmt.Sprintf("%d acknowledged creates", n), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.acked) >= n
	})
}

// TestFencingSIGSTOP: the leader is frozen (SIGSTOP) under load until the
// standby has taken over, then thawed. Whatever it does after, it lands
// nothing: every create answered 201 by either origin is on the new
// leader, nothing else is (beyond creates never answered), and the old
// leader steps down to standby, naming the new leader in its not_leader
// answers.
func TestFencingSIGSTOP(t *testing.T) {
	h := newHAHarness(t)
	a := h.start("a")
	h.waitRole(a, "leader", 120*time.Second)
	b := h.start("b")
	h.waitRole(b, "standby", 30*time.Second)

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.load(ctx, a, "a", 8)
	}()
	h.waitAcked(100)
	if err := syscall.Kill(a.p.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	h.waitRole(b, "leader", 60*time.Second)
	bctx, bstop := context.WithCancel(context.Background())
	bdone := make(chan struct{})
	go func() {
		defer close(bdone)
		h.load(bctx, b, "b", 4)
	}()
	n := len(h.snapshotAcked())
	h.waitAcked(n + 50)
	if err := syscall.Kill(a.p.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	h.waitRole(a, "standby", 60*time.Second)
	stop()
	<-done
	h.waitAcked(len(h.snapshotAcked()) + 50)
	bstop()
	<-bdone
	st, _, e, err := h.do(context.Background(), a, "", http.MethodPost, "/v1/links", map[string]string{"url": "https://example.com/deposed"}, nil)
	if err != nil || st != http.StatusServiceUnavailable || e.Code != "not_leader" {
		t.Fatalf("write to the deposed leader: %d %+v %v, want 503 not_leader", st, e, err)
	}
	h.checkAcked(b)
	h.checkTable(b)
	// The deposed leader follows the new one: it catches up to the same
	// table.
	wait.For(t, 30*time.Second, "the deposed leader to hold the new leader's table", func() bool {
		return len(h.table(a)) == len(h.table(b))
	})
	h.checkAcked(a)
}
