package regions

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

const (
	adminKey     = "regions-admin-key-0123456789abcdef"
	analyticsKey = "regions-analytics-key-fedcba98765"
	// defaultCut is the least time eu stays cut off; LINKPOP_REGIONS_CUT
	// (a duration, e.g. 150s for a long partition) overrides it.
	defaultCut = 12 * time.Second
	// maxStale is the edges' -max-stale: a strict link is refused this
	// long after the edge last proved it had everything.
	maxStale = 3 * time.Second
	// browser is the visitors' User-Agent (not a bot, so every GET
	// redirect is a click).
	browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)

// Fixed ports: every host is a namespace of its own.
const (
	natsPort       = 4222
	leafPort       = 7422
	monitorPort    = 8222
	originPort     = 8081
	originAdmin    = 9081
	edgePortBase   = 8080 // edge i: 8080+10i, admin 9080+10i
	gossipPortBase = 7946 // edge i: 7946+10i
)

// region is one region host: its leaf server and edges.
type region struct {
	name  string // host and JetStream domain
	ip    string
	edges []*edgeProc
	nats  *proctest.Process
	conf  string // the leaf server's configuration file
}

type edgeProc struct {
	name        string
	base, admin string // http://ip:port
	p           *proctest.Process
}

// TestRegionsPartition runs the fleet across three hosts (network
// namespaces): the origin's host with the hub JetStream, and regions eu
// and us, each a leaf node (its own JetStream domain) with a mirror of the
// change stream and a regional click stream, and two edges reading and
// writing them locally. It cuts eu off with an nftables drop in both
// directions, keeps creating, updating and deactivating links, heals the
// cut and checks:
//   - eu's edges kept serving every link they held (relaxed links with
//     their pre-cut target, strict ones refused 503 + Retry-After once
//     the proof of freshness is older than -max-stale), reported
//     themselves stale in /status while /readyz stayed 200 "stale";
//   - us's edges followed every change during the cut;
//   - after the heal eu's edges converged (digest equal to the origin's)
//     within 10 s, and are fresh again;
//   - every click made on any edge, during the cut included, is counted
//     exactly once by the origin's collector.
//
// It logs the propagation delay origin → edge in both regions, from the
// creator's 201 to the first redirect at the edge (p50/p99; measured, not
// asserted).
func TestRegionsPartition(t *testing.T) {
	requireLab(t)
	start := time.Now()
	bins := buildAll(t, "github.com/nats-io/nats-server/v2", "github.com/linkpop/linkpop/cmd/origin", "github.com/linkpop/linkpop/cmd/edge")
	natsBin, originBin, edgeBin := bins[0], bins[1], bins[2]
	t.Logf("built binaries in %v", time.Since(start).Round(time.Millisecond))

	l := newLab(t)
	hubIP := l.addHost("origin", 1)
	regions := []*region{{name: "eu", ip: l.addHost("eu", 2)}, {name: "us", ip: l.addHost("us", 3)}}

	// NATS: the hub and one leaf server per region, each with a user per
	// role; the leaves dial the hub's leafnode port as user "leaf".
	pw := map[natsauth.Role]string{}
	var users []natsauth.User
	for _, r := range natsauth.Roles {
		pw[r] = string(r) + "-" + rand.Text()
		users = append(users, natsauth.User{Role: r, Password: pw[r]})
	}
	leafPW := "leaf-" + rand.Text()
	dir := t.TempDir()
	hubConf := fmt.Sprintf(`server_name: hub
listen: %[1]s:%[2]d
http: %[1]s:%[3]d
max_payload: 1MB
ping_interval: "1s"
ping_max: 3
jetstream { store_dir: %[4]q, domain: hub }
leafnodes {
  listen: %[1]s:%[5]d
  no_advertise: true
  authorization { user: leaf, password: %[6]q }
}
%[7]s`, hubIP, natsPort, monitorPort, filepath.Join(dir, "hub"), leafPort, leafPW,
		natsauth.AuthorizationConfig(users, natsauth.Subjects{}))
	startNATS(t, l, natsBin, "origin", hubIP, writeConf(t, hubConf))
	for _, r := range regions {
		rc := replication.RegionConfig{Domain: r.name}
		conf := fmt.Sprintf(`server_name: %[1]s
listen: 0.0.0.0:%[2]d
http: %[3]s:%[4]d
max_payload: 1MB
ping_interval: "1s"
ping_max: 3
jetstream { store_dir: %[5]q, domain: %[1]s }
leafnodes {
  remotes: [ { url: "nats-leaf://leaf:%[6]s@%[7]s:%[8]d" } ]
}
%[9]s`, r.name, natsPort, r.ip, monitorPort, filepath.Join(dir, r.name), url.QueryEscape(leafPW), hubIP, leafPort,
			natsauth.AuthorizationConfig(users, natsauth.Subjects{ClickPrefix: rc.ClickStream().SubjectPrefix}))
		r.conf = writeConf(t, conf)
		r.nats = startNATS(t, l, natsBin, r.name, r.ip, r.conf)
	}

	// The operator's steps, with the origin binary's subcommands: the
	// hub's streams, then each region's mirror and click stream (origin
	// region waits for the hub to answer through the leaf), then the
	// hub's click stream sourcing the regions' (origin streams -regions).
	operator := func(host string, args ...string) {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns(host), originBin}, args...)...)
		cmd.Env = append(os.Environ(), "LINKPOP_NATS_PASSWORD="+pw[natsauth.Operator])
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("origin %s on %s: %v\n%s", args[0], host, err, out)
		}
		t.Logf("origin %s on %s: %s", args[0], host, strings.TrimSpace(string(out)))
	}
	hubURL := fmt.Sprintf("nats://%s:%d", hubIP, natsPort)
	operator("origin", "streams", "-nats", hubURL, "-nats-user", string(natsauth.Operator), "-timeout", "1m")
	for _, r := range regions {
		operator(r.name, "region", "-domain", r.name, "-nats", fmt.Sprintf("nats://127.0.0.1:%d", natsPort), "-nats-user", string(natsauth.Operator), "-timeout", "1m")
	}
	operator("origin", "streams", "-nats", hubURL, "-nats-user", string(natsauth.Operator), "-timeout", "1m", "-regions", "eu,us")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Logf("streams and regions set up at +%v", time.Since(start).Round(time.Millisecond))

	// The origin, on the hub's host; its collector counts the clicks.
	originBase := fmt.Sprintf("http://%s:%d", hubIP, originPort)
	runIn(t, l, "origin", "origin", originBin, []string{
		"-listen", fmt.Sprintf("%s:%d", hubIP, originPort),
		"-admin", fmt.Sprintf("%s:%d", hubIP, originAdmin),
		"-data", filepath.Join(dir, "origin"),
		"-nats", fmt.Sprintf("nats://%s:%d", hubIP, natsPort), "-nats-user", string(natsauth.Operator),
		"-base-url", "http://sho.rt/",
	}, "LINKPOP_NATS_PASSWORD="+pw[natsauth.Operator], "LINKPOP_ADMIN_KEY="+adminKey)
	httpc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	waitHTTP(t, httpc, fmt.Sprintf("http://%s:%d/readyz", hubIP, originAdmin), 60*time.Second)
	api, err := client.New(client.Config{BaseURL: originBase, Key: adminKey, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}

	// Two edges per region, on the region's host, reading its mirror and
	// publishing clicks to its click stream, both through the local leaf.
	for _, r := range regions {
		rc := replication.RegionConfig{Domain: r.name}
		for i := range 2 {
			e := &edgeProc{
				name:  fmt.Sprintf("%s-%d", r.name, i+1),
				base:  fmt.Sprintf("http://%s:%d", r.ip, edgePortBase+10*i),
				admin: fmt.Sprintf("http://%s:%d", r.ip, edgePortBase+1000+10*i),
			}
			e.p = runIn(t, l, r.name, e.name, edgeBin, []string{
				"-listen", strings.TrimPrefix(e.base, "http://"),
				"-admin", strings.TrimPrefix(e.admin, "http://"),
				"-data", filepath.Join(dir, e.name),
				"-node", e.name,
				"-nats", fmt.Sprintf("nats://127.0.0.1:%d", natsPort), "-nats-user", string(natsauth.Edge),
				// The hub's stream, read while the region's
				// server cannot be (the leaf-down phase).
				"-hub-nats", hubURL,
				"-max-stale", maxStale.String(),
				"-click-subject", rc.ClickStream().SubjectPrefix,
				"-click-flush", "200ms",
				"-no-notfound-limit",
				// The region's two edges are one PoP: when the
				// whole region is cut, neither is behind the
				// other, so both stay in rotation as "stale".
				"-gossip-bind", fmt.Sprintf("%s:%d", r.ip, gossipPortBase+10*i),
				"-gossip-join", fmt.Sprintf("%s:%d", r.ip, gossipPortBase),
			}, "LINKPOP_NATS_PASSWORD="+pw[natsauth.Edge], "LINKPOP_ANALYTICS_KEY="+analyticsKey)
			r.edges = append(r.edges, e)
		}
	}
	for _, r := range regions {
		for _, e := range r.edges {
			waitHTTP(t, httpc, e.admin+"/readyz", 60*time.Second)
		}
	}
	t.Logf("origin and 4 edges ready at +%v", time.Since(start).Round(time.Millisecond))
	eu, us := regions[0], regions[1]
	all := append(slices.Clone(eu.edges), us.edges...)

	// Before the cut: links (every fourth strict), each create timed to
	// its first redirect at every edge.
	var (
		propMu sync.Mutex
		prop   = map[string][]time.Duration{}
	)
	var before []client.Link
	for i := range 40 {
		in := client.CreateLink{URL: fmt.Sprintf("https://example.com/before/%d", i)}
		if i%4 == 0 {
			in.Freshness = "strict"
		}
		lk, err := api.CreateLink(ctx, in, client.CreateOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		acked := time.Now()
		before = append(before, lk)
		var wg sync.WaitGroup
		for _, e := range all {
			wg.Go(func() {
				d, ok := firstRedirect(httpc, e.base+"/"+lk.Code, acked, 20*time.Second)
				if !ok {
					t.Errorf("%s: %s not served within 20s of its create", e.name, lk.Code)
					return
				}
				propMu.Lock()
				prop[e.name] = append(prop[e.name], d)
				propMu.Unlock()
			})
		}
		wg.Wait()
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, r := range regions {
		for i, e := range r.edges {
			peer := r.edges[1-i].name
			waitFor(t, 30*time.Second, e.name+" sees "+peer+" in its PoP", func() bool {
				for _, m := range edgeStatus(t, httpc, e).Members {
					if m.Name == peer && !m.Self {
						return true
					}
				}
				return false
			})
		}
	}
	for _, e := range all {
		s := edgeStatus(t, httpc, e)
		if s.Stale || !s.Ready {
			t.Fatalf("%s before the cut: stale %v ready %v reason %q", e.name, s.Stale, s.Ready, s.Reason)
		}
	}
	relaxed := func(ls []client.Link) []client.Link {
		return slices.DeleteFunc(slices.Clone(ls), func(lk client.Link) bool { return lk.Freshness == "strict" })
	}
	hot := relaxed(before)[:6]
	for _, e := range all {
		for _, lk := range hot {
			click(t, httpc, e, lk.Code, 3)
		}
	}
	// Strict links are served while the edges can prove freshness.
	for _, e := range eu.edges {
		if code, _ := get(httpc, e.base+"/"+before[0].Code); code != http.StatusFound {
			t.Fatalf("%s: strict link %s before the cut answered %d, want 302", e.name, before[0].Code, code)
		}
	}

	// The cut.
	cutFor := defaultCut
	if v := os.Getenv("LINKPOP_REGIONS_CUT"); v != "" {
		if cutFor, err = time.ParseDuration(v); err != nil {
			t.Fatalf("LINKPOP_REGIONS_CUT: %v", err)
		}
	}
	for _, r := range regions {
		if !leafConnected(httpc, hubIP, r.ip) {
			t.Fatalf("the hub's /leafz does not list %s's leaf connection before the cut", r.name)
		}
	}
	l.cut("eu")
	cutAt := time.Now()
	t.Logf("cut eu at +%v:\n%s", time.Since(start).Round(time.Millisecond), l.cutRules("eu"))
	// Changes during the cut: new links, updates and deactivations of
	// links eu holds (relaxed and strict).
	var during []client.Link
	for i := range 30 {
		lk, err := api.CreateLink(ctx, client.CreateLink{URL: fmt.Sprintf("https://example.com/during/%d", i)}, client.CreateOptions{})
		if err != nil {
			t.Fatalf("create during the cut: %v", err)
		}
		during = append(during, lk)
	}
	updated, disabled := before[1:11], before[20:32]
	for _, lk := range updated {
		u := "https://example.org/updated/" + lk.Code
		if _, err := api.UpdateLink(ctx, lk.Code, client.UpdateLink{URL: &u}, 0); err != nil {
			t.Fatalf("update during the cut: %v", err)
		}
	}
	for _, lk := range disabled {
		if _, err := api.DisableLink(ctx, lk.Code, 0); err != nil {
			t.Fatalf("disable during the cut: %v", err)
		}
	}
	// eu's edges: stale within -max-stale (and a poll or two), /readyz
	// still 200, strict links refused once the proof is too old.
	for _, e := range eu.edges {
		waitFor(t, 30*time.Second, e.name+" reports stale", func() bool { return edgeStatus(t, httpc, e).Stale })
		s := edgeStatus(t, httpc, e)
		if !s.Ready || s.Reason != "stale" {
			t.Errorf("%s cut off: ready %v reason %q, want ready and \"stale\"", e.name, s.Ready, s.Reason)
		}
		if code, _ := get(httpc, e.admin+"/readyz"); code != http.StatusOK {
			t.Errorf("%s cut off: /readyz %d, want 200 (a stale edge stays in rotation)", e.name, code)
		}
		t.Logf("%s stale %.1fs after the cut: proof_age %.1fs, seconds_since_contact %.1fs", e.name, time.Since(cutAt).Seconds(), s.ProofAgeSeconds, s.SecondsSinceContact)
	}
	for _, e := range eu.edges {
		waitFor(t, 30*time.Second, e.name+" refuses strict links", func() bool {
			code, h := get(httpc, e.base+"/"+before[0].Code)
			return code == http.StatusServiceUnavailable && h.Get("Retry-After") != ""
		})
		s := edgeStatus(t, httpc, e)
		if s.ProofAgeSeconds < maxStale.Seconds() {
			t.Errorf("%s refused a strict link with a proof %.1fs old, under -max-stale %v", e.name, s.ProofAgeSeconds, maxStale)
		}
	}
	// us is not cut: it follows every change, strict links included.
	for _, e := range us.edges {
		waitFor(t, 30*time.Second, e.name+" converges during eu's cut", func() bool { return digestEqual(ctx, t, api, httpc, e) })
		if code, _ := get(httpc, e.base+"/"+before[0].Code); code != http.StatusFound {
			t.Errorf("%s (not cut): strict link answered %d, want 302", e.name, code)
		}
	}
	// Every link eu held, it still serves as it held it: relaxed links
	// with their old target (updated and deactivated ones included),
	// strict ones refused; links created during the cut are unknown.
	for _, e := range eu.edges {
		for _, lk := range before {
			code, h := get(httpc, e.base+"/"+lk.Code)
			want := http.StatusFound
			if lk.Freshness == "strict" {
				want = http.StatusServiceUnavailable
			}
			if code != want || (want == http.StatusFound && h.Get("Location") != lk.URL) {
				t.Errorf("%s cut off: %s (%s) answered %d %q, want %d %q", e.name, lk.Code, lk.Freshness, code, h.Get("Location"), want, lk.URL)
			}
		}
		if code, _ := get(httpc, e.base+"/"+during[0].Code); code != http.StatusNotFound {
			t.Errorf("%s cut off: a link created during the cut answered %d, want 404", e.name, code)
		}
		for _, lk := range hot {
			click(t, httpc, e, lk.Code, 5)
		}
	}
	for _, e := range us.edges {
		for _, lk := range hot {
			click(t, httpc, e, lk.Code, 2)
		}
	}
	for _, e := range eu.edges {
		if s := edgeStatus(t, httpc, e); s.Clicks == nil || s.Clicks.PendingBatches > 0 && s.Clicks.LagSeconds > 10 {
			t.Errorf("%s cut off: click journal %+v: batches should be acknowledged by the region's stream", e.name, s.Clicks)
		}
	}
	// Keep changing links and clicking until the cut has lasted cutFor
	// and the hub has dropped eu's leaf connection (the pings, 1s x 3,
	// noticed the silence): a partition, not a blip TCP rides out.
	changes := len(during) + len(updated) + len(disabled)
	for i := 0; time.Since(cutAt) < cutFor || leafConnected(httpc, hubIP, eu.ip); i++ {
		if time.Since(cutAt) > cutFor+60*time.Second {
			t.Fatalf("the hub still lists eu's leaf connection %v into the cut", time.Since(cutAt))
		}
		lk, err := api.CreateLink(ctx, client.CreateLink{URL: fmt.Sprintf("https://example.com/cut/%d", i)}, client.CreateOptions{})
		if err != nil {
			t.Fatalf("create during the cut: %v", err)
		}
		changes++
		switch i % 3 {
		case 1:
			changes++
			u := lk.URL + "/v2"
			if _, err := api.UpdateLink(ctx, lk.Code, client.UpdateLink{URL: &u}, 0); err != nil {
				t.Fatalf("update during the cut: %v", err)
			}
		case 2:
			changes++
			if _, err := api.DisableLink(ctx, lk.Code, 0); err != nil {
				t.Fatalf("disable during the cut: %v", err)
			}
		}
		for _, e := range all {
			click(t, httpc, e, hot[i%len(hot)].Code, 1)
		}
		time.Sleep(200 * time.Millisecond) // pacing of the workload, not a wait for a condition
	}
	for _, e := range eu.edges {
		if s := edgeStatus(t, httpc, e); !s.Stale || s.Reason != "stale" {
			t.Errorf("%s at the end of the cut: stale %v reason %q", e.name, s.Stale, s.Reason)
		}
	}
	t.Logf("cut lasted %v with %d changes made during it; the hub had dropped eu's leaf connection", time.Since(cutAt).Round(time.Millisecond), changes)

	// The heal.
	l.heal("eu")
	healAt := time.Now()
	for _, e := range eu.edges {
		waitFor(t, 60*time.Second, e.name+" converges after the heal", func() bool { return digestEqual(ctx, t, api, httpc, e) })
		took := time.Since(healAt)
		t.Logf("%s: digest equal to the origin's %v after the heal", e.name, took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("%s converged %v after the heal, the bound is 10s", e.name, took)
		}
		waitFor(t, 30*time.Second, e.name+" fresh again", func() bool {
			s := edgeStatus(t, httpc, e)
			return !s.Stale && s.Ready && s.Reason == "ok" && s.ProofAgeSeconds < maxStale.Seconds()
		})
		for _, lk := range updated {
			if code, h := get(httpc, e.base+"/"+lk.Code); lk.Freshness != "strict" && (code != http.StatusFound || h.Get("Location") != "https://example.org/updated/"+lk.Code) {
				t.Errorf("%s healed: updated %s answered %d %q", e.name, lk.Code, code, h.Get("Location"))
			}
		}
		for _, lk := range disabled {
			if code, _ := get(httpc, e.base+"/"+lk.Code); code != http.StatusGone {
				t.Errorf("%s healed: disabled %s (%s) answered %d, want 410", e.name, lk.Code, lk.Freshness, code)
			}
		}
		if code, _ := get(httpc, e.base+"/"+during[0].Code); code != http.StatusFound {
			t.Errorf("%s healed: a link created during the cut answered %d, want 302", e.name, code)
		}
	}
	leafDown(ctx, t, l, natsBin, api, httpc, us)

	for _, e := range all {
		if !digestEqual(ctx, t, api, httpc, e) {
			t.Errorf("%s: digest differs from the origin's at the end", e.name)
		}
	}

	// Clicks: every redirect answered, during the cut included, counted
	// exactly once once the collector's complete_through has passed the
	// last one.
	lastClick := time.Now()
	totals, sum := redirectTotals()
	waitFor(t, 60*time.Second, "click totals equal the redirects answered", func() bool {
		for code, want := range totals {
			st, err := api.Stats(ctx, code, client.StatsQuery{From: start.Add(-time.Hour), To: time.Now().Add(time.Hour)})
			if err != nil {
				return false
			}
			if st.Clicks > want {
				t.Fatalf("%s: %d clicks counted, %d redirects answered", code, st.Clicks, want)
			}
			if st.Clicks != want || st.CompleteThrough == nil || st.CompleteThrough.Before(lastClick) {
				return false
			}
		}
		return true
	})
	t.Logf("clicks: %d redirects of %d links on 4 edges, each counted once (%v after the heal)", sum, len(totals), time.Since(healAt).Round(time.Millisecond))

	for _, r := range regions {
		var ds []time.Duration
		for _, e := range r.edges {
			ds = append(ds, prop[e.name]...)
		}
		t.Logf("propagation origin → edge in region %s (%d samples, from the creator's 201 to the first 302, polled every 2ms): p50 %v, p99 %v, max %v",
			r.name, len(ds), pct(ds, 50), pct(ds, 99), pct(ds, 100))
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// leafDown kills region r's NATS server (SIGKILL) while the hub stays
// reachable, keeps changing links, and checks that r's edges read the
// hub's stream meanwhile (stream_source "hub") and converge with the
// origin; then restarts the server on its store and checks that the
// edges return to the region's mirror ("local") and follow it.
func leafDown(ctx context.Context, t *testing.T, l *lab, natsBin string, api *client.Client, httpc *http.Client, r *region) {
	t.Helper()
	changes := func(tag string) {
		for i := range 8 {
			lk, err := api.CreateLink(ctx, client.CreateLink{URL: fmt.Sprintf("https://example.com/%s/%d", tag, i)}, client.CreateOptions{})
			if err != nil {
				t.Fatalf("create (%s): %v", tag, err)
			}
			if i%2 == 1 {
				if _, err := api.DisableLink(ctx, lk.Code, 0); err != nil {
					t.Fatalf("disable (%s): %v", tag, err)
				}
			}
		}
	}
	converge := func(what, source string, from time.Time) {
		for _, e := range r.edges {
			waitFor(t, 30*time.Second, e.name+" "+what, func() bool {
				return edgeStatus(t, httpc, e).StreamSource == source && digestEqual(ctx, t, api, httpc, e)
			})
			t.Logf("%s %s %v after it (stream_source %q)", e.name, what, time.Since(from).Round(time.Millisecond), source)
		}
	}
	r.nats.Kill()
	downAt := time.Now()
	changes("leafdown")
	converge("reads the hub's stream and converges with the origin after its leaf server was killed", "hub", downAt)
	for _, e := range r.edges {
		if s := edgeStatus(t, httpc, e); s.Stale || !s.Ready || s.Reason != "ok" {
			t.Errorf("%s on the hub's stream: stale %v ready %v reason %q, want fresh and ready", e.name, s.Stale, s.Ready, s.Reason)
		}
	}
	r.nats = startNATS(t, l, natsBin, r.name, r.ip, r.conf)
	upAt := time.Now()
	changes("leafup")
	converge("is back on the region's mirror and converges with the origin after its leaf server restarted", "local", upAt)
}

// buildAll builds the main packages pkgs at once (proctest.Build builds
// one at a time) and returns their binaries, in order.
func buildAll(t *testing.T, pkgs ...string) []string {
	t.Helper()
	dir := t.TempDir()
	out := make([]string, len(pkgs))
	errs := make([]error, len(pkgs))
	var wg sync.WaitGroup
	for i, pkg := range pkgs {
		out[i] = filepath.Join(dir, filepath.Base(pkg))
		wg.Go(func() {
			if b, err := exec.Command("go", "build", "-o", out[i], pkg).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// leafConnected reports whether the hub's monitoring lists a leaf
// connection from ip.
func leafConnected(c *http.Client, hubIP, ip string) bool {
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/leafz", hubIP, monitorPort))
	if err != nil {
		return true // unknown: keep waiting
	}
	defer resp.Body.Close()
	var lz struct {
		Leafs []struct {
			IP string `json:"ip"`
		} `json:"leafs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lz); err != nil {
		return true
	}
	for _, lf := range lz.Leafs {
		if lf.IP == ip {
			return true
		}
	}
	return false
}

// writeConf writes a server configuration into a file of its own.
func writeConf(t *testing.T, conf string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startNATS runs a nats-server with the configuration file conf in host's
// namespace and waits for its JetStream.
func startNATS(t *testing.T, l *lab, bin, host, ip, conf string) *proctest.Process {
	t.Helper()
	p := runIn(t, l, host, "nats-"+host, bin, []string{"-c", conf})
	waitHTTP(t, &http.Client{Timeout: time.Second}, fmt.Sprintf("http://%s:%d/healthz?js-enabled-only=true", ip, monitorPort), 30*time.Second)
	return p
}

// runIn starts bin in host's namespace (ip netns exec replaces itself
// with bin: the child's PID is bin's); proctest kills it by PID when the
// test ends, before the namespaces go.
func runIn(t *testing.T, l *lab, host, name, bin string, args []string, env ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, proctest.Spec{Name: name, Path: "ip", Args: append([]string{"netns", "exec", l.ns(host), bin}, args...), Env: env, Quiet: true})
}

func waitHTTP(t *testing.T, c *http.Client, u string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, u+" answers 200", func() bool {
		code, _ := getWith(c, u)
		return code == http.StatusOK
	})
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get sends a GET as a browser would and returns the status and
// headers; a redirect is counted as a click (countRedirect).
func get(c *http.Client, u string) (int, http.Header) {
	code, h := getWith(c, u)
	countRedirect(u, code)
	return code, h
}

func getWith(c *http.Client, u string) (int, http.Header) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, nil
	}
	req.Header.Set("User-Agent", browser)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// firstRedirect polls u every 2ms until it redirects and returns the
// time since from.
func firstRedirect(c *http.Client, u string, from time.Time, timeout time.Duration) (time.Duration, bool) {
	for time.Since(from) < timeout {
		if code, _ := get(c, u); code == http.StatusFound {
			return time.Since(from), true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, false
}

// redirects counts, per code, the redirects the edges answered the
// test's GETs: the clicks the collector must end up with, exactly.
var redirects = struct {
	sync.Mutex
	n map[string]uint64
}{n: map[string]uint64{}}

func countRedirect(u string, status int) {
	if status < 300 || status > 399 {
		return
	}
	pu, err := url.Parse(u)
	if err != nil {
		return
	}
	redirects.Lock()
	redirects.n[strings.TrimPrefix(pu.Path, "/")]++
	redirects.Unlock()
}

func redirectTotals() (map[string]uint64, uint64) {
	redirects.Lock()
	defer redirects.Unlock()
	var sum uint64
	for _, v := range redirects.n {
		sum += v
	}
	return maps.Clone(redirects.n), sum
}

// click GETs code on e times times; each must redirect.
func click(t *testing.T, c *http.Client, e *edgeProc, code string, times int) {
	t.Helper()
	for range times {
		if st, _ := get(c, e.base+"/"+code); st != http.StatusFound {
			t.Fatalf("%s: click on %s answered %d", e.name, code, st)
		}
	}
}

// status is the part of an edge's /status the test reads.
type status struct {
	Stale               bool    `json:"stale"`
	Ready               bool    `json:"ready"`
	Reason              string  `json:"reason"`
	ProofAgeSeconds     float64 `json:"proof_age_seconds"`
	SecondsSinceContact float64 `json:"seconds_since_contact"`
	Applied             uint64  `json:"applied"`
	StreamSource        string  `json:"stream_source"`
	Members             []struct {
		Name string `json:"name"`
		Self bool   `json:"self"`
	} `json:"members"`
	Clicks *struct {
		PendingBatches int     `json:"pending_batches"`
		LagSeconds     float64 `json:"lag_seconds"`
	} `json:"clicks"`
}

func edgeStatus(t *testing.T, c *http.Client, e *edgeProc) status {
	t.Helper()
	var s status
	resp, err := c.Get(e.admin + "/status")
	if err != nil {
		t.Fatalf("%s /status: %v", e.name, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("%s /status: %v", e.name, err)
	}
	return s
}

// digestEqual reports whether e's replica digest equals the origin's.
func digestEqual(ctx context.Context, t *testing.T, api *client.Client, c *http.Client, e *edgeProc) bool {
	t.Helper()
	od, err := api.Digest(ctx)
	if err != nil {
		t.Fatalf("origin digest: %v", err)
	}
	ec, err := client.New(client.Config{BaseURL: e.admin, HTTPClient: c})
	if err != nil {
		t.Fatal(err)
	}
	ed, err := ec.EdgeDigest(ctx)
	if err != nil {
		return false
	}
	return od.Unpublished == 0 && ed.Sum == od.Sum && ed.Links == od.Links
}

// pct is the p-th percentile of ds (nearest rank).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))].Round(100 * time.Microsecond)
}
