package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/edge/clicks"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
	"github.com/nats-io/nats.go/jetstream"
)

// uaClass is a User-Agent of the scripted traffic and what the contract
// says it is: the model's own table, not the edge's classifier.
type uaClass struct {
	ua     string
	device string // the devices key of its clicks ("bot" for bots)
	bot    bool
}

var testUAs = []uaClass{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "desktop", false},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", "desktop", false},
	{"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "desktop", false},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "mobile", false},
	{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", "mobile", false},
	{"Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "tablet", false},
	{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot", true},
	{"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "bot", true},
	{"Twitterbot/1.0", "bot", true},
	{"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "bot", true},
}

// browserUA is a desktop browser: one click per redirect.
var browserUA = testUAs[0].ua

// testReferers are Referer values and the referrer host each counts under
// ("" is a direct visit).
var testReferers = []struct{ header, host string }{
	{"", ""},
	{"https://news.example.com/item?id=1", "news.example.com"},
	{"https://WWW.Example.ORG:8443/a/b", "www.example.org"},
	{"http://user@blog.example.net/post", "blog.example.net"},
	{"android-app://com.slack/", "com.slack"},
	{"not a url", ""},
}

// testAddrs are the client addresses the traffic claims through
// X-Forwarded-For (127.0.0.1 is a trusted proxy). Their countries come
// from the edge's own offline database, whatever it says.
var testAddrs = func() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{"8.8.8.8", "81.2.69.142", "2.16.0.1", "1.1.1.1", "5.9.0.1", "193.0.0.1", "133.0.0.1", "200.160.0.1", "41.0.0.1", "10.1.2.3", "2001:4860::8888"} {
		out = append(out, netip.MustParseAddr(s))
	}
	// Many more distinct visitors from one network, for the uniques.
	for i := range 200 {
		out = append(out, netip.AddrFrom4([4]byte{8, 8, byte(4 + i/250), byte(1 + i%250)}))
	}
	return out
}()

// clickReq is one scripted request.
type clickReq struct {
	edge   int // index into system.edges
	method string
	code   string
	ua     uaClass
	ref    int // index into testReferers
	addr   netip.Addr
	// want is the status the request must get (0: any).
	want int
}

// linkCounts is what the model holds for one code.
type linkCounts struct {
	clicks, bots                  uint64
	referrers, countries, devices map[string]uint64
	edges                         map[string]uint64
	visitors                      map[string]struct{}
}

// clickModel counts what the edges answered, as the contract defines a
// click: a GET answered with a redirect; bots apart.
type clickModel struct {
	mu        sync.Mutex
	links     map[string]*linkCounts
	ambiguous int // requests without an answer (the edge went away)
	served    int // redirects of every kind
}

func newClickModel() *clickModel { return &clickModel{links: map[string]*linkCounts{}} }

func (m *clickModel) link(code string) *linkCounts {
	lc := m.links[code]
	if lc == nil {
		lc = &linkCounts{referrers: map[string]uint64{}, countries: map[string]uint64{}, devices: map[string]uint64{},
			edges: map[string]uint64{}, visitors: map[string]struct{}{}}
		m.links[code] = lc
	}
	return lc
}

// baseline starts the model from the clicks already counted: the
// harness's convergence checks are GETs whose User-Agent (Go's) is a bot.
// It waits until complete_through has passed now, and fails if any of
// those requests counted as a click.
func (m *clickModel) baseline(t *testing.T, s *system, codes ...string) {
	t.Helper()
	s.waitEdgesKnown()
	now := time.Now()
	for _, code := range codes {
		// Each code's own answer: with several collectors, each
		// partition's complete_through.
		st, _ := waitComplete(t, s, code, now)
		if st.Clicks != 0 {
			t.Fatalf("stats %s before the traffic: %d clicks, want only bots", code, st.Clicks)
		}
		if st.Bots > 0 {
			lc := m.link(code)
			lc.bots, lc.devices["bot"] = st.Bots, st.Bots
		}
	}
}

func (m *clickModel) record(edgeName string, r clickReq, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.method != http.MethodGet || !isRedirect(status) {
		return
	}
	m.served++
	lc := m.link(r.code)
	lc.devices[r.ua.device]++
	if r.ua.bot {
		lc.bots++
		return
	}
	lc.clicks++
	lc.referrers[testReferers[r.ref].host]++
	c := clicks.Country(r.addr)
	lc.countries[string(c[:])]++
	lc.edges[edgeName]++
	lc.visitors[r.addr.String()+"|"+r.ua.ua] = struct{}{}
}

func isRedirect(status int) bool {
	return status == 301 || status == 302 || status == 307 || status == 308
}

// send sends r to its edge and returns the status (0 and the error when
// there was no answer).
func send(s *system, r clickReq) (int, error) {
	e := s.edges[r.edge]
	req, err := http.NewRequest(r.method, *e.url.Load()+"/"+r.code, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", r.ua.ua)
	if h := testReferers[r.ref].header; h != "" {
		req.Header.Set("Referer", h)
	}
	req.Header.Set("X-Forwarded-For", r.addr.String())
	resp, err := edgeClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// backgroundTraffic is traffic running in a goroutine (startTraffic),
// for tests that apply a fault part of the way through it.
type backgroundTraffic struct {
	t        *testing.T
	done     atomic.Int64
	finished chan struct{}
	err      error // traffic's, once finished is closed
}

// startTraffic sends reqs through traffic with 4 workers in the
// background.
func startTraffic(t *testing.T, s *system, m *clickModel, reqs []clickReq, refusedOK bool) *backgroundTraffic {
	b := &backgroundTraffic{t: t, finished: make(chan struct{})}
	go func() {
		defer close(b.finished)
		b.err = traffic(s, m, reqs, 4, &b.done, refusedOK)
	}()
	return b
}

// reach waits until n requests were sent or the traffic ended.
func (b *backgroundTraffic) reach(n int) {
	b.t.Helper()
	wait.For(b.t, convergeTimeout, fmt.Sprintf("%d requests sent", n), func() bool {
		select {
		case <-b.finished:
			return true
		default:
		}
		return b.done.Load() >= int64(n)
	})
}

// reachBefore is reach, failing the test if the traffic ended before
// what (the fault the caller applies next) could be applied.
func (b *backgroundTraffic) reachBefore(n int, what string) {
	b.t.Helper()
	b.reach(n)
	select {
	case <-b.finished:
		b.t.Fatalf("the traffic ended before %s: %v", what, b.err)
	default:
	}
}

// wait waits for the end of the traffic and fails the test on its error.
func (b *backgroundTraffic) wait() {
	b.t.Helper()
	<-b.finished
	if b.err != nil {
		b.t.Fatal(b.err)
	}
}

// traffic sends reqs from workers goroutines, records every answer in m
// and checks it against the request's want. progress counts the requests
// done. With refusedOK, a refused connection (an edge that is stopped: the
// request never reached it) is no answer and no error; any other request
// without an answer is counted in m.ambiguous.
func traffic(s *system, m *clickModel, reqs []clickReq, workers int, progress *atomic.Int64, refusedOK bool) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(reqs) {
					return
				}
				r := reqs[i]
				status, err := send(s, r)
				progress.Add(1)
				if err != nil {
					if refusedOK {
						if !errors.Is(err, syscall.ECONNREFUSED) {
							m.mu.Lock()
							m.ambiguous++
							m.mu.Unlock()
						}
						continue
					}
					errs <- fmt.Errorf("%s %s on %s: %v", r.method, r.code, s.edges[r.edge].name, err)
					return
				}
				m.record(s.edges[r.edge].name, r, status)
				if r.want != 0 && status != r.want {
					errs <- fmt.Errorf("%s %s on %s: status %d, want %d", r.method, r.code, s.edges[r.edge].name, status, r.want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// clickScene is a system with links for the scripted traffic: active
// ones with a skewed popularity, a disabled one and unknown codes.
type clickScene struct {
	s        *system
	active   []string
	disabled string
	unknown  []string
}

func newClickScene(t *testing.T, originOpts ...func(*origin.Config)) *clickScene {
	s := newSystem(t, originOpts...)
	sc := &clickScene{s: s, unknown: []string{"zzunknown1", "zzunknown2"}}
	m := model{}
	for i := range 6 {
		o := s.api.create(t, client.CreateLink{URL: fmt.Sprintf("https://example.com/clicks/%d", i)})
		sc.active = append(sc.active, o.Code)
		m[o.Code] = wantOf(t, o)
	}
	o := s.api.create(t, client.CreateLink{URL: "https://example.com/gone"})
	o = s.api.disable(t, o.Code)
	sc.disabled = o.Code
	m[o.Code] = wantOf(t, o)
	s.converge(m, sc.unknown)
	return sc
}

// script is n requests, deterministic in seed: the i-th active link is
// asked about (i+1) times as often as the first, so the ranking is
// clear; one in ten is a HEAD, one in twenty an unknown code, one in
// twenty the disabled link.
func (sc *clickScene) script(seed uint64, n int) []clickReq {
	x := seed
	rnd := func(k int) int { // xorshift: reproducible without a shared source
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return int(x % uint64(k))
	}
	weights := 0
	for i := range sc.active {
		weights += i + 1
	}
	out := make([]clickReq, n)
	for i := range out {
		r := clickReq{edge: rnd(2), method: http.MethodGet, ua: testUAs[rnd(len(testUAs))], ref: rnd(len(testReferers)), addr: testAddrs[rnd(len(testAddrs))]}
		switch p := rnd(100); {
		case p < 5:
			r.code, r.want = sc.unknown[rnd(len(sc.unknown))], http.StatusNotFound
		case p < 10:
			r.code, r.want = sc.disabled, http.StatusGone
		default:
			w := rnd(weights)
			for j := range sc.active {
				if w -= j + 1; w < 0 {
					r.code = sc.active[j]
					break
				}
			}
			r.want = http.StatusFound
			if p < 20 {
				r.method = http.MethodHead
			}
		}
		out[i] = r
	}
	return out
}

// waitComplete polls the stats of code until complete_through passes
// end, then asks once more: that answer was read after a commit that
// covered end. It returns the answer and how long it took.
func waitComplete(t *testing.T, s *system, code string, end time.Time) (client.Stats, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	for {
		st, err := s.client.Stats(ctx, code, client.StatsQuery{})
		if err == nil && st.CompleteThrough != nil && st.CompleteThrough.After(end) {
			took := time.Since(end)
			st, err = s.client.Stats(ctx, code, client.StatsQuery{})
			if err != nil {
				t.Fatalf("stats %s: %v", code, err)
			}
			return st, took
		}
		if ctx.Err() != nil {
			t.Fatalf("complete_through of %s did not pass %v within %v: last %+v, err %v", code, end, convergeTimeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkStats requires the stats of every code of m (and of the codes in
// also, which must have none) to equal the model, and GET /v1/stats to
// rank the links as the model does.
func checkStats(t *testing.T, s *system, m *clickModel, end time.Time, also ...string) {
	t.Helper()
	codes := slices.Sorted(maps.Keys(m.links))
	codes = append(codes, also...)
	if len(codes) == 0 {
		t.Fatal("the model holds no clicks")
	}
	_, took := waitComplete(t, s, codes[0], end)
	t.Logf("complete_through passed the end of the traffic %v after it", took.Round(time.Millisecond))
	ctx := context.Background()
	for _, code := range codes {
		// With several collectors each code's partition has its own
		// complete_through: wait for each (at once for one collector).
		st, _ := waitComplete(t, s, code, end)
		lc := m.links[code]
		if lc == nil {
			lc = &linkCounts{}
		}
		if st.Clicks != lc.clicks || st.Bots != lc.bots {
			t.Errorf("%s: clicks %d bots %d, model %d and %d", code, st.Clicks, st.Bots, lc.clicks, lc.bots)
		}
		n := float64(len(lc.visitors))
		if bound := 3*1.04/math.Sqrt(16384)*n + 2; math.Abs(float64(st.Uniques)-n) > bound {
			t.Errorf("%s: uniques %d, model %d distinct visitors (bound ±%.1f)", code, st.Uniques, len(lc.visitors), bound)
		}
		var sc, sb uint64
		for _, p := range st.Series {
			sc += p.Clicks
			sb += p.Bots
		}
		if sc != st.Clicks || sb != st.Bots {
			t.Errorf("%s: series sums to %d clicks %d bots, totals %d and %d", code, sc, sb, st.Clicks, st.Bots)
		}
		for _, d := range []struct {
			name string
			got  []client.StatsCount
			want map[string]uint64
		}{
			{"referrers", st.Referrers, lc.referrers},
			{"countries", st.Countries, lc.countries},
			{"devices", st.Devices, lc.devices},
			{"edges", st.Edges, lc.edges},
		} {
			got := map[string]uint64{}
			for _, kc := range d.got {
				got[kc.Key] = kc.Clicks
			}
			want := map[string]uint64{}
			for k, v := range d.want {
				if v > 0 {
					want[k] = v
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("%s: %s %v, model %v", code, d.name, got, want)
			}
		}
	}
	top, err := s.client.Top(ctx, client.StatsQuery{Limit: 1000})
	if err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	var want []client.TopLink
	var clicksSum, botsSum uint64
	for code, lc := range m.links {
		if lc.clicks+lc.bots > 0 {
			want = append(want, client.TopLink{Code: code, Clicks: lc.clicks, Bots: lc.bots})
		}
		clicksSum += lc.clicks
		botsSum += lc.bots
	}
	slices.SortFunc(want, func(a, b client.TopLink) int {
		return cmp.Or(cmp.Compare(b.Clicks, a.Clicks), cmp.Compare(a.Code, b.Code))
	})
	got := make([]client.TopLink, len(top.Links))
	for i, l := range top.Links {
		got[i] = client.TopLink{Code: l.Code, Clicks: l.Clicks, Bots: l.Bots}
	}
	if !slices.Equal(got, want) {
		t.Errorf("GET /v1/stats ranks\n  %v\nmodel\n  %v", got, want)
	}
	if top.Clicks != clicksSum || top.Bots != botsSum {
		t.Errorf("GET /v1/stats: clicks %d bots %d, model %d and %d", top.Clicks, top.Bots, clicksSum, botsSum)
	}
}

// waitEdgesKnown waits until the collector has heard from every edge:
// complete_through is the oldest mark among the edges the collector
// knows, so before an edge's first batch is applied it does not hold
// complete_through back (a fresh edge ships its first batches only once
// its connection and the click stream are up).
func (s *system) waitEdgesKnown() {
	s.t.Helper()
	admins := s.collectorAdmins
	if len(admins) == 0 {
		admins = []string{s.origin.srv.AdminAddr()}
	}
	for _, admin := range admins {
		wait.For(s.t, convergeTimeout, "the collector at "+admin+" knows every edge", func() bool {
			_, met := httpGet("http://" + admin + "/metrics")
			for _, l := range strings.Split(met, "\n") {
				if v, ok := strings.CutPrefix(l, "linkpop_collector_edges "); ok {
					return v == strconv.Itoa(len(s.edges))
				}
			}
			return false
		})
	}
}

// deleteClickConsumer deletes the collector's durable consumer of the
// click stream (names are the defaults the harness keeps).
func (s *system) deleteClickConsumer() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{s.ns.URL()}})
	if err != nil {
		s.t.Fatalf("dial nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatalf("jetstream: %v", err)
	}
	if err := js.DeleteConsumer(ctx, "LINKPOP_CLICKS", "linkpop-collector"); err != nil {
		s.t.Fatalf("delete the collector's consumer: %v", err)
	}
}

// TestClicksExact: a scripted mix of browsers and bots, referrers,
// addresses, HEADs, 404s and 410s over both edges; once complete_through
// has passed the end, every count equals the model's.
func TestClicksExact(t *testing.T) {
	leaktest.Check(t)
	sc := newClickScene(t)
	m := newClickModel()
	m.baseline(t, sc.s, append(sc.active, sc.disabled)...)
	var done atomic.Int64
	if err := traffic(sc.s, m, sc.script(1, 1500), 8, &done, false); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	t.Logf("%d redirects served", m.served)
	checkStats(t, sc.s, m, end, sc.disabled)
	// The countries come from the edge's own database; the ones no
	// database can disagree on are pinned, and the mix must hold several.
	countries := map[string]uint64{}
	for _, lc := range m.links {
		for k, v := range lc.countries {
			countries[k] += v
		}
	}
	if us, zz := clicks.Country(netip.MustParseAddr("8.8.8.8")), clicks.Country(netip.MustParseAddr("10.1.2.3")); string(us[:]) != "US" || string(zz[:]) != "ZZ" {
		t.Errorf("8.8.8.8 in %s, 10.1.2.3 in %s; want US and ZZ", us[:], zz[:])
	}
	if len(countries) < 4 || countries["US"] == 0 || countries["ZZ"] == 0 {
		t.Errorf("the traffic's clicks come from %v: want US, ZZ and more", countries)
	}
	t.Logf("clicks by country: %v", countries)
}

// TestClicksExactThroughFaults: the same traffic with a fault in the
// middle of it (applied after a third of the requests, undone after two
// thirds): every count still equals the model, nothing lost, nothing
// counted twice.
func TestClicksExactThroughFaults(t *testing.T) {
	for _, f := range []struct {
		name        string
		apply, undo func(s *system)
		tolerate    bool // requests to a stopped edge are refused
	}{
		{"NATSRestart", func(s *system) {
			s.ns.Stop()
			// The outage lasts until an edge holds sealed batches it
			// could not ship.
			wait.For(s.t, convergeTimeout, "an edge holds unshipped batches", func() bool {
				for _, e := range s.edges {
					if c := e.srv.Status().Clicks; c != nil && c.PendingBatches > 0 {
						return true
					}
				}
				return false
			})
		}, func(s *system) { s.ns.Restart() }, false},
		{"CollectorRestart", func(s *system) { s.stopOrigin(s.origin) }, func(s *system) {
			// An orderly stop acknowledges what it committed; deleting
			// the durable consumer makes the stream deliver every batch
			// again, as if every acknowledgement had been lost in a
			// crash: only the applied seqs in the store keep them from
			// counting twice.
			s.deleteClickConsumer()
			s.startOrigin(s.origin.dir)
		}, false},
		{"EdgeRestart", func(s *system) {
			s.stopEdge(s.edges[1])
			s.runEdge(s.edges[1])
		}, func(*system) {}, true},
	} {
		t.Run(f.name, func(t *testing.T) {
			leaktest.Check(t)
			sc := newClickScene(t)
			m := newClickModel()
			m.baseline(t, sc.s, append(sc.active, sc.disabled)...)
			reqs := sc.script(2, 3000)
			tr := startTraffic(t, sc.s, m, reqs, f.tolerate)
			tr.reachBefore(len(reqs)/3, "the fault")
			f.apply(sc.s)
			tr.reach(2 * len(reqs) / 3)
			f.undo(sc.s)
			tr.wait()
			end := time.Now()
			t.Logf("%d redirects served, %d requests without an answer", m.served, m.ambiguous)
			if m.ambiguous > 0 {
				t.Fatalf("%d requests got no answer from an edge stopping in order", m.ambiguous)
			}
			checkStats(t, sc.s, m, end, sc.disabled)
		})
	}
}

// TestViralCode: one code hammered by 32 goroutines × 250 requests over
// both edges counts exactly.
func TestViralCode(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	o := s.api.create(t, client.CreateLink{URL: "https://example.com/viral"})
	s.converge(model{o.Code: wantOf(t, o)}, nil)
	m := newClickModel()
	m.baseline(t, s, o.Code)
	reqs := make([]clickReq, 32*250)
	for i := range reqs {
		reqs[i] = clickReq{edge: i % 2, method: http.MethodGet, code: o.Code, ua: testUAs[3*(i%2)], addr: testAddrs[i%len(testAddrs)], want: http.StatusFound}
	}
	var done atomic.Int64
	if err := traffic(s, m, reqs, 32, &done, false); err != nil {
		t.Fatal(err)
	}
	end := time.Now()
	if m.links[o.Code].clicks != uint64(len(reqs)) {
		t.Fatalf("model counts %d clicks of %d requests", m.links[o.Code].clicks, len(reqs))
	}
	checkStats(t, s, m, end)
}

// maxOvershoot bounds the clicks TestMaxVisits may serve past the limit.
// At maxVisitsRate requests a second, the disable reaches the edges
// about flush (200ms) + collector commit + origin disable + relay + edge
// apply after the crossing click: under a second here, so about 100
// clicks; the bound allows 4 s of a loaded two-core machine.
const (
	maxVisitsRate = 100
	maxOvershoot  = 4 * maxVisitsRate
)

// TestMaxVisits: a link with max_visits N, asked at a steady rate over
// both edges, goes 410 on both; the stats count every redirect served,
// at least N, and the overshoot stays under maxOvershoot.
func TestMaxVisits(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	checkMaxVisits(t, s)
}

// checkMaxVisits is TestMaxVisits on s.
func checkMaxVisits(t *testing.T, s *system) {
	t.Helper()
	const limit = 50
	o := s.api.create(t, client.CreateLink{URL: "https://example.com/limited", MaxVisits: ptr(uint64(limit))})
	s.converge(model{o.Code: wantOf(t, o)}, nil)
	m := newClickModel()
	m.baseline(t, s, o.Code)
	gone := [2]bool{}
	tick := time.NewTicker(time.Second / maxVisitsRate)
	defer tick.Stop()
	deadline := time.Now().Add(convergeTimeout)
	for i := 0; !gone[0] || !gone[1]; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d redirects the link is still served (gone on edges: %v)", m.served, gone)
		}
		<-tick.C
		r := clickReq{edge: i % 2, method: http.MethodGet, code: o.Code, ua: testUAs[0], addr: testAddrs[i%len(testAddrs)]}
		status, err := send(s, r)
		if err != nil {
			t.Fatal(err)
		}
		m.record(s.edges[r.edge].name, r, status)
		switch {
		case status == http.StatusGone:
			gone[r.edge] = true
		case status != http.StatusFound:
			t.Fatalf("GET %s: status %d", o.Code, status)
		case gone[r.edge]:
			t.Fatalf("%s redirected after answering 410", s.edges[r.edge].name)
		}
	}
	end := time.Now()
	served := m.links[o.Code].clicks
	t.Logf("max_visits %d: %d redirects served at %d/s, overshoot %d (bound %d)", limit, served, maxVisitsRate, served-min(served, limit), maxOvershoot)
	if served < limit {
		t.Fatalf("disabled after %d redirects, limit %d", served, limit)
	}
	if served-limit > maxOvershoot {
		t.Errorf("overshoot %d past the limit %d, bound %d", served-limit, limit, maxOvershoot)
	}
	checkStats(t, s, m, end)
}
