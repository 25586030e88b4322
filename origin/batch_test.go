package origin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
)

func batchResults(t *testing.T, r *apiResp) []client.BatchResult {
	t.Helper()
	var out client.BatchResponse
	if err := json.Unmarshal(r.raw, &out); err != nil {
		t.Fatalf("batch answer: %v\n%s", err, r.raw)
	}
	return out.Results
}

// TestBatch checks POST /v1/links/batch: per-item results in request
// order, partial success, the whole-batch limits, and the batch's
// Idempotency-Key.
func TestBatch(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/old","code":"old1"}`)
	body := `{"links":[
		{"url":"https://example.com/a"},
		{"url":"https://example.com/b","code":"bx1","tags":["t"],"redirect":301},
		{"url":"javascript:alert(1)"},
		{"url":"https://example.com/c","code":"bx1"},
		{"url":"https://example.com/d","code":"old1"},
		{"url":"https://example.com/e","bogus":true},
		{"url":"https://example.com/f","code":"a.b"}
	]}`
	r := o.must(http.StatusOK, "POST", "/v1/links/batch", apiAdminKey, body)
	res := batchResults(t, r)
	want := []string{"", "", "url_scheme_not_allowed", "code_taken", "code_taken", "invalid_json", "invalid_code"}
	if len(res) != len(want) {
		t.Fatalf("%d results for %d creates: %s", len(res), len(want), r.raw)
	}
	for i, w := range want {
		switch {
		case w == "" && (res[i].Link == nil || res[i].Error != nil):
			t.Errorf("item %d: %+v, want a link", i, res[i])
		case w != "" && (res[i].Error == nil || res[i].Error.Code != w):
			t.Errorf("item %d: %+v, want error %s", i, res[i], w)
		}
	}
	if res[1].Link.Code != "bx1" || res[1].Link.Redirect != 301 || res[1].Link.ShortURL != "https://lnk.test/bx1" {
		t.Errorf("custom item: %+v", res[1].Link)
	}
	if res[5].Error.Field != "bogus" || res[6].Error.Field != "code" {
		t.Errorf("item errors name their fields: %+v %+v", res[5].Error, res[6].Error)
	}
	for _, i := range []int{0, 1} {
		g := o.must(http.StatusOK, "GET", "/v1/links/"+res[i].Link.Code, apiAdminKey, "")
		if g.str("url") != res[i].Link.URL {
			t.Errorf("GET %s: %s", res[i].Link.Code, g.raw)
		}
	}

	// An item carries every field of the create body: max_visits, and a
	// status that creates the link disabled in the same commit.
	r = o.must(http.StatusOK, "POST", "/v1/links/batch", apiAdminKey, `{"links":[
		{"url":"https://example.com/capped","code":"bcap","max_visits":5},
		{"url":"https://example.com/off","code":"boff","status":"disabled"},
		{"url":"https://example.com/on","status":"active"},
		{"url":"https://example.com/bad","status":"gone"}]}`)
	res = batchResults(t, r)
	if res[0].Link == nil || res[0].Link.MaxVisits == nil || *res[0].Link.MaxVisits != 5 {
		t.Errorf("max_visits item: %s", r.raw)
	}
	if res[1].Link == nil || res[1].Link.Status != client.StatusDisabled || res[1].Link.Revision == 0 ||
		res[2].Link == nil || res[2].Link.Status != client.StatusActive || res[3].Error == nil || res[3].Error.Code != "invalid_status" {
		t.Errorf("status items: %s", r.raw)
	}
	if g := o.must(http.StatusOK, "GET", "/v1/links/boff", apiAdminKey, ""); g.str("status") != "disabled" {
		t.Errorf("GET boff: %s", g.raw)
	}

	// Idempotency: the same batch again answers the same links; another
	// batch under the key is refused.
	idem := `{"links":[{"url":"https://example.com/i1"},{"url":"https://example.com/i2","code":"idem2"},{"url":"ftp://x/"},{"url":"https://example.com/i4","code":"old1"}]}`
	first := batchResults(t, o.must(http.StatusOK, "POST", "/v1/links/batch", apiAdminKey, idem, "Idempotency-Key", "b1"))
	again := o.must(http.StatusOK, "POST", "/v1/links/batch", apiAdminKey, idem, "Idempotency-Key", "b1")
	second := batchResults(t, again)
	if again.header.Get("Idempotent-Replayed") != "true" || second[0].Link == nil || second[0].Link.Code != first[0].Link.Code ||
		second[1].Link == nil || second[1].Link.Code != "idem2" || second[2].Error == nil ||
		first[3].Error == nil || second[3].Error == nil || second[3].Error.Code != "code_taken" || second[3].Error.Field != first[3].Error.Field {
		t.Fatalf("replay: %s", again.raw)
	}
	r = o.do("POST", "/v1/links/batch", apiAdminKey, `{"links":[{"url":"https://example.com/other"},{"url":"https://example.com/i2","code":"idem2"}]}`, "Idempotency-Key", "b1")
	if r.status != 422 || r.errCode() != "idempotency_key_reused" {
		t.Fatalf("other batch, same key: %d %s", r.status, r.raw)
	}

	// Whole-batch refusals.
	f := func(body string, status int, code string) {
		t.Helper()
		r := o.do("POST", "/v1/links/batch", apiAdminKey, body)
		if r.status != status || r.errCode() != code {
			t.Errorf("%.60s: %d %s, want %d %s", body, r.status, r.raw, status, code)
		}
	}
	many := make([]string, client.MaxBatch+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"url":"https://example.com/%d"}`, i)
	}
	f(`{"links":[`+strings.Join(many, ",")+`]}`, 400, "batch_too_large")
	f(`{"links":[`+strings.Join(many[:client.MaxBatch], ",")+`]}`, 200, "")
	f(`{"links":[]}`, 400, "batch_too_large")
	f(`{}`, 400, "invalid_json")
	f(`{"links":{"url":"https://example.com/"}}`, 400, "invalid_json")
	f(`{"links":[1,"x",null]}`, 200, "")
	f(`[`, 400, "invalid_json")
	_, readKey := o.mintKey(`{"name":"reader","scopes":["links:read"]}`)
	if r := o.do("POST", "/v1/links/batch", readKey, `{"links":[{"url":"https://example.com/"}]}`); r.status != 403 {
		t.Errorf("read key: %d %s", r.status, r.raw)
	}
}
