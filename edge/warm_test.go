package edge_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestWarmHotSet: the codes visitors asked for are saved in the hot set
// when the edge stops, and a restart (here with the stream unreachable)
// has them in its hot cache before it serves; a fresh edge of the same
// PoP takes its ready peer's hot set before it reports ready. A corrupt
// hot set file is ignored.
func TestWarmHotSet(t *testing.T) {
	leaktest.Check(t)
	st := startStream(t)
	var last uint64
	for i := range 30 {
		last = st.publish(t, link.OpCreate, record(fmt.Sprintf("warm%02d", i), "https://example.com/", 302, uint64(i+1)))
	}
	cfgA := edgeConfig(t, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind = "edge-a", "127.0.0.1:0"
	cfgA.WarmEntries = 5
	a := startEdge(t, cfgA)
	wait.For(t, 20*time.Second, "a applies and is ready", func() bool {
		return a.Status().Applied >= last && get(t, a.AdminAddr(), "/readyz").StatusCode == 200
	})
	hot := []string{"warm03", "warm07", "warm11", "warm19", "warm23"}
	for _, c := range hot {
		if r := get(t, a.Addr(), "/"+c); r.StatusCode != 302 {
			t.Fatalf("%s: %d", c, r.StatusCode)
		}
	}
	sorted := func(c []string) []string { c = slices.Clone(c); slices.Sort(c); return c }

	// A fresh edge joining a takes a's hot set before it is ready.
	cfgB := edgeConfig(t, st.ns.URL())
	cfgB.NodeName, cfgB.GossipBind, cfgB.GossipJoin = "edge-b", "127.0.0.1:0", []string{a.GossipAddr()}
	cfgB.HotCacheEntries = 5 // what b replays cannot crowd the peer's set out
	b := startEdge(t, cfgB)
	wait.For(t, 30*time.Second, "b ready", func() bool { return get(t, b.AdminAddr(), "/readyz").StatusCode == 200 })
	if got := sorted(b.Replica().HotCodes(100)); !slices.Equal(got, hot) {
		t.Errorf("fresh peer's hot cache %v, want a's hot set %v; b sees %+v; a's /hotset %q", got, hot, b.Members(), get(t, a.AdminAddr(), "/hotset").body)
	}

	a.stop()
	cfgA.NATS.URLs = []string{unreachableNATS(t)}
	cfgA.GossipBind = ""
	a2 := startEdge(t, cfgA)
	if got := sorted(a2.Replica().HotCodes(100)); !slices.Equal(got, hot) {
		t.Errorf("restarted edge's hot cache %v, want %v", got, hot)
	}
	if r := get(t, a2.AdminAddr(), "/readyz"); r.StatusCode != 200 {
		t.Errorf("restarted edge /readyz = %d %q", r.StatusCode, r.body)
	}
	// Both listeners have served before the stop: a fasthttp Shutdown
	// that runs before Serve registered its listener leaves Serve
	// accepting forever.
	get(t, a2.Addr(), "/warm03")
	a2.stop()

	path := filepath.Join(cfgA.DataDir, "hotset")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-2] ^= 1 // a byte of the last code
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	a3 := startEdge(t, cfgA)
	if n := len(a3.Replica().HotCodes(100)); n != 0 {
		t.Errorf("a corrupt hot set loaded %d codes", n)
	}
	get(t, a3.Addr(), "/warm03")
	get(t, a3.AdminAddr(), "/readyz")
}
