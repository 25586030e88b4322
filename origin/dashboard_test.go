package origin_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/internal/leaktest"
)

// TestDashboardMounted: the origin serves the dashboard at / and its
// assets under /dashboard/ without a key, while every other path keeps
// the API's JSON answers (404 route_not_found, 405 with Allow).
func TestDashboardMounted(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	get := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, o.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := o.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("GET", "/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="/dashboard/js/app.js"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /: %d %v\n%.200s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := get("GET", "/dashboard/js/app.js"); resp.StatusCode != 200 {
		t.Errorf("GET /dashboard/js/app.js: %d", resp.StatusCode)
	}
	if resp, _ := get("GET", "/dashboard/nope.js"); resp.StatusCode != 404 {
		t.Errorf("GET /dashboard/nope.js: %d", resp.StatusCode)
	}
	for _, path := range []string{"/nowhere", "/v1/nowhere", "/v1/", "/index.html"} {
		resp, body := get("GET", path)
		if resp.StatusCode != 404 || !strings.Contains(body, `"code":"not_found"`) && !strings.Contains(body, `"code":"route_not_found"`) {
			t.Errorf("GET %s: %d %s, want the API's JSON 404", path, resp.StatusCode, body)
		}
	}
	if resp, body := get("POST", "/"); resp.StatusCode != 405 || !strings.Contains(body, `"error"`) {
		t.Errorf("POST /: %d %s, want the API's JSON 405", resp.StatusCode, body)
	}
	if resp, _ := get("GET", "/v1/links"); resp.StatusCode != 401 {
		t.Errorf("GET /v1/links without a key: %d, want 401", resp.StatusCode)
	}
}
