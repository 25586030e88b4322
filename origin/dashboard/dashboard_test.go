package dashboard_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/origin/dashboard"
)

func get(t *testing.T, h http.Handler, method, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// TestHeaders: every answer, 404 included, carries the security headers;
// files have their own content types; ETags give 304s.
func TestHeaders(t *testing.T) {
	h := dashboard.Handler()
	f := func(path string, status int, ctype string) {
		t.Helper()
		resp := get(t, h, "GET", path)
		if resp.StatusCode != status || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q, want %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), status, ctype)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %s", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q allows unsafe-*", path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
			if resp.Header.Get(k) != v {
				t.Errorf("GET %s: %s %q, want %q", path, k, resp.Header.Get(k), v)
			}
		}
	}
	f("/", 200, "text/html")
	f("/dashboard/js/app.js", 200, "text/javascript")
	f("/dashboard/style.css", 200, "text/css")
	f("/dashboard/vendor/uPlot.esm.js", 200, "text/javascript")
	f("/dashboard/vendor/countries-110m.json", 200, "application/json")
	f("/dashboard/index.html", 404, "text/plain") // the page is only at /
	f("/dashboard/", 404, "text/plain")
	f("/dashboard/nope.js", 404, "text/plain")
	f("/dashboard/../dashboard.go", 404, "text/plain")

	resp := get(t, h, "GET", "/dashboard/js/app.js")
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("app.js: ETag %q Cache-Control %q", etag, resp.Header.Get("Cache-Control"))
	}
	if resp := get(t, h, "GET", "/dashboard/js/app.js", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	if resp := get(t, h, "HEAD", "/"); resp.StatusCode != 200 {
		t.Errorf("HEAD /: %d", resp.StatusCode)
	}
}

// TestNoInlineCode: the CSP forbids inline script and style, so none may
// exist: no <script> with a body, no style attribute or element, no on*
// handler attribute in the page; and the scripts never write HTML
// (innerHTML, outerHTML, insertAdjacentHTML, document.write) or eval.
func TestNoInlineCode(t *testing.T) {
	page, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`<script[^>]*>[^<]+</script>`, `(?i)\sstyle=`, `(?i)<style`, `(?i)\son[a-z]+=`, `(?i)javascript:`} {
		if m := regexp.MustCompile(re).Find(page); m != nil {
			t.Errorf("index.html has inline code %q", m)
		}
	}
	err = filepath.WalkDir("static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".js") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "localStorage", "document.cookie"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s uses %s", p, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVendored: each vendored file matches the checksum VENDOR.md lists,
// and every file in vendor/ is listed (or is a licence).
func TestVendored(t *testing.T) {
	md, err := os.ReadFile("static/vendor/VENDOR.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile(`(?m)^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$`).FindAllStringSubmatch(string(md), -1)
	if len(rows) < 4 {
		t.Fatalf("VENDOR.md lists %d files", len(rows))
	}
	listed := map[string]bool{"VENDOR.md": true}
	for _, r := range rows {
		listed[r[1]] = true
		f, err := os.Open(filepath.Join("static/vendor", r[1]))
		if err != nil {
			t.Error(err)
			continue
		}
		h := sha256.New()
		_, _ = io.Copy(h, f)
		f.Close()
		if got := hex.EncodeToString(h.Sum(nil)); got != r[2] {
			t.Errorf("%s: sha256 %s, VENDOR.md says %s", r[1], got, r[2])
		}
	}
	ents, err := os.ReadDir("static/vendor")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !listed[e.Name()] && !strings.HasPrefix(e.Name(), "LICENSE.") {
			t.Errorf("static/vendor/%s is not listed in VENDOR.md", e.Name())
		}
	}
}
