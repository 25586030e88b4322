package origin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
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

// levelLog records every log line at warn or above.
type levelLog struct {
	mu    *sync.Mutex
	lines *[]string
}

func newLevelLog() levelLog { return levelLog{mu: &sync.Mutex{}, lines: new([]string)} }

func (h levelLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h levelLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	*h.lines = append(*h.lines, line)
	return nil
}
func (h levelLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h levelLog) WithGroup(string) slog.Handler      { return h }
func (h levelLog) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), *h.lines...)
}

// metricsText is the origin's /metrics page.
func (o *apiOrigin) metricsText() string {
	o.t.Helper()
	resp, err := o.client.Get(o.admin + "/metrics")
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var serverErrorMetric = regexp.MustCompile(`linkpop_origin_requests_total\{[^}]*code="5\d\d"\}`)

// noServerFailures fails the test if any request was counted as a 5xx or
// anything was logged at warn or above.
func noServerFailures(t *testing.T, o *apiOrigin, log levelLog) {
	t.Helper()
	if m := serverErrorMetric.FindAllString(o.metricsText(), -1); len(m) > 0 {
		t.Errorf("bad input counted as server errors: %v", m)
	}
	for _, l := range log.get() {
		t.Errorf("logged for bad input: %s", l)
	}
}

// TestContractStrictJSON (issue 12, class 5): member names are matched
// exactly, duplicates are refused, and invalid UTF-8 is refused by the
// field that holds it (class 9), never replaced.
func TestContractStrictJSON(t *testing.T) {
	leaktest.Check(t)
	log := newLevelLog()
	o := apiStart(t, func(c *origin.Config) { c.Logger = slog.New(log) })
	admin := apiAdminKey
	o.must(http.StatusCreated, "POST", "/v1/links", admin, `{"url":"https://example.com/p","code":"patchme"}`)
	f := func(method, path, body string, wantStatus int, wantCode, wantField string) {
		t.Helper()
		r := o.do(method, path, admin, body)
		if r.status != wantStatus || r.errCode() != wantCode || r.errField() != wantField {
			t.Errorf("%s %s %q: got %d %q field %q, want %d %q field %q\n%s", method, path, body, r.status, r.errCode(), r.errField(), wantStatus, wantCode, wantField, r.raw)
		}
	}
	// Case-folded names are unknown fields.
	f("POST", "/v1/links", `{"URL":"https://example.com/"}`, 400, "invalid_json", "URL")
	f("POST", "/v1/links", `{"Url":"https://example.com/"}`, 400, "invalid_json", "Url")
	f("POST", "/v1/links", `{"url":"https://example.com/","CODE":"abcd"}`, 400, "invalid_json", "CODE")
	f("POST", "/v1/links", `{"url":"https://example.com/","tagſ":["a"]}`, 400, "invalid_json", "tagſ")
	f("POST", "/v1/links", `{"url":"https://example.com/","\u0074ags":["a"]}`, 201, "", "") // an escape is the same name
	f("PATCH", "/v1/links/patchme", `{"Redirect":301}`, 400, "invalid_json", "Redirect")
	f("POST", "/v1/keys", `{"Name":"x","scopes":["admin"]}`, 400, "invalid_json", "Name")
	// Duplicate names, in any spelling, are refused rather than last-wins.
	f("POST", "/v1/links", `{"url":"javascript:alert(1)","URL":"https://ok.example/"}`, 400, "invalid_json", "URL")
	f("POST", "/v1/links", `{"url":"javascript:alert(1)","url":"https://ok.example/"}`, 400, "invalid_json", "url")
	f("POST", "/v1/links", `{"url":"https://ok.example/","\u0075rl":"javascript:alert(1)"}`, 400, "invalid_json", "url")
	f("POST", "/v1/links", `{"url":"https://ok.example/","tags":["a"],"tags":["b"]}`, 400, "invalid_json", "tags")
	f("PATCH", "/v1/links/patchme", `{"redirect":301,"redirect":308}`, 400, "invalid_json", "redirect")
	f("POST", "/v1/keys", `{"name":"x","name":"y","scopes":["admin"]}`, 400, "invalid_json", "name")
	// Invalid UTF-8 and lone surrogates: refused by their field's rule.
	f("POST", "/v1/links", "{\"url\":\"https://example.com/\xff\"}", 400, "invalid_url", "url")
	f("POST", "/v1/links", "{\"url\":\"https://ex\xc3.com/\"}", 400, "invalid_url", "url")
	f("POST", "/v1/links", `{"url":"https://example.com/\ud800"}`, 400, "invalid_url", "url")
	f("PATCH", "/v1/links/patchme", "{\"url\":\"https://example.com/\xfe\"}", 400, "invalid_url", "url")
	f("POST", "/v1/links", "{\"url\":\"https://example.com/\",\"tags\":[\"a\xff\"]}", 400, "invalid_tags", "tags")
	f("POST", "/v1/links", "{\"url\":\"https://example.com/\",\"code\":\"ab\xffc\"}", 400, "invalid_code", "code")
	f("POST", "/v1/keys", "{\"name\":\"k\xff\",\"scopes\":[\"admin\"]}", 400, "invalid_name", "name")
	f("POST", "/v1/links", "{\"url\xff\":\"https://example.com/\"}", 400, "invalid_json", "url\ufffd")
	// A real U+FFFD is what the creator sent, and kept.
	if r := o.must(201, "POST", "/v1/links", admin, `{"url":"https://example.com/\ufffd"}`); r.str("url") != "https://example.com/%EF%BF%BD" {
		t.Errorf("stored %q", r.str("url"))
	}
	noServerFailures(t, o, log)
}

// TestContractHosts (issue 12, classes 2, 3, 4, 6): the service's own IDN
// domain and IDN blocklist entries are refused in every spelling, numeric
// IPv4 spellings are checked as the address browsers read, and host names
// browsers accept are accepted.
func TestContractHosts(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, func(c *origin.Config) {
		c.BaseURL = "https://Bücher.Test/"
		c.BlockedDomains = []string{"MÜNCHEN.test.", "xn--zrich-kva.test", "127.0.0.1", "[::1]"}
		// An address entry blocks only itself; the private-address rule,
		// which would refuse 127.0.0.2 too, is TestPrivateTargetsDefault's.
		c.AllowPrivateTargets = true
	})
	f := func(target string, wantStatus int, wantCode, wantURL string) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"url": target})
		r := o.do("POST", "/v1/links", apiAdminKey, string(body))
		if r.status != wantStatus || r.errCode() != wantCode || wantURL != "" && r.str("url") != wantURL {
			t.Errorf("%q: got %d %q url %q, want %d %q url %q", target, r.status, r.errCode(), r.str("url"), wantStatus, wantCode, wantURL)
		}
	}
	for _, own := range []string{
		"https://bücher.test/x", "https://BÜCHER.TEST/x", "https://bücher.test./x", "https://xn--bcher-kva.test/",
		"https://XN--BCHER-KVA.TEST./", "https://www.bücher.test/", "https://a.b.xn--bcher-kva.test/",
		"http://bücher.test:8080/", "https://ｂüｃｈｅｒ.test/", "https://bücher。test/",
	} {
		f(own, 400, "url_blocked", "")
	}
	for _, listed := range []string{
		"https://münchen.test/", "https://xn--mnchen-3ya.test/", "https://MÜNCHEN.TEST./", "https://x.münchen.test/",
		"https://zürich.test/", "https://ZÜRICH.test/",
		"http://127.1/", "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://127.000.000.001/",
		"http://0x7f000001/", "http://127.0.0.1./", "http://１２７.０.０.１/", "http://[::1]/", "http://[0::0:1]/",
	} {
		f(listed, 400, "url_blocked", "")
	}
	f("http://127.0.0.2/", 201, "", "http://127.0.0.2/")
	f("http://0x7f.0.0.2/", 201, "", "http://127.0.0.2/")
	f("http://1.2.3.256/", 400, "invalid_url", "")
	f("http://a.1/", 400, "invalid_url", "")
	f("https://r3---sn-abc.googlevideo.com/videoplayback", 201, "", "https://r3---sn-abc.googlevideo.com/videoplayback")
	f("https://ab--cd.example/", 201, "", "https://ab--cd.example/")
	f("https://-lead.example/", 201, "", "https://-lead.example/")
	f("https://trail-.example/", 201, "", "https://trail-.example/")
	f("https://notbücher.test/", 201, "", "https://xn--notbcher-95a.test/")
	f("http://A../", 400, "invalid_url", "")
}

// TestPrivateTargetsDefault (issue 10): by default targets on internal
// addresses are url_blocked in any spelling; AllowPrivateTargets accepts
// them (and the listed entries stay refused).
func TestPrivateTargetsDefault(t *testing.T) {
	leaktest.Check(t)
	targets := []string{
		"http://127.0.0.2/", "http://0x7f.0.0.2/", "http://2130706433/", "http://10.1/", "http://0xa9fea9fe/",
		"http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/", "http://[fd00:ec2::254]/",
		"http://localhost:8080/", "http://metadata.google.internal/",
	}
	for _, allow := range []bool{false, true} {
		o := apiStart(t, func(c *origin.Config) {
			c.AllowPrivateTargets = allow
			c.BlockedDomains = []string{"10.0.0.9"}
		})
		for _, target := range append(targets, "http://10.0.0.9/") {
			body, _ := json.Marshal(map[string]string{"url": target})
			r := o.do("POST", "/v1/links", apiAdminKey, string(body))
			want := 400
			if allow && target != "http://10.0.0.9/" {
				want = 201
			}
			if r.status != want || want == 400 && r.errCode() != "url_blocked" {
				t.Errorf("allow %v, %q: got %d %q, want %d", allow, target, r.status, r.errCode(), want)
			}
		}
		if r := o.do("POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/"}`); r.status != 201 {
			t.Errorf("allow %v: public target: %d", allow, r.status)
		}
	}
}

// TestConfigBlockedDomainsCanonical (issue 12, class 3): a blocklist
// entry without a canonical form is a start-up error naming it.
func TestConfigBlockedDomainsCanonical(t *testing.T) {
	for _, bad := range []string{"xn--zz.test", "a..b", "bad_%41.test", "\xff.test", "example.com:80", "http://x.test/"} {
		_, err := origin.New(origin.Config{DataDir: t.TempDir(), Dev: true, BlockedDomains: []string{"ok.test", bad}})
		if err == nil || !strings.Contains(err.Error(), "BlockedDomains") || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("BlockedDomains %q: New = %v; want an error naming it", bad, err)
		}
	}
	cfg := origin.Config{DataDir: t.TempDir(), Dev: true, BaseURL: "https://xn--zz.test/"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "BaseURL") {
		t.Errorf("BaseURL with an invalid host: Validate = %v", err)
	}
}

// rawExchange sends req over a new TCP connection, half-closes it when
// closeWrite is set (the client sent all it will), and reads the answer.
func rawExchange(t *testing.T, addr, req string, closeWrite bool) (int, http.Header, map[string]any) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.60q: no answer: %v", req, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Errorf("%.60q: answer %d is not JSON: %q", req, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, body
}

// TestContractMalformedTransfer (issue 12, class 1): bodies broken at the
// transfer level and requests net/http refuses before routing are
// answered with a 4xx and the contract's JSON error, counted as such, and
// never logged as failures.
func TestContractMalformedTransfer(t *testing.T) {
	leaktest.Check(t)
	log := newLevelLog()
	o := apiStart(t, func(c *origin.Config) { c.Logger = slog.New(log) })
	head := func(method, path, extra string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: lnk.test\r\nAuthorization: Bearer " + apiAdminKey + "\r\nContent-Type: application/json\r\n" + extra
	}
	const body = `{"url":"https://example.com/"}`
	for _, tc := range []struct {
		name       string
		req        string
		closeWrite bool
		status     int
		code       string
	}{
		{"bad chunk size", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\n\r\nzz\r\n"+body+"\r\n0\r\n\r\n"), false, 400, "malformed_request"},
		{"chunk longer than declared", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\n\r\n3\r\n"+body+"\r\n0\r\n\r\n"), false, 400, "malformed_request"},
		{"no last chunk", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\n\r\n1e\r\n"+body+"\r\n"), true, 400, "malformed_request"},
		{"chunk size overflow", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n"), false, 400, "malformed_request"},
		{"short Content-Length", head("POST", "/v1/links", "Content-Length: 100\r\n\r\n"+body), true, 400, "malformed_request"},
		{"short body on PATCH", head("PATCH", "/v1/links/nope404", "Content-Length: 100\r\n\r\n{\"redirect\":301}"), true, 400, "malformed_request"},
		{"short body on keys", head("POST", "/v1/keys", "Content-Length: 100\r\n\r\n{\"name\":"), true, 400, "malformed_request"},
		{"duplicate Content-Length", head("POST", "/v1/links", "Content-Length: 30\r\nContent-Length: 31\r\n\r\n"+body), false, 400, "malformed_request"},
		{"control byte in Content-Type", "POST /v1/links HTTP/1.1\r\nHost: lnk.test\r\nContent-Type: application/json\x01\r\nContent-Length: 30\r\n\r\n" + body, false, 400, "malformed_request"},
		{"NUL in a header", head("POST", "/v1/links", "X-A: a\x00b\r\nContent-Length: 30\r\n\r\n"+body), false, 400, "malformed_request"},
		{"unsupported Transfer-Encoding", head("POST", "/v1/links", "Transfer-Encoding: gzip\r\n\r\n"+body), false, 400, "malformed_request"},
		// RFC 9112 section 6.3: chunked wins over Content-Length.
		{"chunked and Content-Length", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n1e\r\n"+body+"\r\n0\r\n\r\n"), false, 201, ""},
		{"no Host", "POST /v1/links HTTP/1.1\r\nContent-Length: 30\r\n\r\n" + body, false, 400, "malformed_request"},
		{"headers too large", head("GET", "/v1/links", "X-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n"), false, 431, "headers_too_large"},
		{"well-formed chunked", head("POST", "/v1/links", "Transfer-Encoding: chunked\r\n\r\n1e\r\n"+body+"\r\n0\r\n\r\n"), false, 201, ""},
	} {
		status, hdr, b := rawExchange(t, o.srv.Addr(), tc.req, tc.closeWrite)
		e, _ := b["error"].(map[string]any)
		code, _ := e["code"].(string)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: got %d %q, want %d %q (%v)", tc.name, status, code, tc.status, tc.code, b)
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
		if msg, _ := e["message"].(string); tc.code != "" && msg == "" {
			t.Errorf("%s: error without a message: %v", tc.name, b)
		}
	}
	if m := o.metricsText(); !strings.Contains(m, `linkpop_origin_requests_total{route="unparsed",code="400"}`) ||
		!strings.Contains(m, `linkpop_origin_requests_total{route="POST /v1/links",code="400"}`) {
		t.Errorf("refusals not counted:\n%s", m)
	}
	noServerFailures(t, o, log)
}

// TestClientGone (issue 12, class 7): a request whose client went away
// is counted as 499, not as a server failure, and not logged as one.
func TestClientGone(t *testing.T) {
	leaktest.Check(t)
	log := newLevelLog()
	o := apiStart(t, func(c *origin.Config) { c.Logger = slog.New(log) })
	h := o.srv.Handler()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/links", `{"url":"https://example.com/gone"}`},
		{"PATCH", "/v1/links/gone123", `{"redirect":301}`},
		{"DELETE", "/v1/links/gone123", ``},
		{"POST", "/v1/keys", `{"name":"gone","scopes":["admin"]}`},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the client is gone before the store is reached
		req := httptest.NewRequestWithContext(ctx, tc.method, tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+apiAdminKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != origin.StatusClientClosedRequest {
			t.Errorf("%s %s with the client gone: status %d %s", tc.method, tc.path, rec.Code, rec.Body)
		}
	}
	// Over a real connection: a client that closes mid-body.
	c, err := net.Dial("tcp", o.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "POST /v1/links HTTP/1.1\r\nHost: lnk.test\r\nAuthorization: Bearer "+apiAdminKey+"\r\nContent-Length: 200\r\n\r\n{\"url\":")
	_ = c.Close()
	wait.For(t, 10*time.Second, "the broken-off request to be counted", func() bool {
		return regexp.MustCompile(`linkpop_origin_requests_total\{route="POST /v1/links",code="4\d\d"\}`).MatchString(o.metricsText())
	})
	m := o.metricsText()
	if !strings.Contains(m, `route="POST /v1/links",code="499"} 1`) || !strings.Contains(m, `route="DELETE /v1/links/{code}",code="499"} 1`) {
		t.Errorf("client-gone requests not counted as 499:\n%s", m)
	}
	noServerFailures(t, o, log)
}

// TestConfigBlockedDomainsIDNMatch (issue 12, class 3): an IDN entry of
// the blocklist blocks its every spelling.
func TestConfigBlockedDomainsIDNMatch(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	srv, err := origin.New(origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
		NATS:     replication.ConnConfig{URLs: []string{ns.URL()}},
		AdminKey: apiAdminKey, BlockedDomains: []string{"bücher.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, target := range []string{"https://bücher.example/", "https://xn--bcher-kva.example/", "https://a.BÜCHER.example./"} {
		req := httptest.NewRequest("POST", "/v1/links", strings.NewReader(`{"url":"`+target+`"}`))
		req.Header.Set("Authorization", "Bearer "+apiAdminKey)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"url_blocked"`) {
			t.Errorf("%s: %d %s", target, rec.Code, rec.Body)
		}
	}
}
