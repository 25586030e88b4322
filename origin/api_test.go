package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
)

const apiAdminKey = "api-test-admin-key-5b7d9f1a3c"

// apiOrigin is a running origin with a real Pebble store in a temp dir and
// an embedded JetStream server, stopped by t.Cleanup.
type apiOrigin struct {
	t      *testing.T
	srv    *origin.Server
	nats   *natstest.Server
	cfg    origin.Config
	base   string // http://host:port of the API
	admin  string // http://host:port of the admin listener
	client *http.Client
	// stop stops the origin (as the test's cleanup does) and waits.
	stop func()
}

// apiStart starts an origin; mod adjusts its config. Call leaktest.Check
// before it.
func apiStart(t *testing.T, mod func(*origin.Config)) *apiOrigin {
	t.Helper()
	ns := natstest.Start(t)
	cfg := origin.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     t.TempDir(),
		NATS:        replication.ConnConfig{URLs: []string{ns.URL()}},
		AdminKey:    apiAdminKey,
		BaseURL:     "https://lnk.test/",
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := origin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	o := &apiOrigin{
		t: t, srv: srv, nats: ns, cfg: cfg,
		base:   "http://" + srv.Addr(),
		admin:  "http://" + srv.AdminAddr(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
	}
	var once sync.Once
	o.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			o.client.CloseIdleConnections()
		})
	}
	t.Cleanup(o.stop)
	// Creating the stream races a JetStream shutdown at the end of a short
	// test (nats-server then leaks the stream's goroutines), so every test
	// starts with the stream in place.
	wait.For(t, 20*time.Second, "the change stream to exist", func() bool {
		_, b := o.readyz()
		return b["stream"] == "ready"
	})
	return o
}

// apiResp is an answer, its body decoded as a JSON object when it is one.
type apiResp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r *apiResp) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r *apiResp) errField() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["field"].(string)
	return s
}

func (r *apiResp) str(k string) string { s, _ := r.body[k].(string); return s }

// do sends a request; hdr are name, value pairs. A non-empty body is sent
// as application/json unless hdr sets Content-Type.
func (o *apiOrigin) do(method, path, key, body string, hdr ...string) *apiResp {
	o.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, o.base+path, rd)
	if err != nil {
		o.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := o.client.Do(req)
	if err != nil {
		o.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatal(err)
	}
	r := &apiResp{status: resp.StatusCode, header: resp.Header, raw: raw}
	checkExchange(o.t, method, o.base+path, req.Header, []byte(body), resp.StatusCode, resp.Header, raw)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			o.t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return r
}

// must sends a request and fails the test unless it answers want.
func (o *apiOrigin) must(want int, method, path, key, body string, hdr ...string) *apiResp {
	o.t.Helper()
	r := o.do(method, path, key, body, hdr...)
	if r.status != want {
		o.t.Fatalf("%s %s %s: status %d, want %d\n%s", method, path, body, r.status, want, r.raw)
	}
	return r
}

// mintKey creates an API key through the API and returns its id and secret.
func (o *apiOrigin) mintKey(body string) (id, secret string) {
	o.t.Helper()
	r := o.must(http.StatusCreated, "POST", "/v1/keys", apiAdminKey, body)
	return r.str("id"), r.str("key")
}

// TestContract calls every route with good and bad input and checks the
// status and error code of each answer, and that every error has the
// documented shape.
func TestContract(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, func(c *origin.Config) {
		c.MaxBodyBytes = 16 << 10
		c.BlockedDomains = []string{"evil.test"}
	})
	_, readKey := o.mintKey(`{"name":"reader","scopes":["links:read"]}`)
	_, writeKey := o.mintKey(`{"name":"writer","scopes":["links:write"]}`)
	revokedID, revokedKey := o.mintKey(`{"name":"gone","scopes":["links:read","links:write"]}`)
	o.must(http.StatusOK, "DELETE", "/v1/keys/"+revokedID, apiAdminKey, "")
	o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/taken","code":"taken"}`)
	o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/i"}`, "Idempotency-Key", "k1")
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	longURL := `https://example.com/` + strings.Repeat("a", 8001-len("https://example.com/"))
	admin := apiAdminKey

	f := func(method, path, key, body string, wantStatus int, wantCode string, hdr ...string) {
		t.Helper()
		r := o.do(method, path, key, body, hdr...)
		if r.status != wantStatus || r.errCode() != wantCode {
			t.Errorf("%s %s %.80q: got %d %q, want %d %q\n%s", method, path, body, r.status, r.errCode(), wantStatus, wantCode, r.raw)
			return
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		if wantCode != "" {
			e, _ := r.body["error"].(map[string]any)
			if msg, _ := e["message"].(string); msg == "" || len(r.body) != 1 {
				t.Errorf("%s %s: error body %s lacks a message or has extra members", method, path, r.raw)
			}
			if strings.Contains(string(r.raw), "goroutine") || strings.Contains(string(r.raw), ".go:") {
				t.Errorf("%s %s: error body leaks internals: %s", method, path, r.raw)
			}
		}
	}
	// Auth and scopes.
	f("GET", "/v1/links/taken", "", "", 401, "unauthorized")
	f("GET", "/v1/links/taken", "wrong-key", "", 401, "unauthorized")
	f("GET", "/v1/links/taken", revokedKey, "", 401, "unauthorized")
	f("GET", "/v1/links/taken", "", "", 401, "unauthorized", "Authorization", "Basic "+apiAdminKey)
	f("GET", "/v1/links/taken", readKey, "", 200, "")
	f("GET", "/v1/links", readKey, "", 200, "")
	f("POST", "/v1/links", readKey, `{"url":"https://example.com/"}`, 403, "forbidden")
	f("PATCH", "/v1/links/taken", readKey, `{"redirect":301}`, 403, "forbidden")
	f("DELETE", "/v1/links/taken", readKey, "", 403, "forbidden")
	f("GET", "/v1/links/taken", writeKey, "", 403, "forbidden")
	f("POST", "/v1/keys", writeKey, `{"name":"x","scopes":["admin"]}`, 403, "forbidden")
	f("GET", "/v1/keys", readKey, "", 403, "forbidden")
	f("DELETE", "/v1/keys/"+revokedID, writeKey, "", 403, "forbidden")
	f("POST", "/v1/links", writeKey, `{"url":"https://example.com/w"}`, 201, "")

	// Routing.
	f("GET", "/v1/nothing", admin, "", 404, "not_found")
	f("GET", "/nowhere", "", "", 404, "not_found") // / is the dashboard (TestDashboardMounted)
	f("PUT", "/v1/links/taken", admin, `{}`, 405, "method_not_allowed")
	f("DELETE", "/v1/links", admin, "", 405, "method_not_allowed")
	f("GET", "/v1/links/nope404", admin, "", 404, "not_found")
	f("GET", "/v1/links/a.b", admin, "", 404, "not_found")
	f("PATCH", "/v1/links/nope404", admin, `{"redirect":301}`, 404, "not_found")
	f("DELETE", "/v1/links/nope404", admin, "", 404, "not_found")

	// Bodies.
	f("POST", "/v1/links", admin, ``, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `null`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `["https://example.com/"]`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","extra":1}`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"} x`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}{}`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}`, 415, "unsupported_media_type", "Content-Type", "text/plain")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}`, 415, "unsupported_media_type", "Content-Type", "multipart/form-data; boundary=x")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/ct"}`, 201, "", "Content-Type", "application/json; charset=utf-8")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/curl"}`, 201, "", "Content-Type", "application/x-www-form-urlencoded")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/`+strings.Repeat("a", 20000)+`"}`, 413, "payload_too_large")

	// Create validation.
	f("POST", "/v1/links", admin, `{}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":null}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":42}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":"example.com"}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/\r\nSet-Cookie: a=b"}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":"https://user:pw@example.com/"}`, 400, "invalid_url")
	f("POST", "/v1/links", admin, `{"url":"javascript:alert(1)"}`, 400, "url_scheme_not_allowed")
	f("POST", "/v1/links", admin, `{"url":"ftp://example.com/"}`, 400, "url_scheme_not_allowed")
	f("POST", "/v1/links", admin, `{"url":"https://lnk.test/abc"}`, 400, "url_blocked")
	f("POST", "/v1/links", admin, `{"url":"https://a.evil.test/"}`, 400, "url_blocked")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","code":"a.b"}`, 400, "invalid_code")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","code":"ab"}`, 400, "invalid_code")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","code":7}`, 400, "invalid_code")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","code":"Metrics"}`, 400, "code_reserved")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","code":"taken"}`, 409, "code_taken")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","status":"gone"}`, 400, "invalid_status")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","status":2}`, 400, "invalid_status")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","status":"Disabled"}`, 400, "invalid_status")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/off","code":"born-off","status":"disabled"}`, 201, "")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/on","status":null}`, 201, "")
	f("PATCH", "/v1/links/born-off", admin, `{"status":"active"}`, 400, "invalid_json")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","redirect":200}`, 400, "invalid_redirect")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","redirect":"302"}`, 400, "invalid_redirect")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","redirect":302.5}`, 400, "invalid_redirect")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","redirect":1e400}`, 400, "invalid_redirect")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","expires_at":"2001-01-01T00:00:00Z"}`, 400, "invalid_expires_at")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","expires_at":"tomorrow"}`, 400, "invalid_expires_at")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","expires_at":1893456000}`, 400, "invalid_expires_at")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","tags":[""]}`, 400, "invalid_tags")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","tags":"a"}`, 400, "invalid_tags")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/","tags":["a","a"]}`, 400, "invalid_tags")
	f("POST", "/v1/links", admin, `{"url":"`+longURL+`"}`, 400, "url_too_long")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/ok","expires_at":"`+future+`","tags":["a"],"redirect":308,"code":"okay"}`, 201, "")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/nulls","code":null,"redirect":null,"expires_at":null,"tags":null}`, 201, "")

	// Idempotency.
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}`, 400, "invalid_idempotency_key", "Idempotency-Key", "")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}`, 400, "invalid_idempotency_key", "Idempotency-Key", strings.Repeat("k", 256))
	f("POST", "/v1/links", admin, `{"url":"https://example.com/"}`, 201, "", "Idempotency-Key", strings.Repeat("k", 255))
	f("POST", "/v1/links", admin, `{"url":"https://example.com/other"}`, 422, "idempotency_key_reused", "Idempotency-Key", "k1")
	f("POST", "/v1/links", admin, `{"url":"https://example.com/i"}`, 201, "", "Idempotency-Key", "k1")

	// Updates.
	f("PATCH", "/v1/links/taken", admin, ``, 400, "invalid_json")
	f("PATCH", "/v1/links/taken", admin, `{}`, 400, "invalid_json")
	f("PATCH", "/v1/links/taken", admin, `{"code":"other"}`, 400, "invalid_json")
	f("PATCH", "/v1/links/taken", admin, `{"url":null}`, 400, "invalid_url")
	f("PATCH", "/v1/links/taken", admin, `{"url":"data:text/html,x"}`, 400, "url_scheme_not_allowed")
	f("PATCH", "/v1/links/taken", admin, `{"redirect":null}`, 400, "invalid_redirect")
	f("PATCH", "/v1/links/taken", admin, `{"expires_at":"2001-01-01T00:00:00Z"}`, 400, "invalid_expires_at")
	f("PATCH", "/v1/links/taken", admin, `{"tags":[1]}`, 400, "invalid_tags")
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 400, "invalid_if_match", "If-Match", "abc")
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 400, "invalid_if_match", "If-Match", `"0"`)
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 400, "invalid_if_match", "If-Match", `"-1"`)
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 412, "revision_mismatch", "If-Match", `"999999"`)
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 200, "", "If-Match", `*`)
	f("PATCH", "/v1/links/taken", admin, `{"redirect":301}`, 415, "unsupported_media_type", "Content-Type", "text/plain")
	f("DELETE", "/v1/links/taken", admin, "", 412, "revision_mismatch", "If-Match", "999999")
	f("DELETE", "/v1/links/taken", admin, "", 400, "invalid_if_match", "If-Match", "W/")

	// Listing.
	f("GET", "/v1/links?limit=0", admin, "", 400, "invalid_limit")
	f("GET", "/v1/links?limit=1001", admin, "", 400, "invalid_limit")
	f("GET", "/v1/links?limit=x", admin, "", 400, "invalid_limit")
	f("GET", "/v1/links?limit=1&limit=2", admin, "", 400, "invalid_limit")
	f("GET", "/v1/links?limit=1000", admin, "", 200, "")
	f("GET", "/v1/links?cursor=!!!", admin, "", 400, "invalid_cursor")
	f("GET", "/v1/links?cursor=", admin, "", 400, "invalid_cursor")
	f("GET", "/v1/links?cursor=Lg", admin, "", 400, "invalid_cursor") // base64 of "."

	// Keys.
	f("POST", "/v1/keys", admin, `{"scopes":["links:read"]}`, 400, "invalid_name")
	f("POST", "/v1/keys", admin, `{"name":"","scopes":["links:read"]}`, 400, "invalid_name")
	f("POST", "/v1/keys", admin, `{"name":"`+strings.Repeat("n", 65)+`","scopes":["links:read"]}`, 400, "invalid_name")
	f("POST", "/v1/keys", admin, `{"name":"x"}`, 400, "invalid_scopes")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":[]}`, 400, "invalid_scopes")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["links:delete"]}`, 400, "invalid_scopes")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin","admin"]}`, 400, "invalid_scopes")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin"],"rate_limit":"fast"}`, 400, "invalid_rate_limit")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin"],"burst":-1}`, 400, "invalid_burst")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin"],"burst":1.5}`, 400, "invalid_burst")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin"],"secret":"mine"}`, 400, "invalid_json")
	f("POST", "/v1/keys", admin, `{"name":"x","scopes":["admin"]}`, 201, "")
	f("GET", "/v1/keys", admin, "", 200, "")
	f("DELETE", "/v1/keys/key_nope", admin, "", 404, "not_found")
	f("DELETE", "/v1/keys/"+revokedID, admin, "", 200, "")

	// Every validation error names its field.
	g := func(method, path, body, wantField string, hdr ...string) {
		t.Helper()
		if r := o.do(method, path, admin, body, hdr...); r.errField() != wantField {
			t.Errorf("%s %s %s: field %q, want %q (%s)", method, path, body, r.errField(), wantField, r.raw)
		}
	}
	g("POST", "/v1/links", `{"url":"https://example.com/","bogus":1}`, "bogus")
	g("POST", "/v1/links", `{"url":"javascript:x"}`, "url")
	g("POST", "/v1/links", `{"url":"https://example.com/","code":"a b"}`, "code")
	g("POST", "/v1/links", `{"url":"https://example.com/","code":"taken"}`, "")
	g("POST", "/v1/links", `{"url":"https://example.com/","redirect":1}`, "redirect")
	g("POST", "/v1/links", `{"url":"https://example.com/","expires_at":"x"}`, "expires_at")
	g("POST", "/v1/links", `{"url":"https://example.com/","tags":[""]}`, "tags")
	g("POST", "/v1/links", `{"url":"https://example.com/"}`, "Idempotency-Key", "Idempotency-Key", "")
	g("PATCH", "/v1/links/taken", `{"redirect":301}`, "If-Match", "If-Match", "x")
	g("GET", "/v1/links?limit=0", "", "limit")
	g("GET", "/v1/links?cursor=%25", "", "cursor")
	g("POST", "/v1/keys", `{"name":"x","scopes":["nope"]}`, "scopes")
	if r := o.do("POST", "/v1/links", admin, `{"url":"https://example.com/","bogus":1}`); !strings.Contains(r.body["error"].(map[string]any)["message"].(string), `bogus`) {
		t.Errorf("unknown field message does not name the field: %s", r.raw)
	}
}

// TestErrorHeaders checks the headers that go with 401, 405, 429 and
// every link answer.
func TestErrorHeaders(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	if r := o.do("GET", "/v1/links", "", ""); r.header.Get("WWW-Authenticate") == "" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer: %v", r.header)
	}
	if r := o.do("PUT", "/v1/links", apiAdminKey, ""); r.header.Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("405 Allow = %q", r.header.Get("Allow"))
	}
}

// TestLinkObject checks the shape of the link object, short_url, ETag,
// If-Match, expiry handling and DELETE.
func TestLinkObject(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	before := time.Now().UTC().Truncate(time.Millisecond)
	r := o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"HTTPS://Bücher.Example:443/a%20b?q=ü&x=1#frag"}`)
	wantKeys := []string{"code", "created_at", "expires_at", "freshness", "max_visits", "redirect", "revision", "short_url", "status", "tags", "updated_at", "url"}
	var keys []string
	for k := range r.body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("link object members %v, want %v", keys, wantKeys)
	}
	code := r.str("code")
	if len(code) != 7 {
		t.Errorf("random code %q is not 7 characters", code)
	}
	f := func(k string, want any) {
		t.Helper()
		if got := r.body[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", k, got, want)
		}
	}
	f("url", "https://xn--bcher-kva.example/a%20b?q=%C3%BC&x=1#frag")
	f("short_url", "https://lnk.test/"+code)
	f("redirect", float64(302))
	f("status", "active")
	f("expires_at", nil)
	f("tags", []any{})
	f("max_visits", nil)
	f("revision", float64(1))
	created, err := time.Parse(time.RFC3339, r.str("created_at"))
	if err != nil || created.Before(before) || created.Location() != time.UTC || !strings.HasSuffix(r.str("created_at"), "Z") {
		t.Errorf("created_at %q: %v", r.str("created_at"), err)
	}
	if r.str("updated_at") != r.str("created_at") {
		t.Errorf("updated_at %q != created_at %q", r.str("updated_at"), r.str("created_at"))
	}
	if r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/v1/links/"+code {
		t.Errorf("ETag %q Location %q", r.header.Get("ETag"), r.header.Get("Location"))
	}

	// Expiry round trip, in UTC at millisecond precision; null clears it.
	r = o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/e","code":"exp","expires_at":"2099-01-02T03:04:05.123456+02:00","tags":["a","b"],"redirect":307}`)
	f("expires_at", "2099-01-02T01:04:05.123Z")
	f("tags", []any{"a", "b"})
	f("redirect", float64(307))
	rev := r.body["revision"].(float64)
	r = o.must(200, "GET", "/v1/links/exp", apiAdminKey, "")
	if r.header.Get("ETag") != fmt.Sprintf(`"%d"`, int(rev)) {
		t.Errorf("GET ETag %q, want revision %v", r.header.Get("ETag"), rev)
	}
	r = o.must(200, "PATCH", "/v1/links/exp", apiAdminKey, `{"expires_at":null,"tags":[]}`, "If-Match", strconv.Itoa(int(rev)))
	f("expires_at", nil)
	f("tags", []any{})
	f("url", "https://example.com/e")
	newRev := r.body["revision"].(float64)
	if newRev <= rev || r.header.Get("ETag") != fmt.Sprintf(`"%d"`, int(newRev)) {
		t.Errorf("PATCH revision %v (ETag %q) after %v", newRev, r.header.Get("ETag"), rev)
	}
	// The old revision no longer matches.
	r = o.must(412, "PATCH", "/v1/links/exp", apiAdminKey, `{"url":"https://example.com/late"}`, "If-Match", fmt.Sprintf(`"%d"`, int(rev)))
	if g := o.must(200, "GET", "/v1/links/exp", apiAdminKey, ""); g.str("url") != "https://example.com/e" {
		t.Errorf("412 PATCH changed the link: %s", g.raw)
	}
	r = o.must(200, "PATCH", "/v1/links/exp", apiAdminKey, `{"url":"https://example.com/new","redirect":301}`, "If-Match", fmt.Sprintf(`"%d"`, int(newRev)))
	f("url", "https://example.com/new")
	f("redirect", float64(301))

	// DELETE deactivates and answers the disabled link; again is a no-op.
	r = o.must(200, "DELETE", "/v1/links/exp", apiAdminKey, "")
	f("status", "disabled")
	f("code", "exp")
	r2 := o.must(200, "DELETE", "/v1/links/exp", apiAdminKey, "")
	if r2.body["revision"] != r.body["revision"] {
		t.Errorf("second DELETE changed the revision: %v → %v", r.body["revision"], r2.body["revision"])
	}
	if g := o.must(200, "GET", "/v1/links/exp", apiAdminKey, ""); g.str("status") != "disabled" {
		t.Errorf("GET after DELETE: %s", g.raw)
	}
	// A disabled code is never reused.
	o.must(409, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/","code":"exp"}`)
}

// TestListPagination walks every page and sees every link exactly once,
// in code order, with next_cursor null at the end.
func TestListPagination(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	want := map[string]bool{}
	for i := range 23 {
		r := o.must(201, "POST", "/v1/links", apiAdminKey, fmt.Sprintf(`{"url":"https://example.com/%d"}`, i))
		want[r.str("code")] = true
	}
	r := o.must(200, "GET", "/v1/links", apiAdminKey, "")
	if n := len(r.body["links"].([]any)); n != 23 || r.body["next_cursor"] != nil {
		t.Fatalf("default page: %d links, next_cursor %v", n, r.body["next_cursor"])
	}
	var seen []string
	cursor, pages := "", 0
	for {
		path := "/v1/links?limit=5"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := o.must(200, "GET", path, apiAdminKey, "")
		pages++
		links := r.body["links"].([]any)
		if len(links) > 5 {
			t.Fatalf("page of %d links with limit 5", len(links))
		}
		for _, l := range links {
			seen = append(seen, l.(map[string]any)["code"].(string))
		}
		next, ok := r.body["next_cursor"].(string)
		if !ok {
			if _, present := r.body["next_cursor"]; !present {
				t.Fatal("next_cursor missing on the last page; want null")
			}
			break
		}
		cursor = next
	}
	if pages != 5 || len(seen) != 23 || !slices.IsSorted(seen) {
		t.Fatalf("%d pages, %d links, sorted %v: %v", pages, len(seen), slices.IsSorted(seen), seen)
	}
	for _, c := range seen {
		if !want[c] {
			t.Errorf("listed %q twice or never created", c)
		}
		delete(want, c)
	}
	if len(want) > 0 {
		t.Errorf("never listed: %v", want)
	}
}

// TestIdempotency: a retried create with the same key returns the first
// answer, whatever the JSON spelling; a different request under the same
// key is 422; keys are scoped per API key.
func TestIdempotency(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	first := o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/a","tags":["x"]}`, "Idempotency-Key", "abc")
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Error("first create marked as replayed")
	}
	again := o.must(201, "POST", "/v1/links", apiAdminKey, "{ \"tags\": [\"x\"],\n  \"url\": \"HTTPS://EXAMPLE.com:443/a\" }", "Idempotency-Key", "abc")
	if again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.raw, first.raw) {
		t.Errorf("replay: header %q\n got %s\nwant %s", again.header.Get("Idempotent-Replayed"), again.raw, first.raw)
	}
	// An update in between does not change what the replay answers.
	o.must(200, "PATCH", "/v1/links/"+first.str("code"), apiAdminKey, `{"url":"https://example.com/changed"}`)
	if r := o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/a","tags":["x"]}`, "Idempotency-Key", "abc"); !bytes.Equal(r.raw, first.raw) {
		t.Errorf("replay after update: %s", r.raw)
	}
	r := o.must(422, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/a","tags":["y"]}`, "Idempotency-Key", "abc")
	if r.errCode() != "idempotency_key_reused" {
		t.Errorf("reuse: %s", r.raw)
	}
	_, other := o.mintKey(`{"name":"other","scopes":["links:write"]}`)
	if r := o.must(201, "POST", "/v1/links", other, `{"url":"https://example.com/a","tags":["x"]}`, "Idempotency-Key", "abc"); r.str("code") == first.str("code") || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("another key's Idempotency-Key replayed the admin's create: %s", r.raw)
	}
}

// TestConcurrentCustomCode: of creators racing for one code exactly one
// gets 201 and the others 409.
func TestConcurrentCustomCode(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	for round := range 10 {
		code := fmt.Sprintf("race-%d", round)
		statuses := make([]int, 2)
		urls := make([]string, 2)
		var wg sync.WaitGroup
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				urls[i] = fmt.Sprintf("https://example.com/%s/%d", code, i)
				statuses[i] = o.do("POST", "/v1/links", apiAdminKey, fmt.Sprintf(`{"url":%q,"code":%q}`, urls[i], code)).status
			}()
		}
		wg.Wait()
		slices.Sort(statuses)
		if statuses[0] != 201 || statuses[1] != 409 {
			t.Fatalf("round %d: statuses %v, want [201 409]", round, statuses)
		}
	}
}

// TestKeys mints keys, checks scopes, the key's secret format, listing
// without secrets and revocation taking effect at once.
func TestKeys(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	r := o.must(201, "POST", "/v1/keys", apiAdminKey, `{"name":"ci","scopes":["links:read","links:write"],"rate_limit":5,"burst":10}`)
	id, secret := r.str("id"), r.str("key")
	if !strings.HasPrefix(secret, "lp_") || len(secret) != 35 || strings.Trim(secret[3:], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != "" {
		t.Errorf("key %q is not lp_ + 32 base62 characters", secret)
	}
	if r.body["rate_limit"] != float64(5) || r.body["burst"] != float64(10) || r.body["revoked_at"] != nil || r.str("name") != "ci" {
		t.Errorf("minted key: %s", r.raw)
	}
	o.must(201, "POST", "/v1/links", secret, `{"url":"https://example.com/k","code":"bykey"}`)
	o.must(200, "GET", "/v1/links/bykey", secret, "")
	o.must(403, "GET", "/v1/keys", secret, "")

	// An admin-scoped minted key may manage keys.
	_, adminSecret := o.mintKey(`{"name":"ops","scopes":["admin"],"rate_limit":-1}`)
	list := o.must(200, "GET", "/v1/keys", adminSecret, "")
	if strings.Contains(string(list.raw), secret) || strings.Contains(string(list.raw), `"key"`) {
		t.Errorf("key list shows secrets: %s", list.raw)
	}
	if n := len(list.body["keys"].([]any)); n != 2 {
		t.Errorf("%d keys listed, want 2: %s", n, list.raw)
	}
	rv := o.must(200, "DELETE", "/v1/keys/"+id, adminSecret, "")
	if rv.body["revoked_at"] == nil || rv.str("id") != id {
		t.Errorf("revoked key: %s", rv.raw)
	}
	r = o.must(401, "GET", "/v1/links/bykey", secret, "")
	if r.errCode() != "unauthorized" {
		t.Errorf("revoked key: %s", r.raw)
	}
	o.must(200, "DELETE", "/v1/keys/"+id, apiAdminKey, "") // revoking twice answers the key
}

// TestRateLimit: a key's bucket is reported in RateLimit-* headers and
// refused with 429 and Retry-After once empty; the admin key is not
// limited.
func TestRateLimit(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	_, slow := o.mintKey(`{"name":"slow","scopes":["links:read"],"rate_limit":0.01,"burst":2}`)
	for i, wantRemaining := range []string{"1", "0"} {
		r := o.must(200, "GET", "/v1/links", slow, "")
		if r.header.Get("RateLimit-Limit") != "2" || r.header.Get("RateLimit-Remaining") != wantRemaining {
			t.Errorf("request %d: RateLimit-Limit %q Remaining %q", i, r.header.Get("RateLimit-Limit"), r.header.Get("RateLimit-Remaining"))
		}
		if reset, err := strconv.Atoi(r.header.Get("RateLimit-Reset")); err != nil || reset < 1 {
			t.Errorf("request %d: RateLimit-Reset %q", i, r.header.Get("RateLimit-Reset"))
		}
	}
	r := o.must(429, "GET", "/v1/links", slow, "")
	if r.errCode() != "rate_limited" {
		t.Errorf("429 body: %s", r.raw)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Default-limited keys carry the default bucket.
	_, normal := o.mintKey(`{"name":"normal","scopes":["links:read"]}`)
	if r := o.must(200, "GET", "/v1/links", normal, ""); r.header.Get("RateLimit-Limit") != strconv.Itoa(origin.DefaultBurst) {
		t.Errorf("default key RateLimit-Limit %q", r.header.Get("RateLimit-Limit"))
	}
	for range 50 {
		o.must(200, "GET", "/v1/links", apiAdminKey, "")
	}
}

// TestAdminRateLimit: a configured AdminRateLimit applies to the
// bootstrap key.
func TestAdminRateLimit(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, func(c *origin.Config) { c.AdminRateLimit, c.AdminBurst = 0.01, 1 })
	o.must(200, "GET", "/v1/links", apiAdminKey, "")
	o.must(429, "GET", "/v1/links", apiAdminKey, "")
}

// TestMetricsAndLogs: requests are counted per route pattern, not per
// raw path.
func TestMetricsAndLogs(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/","code":"metric1"}`)
	o.must(404, "GET", "/v1/links/nosuch1", apiAdminKey, "")
	o.must(404, "GET", "/v1/links/nosuch2", apiAdminKey, "")
	o.must(404, "GET", "/nowhere", apiAdminKey, "")
	resp, err := o.client.Get(o.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`linkpop_origin_requests_total{route="POST /v1/links",code="201"} 1`,
		`linkpop_origin_requests_total{route="GET /v1/links/{code}",code="404"} 2`,
		`linkpop_origin_requests_total{route="unmatched",code="404"} 1`,
		`linkpop_origin_request_duration_seconds_bucket{route="POST /v1/links",le=`,
		`linkpop_origin_nats_connected`,
		`linkpop_store_`,
		`process_`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), "nosuch") {
		t.Error("/metrics carries raw paths")
	}
}

// TestPanicAndInternalErrors: a panic or an unexpected error is a 500
// "internal" with nothing of the error in the answer.
func TestPanicAndInternalErrors(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	f := func(h http.Handler) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/x", nil))
		if b := rec.Body.String(); rec.Code != 500 || !strings.Contains(b, `"code":"internal"`) || strings.Contains(b, "secret") || strings.Contains(b, "boom") {
			t.Errorf("status %d body %s", rec.Code, b)
		}
	}
	f(origin.PanicHandler(o.srv))
	f(origin.ErrorHandler(o.srv, fmt.Errorf("disk on fire: secret detail")))
}
