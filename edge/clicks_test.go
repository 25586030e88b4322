package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

const (
	browserUA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
	botUA     = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
)

// requestWith sends one request with extra header lines and returns the
// status.
func requestWith(t testing.TB, addr, method, target string, headers ...string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: sho.rt\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// readClickStream returns every batch of the click stream, decoded, and
// the raw messages.
func readClickStream(t testing.TB, natsURL string) ([]*linkpb.ClickBatch, [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{natsURL}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "LINKPOP_CLICKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*linkpb.ClickBatch
	var raw [][]byte
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := link.UnmarshalClickBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		raw = append(raw, m.Data)
	}
	return out, raw
}

// TestEdgeRecordsClicks runs an edge with analytics behind a trusted
// proxy: GET redirects are clicks (bots apart), HEAD, 404 and 410 are not,
// the client is the forwarded address, stopping the edge (what SIGTERM
// does) ships every click, and no address is in what was shipped.
func TestEdgeRecordsClicks(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	cfg := edgeConfig(t, st.ns.URL())
	cfg.NodeName = "edge:test"
	cfg.AnalyticsKey = []byte("fleet-analytics-key-for-tests")
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.ClickFlush = time.Minute // only the stop seals: nothing may be lost
	e := startEdge(t, cfg)
	st.publish(t, link.OpCreate, record("clk001", "https://example.com/1", 302, 1))
	st.publish(t, link.OpCreate, record("clk301", "https://example.com/2", 301, 1))
	off := record("clkoff", "https://example.com/off", 302, 2)
	off.Status = link.StatusDisabled
	last := st.publish(t, link.OpDisable, off)
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return e.Status().Applied >= last })

	ua := "User-Agent: " + browserUA
	want := map[string]uint64{}
	for i := range 20 {
		if got := requestWith(t, e.Addr(), "GET", "/clk001?utm=x", ua, "X-Forwarded-For: 198.51.100.7, 127.0.0.9", "Referer: https://news.example.org/item?id=1"); got != 302 {
			t.Fatalf("GET %d: %d", i, got)
		}
		want["clk001"]++
	}
	for range 5 {
		requestWith(t, e.Addr(), "GET", "/clk301", ua, "Forwarded: for=\"[2001:db8::77]:1234\"")
		want["clk301"]++
	}
	for range 3 {
		requestWith(t, e.Addr(), "GET", "/clk001", "User-Agent: "+botUA)
	}
	for _, r := range []struct{ method, target string }{{"HEAD", "/clk001"}, {"GET", "/nosuch9"}, {"GET", "/clkoff"}, {"POST", "/clk001"}, {"GET", "/"}} {
		requestWith(t, e.Addr(), r.method, r.target, ua)
	}
	if cs := e.Status().Clicks; cs == nil || cs.Edge != "edge_test" || cs.Instance == "" {
		t.Fatalf("status clicks %+v", cs)
	}
	e.stop()

	batches, raw := readClickStream(t, st.ns.URL())
	// A code clicked over several connections has an entry per recorder
	// shard they fell in: the entries add up (visitors as a set).
	got := map[string]uint64{}
	var bots uint64
	visitors := map[string]map[uint64]bool{}
	refs := map[string]uint64{}
	for _, b := range batches {
		if b.Edge != "edge_test" {
			t.Fatalf("batch from edge %q", b.Edge)
		}
		for _, lm := range b.Links {
			got[lm.Code] += lm.Clicks
			bots += lm.Bots
			if visitors[lm.Code] == nil {
				visitors[lm.Code] = map[uint64]bool{}
			}
			for _, v := range lm.Visitors {
				visitors[lm.Code][v] = true
			}
			if lm.Code == "clk001" {
				for _, k := range lm.Referrers {
					refs[k.Key] += k.Count
				}
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || bots != 3 {
		t.Fatalf("clicks %v bots %d, want %v and 3 bots", got, bots, want)
	}
	if refs["news.example.org"] != 20 || len(refs) != 1 {
		t.Errorf("clk001 referrers %v, want news.example.org: 20", refs)
	}
	if len(visitors["clk001"]) != 1 || len(visitors["clk301"]) != 1 {
		t.Fatalf("visitors %v, want one per code", visitors)
	}
	for i, data := range raw {
		for _, addr := range []string{"198.51.100.7", "2001:db8::77", "127.0.0.1"} {
			a := netip.MustParseAddr(addr)
			b16 := a.As16()
			if bytes.Contains(data, []byte(addr)) || bytes.Contains(data, a.AsSlice()) || bytes.Contains(data, b16[:]) {
				t.Fatalf("batch %d holds the address %s", i, addr)
			}
		}
	}
}

// TestEdgeAnalyticsOff: without a key nothing is recorded and no click
// stream is made.
func TestEdgeAnalyticsOff(t *testing.T) {
	st := startStream(t)
	e := startEdge(t, edgeConfig(t, st.ns.URL()))
	last := st.publish(t, link.OpCreate, record("noclk1", "https://example.com/1", 302, 1))
	wait.For(t, 10*time.Second, "edge applies the stream", func() bool { return e.Status().Applied >= last })
	if got := requestWith(t, e.Addr(), "GET", "/noclk1", "User-Agent: "+browserUA); got != 302 {
		t.Fatalf("GET: %d", got)
	}
	if err := e.SealClicks(); err != nil {
		t.Fatal(err)
	}
	if v := metric(t, e.AdminAddr(), "linkpop_edge_clicks_recorded_total"); v != 0 {
		t.Fatalf("recorded %v with analytics off", v)
	}
}

func TestClickEdgeName(t *testing.T) {
	f := func(node, want string) {
		t.Helper()
		if got := edge.ClickEdgeName(node); got != want || !link.ValidEdgeName(got) {
			t.Errorf("ClickEdgeName(%q) = %q, want %q", node, got, want)
		}
	}
	f("edge-a", "edge-a")
	f("host.example:8080", "host_example_8080")
	f("", "edge")
}
