package origin_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
)

// FuzzCreateBody posts arbitrary bodies to POST /v1/links through the
// server's handler: never a 5xx or a panic, and a 201 only for an http(s)
// target whose stored url is safe to send in Location.
//
//	go test -run '^$' -fuzz FuzzCreateBody -fuzztime 60s ./origin/
func FuzzCreateBody(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://example.com/"}`,
		`{"url":"javascript:alert(1)"}`,
		`{"url":"JaVaScRiPt:alert(1)"}`,
		`{"url":"data:text/html;base64,PHNjcmlwdD4="}`,
		`{"url":"https://example.com/%0d%0aSet-Cookie:%20a=b"}`,
		`{"url":"https://example.com/\r\nLocation: https://evil.test/"}`,
		"{\"url\":\"https://example.com/\r\n\"}",
		`{"url":"https://example.com\\@evil.test/"}`,
		`{"url":"https:\\\\evil.test/"}`,
		`{"url":"https://user:pass@example.com/"}`,
		`{"url":"https://example.com@evil.test/"}`,
		`{"url":"https://аpple.com/"}`,
		`{"url":"https://xn--pple-43d.com/"}`,
		`{"url":"https://example.com/` + strings.Repeat("a", 8001) + `"}`,
		`{"url":"https://example.com/\u0000"}`,
		"{\"url\":\"https://example.com/\x00\"}",
		`{"url":"https://example.com/","redirect":1e999999}`,
		`{"url":"https://example.com/","redirect":-9223372036854775809}`,
		`{"url":"https://example.com/","expires_at":"9999-12-31T23:59:59Z"}`,
		`{"url":"https://example.com/","expires_at":"+275760-09-13T00:00:00Z"}`,
		`{"url":{"url":{"url":[[[[[[[[[[]]]]]]]]]]}}}`,
		`{"url":"https://example.com/","tags":[` + strings.Repeat(`"t",`, 20) + `"t"]}`,
		`{"url":"https://example.com/","code":"../../etc"}`,
		`{"url":"//evil.test/"}`,
		`{"url":"http://[::1]:80/"}`,
		`{"url":"http://0x7f.1/"}`,
		`{"url":"https://lnk.test/loop"}`,
		`{"url":"https://example.com/"}garbage`,
		`[`,
		``,
	} {
		f.Add(s)
	}
	ns := natstest.Start(f)
	srv, err := origin.New(origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: f.TempDir(),
		NATS:     replication.ConnConfig{URLs: []string{ns.URL()}},
		AdminKey: apiAdminKey, BaseURL: "https://lnk.test/",
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := srv.Close(); err != nil {
			f.Error(err)
		}
	})
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/links", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiAdminKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer is not JSON: %v %s", err, rec.Body)
		}
		if rec.Code != 201 {
			e, _ := out["error"].(map[string]any)
			if code, _ := e["code"].(string); code == "" || rec.Code < 400 {
				t.Fatalf("body %q: status %d without an error code: %s", body, rec.Code, rec.Body)
			}
			return
		}
		u, _ := out["url"].(string)
		if err := link.ValidStoredURL(u); err != nil {
			t.Fatalf("body %q stored unsafe url %q: %v", body, u, err)
		}
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Fatalf("body %q stored non-http(s) url %q", body, u)
		}
		if strings.Contains(u, "lnk.test") && strings.Contains(strings.SplitN(strings.SplitN(u, "://", 2)[1], "/", 2)[0], "lnk.test") {
			t.Fatalf("body %q stored a target on the service's own domain: %q", body, u)
		}
	})
}
