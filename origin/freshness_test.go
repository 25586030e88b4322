package origin_test

import (
	"testing"

	"github.com/linkpop/linkpop/internal/leaktest"
)

// TestFreshness: freshness is "relaxed" unless asked, is validated with
// its own error code on create, patch and batch, is returned, and is
// patched on its own.
func TestFreshness(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	if r := o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/r","code":"relaxed1"}`); r.body["freshness"] != "relaxed" {
		t.Fatalf("default freshness: %s", r.raw)
	}
	if r := o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/s","code":"strict1","freshness":"strict"}`); r.body["freshness"] != "strict" {
		t.Fatalf("strict create: %s", r.raw)
	}
	if r := o.must(200, "GET", "/v1/links/strict1", apiAdminKey, ""); r.body["freshness"] != "strict" {
		t.Fatalf("get: %s", r.raw)
	}
	for _, body := range []string{`{"freshness":"STRICT"}`, `{"freshness":""}`, `{"freshness":1}`, `{"freshness":true}`, `{"freshness":["strict"]}`} {
		if r := o.must(400, "PATCH", "/v1/links/strict1", apiAdminKey, body); r.errCode() != "invalid_freshness" || r.errField() != "freshness" {
			t.Fatalf("PATCH %s: %s", body, r.raw)
		}
		if r := o.must(400, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/x",`+body[1:]); r.errCode() != "invalid_freshness" {
			t.Fatalf("POST %s: %s", body, r.raw)
		}
	}
	r := o.must(200, "PATCH", "/v1/links/strict1", apiAdminKey, `{"freshness":"relaxed"}`)
	if r.body["freshness"] != "relaxed" || r.body["revision"] == float64(0) {
		t.Fatalf("patch to relaxed: %s", r.raw)
	}
	if r := o.must(200, "PATCH", "/v1/links/strict1", apiAdminKey, `{"freshness":null}`); r.body["freshness"] != "relaxed" {
		t.Fatalf("null freshness: %s", r.raw)
	}
	r = o.must(200, "POST", "/v1/links/batch", apiAdminKey, `{"links":[{"url":"https://example.com/b","code":"strictb","freshness":"strict"},{"url":"https://example.com/c","freshness":"nope"}]}`)
	if g := o.must(200, "GET", "/v1/links/strictb", apiAdminKey, ""); g.body["freshness"] != "strict" {
		t.Fatalf("batch create lost freshness: %s / %s", r.raw, g.raw)
	}
}
