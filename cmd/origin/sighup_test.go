package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
)

// TestSIGHUPReloadsBlocklists: the origin binary rereads its blocklist
// file on SIGHUP (the refresh interval is off): a host added to the file
// is refused for new links and its existing link is disabled with the
// reason recorded; the process keeps running.
func TestSIGHUPReloadsBlocklists(t *testing.T) {
	bin := proctest.Build(t, "github.com/linkpop/linkpop/cmd/origin")
	dir := t.TempDir()
	list := filepath.Join(dir, "blocklist.txt")
	if err := os.WriteFile(list, []byte("old.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api := proctest.FreeAddr(t)
	const key = "sighup-test-admin-key-0123"
	p := proctest.Start(t, proctest.Spec{Path: bin, Quiet: true, Args: []string{
		"-data", filepath.Join(dir, "data"), "-dev", "-dev-nats-addr", proctest.FreeAddr(t),
		"-listen", api, "-admin", proctest.FreeAddr(t), "-admin-key", key, "-no-collector",
		"-blocklist-file", list, "-blocklist-refresh", "-1s",
	}})
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+api+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait.For(t, 60*time.Second, "origin up", func() bool {
		st, _ := call("GET", "/v1/links", "")
		return st == 200
	})
	if st, body := call("POST", "/v1/links", `{"url":"https://new.example/x","code":"hup1"}`); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	if err := os.WriteFile(list, []byte("old.example\nnew.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "link disabled after SIGHUP", func() bool {
		_, body := call("GET", "/v1/links/hup1", "")
		return strings.Contains(body, `"status":"disabled"`) && strings.Contains(body, `"disabled_reason":"blocklist: new.example"`)
	})
	if st, body := call("POST", "/v1/links", `{"url":"https://a.new.example/"}`); st != 400 || !strings.Contains(body, "url_blocked") {
		t.Fatalf("create after SIGHUP: %d %s", st, body)
	}
	if exited, err := p.Exited(); exited {
		t.Fatalf("origin exited on SIGHUP: %v", err)
	}
}
