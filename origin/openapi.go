package origin

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
)

// openAPIDoc is the OpenAPI 3.1 description of the API, hand-written and
// checked by the contract tests (openapi_test.go): every request and
// answer they exchange is validated against it, and its schemas must list
// exactly the JSON fields of package client's types.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the API's OpenAPI 3.1 document (JSON).
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

var openAPIETag = func() string {
	h := sha256.Sum256(openAPIDoc)
	return `"` + hex.EncodeToString(h[:8]) + `"`
}()

// openAPI is GET /v1/openapi.json: the document, without a key, cacheable
// by its ETag.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("ETag", openAPIETag)
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Header.Get("If-None-Match") == openAPIETag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(openAPIDoc)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(openAPIDoc)
	}
	return nil
}
