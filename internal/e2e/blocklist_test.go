package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/origin"
)

// TestBlocklistRetroactive: a blocklist file is in force for creates and
// updates; when a reload (ReloadBlocklists, what SIGHUP calls) or the
// periodic refresh lists a new host, the active links to it and its
// subdomains are disabled through the ordinary change stream, so both
// edges answer 410, with the reason recorded on the link; links to
// other hosts are untouched. The time from the file change to 410 on
// both edges is logged (the figure in the README).
func TestBlocklistRetroactive(t *testing.T) {
	list := filepath.Join(t.TempDir(), "blocklist.txt")
	writeFile(t, list, "# plain list\nold.example\n")
	s := newSystem(t, func(c *origin.Config) {
		c.BlocklistFiles = []string{list}
		c.BlocklistRefresh = time.Second
	})

	// In force at start: a listed host and a private address are refused.
	for _, u := range []string{"https://old.example/", "https://a.old.example/", "http://169.254.169.254/latest/", "http://0x7f.1/"} {
		if _, err := s.api.c.CreateLink(context.Background(), client.CreateLink{URL: u}, client.CreateOptions{}); !isAPIError(err, http.StatusBadRequest, "url_blocked") {
			t.Fatalf("create %s: %v; want 400 url_blocked", u, err)
		}
	}
	codes := map[string]string{ // code -> target
		"blk-a": "https://evil.example/x",
		"blk-b": "https://deep.sub.EVIL.example./y",
		"blk-c": "https://good.example/",
		"blk-d": "https://evil.example.org/",
		"blk-e": "https://phish.example/login",
		"blk-f": "http://1.2.3.4/dl",
	}
	loc := map[string]string{}
	for code, u := range codes {
		l := s.api.create(t, client.CreateLink{URL: u, Code: code})
		loc[code] = l.URL
	}
	waitAnswers := func(what string, want map[string]int) time.Duration {
		t.Helper()
		start := time.Now()
		eventually(t, convergeTimeout, func() error {
			for _, e := range s.edges {
				var bad []string
				for code, st := range want {
					l := ""
					if st == http.StatusFound {
						l = loc[code]
					}
					if m := checkCode(http.MethodGet, e.base, code, st, l); m != "" {
						bad = append(bad, m)
					}
				}
				if len(bad) > 0 {
					return &mismatch{e.name + " " + what, bad}
				}
			}
			return nil
		})
		return time.Since(start)
	}
	waitAnswers("before", map[string]int{"blk-a": 302, "blk-b": 302, "blk-c": 302, "blk-d": 302, "blk-e": 302, "blk-f": 302})

	// A reload, as on SIGHUP, adds evil.example from a hosts file line.
	writeFile(t, list, "old.example\n0.0.0.0 evil.example\n")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.origin.srv.ReloadBlocklists(ctx); err != nil {
		t.Fatalf("ReloadBlocklists: %v", err)
	}
	swept := time.Since(start)
	waitAnswers("after reload", map[string]int{"blk-a": 410, "blk-b": 410, "blk-c": 302, "blk-d": 302, "blk-e": 302, "blk-f": 302})
	t.Logf("reload: links disabled at the origin in %v, 410 on both edges %v after the reload began", swept, time.Since(start))
	for code, entry := range map[string]string{"blk-a": "evil.example", "blk-b": "evil.example"} {
		l := s.api.get(t, code)
		if l.Status != "disabled" || l.DisabledReason != "blocklist: "+entry {
			t.Errorf("%s: status %q, reason %q; want disabled by %q", code, l.Status, l.DisabledReason, entry)
		}
	}
	if l := s.api.get(t, "blk-c"); l.Status != "active" || l.DisabledReason != "" {
		t.Errorf("blk-c: %q %q; want active without a reason", l.Status, l.DisabledReason)
	}
	// Refused from now on, for creates and for updates.
	if _, err := s.api.c.CreateLink(context.Background(), client.CreateLink{URL: "https://www.evil.example/"}, client.CreateOptions{}); !isAPIError(err, http.StatusBadRequest, "url_blocked") {
		t.Errorf("create after reload: %v; want url_blocked", err)
	}
	evil := "https://evil.example/"
	if _, err := s.api.c.UpdateLink(context.Background(), "blk-c", client.UpdateLink{URL: &evil}, 0); !isAPIError(err, http.StatusBadRequest, "url_blocked") {
		t.Errorf("update after reload: %v; want url_blocked", err)
	}

	// The periodic refresh (1s here) picks up a URLhaus CSV line and an
	// address with no reload call.
	writeFile(t, list, "old.example\n0.0.0.0 evil.example\n"+
		`"1","2026-01-02 10:00:00","http://phish.example/login","online","","phishing","","",""`+"\n1.2.3.4\n")
	d := waitAnswers("after refresh", map[string]int{"blk-a": 410, "blk-b": 410, "blk-c": 302, "blk-d": 302, "blk-e": 410, "blk-f": 410})
	t.Logf("refresh: 410 on both edges %v after the file changed (refresh interval 1s)", d)
	if l := s.api.get(t, "blk-f"); l.DisabledReason != "blocklist: 1.2.3.4" {
		t.Errorf("blk-f reason %q", l.DisabledReason)
	}
	s.checkDigests()
}

type mismatch struct {
	what string
	bad  []string
}

func (m *mismatch) Error() string { return m.what + ": " + strings.Join(m.bad, "; ") }

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// isAPIError reports whether err is the API's answer with status and code.
func isAPIError(err error, status int, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == status && e.Code == code
}
