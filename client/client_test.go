package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
)

// flaky answers 503 (Retry-After: 0) to the first fails requests, then
// answers with ok.
func flaky(t *testing.T, fails int32, ok func(w http.ResponseWriter, r *http.Request)) (*Client, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= fails {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"later"}}`))
			return
		}
		ok(w, r)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, Key: "k", MaxRetryWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, &n
}

func TestRetriesOnlyWhatIsSafe(t *testing.T) {
	created := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(Link{Code: "abc", Status: StatusActive})
	}
	c, n := flaky(t, 2, created)
	if _, err := c.CreateLink(context.Background(), CreateLink{URL: "https://example.com/"}, CreateOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("POST without Idempotency-Key: %v, want unavailable", err)
	}
	if got := n.Load(); got != 1 {
		t.Fatalf("POST without Idempotency-Key sent %d times, want 1", got)
	}
	c, n = flaky(t, 2, created)
	if l, err := c.CreateLink(context.Background(), CreateLink{URL: "https://example.com/"}, CreateOptions{IdempotencyKey: "x"}); err != nil || l.Code != "abc" {
		t.Fatalf("POST with Idempotency-Key: %+v, %v", l, err)
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("POST with Idempotency-Key sent %d times, want 3", got)
	}
	c, n = flaky(t, 10, created)
	_, err := c.GetLink(context.Background(), "abc")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != "unavailable" || ae.RetryAfter != 0 {
		t.Fatalf("GET after every try failed: %v", err)
	}
	if got := n.Load(); got != DefaultMaxAttempts {
		t.Fatalf("GET sent %d times, want %d", got, DefaultMaxAttempts)
	}
	c, n = flaky(t, 1, created)
	if _, err := c.DisableLink(context.Background(), "abc", 0); !errors.Is(err, ErrUnavailable) || n.Load() != 1 {
		t.Fatalf("DELETE: %v after %d tries, want one try", err, n.Load())
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	var first time.Time
	var gap time.Duration
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"code":"rate_limited","message":"slow down"}}`))
			return
		}
		gap = time.Since(first)
		_ = json.NewEncoder(w).Encode(ListPage{Links: []Link{}})
	}))
	defer srv.Close()
	c, _ := New(Config{BaseURL: srv.URL})
	if _, err := c.ListLinks(context.Background(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	// Not a timing assertion on our speed: the client must not ask again
	// before the second the server asked for.
	if gap < time.Second {
		t.Fatalf("retried after %v, Retry-After said 1s", gap)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.ListLinks(ctx, ListOptions{}); err == nil {
		t.Fatal("canceled context: no error")
	}
}

func TestErrorsMatchSentinels(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/links":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":{"code":"code_taken","message":"code is already in use","field":"code"}}`))
		case "/v1/keys":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"no"}}`))
		default:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`<h1>bad gateway</h1>`))
		}
	}))
	defer srv.Close()
	c, _ := New(Config{BaseURL: srv.URL, MaxAttempts: 1})
	ctx := context.Background()
	_, err := c.CreateLink(ctx, CreateLink{URL: "https://example.com/", Code: "taken"}, CreateOptions{})
	var ae *Error
	if !errors.Is(err, link.ErrCodeTaken) || !errors.As(err, &ae) || ae.Field != "code" || ae.Status != 409 {
		t.Fatalf("code taken: %#v", err)
	}
	if errors.Is(err, link.ErrNotFound) {
		t.Fatal("code_taken matches not_found")
	}
	if _, err := c.ListKeys(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = c.GetLink(ctx, "x")
	if !errors.As(err, &ae) || ae.Code != CodeUnexpected || ae.Status != 502 || !strings.Contains(ae.Message, "bad gateway") {
		t.Fatalf("non-API answer: %#v", err)
	}
	if _, err := New(Config{BaseURL: "ftp://x"}); err == nil {
		t.Fatal("ftp base accepted")
	}
}

func TestLinkRoundTrip(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 123e6, time.UTC)
	rec := link.Record{Code: "abc12", URL: "https://example.com/a?b=1&c=2", Redirect: 307, Status: link.StatusDisabled,
		CreatedAt: now, UpdatedAt: now.Add(time.Second), ExpiresAt: now.Add(time.Hour), Revision: 9, Tags: []string{"a", "b"}, MaxVisits: 5, Freshness: link.FreshnessStrict}
	l := NewLink(&rec, "http://s.test/")
	b, err := Encode(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"code":"abc12","url":"https://example.com/a?b=1&c=2","short_url":"http://s.test/abc12","redirect":307,"status":"disabled",` +
		`"created_at":"2026-05-01T10:00:00.123Z","updated_at":"2026-05-01T10:00:01.123Z","expires_at":"2026-05-01T11:00:00.123Z",` +
		`"revision":9,"tags":["a","b"],"max_visits":5,"freshness":"strict"}` + "\n"
	if string(b) != want {
		t.Fatalf("link object\n got %s\nwant %s", b, want)
	}
	var back Link
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.Record()
	if err != nil {
		t.Fatal(err)
	}
	if got.Code != rec.Code || got.URL != rec.URL || !got.ExpiresAt.Equal(rec.ExpiresAt) || got.MaxVisits != 5 || got.Status != rec.Status || len(got.Tags) != 2 {
		t.Fatalf("round trip: %+v, want %+v", got, rec)
	}
	bare := NewLink(&link.Record{Code: "abc", URL: "https://e.com/", Redirect: 302, Status: link.StatusActive, CreatedAt: now, UpdatedAt: now, Revision: 1}, "http://s/")
	b, _ = Encode(bare)
	if !strings.Contains(string(b), `"expires_at":null`) || !strings.Contains(string(b), `"tags":[]`) || !strings.Contains(string(b), `"max_visits":null`) {
		t.Fatalf("unset fields: %s", b)
	}
	bad := back
	bad.Status = "gone"
	if _, err := bad.Record(); !errors.Is(err, ErrBadLink) {
		t.Fatalf("bad status: %v", err)
	}
}

func TestBatchResultJSON(t *testing.T) {
	in := BatchResponse{Results: []BatchResult{
		{Link: &Link{Code: "a", Tags: []string{}}},
		{Error: &ErrorObject{Code: "code_taken", Message: "taken", Field: "code"}},
	}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out BatchResponse
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 2 || out.Results[0].Link == nil || out.Results[0].Link.Code != "a" || out.Results[1].Error == nil ||
		!errors.Is(out.Results[1].Err(), link.ErrCodeTaken) || out.Results[0].Err() != nil {
		t.Fatalf("round trip %s: %+v", b, out)
	}
	if _, err := json.Marshal(BatchResult{}); err == nil {
		t.Fatal("empty result marshalled")
	}
}

func TestUpdateLinkSendsOnlySetFields(t *testing.T) {
	u := "https://example.com/"
	f := func(in UpdateLink, want string) {
		t.Helper()
		b, err := json.Marshal(in)
		if err != nil || string(b) != want {
			t.Fatalf("%+v: %s %v, want %s", in, b, err, want)
		}
	}
	f(UpdateLink{URL: &u}, `{"url":"https://example.com/"}`)
	f(UpdateLink{ClearExpiry: true}, `{"expires_at":null}`)
	f(UpdateLink{Tags: &[]string{}}, `{"tags":[]}`)
	f(UpdateLink{}, `{}`)
}
