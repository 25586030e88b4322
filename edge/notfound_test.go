package edge_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/link"
)

// getFrom is GET target over a real connection with an X-Forwarded-For
// header naming client.
func getFrom(t *testing.T, addr, target, client string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", client)
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestNotFoundLimiter: over the real listener, a client that collects
// NotFoundBurst 404s is answered 429 with Retry-After for further unknown
// codes, while its redirects and 410s are unaffected; the client is the
// address the trusted proxy names, so another client behind the same
// proxy still gets 404s; the 429s are counted.
func TestNotFoundLimiter(t *testing.T) {
	cfg := edgeConfig(t, unreachableNATS(t))
	cfg.NotFoundBurst = 5
	cfg.NotFoundRate = 0.01 // one token per 100s: none refills during the test
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	e := startEdge(t, cfg)
	if _, err := e.Replica().Put(record("known1", "https://example.com/k", 302, 1)); err != nil {
		t.Fatal(err)
	}
	gone := record("gone01", "https://example.com/g", 302, 2)
	gone.Status = link.StatusDisabled
	if _, err := e.Replica().Put(gone); err != nil {
		t.Fatal(err)
	}
	const scanner = "203.0.113.9"
	for i := range 5 {
		if r := getFrom(t, e.Addr(), fmt.Sprintf("/nosuch%d", i), scanner); r.StatusCode != 404 {
			t.Fatalf("unknown code %d: %d; want 404 within the burst", i, r.StatusCode)
		}
	}
	r := getFrom(t, e.Addr(), "/nosuch9", scanner)
	if r.StatusCode != 429 || r.Header.Get("Retry-After") != "100" {
		t.Fatalf("past the burst: %d Retry-After %q; want 429 with Retry-After 100", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := getFrom(t, e.Addr(), "/known1", scanner); r.StatusCode != 302 || r.Header.Get("Location") != "https://example.com/k" {
		t.Fatalf("a limited client's redirect: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := getFrom(t, e.Addr(), "/gone01", scanner); r.StatusCode != 410 {
		t.Fatalf("a limited client's 410: %d", r.StatusCode)
	}
	if r := get(t, e.Addr(), "/%zz"); r.StatusCode != 404 {
		t.Fatalf("an invalid path (no lookup, not limited): %d", r.StatusCode)
	}
	if r := getFrom(t, e.Addr(), "/nosuch1", "198.51.100.1"); r.StatusCode != 404 {
		t.Fatalf("another client behind the proxy: %d; want 404", r.StatusCode)
	}
	if got := metric(t, e.AdminAddr(), `linkpop_edge_requests_total{status="429"}`); got != 1 {
		t.Errorf(`linkpop_edge_requests_total{status="429"} = %v; want 1`, got)
	}
	if got := metric(t, e.AdminAddr(), "linkpop_edge_notfound_clients"); got != 2 {
		t.Errorf("linkpop_edge_notfound_clients = %v; want 2", got)
	}

	// Off: every unknown code is a 404.
	cfg = edgeConfig(t, unreachableNATS(t))
	cfg.NotFoundBurst, cfg.NotFoundRate, cfg.NoNotFoundLimit = 1, 0.01, true
	off := startEdge(t, cfg)
	for i := range 3 {
		if r := get(t, off.Addr(), "/nosuch"+strconv.Itoa(i)); r.StatusCode != 404 {
			t.Fatalf("limiter off: %d", r.StatusCode)
		}
	}
}

// BenchmarkNotFoundFlood is the negative flood: unknown codes as fast as
// the handler answers them, from one client (refused: 429 after the
// burst), from a new client per request (the table churns: the worst
// case for the limiter) and with the limiter off, next to a redirect
// (which never touches the limiter). Compare ns/op across the cases;
// refused/op is the fraction answered 429.
func BenchmarkNotFoundFlood(b *testing.B) {
	run := func(b *testing.B, noLimit bool, target string, addrs []net.Addr) {
		cfg := edgeConfig(b, unreachableNATS(b))
		cfg.NoNotFoundLimit = noLimit
		e := startEdge(b, cfg)
		if _, err := e.Replica().Put(record("bench01", benchURL, 302, 1)); err != nil {
			b.Fatal(err)
		}
		var req fasthttp.Request
		req.Header.SetMethod(fasthttp.MethodGet)
		req.SetRequestURI(target)
		req.Header.SetUserAgent(benchUA)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, addrs[0], nil)
		var refused, i int
		b.ReportAllocs()
		for b.Loop() {
			ctx.SetRemoteAddr(addrs[i%len(addrs)])
			i++
			ctx.Response.Reset()
			e.Resolve(&ctx)
			if ctx.Response.StatusCode() == 429 {
				refused++
			}
		}
		b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
	}
	one := []net.Addr{&net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 40000}}
	// Four times the table: every request is a client the table does
	// not hold.
	many := make([]net.Addr, 4*edge.DefaultNotFoundClients)
	for i := range many {
		many[i] = &net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 40000}
	}
	b.Run("miss/limiter=off", func(b *testing.B) { run(b, true, "/nosuch1", one) })
	b.Run("miss/limiter=on/one-client", func(b *testing.B) { run(b, false, "/nosuch1", one) })
	b.Run("miss/limiter=on/new-client-each", func(b *testing.B) { run(b, false, "/nosuch1", many) })
	b.Run("hit/limiter=on/one-client", func(b *testing.B) { run(b, false, "/bench01", one) })
}
