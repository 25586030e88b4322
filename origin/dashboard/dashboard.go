// Package dashboard is the web dashboard for link creators: plain HTML,
// ES modules and CSS embedded in the origin binary and served on the API
// listener. It talks to the public v1 API only, from the browser, with
// the key the creator signs in with (kept in sessionStorage, sent as the
// Bearer header), so it needs nothing from the origin but these files.
//
// The page is served at / and every asset under /dashboard/; routing
// inside the page uses the URL fragment (#/links/abc), so no other path
// is needed. Third-party files live in static/vendor, pinned and listed
// with their licences in static/vendor/VENDOR.md; a test checks their
// checksums, so a changed file is a reviewed change.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Patterns are the net/http ServeMux patterns the dashboard answers: the
// page at / and its assets under /dashboard/.
var Patterns = []string{"GET /{$}", "GET " + AssetPrefix}

// AssetPrefix is the path every asset is served under.
const AssetPrefix = "/dashboard/"

// CSP is the Content-Security-Policy of every answer: only the origin's
// own scripts, styles and API; no inline script or style, no eval, no
// frames, no plugins.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'none'; " +
	"frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// file is one embedded asset with its precomputed ETag.
type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the dashboard: index.html at /, the files of static/
// under AssetPrefix, 404 for anything else. Every answer carries the
// security headers (CSP, nosniff, no referrer, no framing).
func Handler() http.Handler {
	files := map[string]file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // not left to the system's mime table
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".html":
			ctype = "text/html; charset=utf-8"
		case ".json":
			ctype = "application/json"
		case ".svg":
			ctype = "image/svg+xml"
		case ".md", ".txt":
			ctype = "text/plain; charset=utf-8"
		}
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		files[strings.TrimPrefix(p, "static/")] = file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("dashboard: embedded files: " + err.Error()) // the embed is part of the binary
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		name := ""
		switch {
		case r.URL.Path == "/":
			name = "index.html"
		case strings.HasPrefix(r.URL.Path, AssetPrefix):
			name = strings.TrimPrefix(r.URL.Path, AssetPrefix)
		}
		f, ok := files[name]
		if !ok || name == "index.html" && r.URL.Path != "/" {
			h.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("404 not found\n"))
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		// Revalidated on every load, so a new origin binary's files are
		// used at once; the ETag makes that a 304.
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
