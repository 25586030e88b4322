package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
)

// TestRandomizedModel drives random creates (random and custom codes, every
// redirect status, expiries), updates, deactivations and refused duplicate
// codes through the origin API, keeps what the origin acknowledged in a
// plain map, and then requires both edges to answer every known code and a
// set of unknown ones exactly as the map predicts.
//
// LINKPOP_E2E_SEED reproduces a run; LINKPOP_E2E_OPS scales it (default
// 300 operations).
func TestRandomizedModel(t *testing.T) {
	leaktest.Check(t)
	seed := envUint(t, "LINKPOP_E2E_SEED", rand.Uint64())
	ops := int(envUint(t, "LINKPOP_E2E_OPS", 300))
	t.Logf("seed %d, %d ops (reproduce with LINKPOP_E2E_SEED=%d)", seed, ops, seed)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	s := newSystem(t)
	g := &generator{t: t, r: r, api: s.api, m: model{}}
	clicks := newClickModel()
	for i := 0; i < ops; i++ {
		g.step(i)
		// Clicks during the ops: a browser GET of a random code on a
		// random edge. The edge answers by its replica, which may lag
		// the origin, so the model counts what the edge answered (a
		// click is a redirect answered).
		for range g.r.IntN(3) {
			code := g.codes[g.r.IntN(len(g.codes))]
			if g.r.IntN(10) == 0 {
				code = unknownCodes(r, 1)[0]
			}
			req := clickReq{edge: g.r.IntN(2), method: http.MethodGet, code: code, ua: testUAs[g.r.IntN(6)], addr: testAddrs[g.r.IntN(len(testAddrs))]}
			status, err := send(s, req)
			if err != nil {
				t.Fatalf("GET %s: %v", code, err)
			}
			clicks.record(s.edges[req.edge].name, req, status)
		}
	}
	clicksEnd := time.Now()
	t.Logf("model: %d links (%d created, %d updated, %d deactivated, %d duplicate codes refused)",
		len(g.m), g.created, g.updated, g.disabled, g.refused)

	// Expiries are either an hour away or under a second away at the
	// time they were set: wait until the near ones have passed by more
	// than a second, so no check lands near an expiry.
	if d := time.Until(g.lastNear); d > -time.Second {
		time.Sleep(d + time.Second + 10*time.Millisecond)
	}
	t.Logf("expected answers: %v", g.m.tally(time.Now()))
	s.converge(g.m, unknownCodes(r, 50))
	s.checkDigests()
	checkRandomClicks(t, s, clicks, clicksEnd)
}

// checkRandomClicks requires GET /v1/stats to hold every code's clicks
// as the model counted them, once complete_through has passed end. The
// convergence checks are GETs too, but with Go's User-Agent, a bot:
// they count in bots only, which are not compared here.
func checkRandomClicks(t *testing.T, s *system, m *clickModel, end time.Time) {
	t.Helper()
	codes := slices.Sorted(maps.Keys(m.links))
	if len(codes) == 0 {
		t.Fatal("no clicks in the model")
	}
	waitComplete(t, s, codes[0], end)
	top, err := s.client.Top(context.Background(), client.StatsQuery{Limit: 1000})
	if err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	got := map[string]uint64{}
	for _, l := range top.Links {
		if l.Clicks > 0 {
			got[l.Code] = l.Clicks
		}
	}
	want := map[string]uint64{}
	for code, lc := range m.links {
		if lc.clicks > 0 {
			want[code] = lc.clicks
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("clicks per code %v, model %v", got, want)
	}
	t.Logf("clicks: %d redirects over %d codes counted exactly", m.served, len(want))
}

// tally counts the answers the model expects at now, by status.
func (m model) tally(now time.Time) map[int]int {
	n := map[int]int{}
	for _, w := range m {
		status, _, _ := w.answer(now)
		n[status]++
	}
	return n
}

// TestPropagation follows one link through its life on both edges.
func TestPropagation(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	m := model{}

	o := s.api.create(t, client.CreateLink{URL: "https://example.com/first"})
	m[o.Code] = wantOf(t, o)
	perm := s.api.create(t, client.CreateLink{URL: "https://example.com/permanent", Code: "perm-link", Redirect: 308})
	m[perm.Code] = wantOf(t, perm)
	if m[o.Code].redirect != 302 || m[perm.Code].redirect != 308 {
		t.Fatalf("redirects %d and %d, want 302 and 308", m[o.Code].redirect, m[perm.Code].redirect)
	}
	s.converge(m, []string{"never-created"})

	o = s.api.update(t, o.Code, client.UpdateLink{URL: ptr("https://example.org/second")})
	if o.URL != "https://example.org/second" {
		t.Fatalf("updated url %q", o.URL)
	}
	m[o.Code] = wantOf(t, o)
	s.converge(m, nil)

	o = s.api.disable(t, o.Code)
	m[o.Code] = wantOf(t, o)
	if m[o.Code].active {
		t.Fatalf("deactivated link has status %q", o.Status)
	}
	s.converge(m, nil)
}

// generator performs random operations and keeps the model.
type generator struct {
	t   *testing.T
	r   *rand.Rand
	api *apiClient
	m   model

	codes    []string  // every created code, in creation order
	custom   []string  // the custom ones
	lastNear time.Time // the latest near expiry set so far

	created, updated, disabled, refused int
}

func (g *generator) step(i int) {
	switch p := g.r.IntN(100); {
	case p < 50 || len(g.codes) == 0:
		g.create(i)
	case p < 78:
		g.update(i)
	case p < 93:
		g.disable()
	default:
		g.duplicate(i)
	}
}

func (g *generator) create(i int) {
	in := client.CreateLink{URL: g.target(i)}
	if g.r.IntN(10) < 4 {
		in.Code = "m" + randString(g.r, 4+g.r.IntN(10), codeAlphabet)
	}
	in.Redirect = g.redirect()
	if exp, ok := g.expiry(false); ok {
		in.ExpiresAt = exp
	}
	if g.r.IntN(10) == 0 {
		in.Status = client.StatusDisabled // an import's disabled link: 410 from its first revision
	}
	o := g.api.create(g.t, in)
	g.checkAck(o, &in.URL, in.Code, in.Redirect)
	if want := cmp.Or(in.Status, client.StatusActive); o.Status != want {
		g.t.Fatalf("create %+v answered status %q", in, o.Status)
	}
	if _, dup := g.m[o.Code]; dup {
		g.t.Fatalf("create %+v returned existing code %s", in, o.Code)
	}
	g.m[o.Code] = wantOf(g.t, o)
	g.codes = append(g.codes, o.Code)
	if in.Code != "" {
		g.custom = append(g.custom, o.Code)
	}
	g.created++
}

func (g *generator) update(i int) {
	code := g.codes[g.r.IntN(len(g.codes))]
	var in client.UpdateLink
	for in == (client.UpdateLink{}) {
		if g.r.IntN(2) == 0 {
			in.URL = ptr(g.target(i))
		}
		if g.r.IntN(3) == 0 {
			if rd := g.redirect(); rd != 0 {
				in.Redirect = &rd
			}
		}
		if g.r.IntN(3) == 0 {
			if exp, ok := g.expiry(true); ok {
				in.ExpiresAt, in.ClearExpiry = exp, exp == nil
			}
		}
	}
	o := g.api.update(g.t, code, in)
	redirect := 0
	if in.Redirect != nil {
		redirect = *in.Redirect
	}
	g.checkAck(o, in.URL, code, redirect)
	g.m[code] = wantOf(g.t, o)
	g.updated++
}

func (g *generator) disable() {
	code := g.codes[g.r.IntN(len(g.codes))]
	o := g.api.disable(g.t, code)
	if o.Code != code || o.Status != "disabled" {
		g.t.Fatalf("DELETE %s answered %+v", code, o)
	}
	g.m[code] = wantOf(g.t, o)
	g.disabled++
}

// duplicate asks for a custom code that is taken: 409, model unchanged.
func (g *generator) duplicate(i int) {
	if len(g.custom) == 0 {
		g.create(i)
		return
	}
	code := g.custom[g.r.IntN(len(g.custom))]
	_, err := g.api.c.CreateLink(context.Background(), client.CreateLink{URL: g.target(i), Code: code}, client.CreateOptions{})
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !errors.Is(err, link.ErrCodeTaken) {
		g.t.Fatalf("create with taken code %s: %v, want 409 code_taken", code, err)
	}
	g.refused++
}

// checkAck verifies the acknowledged object reflects the request: url (nil
// when not sent), code and redirect (empty and 0 when not sent).
func (g *generator) checkAck(o client.Link, url *string, code string, redirect int) {
	g.t.Helper()
	if url != nil {
		want, err := link.URLPolicy{}.NormalizeURL(*url)
		if err != nil {
			g.t.Fatalf("test target %q is invalid: %v", *url, err)
		}
		if o.URL != want {
			g.t.Fatalf("link %s: url %q, want %q", o.Code, o.URL, want)
		}
	}
	if code != "" && o.Code != code {
		g.t.Fatalf("custom code %q answered as %q", code, o.Code)
	}
	if redirect != 0 && o.Redirect != redirect {
		g.t.Fatalf("link %s: redirect %d, want %d", o.Code, o.Redirect, redirect)
	}
	if o.Revision == 0 {
		g.t.Fatalf("link %s: revision 0", o.Code)
	}
}

// target is a random valid target URL; some have Unicode hosts, stored in
// IDNA ASCII form.
func (g *generator) target(i int) string {
	switch g.r.IntN(10) {
	case 0:
		return fmt.Sprintf("https://bücher-%d.example/ä?n=%d", g.r.IntN(3), i)
	case 1:
		return fmt.Sprintf("http://Example.COM:80/p/%d#frag", i)
	default:
		return fmt.Sprintf("https://example%d.com/%s/%d?q=%s", g.r.IntN(5), randString(g.r, 1+g.r.IntN(12), codeAlphabet), i, randString(g.r, g.r.IntN(6), codeAlphabet))
	}
}

// redirect is 0 (leave the default) or one of the four statuses.
func (g *generator) redirect() int {
	return []int{0, 0, 301, 302, 307, 308}[g.r.IntN(6)]
}

// expiry returns an expires_at to send: an hour away, or under a second
// away (expired by the time the edges are checked), or, in an update, nil
// to clear it. ok is false for "no expiry field".
func (g *generator) expiry(update bool) (*time.Time, bool) {
	switch p := g.r.IntN(100); {
	case p < 15:
		at := time.Now().Add(time.Hour + time.Duration(g.r.IntN(3600))*time.Second).UTC()
		return &at, true
	case p < 30:
		at := time.Now().Add(300*time.Millisecond + time.Duration(g.r.IntN(500))*time.Millisecond)
		if at.After(g.lastNear) {
			g.lastNear = at
		}
		at = at.UTC()
		return &at, true
	case p < 40 && update:
		return nil, true
	}
	return nil, false
}

// ptr is a pointer to v, for the optional fields of a request.
func ptr[T any](v T) *T { return &v }

const codeAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

func randString(r *rand.Rand, n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// unknownCodes are valid codes no test creates: random codes are 7
// characters and custom ones start with "m".
func unknownCodes(r *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "zz" + randString(r, 9, codeAlphabet)
	}
	return out
}

func envUint(t testing.TB, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}
