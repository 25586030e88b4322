package edge_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/wait"
)

// TestStatusMembersListen: each member of /status announces its redirect
// listener, and the object decodes into client.EdgeStatus, the type
// `linkpop probe` reads it with.
func TestStatusMembersListen(t *testing.T) {
	st := startStream(t)
	cfgA := edgeConfig(t, st.ns.URL())
	cfgA.NodeName, cfgA.GossipBind = "edge-a", "127.0.0.1:0"
	a := startEdge(t, cfgA)
	cfgB := edgeConfig(t, st.ns.URL())
	cfgB.NodeName, cfgB.GossipBind, cfgB.GossipJoin = "edge-b", "127.0.0.1:0", []string{a.GossipAddr()}
	b := startEdge(t, cfgB)
	want := map[string]string{"edge-a": a.Addr(), "edge-b": b.Addr()}
	var got client.EdgeStatus
	wait.For(t, 30*time.Second, "both members with listeners", func() bool {
		got = client.EdgeStatus{}
		if err := json.Unmarshal([]byte(get(t, a.AdminAddr(), "/status").body), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Members) != 2 {
			return false
		}
		for _, m := range got.Members {
			if want[m.Name] != m.Listen || m.Self != (m.Name == "edge-a") {
				return false
			}
		}
		return true
	})
	if got.Node != "edge-a" {
		t.Errorf("node %q", got.Node)
	}
}
