package origin_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	vErrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/origin"
)

// contract validates exchanges against the OpenAPI document and records
// which operations the tests exercised.
var contract = struct {
	once  sync.Once
	mu    sync.Mutex
	model *v3.Document
	val   validator.Validator
	err   error
	seen  map[string]int // operationId -> exchanges validated
	other int            // exchanges on routes the document does not describe
}{seen: map[string]int{}}

func loadContract() error {
	contract.once.Do(func() {
		doc, err := libopenapi.NewDocument(origin.OpenAPI())
		if err != nil {
			contract.err = err
			return
		}
		m, err := doc.BuildV3Model()
		if err != nil {
			contract.err = err
			return
		}
		contract.model = &m.Model
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			contract.err = fmt.Errorf("validator: %v", errs)
			return
		}
		contract.val = v
		if ok, errs := contract.val.ValidateDocument(); !ok {
			contract.err = fmt.Errorf("the document is not valid OpenAPI: %v", errs)
		}
	})
	return contract.err
}

// checkExchange validates one exchange of the contract tests: the answer
// always, against the operation and status the document gives; the
// request too when the origin accepted it (2xx) and sent JSON, since the
// tests send invalid requests on purpose. Requests to routes the document
// does not describe (the JSON 404/405 answers) must answer an ErrorBody.
func checkExchange(t testing.TB, method, url string, header http.Header, body []byte, status int, respHeader http.Header, raw []byte) {
	t.Helper()
	if err := loadContract(); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	item, _, _ := paths.FindPath(req, contract.model, nil)
	op := operation(item, method)
	if op == nil {
		var eb client.ErrorBody
		if status < 400 || json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
			t.Errorf("%s %s: route not in the OpenAPI document, answered %d %s", method, url, status, raw)
		}
		contract.mu.Lock()
		contract.other++
		contract.mu.Unlock()
		return
	}
	resp := &http.Response{StatusCode: status, Header: respHeader.Clone(), Body: io.NopCloser(bytes.NewReader(raw)), Request: req}
	if ok, errs := contract.val.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("%s %s -> %d: answer does not match the OpenAPI document:\n%s\n%s", method, url, status, validationErrors(errs), raw)
	}
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	// A batch answers 200 with per-item errors for the items the origin
	// refused: its request must validate when every item was created.
	partial := op.OperationId == "createLinks" && bytes.Contains(raw, []byte(`{"error":`))
	if status/100 == 2 && (len(body) == 0 || mt == "application/json") && !partial {
		req.Body = io.NopCloser(bytes.NewReader(body))
		if ok, errs := contract.val.ValidateHttpRequest(req); !ok {
			t.Errorf("%s %s %s: the origin accepted a request the OpenAPI document refuses:\n%s", method, url, body, validationErrors(errs))
		}
	}
	contract.mu.Lock()
	contract.seen[op.OperationId]++
	contract.mu.Unlock()
}

func operation(item *v3.PathItem, method string) *v3.Operation {
	if item == nil {
		return nil
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return item.Get
	case http.MethodPost:
		return item.Post
	case http.MethodPatch:
		return item.Patch
	case http.MethodDelete:
		return item.Delete
	case http.MethodPut:
		return item.Put
	}
	return nil
}

func validationErrors(errs []*vErrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s: %s\n", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s: %s\n", se.FieldPath, se.Reason)
		}
	}
	return b.String()
}

// TestMain runs the tests and then, when every test ran, requires each
// operation of the document to have been exercised by at least one
// validated exchange, so no call is described without being checked.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		if err := loadContract(); err != nil {
			fmt.Fprintln(os.Stderr, "openapi:", err)
			os.Exit(1)
		}
		var missing []string
		for _, pi := range contract.model.Paths.PathItems.FromOldest() {
			for _, op := range []*v3.Operation{pi.Get, pi.Post, pi.Patch, pi.Delete, pi.Put} {
				if op != nil && contract.seen[op.OperationId] == 0 {
					missing = append(missing, op.OperationId)
				}
			}
		}
		if len(missing) > 0 {
			fmt.Fprintf(os.Stderr, "openapi: operations no test exchange exercised: %v\n", missing)
			code = 1
		}
	}
	os.Exit(code)
}

// TestOpenAPISchemasMatchTypes requires each schema of the document to
// list exactly the JSON members of the client type it describes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	if err := loadContract(); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(origin.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	f := func(schema string, v any, skip ...string) {
		t.Helper()
		s, ok := doc.Components.Schemas[schema]
		if !ok {
			t.Errorf("schema %s missing", schema)
			return
		}
		var got []string
		for k := range s.Properties {
			got = append(got, k)
		}
		sort.Strings(got)
		want := jsonMembers(reflect.TypeOf(v))
		want = slices.DeleteFunc(want, func(m string) bool { return slices.Contains(skip, m) })
		if !slices.Equal(got, want) {
			t.Errorf("schema %s lists %v; client type %T has %v", schema, got, v, want)
		}
	}
	f("Link", client.Link{})
	f("ListPage", client.ListPage{})
	f("ErrorBody", client.ErrorBody{})
	f("ErrorObject", client.ErrorObject{})
	f("CreateLink", client.CreateLink{})
	f("BatchRequest", client.BatchRequest{})
	f("BatchResponse", client.BatchResponse{})
	f("Key", client.Key{})
	f("KeyList", client.KeyList{})
	f("CreateKey", client.CreateKey{})
	f("Digest", client.Digest{})
	f("DigestBucket", client.DigestBucket{})
	f("Stats", client.Stats{})
	f("StatsPoint", client.StatsPoint{})
	f("StatsCount", client.StatsCount{})
	f("TopLinks", client.TopLinks{})
	f("TopLink", client.TopLink{})
	f("LiveClicks", client.LiveClicks{})
	// UpdateLink marshals itself: its members are those it can send.
	u, e, tg, fr := "https://example.com/", 301, []string{}, "strict"
	b, _ := json.Marshal(client.UpdateLink{URL: &u, Redirect: &e, ClearExpiry: true, Tags: &tg, ClearMaxVisits: true, Freshness: &fr})
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	var sent []string
	for k := range m {
		sent = append(sent, k)
	}
	sort.Strings(sent)
	var listed []string
	for k := range doc.Components.Schemas["UpdateLink"].Properties {
		listed = append(listed, k)
	}
	sort.Strings(listed)
	if !slices.Equal(sent, listed) {
		t.Errorf("schema UpdateLink lists %v; client.UpdateLink sends %v", listed, sent)
	}
}

// jsonMembers lists the JSON member names of struct type t, embedded
// structs flattened, sorted.
func jsonMembers(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && tag == "" {
			out = append(out, jsonMembers(f.Type)...)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIServed checks GET /v1/openapi.json: no key needed, the
// committed document, and its ETag.
func TestOpenAPIServed(t *testing.T) {
	o := apiStart(t, nil)
	r := o.must(http.StatusOK, "GET", "/v1/openapi.json", "", "")
	if !bytes.Equal(r.raw, origin.OpenAPI()) || r.header.Get("Content-Type") != "application/json" || r.header.Get("ETag") == "" {
		t.Fatalf("served document differs or lacks headers: %v", r.header)
	}
	o.must(http.StatusNotModified, "GET", "/v1/openapi.json", "", "", "If-None-Match", r.header.Get("ETag"))
	o.must(http.StatusOK, "GET", "/v1/openapi.json", "wrong-key", "")
}

// TestOpenAPIValidatorBites makes sure the validation above can fail: a
// link object missing a member, a wrong type, and a request the document
// refuses are all caught.
func TestOpenAPIValidatorBites(t *testing.T) {
	if err := loadContract(); err != nil {
		t.Fatal(err)
	}
	good := `{"code":"abc","url":"https://e.com/","short_url":"https://s/abc","redirect":302,"status":"active","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","expires_at":null,"revision":1,"tags":[],"max_visits":null,"freshness":"relaxed"}`
	f := func(body string, wantOK bool) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://127.0.0.1/v1/links/abc", nil)
		req.Header.Set("Authorization", "Bearer x")
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), Request: req}
		if ok, errs := contract.val.ValidateHttpResponse(req, resp); ok != wantOK {
			t.Errorf("%s: valid %v, want %v: %s", body, ok, wantOK, validationErrors(errs))
		}
	}
	f(good, true)
	f(strings.Replace(good, `,"max_visits":null`, ``, 1), false)
	f(strings.Replace(good, `"revision":1`, `"revision":"1"`, 1), false)
	f(strings.Replace(good, `"status":"active"`, `"status":"gone"`, 1), false)
	f(strings.Replace(good, `"tags":[]`, `"tags":[],"extra":1`, 1), false)
	req, _ := http.NewRequest("POST", "http://127.0.0.1/v1/links", strings.NewReader(`{"url":5}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer x")
	if ok, _ := contract.val.ValidateHttpRequest(req); ok {
		t.Error(`{"url":5} passes as a create`)
	}
}
