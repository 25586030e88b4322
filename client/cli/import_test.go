package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
)

func apiClient(t *testing.T, api string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{BaseURL: api, Key: adminKey})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func abs(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImportFormats imports each fixture into a fresh origin and checks
// the links it holds and the lines it refused, with the API's codes.
func TestImportFormats(t *testing.T) {
	type want struct {
		code, url string
		tags      []string
		redirect  int
		disabled  bool
	}
	cases := []struct {
		file, format string
		exit         int
		links        []want
		randoms      []string // URLs created under random codes
		refused      []string // "line N ... code" fragments of stderr
	}{
		{"links.jsonl", "", 1,
			[]want{{"jl-one", "https://example.com/one", []string{"a", "b"}, 301, false}, {"jl-two", "https://example.com/two?x=1&y=2", nil, 302, true}},
			[]string{"https://example.com/random"},
			[]string{`line 5 code "jl-bad": url_scheme_not_allowed`, "line 6: invalid_input"}},
		{"links.csv", "", 1,
			[]want{{"csv-one", "https://example.com/c1", []string{"news", "go"}, 302, false}, {"csv-two", "https://example.com/c2?a=1,2", nil, 307, false}},
			[]string{"https://example.com/c-random"},
			[]string{`line 5 code "csv-bad": invalid_redirect`}},
		{"shlink.csv", "shlink", 0,
			[]want{{"abc12", "https://example.com/a?b=1,2", []string{"news", "go"}, 302, false}, {"sh-two", "https://example.com/shlink-two", nil, 302, false}}, nil, nil},
		{"yourls.csv", "yourls", 0,
			[]want{{"ozh", "https://ozh.org/", nil, 302, false}, {"yo-two", "https://example.com/yourls-two", nil, 302, false}}, nil, nil},
		{"yourls.sql", "yourls", 0,
			[]want{{"sql-ozh", "https://ozh.org/", nil, 302, false}, {"sql-two", "https://example.com/it's", nil, 302, false}}, nil, nil},
		{"bitly.csv", "bitly", 0,
			[]want{{"my-launch", "https://example.com/launch", []string{"q4"}, 302, false}, {"bt2abc", "https://example.com/bitly-two", nil, 302, false}}, nil, nil},
		{"golink.jsonl", "golink", 1,
			[]want{{"go-docs", "https://go.dev/doc/", nil, 302, false}}, nil,
			// golink allows codes linkpop does not: reported, never changed.
			[]string{`line 1 code "cs": invalid_code`, `line 3 code "chan": invalid_input`, `line 4 code "a.b": invalid_code`}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			api, _ := startOrigin(t)
			e := newEnv(t, api, adminKey)
			args := []string{"import", abs(t, tc.file)}
			if tc.format != "" {
				args = append(args, "--format", tc.format)
			}
			r := e.run("", args...)
			if r.code != tc.exit {
				t.Fatalf("exit %d, want %d\n%s", r.code, tc.exit, r.stderr)
			}
			for _, frag := range tc.refused {
				if !strings.Contains(r.stderr, frag) {
					t.Errorf("stderr lacks %q:\n%s", frag, r.stderr)
				}
			}
			c := apiClient(t, api)
			ctx := context.Background()
			for _, w := range tc.links {
				l, err := c.GetLink(ctx, w.code)
				if err != nil {
					t.Errorf("%s: %v", w.code, err)
					continue
				}
				if l.URL != w.url || !slices.Equal(l.Tags, append([]string{}, w.tags...)) || l.Redirect != w.redirect || (l.Status == client.StatusDisabled) != w.disabled {
					t.Errorf("%s: %+v, want %+v", w.code, l, w)
				}
				if w.disabled && !l.UpdatedAt.Equal(l.CreatedAt) {
					t.Errorf("%s: disabled after it was created (created %v, updated %v), want created disabled", w.code, l.CreatedAt, l.UpdatedAt)
				}
			}
			var urls []string
			for l, err := range c.AllLinks(ctx, 0) {
				if err != nil {
					t.Fatal(err)
				}
				urls = append(urls, l.URL)
			}
			if len(urls) != len(tc.links)+len(tc.randoms) {
				t.Errorf("origin holds %d links, want %d: %v", len(urls), len(tc.links)+len(tc.randoms), urls)
			}
			for _, u := range tc.randoms {
				if !slices.Contains(urls, u) {
					t.Errorf("no link to %s", u)
				}
			}
		})
	}
}

// TestImportDryRunAndConflicts checks that --dry-run writes nothing but
// reports what a real import would refuse, taken codes included, and the
// two --on-conflict policies.
func TestImportDryRunAndConflicts(t *testing.T) {
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)
	c := apiClient(t, api)
	file := abs(t, "links.csv")
	r := e.run("", "import", file, "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, `line 5 code "csv-bad": invalid_redirect`) || !strings.Contains(r.stderr, "would create 3") {
		t.Fatalf("dry run: %d\n%s", r.code, r.stderr)
	}
	if p, err := c.ListLinks(context.Background(), client.ListOptions{}); err != nil || len(p.Links) != 0 {
		t.Fatalf("dry run wrote %d links (%v)", len(p.Links), err)
	}
	shlink := abs(t, "shlink.csv")
	e.must(0, "import", shlink, "--format", "shlink")
	r = e.run("", "import", shlink, "--format", "shlink", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, `code "abc12": code_taken`) {
		t.Fatalf("dry run of taken codes: %d\n%s", r.code, r.stderr)
	}
	// The same codes to other targets: the same file again would be
	// answered from its batch's idempotency record (TestImportTwice).
	orig, err := os.ReadFile(shlink)
	if err != nil {
		t.Fatal(err)
	}
	for i, policy := range []string{"skip", "fail"} {
		moved := strings.ReplaceAll(string(orig), "https://example.com/", fmt.Sprintf("https://example.com/moved%d/", i))
		r := e.run(moved, "import", "-", "--format", "shlink", "--on-conflict", policy)
		switch {
		case policy == "skip" && (r.code != 0 || !strings.Contains(r.stderr, "skipped 2")):
			t.Fatalf("--on-conflict skip: %d\n%s", r.code, r.stderr)
		case policy == "fail" && (r.code != 1 || !strings.Contains(r.stderr, "code_taken") || !strings.Contains(r.stderr, "--on-conflict fail")):
			t.Fatalf("--on-conflict fail: %d\n%s", r.code, r.stderr)
		}
	}
	// Standard input works as a file.
	b, _ := os.ReadFile(abs(t, "golink.jsonl"))
	if r := e.run(strings.Replace(string(b), `"cs"`, `"cs2"`, 1), "import", "-", "--format", "golink", "--on-conflict", "skip"); !strings.Contains(r.stderr, "created 2,") {
		t.Fatalf("import from stdin: %d\n%s", r.code, r.stderr)
	}
}

// TestExportImportRoundTrip exports an origin, imports the file into a
// fresh origin and requires the two digests to be equal and the links to
// match field by field.
func TestExportImportRoundTrip(t *testing.T) {
	apiA, _ := startOrigin(t)
	apiB, _ := startOrigin(t)
	a, b := apiClient(t, apiA), apiClient(t, apiB)
	ctx := context.Background()
	// Revisions are assigned in commit order and the digest covers them,
	// so the source is created in code order, as the import will be.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	var creates []client.CreateLink
	for i := range 2500 {
		c := client.CreateLink{URL: fmt.Sprintf("https://example.com/rt/%d?q=a&b=%d", i, i), Code: fmt.Sprintf("rt%05d", i)}
		switch i % 4 {
		case 1:
			c.Tags = []string{"t", fmt.Sprint(i % 7)}
		case 2:
			c.Redirect = 308
		case 3:
			c.ExpiresAt = &exp
		}
		creates = append(creates, c)
	}
	for i := 0; i < len(creates); i += client.MaxBatch {
		res, err := a.CreateBatch(ctx, creates[i:min(i+client.MaxBatch, len(creates))], client.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Error != nil {
				t.Fatalf("seed: %+v", r.Error)
			}
		}
	}
	ea, eb := newEnv(t, apiA, adminKey), newEnv(t, apiB, adminKey)
	file := filepath.Join(t.TempDir(), "links.jsonl")
	ea.must(0, "export", "-o", file)
	// --parallel 1 commits the batches in file order, so the revisions
	// follow the file as they followed the codes in the source.
	if r := eb.must(0, "import", file, "--parallel", "1"); !strings.Contains(r.stderr, "created 2500, skipped 0, failed 0") {
		t.Fatalf("import: %s", r.stderr)
	}
	da, err := a.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if da.Links != 2500 || da.Sum != db.Sum || da.Links != db.Links || !slices.Equal(da.Buckets, db.Buckets) {
		t.Fatalf("digests differ: %d links sum %s, %d links sum %s", da.Links, da.Sum, db.Links, db.Sum)
	}
	// Field by field, timestamps aside.
	second := filepath.Join(t.TempDir(), "again.jsonl")
	eb.must(0, "export", "-o", second)
	strip := func(path string) []string {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var out []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l client.Link
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatal(err)
			}
			l.CreatedAt, l.UpdatedAt = time.Time{}, time.Time{}
			b, _ := json.Marshal(l)
			out = append(out, string(b))
		}
		return out
	}
	if x, y := strip(file), strip(second); !slices.Equal(x, y) {
		t.Fatalf("exports differ: %d and %d lines", len(x), len(y))
	}
}

// TestImportParallelKeepsFirstLine imports a file in which every code is
// given twice, by lines in neighbouring batches, with many batches in
// flight: each code must get its first line's URL and the second line
// must be the one refused, as a one-at-a-time import decides.
func TestImportParallelKeepsFirstLine(t *testing.T) {
	api, _ := startOrigin(t)
	const batches, per = 120, 4
	var b strings.Builder
	for i := range batches {
		for j := range per {
			if j == 0 && i > 0 {
				// The code the previous batch created first, again.
				fmt.Fprintf(&b, `{"code":"dup-%d","url":"https://example.com/second/%d"}`+"\n", i-1, i-1)
				continue
			}
			if j == 1 {
				fmt.Fprintf(&b, `{"code":"dup-%d","url":"https://example.com/first/%d"}`+"\n", i, i)
				continue
			}
			fmt.Fprintf(&b, `{"url":"https://example.com/filler/%d/%d"}`+"\n", i, j)
		}
	}
	file := filepath.Join(t.TempDir(), "dups.jsonl")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, api, adminKey)
	r := e.run("", "import", file, "--batch", strconv.Itoa(per), "--parallel", "16", "--on-conflict", "skip")
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("skipped %d,", batches-1)) {
		t.Fatalf("import: exit %d\n%s", r.code, r.stderr)
	}
	c := apiClient(t, api)
	for i := range batches {
		l, err := c.GetLink(context.Background(), fmt.Sprintf("dup-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("https://example.com/first/%d", i); l.URL != want {
			t.Fatalf("dup-%d: %s, want the first line's %s", i, l.URL, want)
		}
	}
}

// TestImportBitlyAPI imports from a local server that answers as Bitly's
// API v4 is documented (the real service cannot be reached from tests):
// groups, then each group's bitlinks page by page through
// pagination.next, with the token as a bearer header.
func TestImportBitlyAPI(t *testing.T) {
	const token = "bitly-token-secret"
	var foreign bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"message":"FORBIDDEN"}`, http.StatusForbidden)
			return
		}
		base := "http://" + r.Host
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v4/groups":
			fmt.Fprint(w, `{"groups":[{"guid":"Ga1","name":"one"},{"guid":"Gb2","name":"two"}]}`)
		case r.URL.Path == "/v4/groups/Ga1/bitlinks" && r.URL.Query().Get("page") == "":
			if r.URL.Query().Get("archived") != "both" {
				t.Errorf("bitlinks without archived=both: %s", r.URL)
			}
			next := base + "/v4/groups/Ga1/bitlinks?page=2&size=100&archived=both"
			if foreign {
				next = "http://127.0.0.2:9/v4/groups/Ga1/bitlinks?page=2"
			}
			fmt.Fprintf(w, `{"links":[
				{"created_at":"2020-10-26T17:20:40+0000","id":"bit.ly/3xYz","link":"https://bit.ly/3xYz","custom_bitlinks":["https://bit.ly/my-launch"],"long_url":"https://example.com/launch","title":"Launch","archived":false,"tags":["q4"]},
				{"id":"bit.ly/bt2abc","link":"https://bit.ly/bt2abc","custom_bitlinks":[],"long_url":"https://example.com/two","archived":true,"tags":[]}
			],"pagination":{"prev":"","next":%q,"size":2,"page":1,"total":3}}`, next)
		case r.URL.Path == "/v4/groups/Ga1/bitlinks" && r.URL.Query().Get("page") == "2":
			fmt.Fprint(w, `{"links":[{"id":"bit.ly/bt3bad","link":"https://bit.ly/bt3bad","long_url":"javascript:alert(1)"}],"pagination":{"next":""}}`)
		case r.URL.Path == "/v4/groups/Gb2/bitlinks":
			fmt.Fprint(w, `{"links":[{"id":"bit.ly/gone99","link":"https://bit.ly/gone99","long_url":"https://example.com/gone","is_deleted":true}],"pagination":{"next":""}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)
	r := e.run("", "import", srv.URL+"/v4", "--format", "bitly-api")
	if r.code != 2 || !strings.Contains(r.stderr, "LINKPOP_SOURCE_TOKEN") {
		t.Fatalf("without a token: exit %d\n%s", r.code, r.stderr)
	}
	e.vars = append(e.vars, "LINKPOP_SOURCE_TOKEN="+token)
	r = e.run("", "import", srv.URL+"/v4", "--format", "bitly-api")
	if r.code != 1 || !strings.Contains(r.stderr, "created 3, skipped 0, failed 1") || !strings.Contains(r.stderr, `item 3 code "bt3bad": url_scheme_not_allowed`) {
		t.Fatalf("import: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, token) {
		t.Fatal("the source token was printed")
	}
	c := apiClient(t, api)
	for code, want := range map[string]string{"my-launch": "https://example.com/launch", "bt2abc": "https://example.com/two", "gone99": "https://example.com/gone"} {
		l, err := c.GetLink(context.Background(), code)
		if err != nil || l.URL != want || (l.Status == client.StatusDisabled) != (code == "gone99") {
			t.Errorf("%s: %+v %v, want %s", code, l, err, want)
		}
	}
	// A next page on another host is refused: the token stays home.
	foreign = true
	r = e.run("", "import", srv.URL+"/v4", "--format", "bitly-api", "--on-conflict", "skip")
	if r.code != 1 || !strings.Contains(r.stderr, "another host") {
		t.Fatalf("foreign next page: exit %d\n%s", r.code, r.stderr)
	}
}

// TestImportKuttAPI imports from a local server that answers as Kutt's
// API v2 is documented: GET /api/v2/links?limit&skip with X-API-KEY,
// paged until total.
func TestImportKuttAPI(t *testing.T) {
	const token = "kutt-key"
	const total = 130
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-KEY") != token || r.URL.Path != "/api/v2/links" {
			http.Error(w, `{"error":"no"}`, http.StatusUnauthorized)
			return
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		skip, _ := strconv.Atoi(r.URL.Query().Get("skip"))
		var data []string
		for i := skip; i < min(skip+limit, total); i++ {
			l := fmt.Sprintf(`{"id":"u%d","address":"kt%03d","target":"https://example.com/kutt/%d","description":null,"expire_in":null,"password":false,"banned":false,"visit_count":3,"domain":null,"link":"https://kutt.it/kt%03d"}`, i, i, i, i)
			switch i {
			case 1:
				l = `{"address":"kt-banned","target":"https://example.com/banned","banned":true,"password":false}`
			case 2:
				l = `{"address":"kt-secret","target":"https://example.com/secret","banned":false,"password":true}`
			case 3:
				l = fmt.Sprintf(`{"address":"kt-expiring","target":"https://example.com/expiring","expire_in":%q}`, future)
			}
			data = append(data, l)
		}
		fmt.Fprintf(w, `{"limit":%d,"skip":%d,"total":%d,"data":[%s]}`, limit, skip, total, strings.Join(data, ","))
	}))
	defer srv.Close()
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)
	e.vars = append(e.vars, "LINKPOP_SOURCE_TOKEN="+token)
	r := e.run("", "import", srv.URL, "--format", "kutt-api")
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("created %d, skipped 0, failed 1", total-1)) || !strings.Contains(r.stderr, `item 3 code "kt-secret": invalid_input`) {
		t.Fatalf("import: exit %d\n%s", r.code, r.stderr)
	}
	c := apiClient(t, api)
	ctx := context.Background()
	if l, err := c.GetLink(ctx, "kt129"); err != nil || l.URL != "https://example.com/kutt/129" {
		t.Errorf("last page: %+v %v", l, err)
	}
	if l, err := c.GetLink(ctx, "kt-banned"); err != nil || l.Status != client.StatusDisabled {
		t.Errorf("banned: %+v %v", l, err)
	}
	if l, err := c.GetLink(ctx, "kt-expiring"); err != nil || l.ExpiresAt == nil || l.ExpiresAt.Format(time.RFC3339) != future {
		t.Errorf("expiring: %+v %v", l, err)
	}
}

// TestImportTwice runs the same import twice: the second run must create
// nothing, lines without a code included (each batch's Idempotency-Key
// comes from its lines, so the origin answers it from its record), and
// say so; a file with one line changed creates that line's batch only.
func TestImportTwice(t *testing.T) {
	api, _ := startOrigin(t)
	e := newEnv(t, api, adminKey)
	var lines []string
	for i := range 2500 {
		if i%5 == 0 {
			lines = append(lines, fmt.Sprintf(`{"code":"twice-%04d","url":"https://example.com/twice/%d"}`, i, i))
		} else {
			lines = append(lines, fmt.Sprintf(`{"url":"https://example.com/twice/%d"}`, i))
		}
	}
	file := filepath.Join(t.TempDir(), "links.jsonl")
	write := func() {
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write()
	c := apiClient(t, api)
	count := func() int {
		n, cursor := 0, ""
		for {
			page, err := c.ListLinks(context.Background(), client.ListOptions{Limit: 1000, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			n += len(page.Links)
			if page.NextCursor == nil {
				return n
			}
			cursor = *page.NextCursor
		}
	}

	r := e.must(0, "import", file)
	if !strings.Contains(r.stderr, "created 2500, skipped 0, failed 0") {
		t.Fatalf("first import: %s", r.stderr)
	}
	r = e.must(0, "import", file)
	if !strings.Contains(r.stderr, "created 0, already imported 2500, skipped 0, failed 0") {
		t.Fatalf("second import: %s", r.stderr)
	}
	if n := count(); n != 2500 {
		t.Fatalf("%d links after importing 2,500 lines twice", n)
	}

	// Line 1502 (in the second batch of 1,000) gets another URL: that
	// batch is new, the other two are answered from their records. Its
	// 200 coded lines are taken now (skipped), its other lines created.
	lines[1501] = `{"url":"https://example.com/twice/changed"}`
	write()
	r = e.must(0, "import", file, "--on-conflict", "skip")
	if !strings.Contains(r.stderr, "created 800, already imported 1500, skipped 200, failed 0") {
		t.Fatalf("import with one line changed: %s", r.stderr)
	}
	if n := count(); n != 3300 {
		t.Fatalf("%d links, want 3,300", n)
	}
}
