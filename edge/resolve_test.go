package edge_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

func TestRedirectContract(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfg := edgeConfig(t, st.ns.URL())
	cfg.MaxAge = 2 * time.Hour
	e := startEdge(t, cfg)

	const encoded = "https://example.com/p%20a/th%C3%A9?q=a%2Fb&x=1&y=%25#frag"
	st.publish(t, link.OpCreate, record("plain", "https://example.com/a", 302, 1))
	st.publish(t, link.OpCreate, record("enc-q_1", encoded, 302, 1))
	st.publish(t, link.OpCreate, record("perm301", "http://EXAMPLE.com:8443/x", 301, 1))
	st.publish(t, link.OpCreate, record("perm308", "https://example.com/308", 308, 1))
	st.publish(t, link.OpCreate, record("temp307", "https://example.com/307", 307, 1))
	off := record("off", "https://example.com/off", 302, 2)
	off.Status = link.StatusDisabled
	st.publish(t, link.OpDisable, off)
	soon := record("soon", "https://example.com/soon", 302, 1)
	soon.ExpiresAt = time.Now().Add(300 * time.Millisecond).UTC().Truncate(time.Millisecond)
	last := st.publish(t, link.OpCreate, soon)
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return e.Status().Applied >= last })

	f := func(method, target string, status int, location, cacheControl string) {
		t.Helper()
		r := do(t, e.Addr(), method, target)
		if r.StatusCode != status || r.Header.Get("Location") != location || r.Header.Get("Cache-Control") != cacheControl {
			t.Errorf("%s %s = %d Location %q Cache-Control %q; want %d %q %q\n%s",
				method, target, r.StatusCode, r.Header.Get("Location"), r.Header.Get("Cache-Control"),
				status, location, cacheControl, r.raw)
		}
		if got := r.Header.Get("Server"); got != "linkpop" {
			t.Errorf("%s %s: Server %q, want linkpop", method, target, got)
		}
		if r.Header.Get("Set-Cookie") != "" || strings.Contains(strings.ToLower(r.raw), "set-cookie") {
			t.Errorf("%s %s: response carries a cookie:\n%s", method, target, r.raw)
		}
		if status >= 400 && !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s %s: Content-Type %q, want text/plain", method, target, r.Header.Get("Content-Type"))
		}
		if method == "HEAD" && !strings.HasSuffix(r.raw, "\r\n\r\n") {
			t.Errorf("HEAD %s carries a body:\n%q", target, r.raw)
		}
		if len(r.body) > 32 {
			t.Errorf("%s %s: body of %d bytes", method, target, len(r.body))
		}
	}
	const private = "private, max-age=0"
	f("GET", "/plain", 302, "https://example.com/a", private)
	f("GET", "/plain?utm_source=x&y", 302, "https://example.com/a", private)
	f("GET", "http://sho.rt/plain?x", 302, "https://example.com/a", private)
	f("GET", "/enc-q_1", 302, encoded, private)
	f("GET", "/perm301", 301, "http://EXAMPLE.com:8443/x", "max-age=7200")
	f("GET", "/perm308", 308, "https://example.com/308", "max-age=7200")
	f("GET", "/temp307", 307, "https://example.com/307", private)
	f("GET", "/unknown", 404, "", "")
	f("GET", "/off", 410, "", "")
	f("HEAD", "/plain", 302, "https://example.com/a", private)
	f("HEAD", "/perm301", 301, "http://EXAMPLE.com:8443/x", "max-age=7200")
	f("HEAD", "/unknown", 404, "", "")
	f("HEAD", "/off", 410, "", "")

	// Invalid paths are 404 without a lookup.
	lookups := metric(t, e.AdminAddr(), "linkpop_replica_lookups_total")
	f("GET", "/", 404, "", "")
	f("GET", "/a", 404, "", "")
	f("GET", "/pl", 404, "", "")
	f("GET", "/x/y", 404, "", "")
	f("GET", "/plain/", 404, "", "")
	f("GET", "//plain", 404, "", "")
	f("GET", "/plain.", 404, "", "")
	f("GET", "/%2e%2e", 404, "", "")
	f("GET", "/../plain", 404, "", "")
	f("GET", "/%70lain", 404, "", "")
	f("GET", "/"+strings.Repeat("x", link.MaxCodeLen+1), 404, "", "")
	f("GET", "/"+strings.Repeat("x", 4000), 404, "", "")
	f("GET", "/abc%0d%0aSet-Cookie:x", 404, "", "")
	f("GET", "/abc%0d%0aLocation:%20http://evil", 404, "", "")
	f("GET", "http://sho.rt", 404, "", "")
	f("HEAD", "/x/y", 404, "", "")
	if got := metric(t, e.AdminAddr(), "linkpop_replica_lookups_total"); got != lookups {
		t.Errorf("invalid paths caused %v replica lookups", got-lookups)
	}

	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		r := do(t, e.Addr(), m, "/plain")
		if r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /plain = %d Allow %q; want 405 \"GET, HEAD\"", m, r.StatusCode, r.Header.Get("Allow"))
		}
	}

	// Expiry is evaluated on every request.
	wait.For(t, 10*time.Second, "expired link answers 410", func() bool {
		return get(t, e.Addr(), "/soon").StatusCode == 410
	})

	for _, c := range []struct {
		series string
		min    float64
	}{
		{`linkpop_edge_requests_total{status="302"}`, 5},
		{`linkpop_edge_requests_total{status="301"}`, 2},
		{`linkpop_edge_requests_total{status="404"}`, 18},
		{`linkpop_edge_requests_total{status="405"}`, 5},
		{`linkpop_edge_requests_total{status="410"}`, 3},
		{`linkpop_edge_request_duration_seconds_count`, 1}, // sampled: 1 request in 8,
		{`linkpop_edge_ready`, 1},
		{`linkpop_replica_links`, 7},
		{`process_resident_memory_bytes`, 1},
	} {
		if got := metric(t, e.AdminAddr(), c.series); got < c.min {
			t.Errorf("metric %s = %v, want >= %v", c.series, got, c.min)
		}
	}
}

func TestPropagation(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	e := startEdge(t, edgeConfig(t, st.ns.URL()))

	location := func() (int, string) {
		r := get(t, e.Addr(), "/prop1")
		return r.StatusCode, r.Header.Get("Location")
	}
	st.publish(t, link.OpCreate, record("prop1", "https://example.com/v1", 302, 1))
	wait.For(t, 10*time.Second, "create reaches the edge", func() bool {
		s, l := location()
		return s == 302 && l == "https://example.com/v1"
	})
	st.publish(t, link.OpUpdate, record("prop1", "https://example.com/v2", 307, 3))
	wait.For(t, 10*time.Second, "update reaches the edge", func() bool {
		s, l := location()
		return s == 307 && l == "https://example.com/v2"
	})
	// An event that arrives late, with an older revision, changes nothing.
	seq := st.publish(t, link.OpUpdate, record("prop1", "https://example.com/old", 302, 2))
	wait.For(t, 10*time.Second, "edge applies the late event", func() bool { return e.Status().Applied >= seq })
	if s, l := location(); s != 307 || l != "https://example.com/v2" {
		t.Fatalf("after an older revision: %d %q", s, l)
	}
	off := record("prop1", "https://example.com/v2", 307, 4)
	off.Status = link.StatusDisabled
	seq = st.publish(t, link.OpDisable, off)
	wait.For(t, 10*time.Second, "disable reaches the edge", func() bool {
		s, _ := location()
		return s == 410
	})

	wait.For(t, 10*time.Second, "edge ready", func() bool {
		r := get(t, e.AdminAddr(), "/readyz")
		return r.StatusCode == 200 && r.body == "ok\n"
	})
	if r := get(t, e.AdminAddr(), "/healthz"); r.StatusCode != 200 {
		t.Errorf("/healthz = %d", r.StatusCode)
	}
	var status edge.Status
	r := get(t, e.AdminAddr(), "/status")
	if err := json.Unmarshal([]byte(r.body), &status); err != nil {
		t.Fatalf("/status: %v\n%s", err, r.body)
	}
	if status.Node == "" || status.Applied != seq || status.Lag != 0 || !status.Ready || status.Stale ||
		!status.Connected || !status.Bootstrapped || status.Links != 1 {
		t.Errorf("/status = %+v", status)
	}
	for _, key := range []string{`"node"`, `"applied"`, `"stream_last"`, `"lag"`, `"seconds_since_apply"`,
		`"seconds_since_contact"`, `"connected"`, `"bootstrapped"`, `"ready"`, `"stale"`, `"links"`,
		`"quarantined"`, `"hot_entries"`, `"negative_entries"`} {
		if !strings.Contains(r.body, key) {
			t.Errorf("/status lacks %s:\n%s", key, r.body)
		}
	}
}

// The edge's redirect listener closes a connection that sends half a
// request (its read budget, 5 s, is swept rather than set as a deadline
// per request; see connTimeouts): without it the connection would be held
// open forever.
func TestRedirectListenerClosesSlowRequests(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	e := startEdge(t, edgeConfig(t, st.ns.URL()))
	c, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /abc HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	_, err = io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the edge held a half-sent request open for 60 s")
	}
}
