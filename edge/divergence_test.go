package edge_test

import (
	"encoding/json"
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
	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

func readDigest(t testing.TB, adminAddr string) (client.EdgeDigest, link.Digest) {
	t.Helper()
	r := get(t, adminAddr, "/digest")
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/digest = %d %q\n%s", r.StatusCode, r.Header.Get("Content-Type"), r.body)
	}
	var j client.EdgeDigest
	if err := json.Unmarshal([]byte(r.body), &j); err != nil {
		t.Fatalf("/digest: %v\n%s", err, r.body)
	}
	d, err := j.Digest()
	if err != nil {
		t.Fatalf("/digest: %v", err)
	}
	return j, d
}

func digestOf(recs map[string]link.Record) link.Digest {
	var d link.Digest
	for _, r := range recs {
		d.Add(r.Code, r.Revision)
	}
	return d
}

// TestAdminDigestAndResync: GET /digest and /digest/buckets/{i} describe
// the replica; after records are lost behind the consumer's back the
// digest shows the damaged buckets, and POST /resync replays the stream
// until the replica is whole again.
func TestAdminDigestAndResync(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfg := edgeConfig(t, st.ns.URL())
	cfg.NodeName = "edge-d"
	e := startEdge(t, cfg)

	want := map[string]link.Record{}
	var last uint64
	for i := range 30 {
		r := record(fmt.Sprintf("dig%02d", i), fmt.Sprintf("https://example.com/%d", i), 302, 1)
		last = st.publish(t, link.OpCreate, r)
		want[r.Code] = r
	}
	for i := range 10 {
		r := record(fmt.Sprintf("dig%02d", i), fmt.Sprintf("https://example.org/%d", i), 301, 2)
		last = st.publish(t, link.OpUpdate, r)
		want[r.Code] = r
	}
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return e.Status().Applied >= last })
	wantD := digestOf(want)
	j, d := readDigest(t, e.AdminAddr())
	if !d.Equal(&wantD) || j.Node != "edge-d" || j.Applied != last || j.Links != 30 {
		t.Fatalf("/digest: node %q, applied %d, %d links, differing buckets %v; want applied %d", j.Node, j.Applied, j.Links, d.Diff(&wantD), last)
	}
	for _, code := range []string{"dig00", "dig29"} {
		b := link.DigestBucket(code)
		r := get(t, e.AdminAddr(), "/digest/buckets/"+strconv.Itoa(b))
		var bj client.EdgeDigestBucket
		if err := json.Unmarshal([]byte(r.body), &bj); err != nil || r.StatusCode != 200 {
			t.Fatalf("bucket %d: %d %v\n%s", b, r.StatusCode, err, r.body)
		}
		if bj.Bucket != b || bj.Applied != last || !slices.Contains(bj.Links, link.DigestEntry{Code: code, Revision: want[code].Revision}) {
			t.Fatalf("bucket %d = %+v, want it to list %s at revision %d", b, bj, code, want[code].Revision)
		}
	}

	// Lose dig03 and roll dig05 back behind the consumer's back.
	rep := e.Replica()
	if ok, err := rep.Overwrite("dig03", 2, nil); !ok || err != nil {
		t.Fatalf("remove dig03: %v %v", ok, err)
	}
	old := record("dig05", "https://example.com/5", 302, 1)
	if ok, err := rep.Overwrite("dig05", 2, &old); !ok || err != nil {
		t.Fatalf("roll back dig05: %v %v", ok, err)
	}
	_, d = readDigest(t, e.AdminAddr())
	damaged := []int{link.DigestBucket("dig03"), link.DigestBucket("dig05")}
	slices.Sort(damaged)
	damaged = slices.Compact(damaged)
	if got := wantD.Diff(&d); !slices.Equal(got, damaged) {
		t.Fatalf("differing buckets %v, want %v", got, damaged)
	}

	r := do(t, e.AdminAddr(), "POST", "/resync")
	if r.StatusCode != http.StatusAccepted || !strings.Contains(r.body, `"node": "edge-d"`) {
		t.Fatalf("POST /resync = %d\n%s", r.StatusCode, r.body)
	}
	wait.For(t, 15*time.Second, "the replay restores the replica", func() bool {
		j, d := readDigest(t, e.AdminAddr())
		return d.Equal(&wantD) && j.Applied == last
	})
	wait.For(t, 10*time.Second, "edge ready after the resync", func() bool {
		r := get(t, e.AdminAddr(), "/readyz")
		return r.StatusCode == 200 && e.Status().Applied == last
	})
	if r := get(t, e.Addr(), "/dig05"); r.StatusCode != 301 || r.Header.Get("Location") != "https://example.org/5" {
		t.Fatalf("GET /dig05 after resync = %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if got := metric(t, e.AdminAddr(), "linkpop_replication_resyncs_total"); got != 1 {
		t.Fatalf("resyncs_total = %v, want 1", got)
	}

	f := func(method, target string, status int, allow string) {
		t.Helper()
		r := do(t, e.AdminAddr(), method, target)
		if r.StatusCode != status || r.Header.Get("Allow") != allow {
			t.Errorf("%s %s = %d Allow %q, want %d %q\n%s", method, target, r.StatusCode, r.Header.Get("Allow"), status, allow, r.body)
		}
	}
	f("GET", "/resync", 405, "POST")
	f("GET", "/repair?bucket=1", 405, "POST")
	f("POST", "/digest", 405, "GET, HEAD")
	f("POST", "/repair?bucket=1", 409, "") // no origin configured
	f("POST", "/repair", 400, "")
	f("POST", "/repair?bucket=256", 400, "")
	f("GET", "/digest/buckets/256", 400, "")
	f("GET", "/digest/buckets/x", 400, "")
	f("GET", "/digest/buckets/07", 400, "")
	f("GET", "/digest/buckets/", 400, "")
	f("GET", "/digest/x", 404, "")
}

// repairOrigin is a fakeOrigin that also lists digest buckets, and answers
// 429 to the first requests for the codes in throttle.
type repairOrigin struct {
	*fakeOrigin
	mu       sync.Mutex
	throttle map[string]int
}

func startRepairOrigin(t *testing.T, key string) *repairOrigin {
	o := &repairOrigin{
		fakeOrigin: &fakeOrigin{key: key, links: map[string]link.Record{}, asked: map[string]int{}},
		throttle:   map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/links/{code}", func(w http.ResponseWriter, req *http.Request) {
		o.mu.Lock()
		n := o.throttle[req.PathValue("code")]
		if n > 0 {
			o.throttle[req.PathValue("code")] = n - 1
		}
		o.mu.Unlock()
		if n > 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		o.serve(w, req)
	})
	mux.HandleFunc("GET /v1/digest/buckets/{i}", func(w http.ResponseWriter, req *http.Request) {
		i, err := strconv.Atoi(req.PathValue("i"))
		if err != nil || req.Header.Get("Authorization") != "Bearer "+o.key {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		o.fakeOrigin.mu.Lock()
		entries := []link.DigestEntry{}
		for code, r := range o.links {
			if link.DigestBucket(code) == i {
				entries = append(entries, link.DigestEntry{Code: code, Revision: r.Revision})
			}
		}
		o.fakeOrigin.mu.Unlock()
		slices.SortFunc(entries, func(a, b link.DigestEntry) int { return strings.Compare(a.Code, b.Code) })
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"bucket": i, "revision": 99, "links": entries})
	})
	o.Server = httptest.NewServer(mux)
	t.Cleanup(o.Close)
	return o
}

// TestRepair: a replica that missed changes, holds revisions the origin
// does not, and holds a code the origin does not is made equal to the
// origin bucket by bucket; a second repair changes nothing.
func TestRepair(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	origin := startRepairOrigin(t, "r3pair")
	cfg := edgeConfig(t, st.ns.URL())
	cfg.OriginURL, cfg.OriginKey = origin.URL, "r3pair"
	e := startEdge(t, cfg)

	edgeHas := []link.Record{
		record("same1", "https://example.com/same", 302, 3),
		record("newer1", "https://example.com/old", 302, 2),
		record("ahead1", "https://example.com/from-the-future", 302, 9),
		record("extra1", "https://example.com/extra", 302, 1),
		record("throttled1", "https://example.com/t-old", 302, 1),
	}
	var last uint64
	for _, r := range edgeHas {
		last = st.publish(t, link.OpCreate, r)
	}
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return e.Status().Applied >= last })
	truth := map[string]link.Record{}
	for _, r := range []link.Record{
		record("same1", "https://example.com/same", 302, 3),
		record("newer1", "https://example.com/new", 308, 5),
		record("ahead1", "https://example.com/truth", 307, 4),
		record("onlyorigin1", "https://example.com/only", 302, 6),
		record("throttled1", "https://example.com/t-new", 302, 7),
	} {
		truth[r.Code] = r
		origin.add(r)
	}
	origin.mu.Lock()
	origin.throttle["throttled1"] = 1
	origin.mu.Unlock()

	var buckets []string
	for _, c := range []string{"same1", "newer1", "ahead1", "extra1", "onlyorigin1", "throttled1"} {
		buckets = append(buckets, "bucket="+strconv.Itoa(link.DigestBucket(c)))
	}
	repair := func() (sum edge.BucketRepair) {
		t.Helper()
		r := do(t, e.AdminAddr(), "POST", "/repair?"+strings.Join(buckets, "&"))
		var out edge.RepairAnswer
		if err := json.Unmarshal([]byte(r.body), &out); err != nil || r.StatusCode != 200 {
			t.Fatalf("POST /repair = %d %v\n%s", r.StatusCode, err, r.body)
		}
		for _, b := range out.Buckets {
			sum.Checked += b.Checked
			sum.Updated += b.Updated
			sum.Replaced += b.Replaced
			sum.Removed += b.Removed
			sum.Failed += b.Failed
			sum.Errors = append(sum.Errors, b.Errors...)
		}
		return sum
	}
	got := repair()
	want := edge.BucketRepair{Checked: 6, Updated: 3, Replaced: 1, Removed: 1}
	if got.Checked != want.Checked || got.Updated != want.Updated || got.Replaced != want.Replaced ||
		got.Removed != want.Removed || got.Failed != 0 {
		t.Fatalf("repair = %+v, want %+v", got, want)
	}
	origin.mu.Lock()
	throttled := origin.throttle["throttled1"]
	origin.mu.Unlock()
	if throttled != 0 || origin.count("throttled1") != 1 {
		t.Fatalf("throttled1: %d 429s left to serve, answered %d times; want 0 and 1", throttled, origin.count("throttled1"))
	}
	wantD := digestOf(truth)
	if _, d := readDigest(t, e.AdminAddr()); !d.Equal(&wantD) {
		t.Fatalf("after repair the digest differs in buckets %v", d.Diff(&wantD))
	}
	f := func(code string, status int, location string) {
		t.Helper()
		r := get(t, e.Addr(), "/"+code)
		if r.StatusCode != status || r.Header.Get("Location") != location {
			t.Errorf("GET /%s = %d %q, want %d %q", code, r.StatusCode, r.Header.Get("Location"), status, location)
		}
	}
	f("ahead1", 307, "https://example.com/truth")
	f("newer1", 308, "https://example.com/new")
	f("onlyorigin1", 302, "https://example.com/only")
	f("extra1", 404, "")

	if again := repair(); again.Updated+again.Replaced+again.Removed+again.Failed != 0 || again.Checked != 5 {
		t.Fatalf("second repair = %+v, want 5 checked and nothing changed", again)
	}
}
