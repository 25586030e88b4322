package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/client/cli"
)

// runCLI runs the linkpop CLI against the system's origin.
func (s *system) runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := map[string]string{cli.EnvAPI: s.api.base, cli.EnvKey: testAdminKey}
	code := cli.Main(context.Background(), args, cli.IO{
		Stdout: &out, Stderr: &errb,
		Getenv:    func(k string) string { return env[k] },
		ConfigDir: func() (string, error) { return s.t.TempDir(), nil },
	})
	return code, out.String(), errb.String()
}

// TestProbe: `linkpop probe` takes the top links from the stats API,
// finds both edges from one edge's /status members, and passes (exit 0)
// when every edge answers each link's redirect and Location, a disabled
// one 410; its metrics file says so. With an edge stopped it fails
// (exit 1) and the metrics name the edge. HEAD probes are not clicks.
func TestProbe(t *testing.T) {
	s := newSystem(t)
	hot := s.api.create(t, client.CreateLink{URL: "https://example.com/hot", Code: "probe-hot"})
	warm := s.api.create(t, client.CreateLink{URL: "https://example.com/warm", Code: "probe-warm", Redirect: 301})
	gone := s.api.create(t, client.CreateLink{URL: "https://example.com/gone", Code: "probe-gone"})
	s.api.disable(t, "probe-gone")
	_ = gone
	// Clicks, so the links are the top ones.
	click := func(base, code string) {
		req, _ := http.NewRequest(http.MethodGet, base+"/"+code, nil)
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0")
		req.Header.Set("X-Forwarded-For", "8.8.8.8")
		resp, err := edgeClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}
	wantCodes := map[string]bool{"probe-hot": true, "probe-warm": true}
	eventually(t, convergeTimeout, func() error {
		for _, e := range s.edges {
			if m := checkCode(http.MethodGet, e.base, hot.Code, 302, hot.URL); m != "" {
				return &mismatch{e.name, []string{m}}
			}
			click(e.base, warm.Code)
			if m := checkCode(http.MethodGet, e.base, "probe-gone", 410, ""); m != "" {
				return &mismatch{e.name, []string{m}}
			}
		}
		return nil
	})
	for range 3 {
		for _, e := range s.edges {
			click(e.base, hot.Code)
		}
	}
	for _, e := range s.edges {
		if err := e.srv.SealClicks(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, convergeTimeout, func() error {
		top, err := s.client.Top(context.Background(), client.StatsQuery{From: time.Now().Add(-time.Hour), Limit: 10})
		if err != nil {
			return err
		}
		n := 0
		for _, l := range top.Links {
			if wantCodes[l.Code] {
				n++
			}
		}
		if n < 2 {
			return &mismatch{"top links", []string{"not yet both links"}}
		}
		return nil
	})
	eventually(t, convergeTimeout, func() error {
		if n := s.linkClicks(t, hot.Code); n != 6 {
			return &mismatch{"clicks", []string{"hot has " + strconvU(n) + " of 6"}}
		}
		return nil
	})

	metricsFile := filepath.Join(t.TempDir(), "probe.prom")
	adminA := "http://" + s.edges[0].srv.AdminAddr()
	var code int
	var out, errOut string
	// Gossip must have both members before discovery sees both.
	eventually(t, convergeTimeout, func() error {
		code, out, errOut = s.runCLI("probe", "--discover", adminA, "--top", "10", "--from", "1h", "--code", "probe-gone", "--metrics-file", metricsFile, "-o", "json")
		if code != 0 {
			return &mismatch{"probe", []string{out, errOut}}
		}
		var res []map[string]any
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			return err
		}
		if len(res) != 6 { // 3 links on 2 edges
			return &mismatch{"probe", []string{"want 6 checks: " + out}}
		}
		return nil
	})
	m, err := os.ReadFile(metricsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range s.edges {
		want := `linkpop_probe_failures{edge="` + e.base + `"} 0`
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	// Once the stats are complete past the probe, it added no click.
	probed := time.Now()
	for _, e := range s.edges {
		if err := e.srv.SealClicks(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, convergeTimeout, func() error {
		st, err := s.client.Stats(context.Background(), hot.Code, client.StatsQuery{From: time.Now().Add(-time.Hour)})
		if err != nil {
			return err
		}
		if st.CompleteThrough == nil || st.CompleteThrough.Before(probed) {
			return &mismatch{"stats", []string{"not complete past the probe yet"}}
		}
		if st.Clicks != 6 {
			t.Errorf("probing counted clicks: %d, want 6", st.Clicks)
		}
		return nil
	})

	// An edge down: the probe fails and says which.
	b := s.edges[1]
	s.stopEdge(b)
	code, out, errOut = s.runCLI("probe", "--edge", s.edges[0].base, "--edge", b.base, "--top", "10", "--from", "1h", "--metrics-file", metricsFile)
	if code != 1 || !strings.Contains(errOut, "probe failed") {
		t.Fatalf("probe with an edge down: exit %d\n%s\n%s", code, out, errOut)
	}
	m, _ = os.ReadFile(metricsFile)
	// Every check of the stopped edge failed (how many links the top
	// holds depends on which codes drew clicks), none of the other's.
	value := func(series string) string {
		for _, line := range strings.Split(string(m), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				return v
			}
		}
		return ""
	}
	down := `{edge="` + b.base + `"}`
	if f, c := value("linkpop_probe_failures"+down), value("linkpop_probe_checks"+down); f == "" || f == "0" || f != c ||
		value(`linkpop_probe_failures{edge="`+s.edges[0].base+`"}`) != "0" {
		t.Errorf("metrics with an edge down:\n%s", m)
	}
	t.Logf("probe output:\n%s", out)
}

func strconvU(n uint64) string { return strconv.FormatUint(n, 10) }

// linkClicks is the link's click count from the stats API.
func (s *system) linkClicks(t *testing.T, code string) uint64 {
	t.Helper()
	st, err := s.client.Stats(context.Background(), code, client.StatsQuery{From: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Clicks
}
