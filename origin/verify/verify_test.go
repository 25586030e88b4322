package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
)

const testKey = "verify-test-key"

// table is a fake origin or edge serving the digest of recs.
type table struct {
	*httptest.Server
	origin bool
	node   string

	mu     sync.Mutex
	recs   map[string]uint64
	lag    uint64
	digest int // digests served
	// onDigest, when set, runs before each digest is served, with the
	// number of digests served before it.
	onDigest func(n int, recs map[string]uint64)
}

func newTable(t *testing.T, origin bool, node string, recs map[string]uint64) *table {
	tb := &table{origin: origin, node: node, recs: maps(recs)}
	mux := http.NewServeMux()
	prefix := ""
	if origin {
		prefix = "/v1"
	}
	mux.HandleFunc("GET "+prefix+"/digest", tb.serveDigest)
	mux.HandleFunc("GET "+prefix+"/digest/buckets/{i}", tb.serveBucket)
	tb.Server = httptest.NewServer(mux)
	t.Cleanup(tb.Close)
	return tb
}

func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (tb *table) authorized(w http.ResponseWriter, r *http.Request) bool {
	if tb.origin && r.Header.Get("Authorization") != "Bearer "+testKey {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"a valid API key is required"}}`))
		return false
	}
	return true
}

func (tb *table) serveDigest(w http.ResponseWriter, r *http.Request) {
	if !tb.authorized(w, r) {
		return
	}
	tb.mu.Lock()
	if tb.onDigest != nil {
		tb.onDigest(tb.digest, tb.recs)
	}
	tb.digest++
	var d link.Digest
	for c, rev := range tb.recs {
		d.Add(c, rev)
	}
	var body any = client.EdgeDigest{DigestJSON: d.JSON(), Node: tb.node, Applied: 100, StreamLast: 100 + tb.lag, Lag: tb.lag}
	if tb.origin {
		body = client.Digest{DigestJSON: d.JSON(), Revision: 42}
	}
	tb.mu.Unlock()
	_ = json.NewEncoder(w).Encode(body)
}

func (tb *table) served() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.digest
}

func (tb *table) serveBucket(w http.ResponseWriter, r *http.Request) {
	if !tb.authorized(w, r) {
		return
	}
	i, _ := strconv.Atoi(r.PathValue("i"))
	tb.mu.Lock()
	entries := []link.DigestEntry{}
	for c, rev := range tb.recs {
		if link.DigestBucket(c) == i {
			entries = append(entries, link.DigestEntry{Code: c, Revision: rev})
		}
	}
	tb.mu.Unlock()
	slices.SortFunc(entries, func(a, b link.DigestEntry) int { return strings.Compare(a.Code, b.Code) })
	var body any = client.EdgeDigestBucket{Bucket: i, Node: tb.node, Applied: 100, Links: entries}
	if tb.origin {
		body = client.DigestBucket{Bucket: i, Revision: 42, Links: entries}
	}
	_ = json.NewEncoder(w).Encode(body)
}

func TestRun(t *testing.T) {
	leaktest.Check(t)
	truth := map[string]uint64{}
	for i := range 500 {
		truth[fmt.Sprintf("code%03d", i)] = uint64(i + 1)
	}
	origin := newTable(t, true, "", truth)

	same := newTable(t, false, "same", truth)

	diverged := newTable(t, false, "diverged", truth)
	diverged.recs["code007"] = 999 // ahead of the origin
	delete(diverged.recs, "code100")
	diverged.recs["stray"] = 3

	// In flight: differs in the first round only.
	inflight := newTable(t, false, "inflight", truth)
	delete(inflight.recs, "code200")
	inflight.onDigest = func(n int, recs map[string]uint64) {
		if n == 1 {
			recs["code200"] = truth["code200"]
		}
	}

	// Under a write load: every round another bucket differs, so no
	// round matches as a whole, yet no bucket differs in every round.
	busy := newTable(t, false, "busy", truth)
	busy.onDigest = func(n int, recs map[string]uint64) {
		for c, rev := range truth {
			recs[c] = rev
		}
		recs[fmt.Sprintf("code%03d", n%500)]++
	}

	lagging := newTable(t, false, "lagging", truth)
	delete(lagging.recs, "code300")
	lagging.lag = 12

	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	rep, err := Run(context.Background(), Config{
		OriginURL: origin.URL + "/",
		OriginKey: testKey,
		Edges:     []string{same.URL, diverged.URL, inflight.URL, busy.URL, lagging.URL, downURL},
		Wait:      time.Second,
		Interval:  50 * time.Millisecond,
		Detail:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("report OK with a diverged edge")
	}
	if rep.Origin.Links != 500 || rep.Origin.Revision != 42 || len(rep.Origin.Sum) != 16 {
		t.Fatalf("origin %+v", rep.Origin)
	}
	states := map[string]State{}
	for _, e := range rep.Edges {
		states[e.Node] = e.State
	}
	want := map[string]State{"same": OK, "diverged": Diverged, "inflight": OK, "busy": OK, "lagging": Lagging, "": Unreachable}
	for node, st := range want {
		if states[node] != st {
			t.Errorf("edge %q: %s, want %s", node, states[node], st)
		}
	}

	d := rep.Edges[1]
	wantBuckets := []int{link.DigestBucket("code007"), link.DigestBucket("code100"), link.DigestBucket("stray")}
	slices.Sort(wantBuckets)
	wantBuckets = slices.Compact(wantBuckets)
	if !slices.Equal(d.Buckets, wantBuckets) {
		t.Errorf("diverged buckets %v, want %v", d.Buckets, wantBuckets)
	}
	wantCodes := []CodeDiff{
		{Code: "code007", Bucket: link.DigestBucket("code007"), Origin: 8, Edge: 999},
		{Code: "code100", Bucket: link.DigestBucket("code100"), Origin: 101},
		{Code: "stray", Bucket: link.DigestBucket("stray"), Edge: 3},
	}
	got := slices.Clone(d.Codes)
	slices.SortFunc(got, func(a, b CodeDiff) int { return strings.Compare(a.Code, b.Code) })
	if !slices.Equal(got, wantCodes) || d.Err != nil {
		t.Errorf("diverged codes %+v (%v), want %+v", got, d.Err, wantCodes)
	}
	if d.Rounds < 2 {
		t.Errorf("diverged edge compared %d times, want at least 2 within Wait", d.Rounds)
	}
	if n := busy.served(); n < 2 {
		t.Errorf("busy edge served %d digests; the test needs at least 2", n)
	}

	var out strings.Builder
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"origin " + origin.URL + ": 500 links, revision 42",
		"ok          same " + same.URL,
		"diverged    diverged " + diverged.URL + ": 500 links",
		"code007: origin revision 8, edge revision 999",
		"code100: origin revision 101, edge absent",
		"stray: origin absent, edge revision 3",
		"curl -X POST '" + diverged.URL + "/repair?bucket=",
		"curl -X POST " + diverged.URL + "/resync",
		"lagging     lagging " + lagging.URL + ": 499 links, applied 100, lag 12",
		"still catching up",
		"unreachable " + downURL,
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
}

func TestRunAllOK(t *testing.T) {
	leaktest.Check(t)
	truth := map[string]uint64{"a1": 1, "b2": 2}
	origin := newTable(t, true, "", truth)
	a := newTable(t, false, "a", truth)
	b := newTable(t, false, "b", truth)
	rep, err := Run(context.Background(), Config{OriginURL: origin.URL, OriginKey: testKey, Edges: []string{a.URL, b.URL}, Wait: time.Minute})
	if err != nil || !rep.OK() {
		t.Fatalf("Run = %+v, %v", rep, err)
	}
	if n := origin.served(); n != 1 {
		t.Fatalf("origin asked %d times; matching edges need one round", n)
	}
}

func TestRunOriginErrors(t *testing.T) {
	leaktest.Check(t)
	origin := newTable(t, true, "", map[string]uint64{"a1": 1})
	edge := newTable(t, false, "a", map[string]uint64{"a1": 1})
	_, err := Run(context.Background(), Config{OriginURL: origin.URL, OriginKey: "wrong", Edges: []string{edge.URL}, Wait: 100 * time.Millisecond, Interval: 20 * time.Millisecond})
	if !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("wrong key: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Config{OriginURL: origin.URL, OriginKey: testKey, Edges: []string{edge.URL}}); err == nil {
		t.Fatal("canceled context: no error")
	}
}

func TestConfigValidate(t *testing.T) {
	f := func(c Config, want ...string) {
		t.Helper()
		err := c.Validate()
		if len(want) == 0 {
			if err != nil {
				t.Errorf("%+v: %v", c, err)
			}
			return
		}
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %v lacks %q", c, err, w)
			}
		}
	}
	f(Config{OriginKey: "k", Edges: []string{"http://127.0.0.1:9080"}})
	f(Config{}, "OriginKey", "Edges")
	f(Config{OriginKey: "k", Edges: []string{"127.0.0.1:9080"}}, "Edges")
	f(Config{OriginURL: "ftp://x", OriginKey: "k", Edges: []string{"http://e"}}, "OriginURL")
	f(Config{OriginKey: "k", Edges: []string{"http://e"}, Wait: -1, Interval: -1}, "Wait", "Interval")
}
