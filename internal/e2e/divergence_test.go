package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/verify"
)

// verifyEdges runs the verifier against the origin and the given edges
// (every edge if none is given).
func (s *system) verifyEdges(wait time.Duration, detail bool, only ...*edgeNode) *verify.Report {
	s.t.Helper()
	if len(only) == 0 {
		only = s.edges
	}
	var edges []string
	for _, e := range only {
		edges = append(edges, "http://"+e.srv.AdminAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait+30*time.Second)
	defer cancel()
	rep, err := verify.Run(ctx, verify.Config{
		OriginURL: s.api.base,
		OriginKey: testAdminKey,
		Edges:     edges,
		Wait:      wait,
		Interval:  100 * time.Millisecond,
		Detail:    detail,
	})
	if err != nil {
		s.t.Fatalf("verify: %v", err)
	}
	return rep
}

// report renders a verify report for failure messages.
func report(rep *verify.Report) string {
	var b strings.Builder
	_ = rep.Write(&b)
	return b.String()
}

// checkDigests requires every edge's digest to equal the origin's, exactly,
// once the system is quiet (after converge): the origin's GET /v1/digest
// against each replica's own digest, and the verifier's verdict.
func (s *system) checkDigests() {
	s.t.Helper()
	j, err := s.client.Digest(context.Background())
	if err != nil {
		s.t.Fatalf("GET /v1/digest: %v", err)
	}
	od, err := j.Digest()
	if err != nil {
		s.t.Fatalf("origin digest: %v", err)
	}
	for _, e := range s.edges {
		ed, _, err := e.srv.Replica().BucketDigest()
		if err != nil {
			s.t.Fatalf("%s digest: %v", e.name, err)
		}
		if !ed.Equal(&od) {
			s.t.Fatalf("%s digest differs from the origin's (%d vs %d links) in buckets %v", e.name, ed.Count, od.Count, od.Diff(&ed))
		}
	}
	if rep := s.verifyEdges(time.Second, true); !rep.OK() {
		s.t.Fatalf("verify after convergence:\n%s", report(rep))
	}
}

// edgeState returns each edge's verdict by node name.
func edgeState(rep *verify.Report) map[string]verify.Edge {
	out := map[string]verify.Edge{}
	for _, e := range rep.Edges {
		out[e.Node] = e
	}
	return out
}

// TestDivergenceDetectedAndRepaired damages both replicas behind the
// stream's back and requires the verifier to name the damaged buckets and
// codes, POST /resync to heal what a replay can (missed changes), and
// POST /repair to heal what only the origin can (a record the origin
// does not hold).
func TestDivergenceDetectedAndRepaired(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	m := model{}
	s.createMany(m, 40, "div")
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes[:5] {
		o := s.api.update(t, c, client.UpdateLink{URL: ptr("https://example.org/v2/" + c)})
		m[c] = wantOf(t, o)
	}
	s.converge(m, nil)
	s.checkDigests()

	a, b := s.edges[0], s.edges[1]
	// edge-b missed a create and an update.
	lost, stale := codes[10], codes[2]
	recLost := mustHold(t, b, lost)
	if ok, err := b.srv.Replica().Overwrite(lost, recLost.Revision, nil); !ok || err != nil {
		t.Fatalf("remove %s from edge-b: %v %v", lost, ok, err)
	}
	cur := mustHold(t, b, stale)
	older := cur
	older.Revision--
	older.URL = "https://example.com/missed-update"
	if ok, err := b.srv.Replica().Overwrite(stale, cur.Revision, &older); !ok || err != nil {
		t.Fatalf("roll back %s on edge-b: %v %v", stale, ok, err)
	}
	// edge-a holds a revision the origin never issued.
	ahead := codes[20]
	future := mustHold(t, a, ahead)
	future.Revision += 1000
	future.URL = "https://example.com/not-from-the-origin"
	if ok, err := a.srv.Replica().Put(future); !ok || err != nil {
		t.Fatalf("put %s on edge-a: %v %v", ahead, ok, err)
	}

	rep := s.verifyEdges(time.Second, true)
	got := edgeState(rep)
	bucketsOf := func(cs ...string) []int {
		var out []int
		for _, c := range cs {
			out = append(out, link.DigestBucket(c))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	if ea := got["edge-a"]; ea.State != verify.Diverged || !slices.Equal(ea.Buckets, bucketsOf(ahead)) ||
		!slices.Contains(ea.Codes, verify.CodeDiff{Code: ahead, Bucket: link.DigestBucket(ahead), Origin: future.Revision - 1000, Edge: future.Revision}) {
		t.Fatalf("edge-a verdict %+v\n%s", ea, report(rep))
	}
	if eb := got["edge-b"]; eb.State != verify.Diverged || !slices.Equal(eb.Buckets, bucketsOf(lost, stale)) ||
		!slices.Contains(eb.Codes, verify.CodeDiff{Code: lost, Bucket: link.DigestBucket(lost), Origin: recLost.Revision}) ||
		!slices.Contains(eb.Codes, verify.CodeDiff{Code: stale, Bucket: link.DigestBucket(stale), Origin: cur.Revision, Edge: older.Revision}) {
		t.Fatalf("edge-b verdict %+v\n%s", eb, report(rep))
	}
	if rep.OK() {
		t.Fatal("report OK with diverged edges")
	}

	// A replay heals edge-b; it cannot undo edge-a's newer record.
	for _, e := range s.edges {
		if code, body := httpPost("http://" + e.srv.AdminAddr() + "/resync"); code != http.StatusAccepted {
			t.Fatalf("%s POST /resync: %d %s", e.name, code, body)
		}
	}
	if rep := s.verifyEdges(convergeTimeout, true, b); !rep.OK() {
		t.Fatalf("edge-b after resync:\n%s", report(rep))
	}
	last := s.lastSeq()
	wait.For(t, convergeTimeout, "edge-a replays the stream", func() bool {
		rewound := strings.Contains(getBody(t, "http://"+a.srv.AdminAddr()+"/metrics"), "\nlinkpop_replication_resyncs_total 1\n")
		return rewound && a.srv.Status().Applied >= last
	})
	rep = s.verifyEdges(time.Second, true, a)
	if ea := edgeState(rep)["edge-a"]; ea.State != verify.Diverged || !slices.Equal(ea.Buckets, bucketsOf(ahead)) {
		t.Fatalf("edge-a after resync: %+v, want still diverged in bucket %v\n%s", ea, bucketsOf(ahead), report(rep))
	}

	// edge-b has no origin configured, so it cannot repair.
	if code, body := httpPost("http://" + b.srv.AdminAddr() + "/repair?bucket=0"); code != http.StatusConflict {
		t.Fatalf("edge-b POST /repair without an origin: %d %s", code, body)
	}
	q := []string{}
	for _, bk := range bucketsOf(ahead) {
		q = append(q, "bucket="+strconv.Itoa(bk))
	}
	code, body := httpPost("http://" + a.srv.AdminAddr() + "/repair?" + strings.Join(q, "&"))
	var res edge.RepairAnswer
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != http.StatusOK || len(res.Buckets) != 1 ||
		res.Buckets[0].Replaced != 1 || res.Buckets[0].Updated+res.Buckets[0].Removed+res.Buckets[0].Failed != 0 {
		t.Fatalf("edge-a POST /repair: %d %v\n%s", code, err, body)
	}
	if rep := s.verifyEdges(5*time.Second, true); !rep.OK() {
		t.Fatalf("after repair:\n%s", report(rep))
	}
	s.converge(m, nil)
	s.checkDigests()
}

// mustHold returns the record e holds for code.
func mustHold(t *testing.T, e *edgeNode, code string) link.Record {
	t.Helper()
	rec, ok, err := e.srv.Replica().Get(code)
	if err != nil || !ok {
		t.Fatalf("%s does not hold %s: %v", e.name, code, err)
	}
	return rec
}

// httpPost sends an empty POST and returns the status and body.
func httpPost(url string) (int, string) {
	resp, err := edgeClient.Post(url, "", nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// getBody GETs url and returns its whole body.
func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := edgeClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}
