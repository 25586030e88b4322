package origin_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/origin"
)

// TestBlocklistFileErrors: an unreadable blocklist file stops the start
// with an error naming it; one that becomes unreadable later fails the
// reload, counted, and the lists in force stay in force (a list moved
// away or half-written must not unlist its hosts).
func TestBlocklistFileErrors(t *testing.T) {
	leaktest.Check(t)
	missing := filepath.Join(t.TempDir(), "nope.txt")
	_, err := origin.New(origin.Config{DataDir: t.TempDir(), Dev: true, DevNATSAddr: "127.0.0.1:0", BlocklistFiles: []string{missing}})
	if err == nil || !strings.Contains(err.Error(), "nope.txt") {
		t.Fatalf("New with a missing blocklist = %v; want an error naming it", err)
	}

	list := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(list, []byte("0.0.0.0 listed.test\nnot..valid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := apiStart(t, func(c *origin.Config) { c.BlocklistFiles = []string{list}; c.BlocklistRefresh = -1 })
	refused := func() bool {
		body, _ := json.Marshal(map[string]string{"url": "https://www.listed.test/"})
		r := o.do("POST", "/v1/links", apiAdminKey, string(body))
		return r.status == 400 && r.errCode() == "url_blocked"
	}
	if !refused() {
		t.Fatal("listed host accepted")
	}
	if err := os.Remove(list); err != nil {
		t.Fatal(err)
	}
	if err := o.srv.ReloadBlocklists(context.Background()); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if !refused() {
		t.Fatal("a failed reload unlisted the host")
	}
	m := o.metricsText()
	for _, want := range []string{
		`linkpop_origin_blocklist_reloads_total{result="error"} 1`,
		"linkpop_origin_blocklist_entries 1",
		"linkpop_origin_blocklist_skipped_entries 1",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
