package edge_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// fakeOrigin implements the origin's GET /v1/links/{code} contract:
// codes in links answer 200 with the link object, "boom*" answers 500,
// "slow*" hangs until the client gives up, and gate (when set) holds every
// answer until it is closed.
type fakeOrigin struct {
	*httptest.Server
	key  string
	gate chan struct{}
	role string // the Linkpop-Role header on every answer, when set

	mu    sync.Mutex
	links map[string]link.Record
	asked map[string]int
	auth  []string
}

func startOrigin(t *testing.T, key string) *fakeOrigin {
	o := &fakeOrigin{key: key, links: map[string]link.Record{}, asked: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/links/{code}", o.serve)
	o.Server = httptest.NewServer(mux)
	t.Cleanup(o.Close)
	return o
}

func (o *fakeOrigin) add(r link.Record) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.links[r.Code] = r
}

func (o *fakeOrigin) count(code string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.asked[code]
}

func (o *fakeOrigin) total() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.asked {
		n += c
	}
	return n
}

func (o *fakeOrigin) serve(w http.ResponseWriter, req *http.Request) {
	code := req.PathValue("code")
	o.mu.Lock()
	o.asked[code]++
	o.auth = append(o.auth, req.Header.Get("Authorization"))
	rec, ok := o.links[code]
	gate := o.gate
	o.mu.Unlock()
	if gate != nil {
		<-gate
	}
	w.Header().Set("Content-Type", "application/json")
	if o.role != "" {
		w.Header().Set("Linkpop-Role", o.role)
	}
	switch {
	case req.Header.Get("Authorization") != "Bearer "+o.key:
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"bad key"}}`))
	case strings.HasPrefix(code, "boom"):
		w.WriteHeader(http.StatusInternalServerError)
	case strings.HasPrefix(code, "slow"):
		<-req.Context().Done()
	case !ok:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such link"}}`))
	default:
		status := "active"
		if rec.Status == link.StatusDisabled {
			status = "disabled"
		}
		var expires *time.Time
		if !rec.ExpiresAt.IsZero() {
			expires = &rec.ExpiresAt
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"code": rec.Code, "url": rec.URL, "short_url": "http://127.0.0.1:8080/" + rec.Code,
			"redirect": rec.Redirect, "status": status, "created_at": rec.CreatedAt, "updated_at": rec.UpdatedAt,
			"expires_at": expires, "revision": rec.Revision, "tags": rec.Tags,
		})
	}
}

// TestFallbackWhileLagging: an edge that cannot reach the stream asks the
// origin about misses, stores what it learns, and never answers 5xx for
// the origin's failures.
func TestFallbackWhileLagging(t *testing.T) {
	leaktest.Check(t)
	origin := startOrigin(t, "k3y")
	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.OriginURL = origin.URL + "/"
	cfg.OriginKey = "k3y"
	cfg.FallbackTimeout = 300 * time.Millisecond
	e := startEdge(t, cfg)

	origin.add(record("remote1", "https://example.com/remote?a=%20", 301, 4))
	off := record("remoteoff", "https://example.com/off", 302, 2)
	off.Status = link.StatusDisabled
	origin.add(off)
	f := func(target string, status int, location string) {
		t.Helper()
		r := get(t, e.Addr(), target)
		if r.StatusCode != status || r.Header.Get("Location") != location {
			t.Errorf("GET %s = %d %q, want %d %q", target, r.StatusCode, r.Header.Get("Location"), status, location)
		}
	}
	f("/remote1", 301, "https://example.com/remote?a=%20")
	f("/remoteoff", 410, "")
	f("/missing", 404, "")
	f("/boom1", 404, "")
	f("/slow1", 404, "")
	if rec, ok, err := e.Replica().Get("remote1"); err != nil || !ok || rec.Revision != 4 {
		t.Fatalf("replica after fallback: %+v %v %v", rec, ok, err)
	}
	// Learned links are served from the replica now.
	f("/remote1", 301, "https://example.com/remote?a=%20")
	f("/remoteoff", 410, "")
	if n := origin.count("remote1"); n != 1 {
		t.Errorf("origin asked %d times about remote1, want 1", n)
	}
	for _, a := range origin.auth {
		if a != "Bearer k3y" {
			t.Errorf("origin saw Authorization %q", a)
		}
	}
	for series, want := range map[string]float64{
		`linkpop_edge_fallback_total{result="hit"}`:       2,
		`linkpop_edge_fallback_total{result="not_found"}`: 1,
		`linkpop_edge_fallback_total{result="error"}`:     2,
	} {
		if got := metric(t, e.AdminAddr(), series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// TestFallbackSeveralOrigins: with several origin URLs (an origin with
// HA and its standby), a miss is answered by whichever origin answers
// when the first is down, and the one that answers as the leader is
// asked first from then on.
func TestFallbackSeveralOrigins(t *testing.T) {
	leaktest.Check(t)
	// A real URL nobody listens on: the first origin is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	standby := startOrigin(t, "k")
	standby.role = "standby"
	leader := startOrigin(t, "k")
	leader.role = "leader"
	for _, o := range []*fakeOrigin{standby, leader} {
		o.add(record("both1", "https://example.com/both1", 302, 1))
		o.add(record("both2", "https://example.com/both2", 302, 1))
	}
	leader.add(record("onlyleader", "https://example.com/new", 302, 1))

	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.OriginURL = down + ", " + standby.URL + "/," + leader.URL
	cfg.OriginKey = "k"
	cfg.FallbackTimeout = 5 * time.Second
	e := startEdge(t, cfg)

	f := func(target string, status int, location string) {
		t.Helper()
		r := get(t, e.Addr(), target)
		if r.StatusCode != status || r.Header.Get("Location") != location {
			t.Errorf("GET %s = %d %q, want %d %q", target, r.StatusCode, r.Header.Get("Location"), status, location)
		}
	}
	// The first origin is down: the standby (next in order) answers the
	// read; the leader is not known yet.
	f("/both1", 302, "https://example.com/both1")
	if standby.count("both1") != 1 || leader.count("both1") != 0 {
		t.Fatalf("both1 asked of standby %d, leader %d times; want 1, 0", standby.count("both1"), leader.count("both1"))
	}
	// Having heard a standby, the next miss tries the origin not heard
	// from yet before it: the leader, which knows the newest link.
	f("/onlyleader", 302, "https://example.com/new")
	f("/both2", 302, "https://example.com/both2")
	if standby.total() != 1 || leader.count("onlyleader") != 1 || leader.count("both2") != 1 {
		t.Fatalf("standby answered %d, leader onlyleader %d, both2 %d; want 1, 1, 1",
			standby.total(), leader.count("onlyleader"), leader.count("both2"))
	}
	if n := metric(t, e.AdminAddr(), `linkpop_edge_fallback_total{result="error"}`); n != 0 {
		t.Errorf("fallback errors = %v, want 0: a down origin among several is not an error", n)
	}
	// The leader goes down: the standby answers again.
	standby.add(record("both3", "https://example.com/both3", 302, 1))
	leader.Close()
	f("/both3", 302, "https://example.com/both3")
	if standby.count("both3") != 1 {
		t.Fatalf("standby asked %d times about both3, want 1", standby.count("both3"))
	}
}

// TestFallbackPrefersTheLeader: once an origin answered as a standby,
// misses go to the others first, and to the leader once it answered.
func TestFallbackPrefersTheLeader(t *testing.T) {
	leaktest.Check(t)
	standby := startOrigin(t, "k")
	standby.role = "standby"
	leader := startOrigin(t, "k")
	leader.role = "leader"
	for i, o := range []*fakeOrigin{standby, leader} {
		for _, c := range []string{"pref1", "pref2", "pref3"} {
			o.add(record(c, "https://example.com/"+c, 302, uint64(i+1)))
		}
	}
	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.OriginURL = standby.URL + "," + leader.URL
	cfg.OriginKey = "k"
	cfg.FallbackTimeout = 5 * time.Second
	e := startEdge(t, cfg)
	for _, c := range []string{"pref1", "pref2", "pref3"} {
		if r := get(t, e.Addr(), "/"+c); r.StatusCode != 302 {
			t.Fatalf("GET /%s = %d", c, r.StatusCode)
		}
	}
	// The first miss went to the standby (nothing known yet, the
	// configured order); every later one to the leader.
	if standby.total() != 1 || leader.total() != 2 {
		t.Fatalf("standby %d, leader %d answers; want 1, 2", standby.total(), leader.total())
	}
}

// TestFallbackSingleFlight: concurrent misses for one code share one
// origin request.
func TestFallbackSingleFlight(t *testing.T) {
	leaktest.Check(t)
	origin := startOrigin(t, "k")
	origin.gate = make(chan struct{})
	origin.add(record("hotnew", "https://example.com/hot", 302, 1))
	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.OriginURL, cfg.OriginKey = origin.URL, "k"
	cfg.FallbackTimeout = time.Minute
	e := startEdge(t, cfg)

	const n = 50
	type result struct {
		r   response
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			r, err := roundTrip(e.Addr(), "GET", "/hotnew")
			results <- result{r, err}
		}()
	}
	wait.For(t, 20*time.Second, "49 requests wait for the first one's origin request", func() bool {
		return metric(t, e.AdminAddr(), `linkpop_edge_fallback_total{result="shared"}`) == n-1
	})
	close(origin.gate)
	for range n {
		res := <-results
		if res.err != nil {
			t.Error(res.err)
			continue
		}
		r := res.r
		if r.StatusCode != 302 || r.Header.Get("Location") != "https://example.com/hot" {
			t.Errorf("GET /hotnew = %d %q", r.StatusCode, r.Header.Get("Location"))
		}
	}
	if got := origin.count("hotnew"); got != 1 {
		t.Errorf("origin saw %d requests for hotnew, want 1", got)
	}
}

// TestFallbackBudget: beyond the budget a miss is a 404 without asking.
func TestFallbackBudget(t *testing.T) {
	leaktest.Check(t)
	origin := startOrigin(t, "k")
	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.OriginURL, cfg.OriginKey = origin.URL, "k"
	cfg.FallbackBudget = 0.001 // one token per 1000s: no refill during the test
	cfg.FallbackBurst = 2
	e := startEdge(t, cfg)
	for _, code := range []string{"miss1", "miss2", "miss3", "miss4"} {
		if r := get(t, e.Addr(), "/"+code); r.StatusCode != 404 {
			t.Errorf("GET /%s = %d, want 404", code, r.StatusCode)
		}
	}
	if got := origin.total(); got != 2 {
		t.Errorf("origin saw %d requests, want 2 (the burst)", got)
	}
	if got := metric(t, e.AdminAddr(), `linkpop_edge_fallback_total{result="over_budget"}`); got != 2 {
		t.Errorf("over_budget = %v, want 2", got)
	}
}

// TestNoFallbackWhenCaughtUp: a caught-up replica's miss is authoritative.
func TestNoFallbackWhenCaughtUp(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	origin := startOrigin(t, "k")
	origin.add(record("onlyorigin", "https://example.com/o", 302, 1))
	cfg := edgeConfig(t, st.ns.URL())
	cfg.OriginURL, cfg.OriginKey = origin.URL, "k"
	e := startEdge(t, cfg)
	st.publish(t, link.OpCreate, record("known", "https://example.com/k", 302, 1))
	wait.For(t, 10*time.Second, "edge caught up", func() bool {
		return get(t, e.AdminAddr(), "/readyz").body == "ok\n" && get(t, e.Addr(), "/known").StatusCode == 302
	})
	if r := get(t, e.Addr(), "/onlyorigin"); r.StatusCode != 404 {
		t.Errorf("GET /onlyorigin = %d, want 404", r.StatusCode)
	}
	if got := origin.total(); got != 0 {
		t.Errorf("a caught-up edge asked the origin %d times", got)
	}
}
