// Package deploy holds no code: its tests check the deployment files
// (Prometheus rules, the Grafana dashboard, runbook links) against the
// code and with promtool.
package deploy

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	rulesFile = "prometheus/linkpop-rules.yml"
	dashboard = "grafana/linkpop-fleet.json"
)

// TestPromtool runs `promtool check rules` and `promtool test rules` on
// the rule file and its unit tests. Debian's prometheus package provides
// promtool; .ci/run installs it.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus): the alert rules are not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", "linkpop-rules.yml"},
		{"test", "rules", "tests/linkpop-rules-test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var (
	alertRE   = regexp.MustCompile(`(?m)^\s*- alert: (\S+)`)
	runbookRE = regexp.MustCompile(`(?m)^\s*runbook_url: (\S+)`)
	metricRE  = regexp.MustCompile(`\blinkpop_[a-z0-9_]+`)
)

// TestRunbookLinks: every alert carries a runbook_url, and each names a
// page of docs/runbooks/ that exists.
func TestRunbookLinks(t *testing.T) {
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	alerts := alertRE.FindAllStringSubmatch(string(b), -1)
	// Each alert's block runs to the next "- alert:" (or "- record:").
	blocks := regexp.MustCompile(`(?m)^\s*- (alert|record):`).Split(string(b), -1)
	n := 0
	for _, blk := range blocks[1:] {
		if !strings.Contains(blk, "annotations:") {
			continue // a recording rule
		}
		n++
		m := runbookRE.FindStringSubmatch(blk)
		name := strings.Fields(blk)[0]
		if m == nil {
			t.Errorf("alert %s has no runbook_url", name)
			continue
		}
		page, ok := strings.CutPrefix(m[1], "docs/runbooks/")
		if !ok || strings.Contains(page, "/") || !strings.HasSuffix(page, ".md") {
			t.Errorf("alert %s: runbook_url %q is not docs/runbooks/<page>.md", name, m[1])
			continue
		}
		if _, err := os.Stat(filepath.Join("..", "docs", "runbooks", page)); err != nil {
			t.Errorf("alert %s: runbook %s: %v", name, page, err)
		}
	}
	if n != len(alerts) || n < 10 {
		t.Errorf("%d alerts with annotations, %d alerts in all", n, len(alerts))
	}
}

// TestMetricNames: every linkpop_* metric the rules and the dashboard use
// is registered (or written) by the code, so a renamed metric cannot
// leave an alert that never fires.
func TestMetricNames(t *testing.T) {
	known := map[string]bool{}
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == ".data") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range metricRE.FindAllString(string(b), -1) {
			known[m] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(known) < 50 {
		t.Fatalf("only %d metric names found in the code", len(known))
	}
	db, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(db, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, string(rules))
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			base := m
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(m, suf); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("metric %s is used in deploy/ but registered nowhere in the code", m)
			}
		}
	}
}
