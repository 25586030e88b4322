package origin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/link"
)

// TestDigest checks GET /v1/digest and GET /v1/digest/buckets/{i} against
// a digest built from what GET /v1/links/{code} answers, after creates,
// updates and deactivations.
func TestDigest(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	_, readKey := o.mintKey(`{"name":"reader","scopes":["links:read"],"rate_limit":-1}`)
	_, writeKey := o.mintKey(`{"name":"writer","scopes":["links:write"]}`)

	var codes []string
	for i := range 40 {
		r := o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, fmt.Sprintf(`{"url":"https://example.com/%d"}`, i))
		codes = append(codes, r.str("code"))
	}
	o.must(http.StatusCreated, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/c","code":"digest-custom"}`)
	codes = append(codes, "digest-custom")
	for _, c := range codes[:10] {
		o.must(http.StatusOK, "PATCH", "/v1/links/"+c, apiAdminKey, `{"url":"https://example.org/changed"}`)
	}
	for _, c := range codes[5:15] {
		o.must(http.StatusOK, "DELETE", "/v1/links/"+c, apiAdminKey, "")
	}

	var want link.Digest
	revs := map[string]uint64{}
	var maxRev uint64
	for _, c := range codes {
		r := o.must(http.StatusOK, "GET", "/v1/links/"+c, readKey, "")
		rev := uint64(r.body["revision"].(float64))
		want.Add(c, rev)
		revs[c] = rev
		maxRev = max(maxRev, rev)
	}

	get := func(path, key string, v any) {
		t.Helper()
		r := o.must(http.StatusOK, "GET", path, key, "")
		if err := json.Unmarshal(r.raw, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, r.raw)
		}
	}
	for _, key := range []string{readKey, apiAdminKey} {
		var d client.Digest
		get("/v1/digest", key, &d)
		got, err := d.Digest()
		if err != nil {
			t.Fatalf("digest JSON: %v", err)
		}
		if !got.Equal(&want) || d.Links != uint64(len(codes)) || d.Revision != maxRev || d.Unpublished < 0 {
			t.Fatalf("digest: %d links, revision %d, unpublished %v, differing buckets %v; want %d links, revision %d",
				d.Links, d.Revision, d.Unpublished, got.Diff(&want), len(codes), maxRev)
		}
	}

	listed := 0
	for i := range link.DigestBuckets {
		var b client.DigestBucket
		get("/v1/digest/buckets/"+strconv.Itoa(i), readKey, &b)
		if b.Bucket != i || b.Revision != maxRev || b.Links == nil || uint64(len(b.Links)) != want.Counts[i] {
			t.Fatalf("bucket %d: %+v; want %d links at revision %d", i, b, want.Counts[i], maxRev)
		}
		for _, e := range b.Links {
			if revs[e.Code] != e.Revision || link.DigestBucket(e.Code) != i {
				t.Fatalf("bucket %d lists %+v; the link has revision %d", i, e, revs[e.Code])
			}
		}
		listed += len(b.Links)
	}
	if listed != len(codes) {
		t.Fatalf("buckets list %d links, want %d", listed, len(codes))
	}

	f := func(path, key string, status int, code string) {
		t.Helper()
		r := o.do("GET", path, key, "")
		if r.status != status || r.errCode() != code {
			t.Errorf("GET %s: %d %q, want %d %q\n%s", path, r.status, r.errCode(), status, code, r.raw)
		}
	}
	f("/v1/digest", "", http.StatusUnauthorized, "unauthorized")
	f("/v1/digest", writeKey, http.StatusForbidden, "forbidden")
	f("/v1/digest/buckets/0", writeKey, http.StatusForbidden, "forbidden")
	f("/v1/digest/buckets/256", readKey, http.StatusBadRequest, "invalid_bucket")
	f("/v1/digest/buckets/-1", readKey, http.StatusBadRequest, "invalid_bucket")
	f("/v1/digest/buckets/01", readKey, http.StatusBadRequest, "invalid_bucket")
	f("/v1/digest/buckets/x", readKey, http.StatusBadRequest, "invalid_bucket")
	f("/v1/digest/buckets/", readKey, http.StatusNotFound, "not_found")
	if r := o.do("POST", "/v1/digest", readKey, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/digest: %d, want 405", r.status)
	}
}
