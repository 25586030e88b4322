package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/dashboard"
)

// apiFunc is an API handler: it writes its success answer itself and
// returns any error for writeError to answer.
type apiFunc func(w http.ResponseWriter, r *http.Request, p *principal) error

// route is one call of the API.
type route struct {
	pattern string // net/http ServeMux pattern: "METHOD /path/{var}"
	scope   string // scope the key needs
	body    bool   // reads a JSON body
	fn      apiFunc
}

// batchRoute is the one route whose body may be MaxBatchBytes.
const batchRoute = "POST /v1/links/batch"

// routeUnmatched labels requests no pattern matched, in metrics and logs.
const routeUnmatched = "unmatched"

// newAPIHandler builds the API: every route goes through serve, and
// whatever the mux cannot match is answered as JSON 404 or 405.
func (s *Server) newAPIHandler() http.Handler {
	routes := []route{
		{"POST /v1/links", ScopeLinksWrite, true, s.createLink},
		{batchRoute, ScopeLinksWrite, true, s.createBatch},
		{"GET /v1/links/{code}/qr", ScopeLinksRead, false, s.linkQR},
		{"GET /v1/links", ScopeLinksRead, false, s.listLinks},
		{"GET /v1/links/{code}", ScopeLinksRead, false, s.getLink},
		{"PATCH /v1/links/{code}", ScopeLinksWrite, true, s.updateLink},
		{"DELETE /v1/links/{code}", ScopeLinksWrite, false, s.disableLink},
		{"GET /v1/links/{code}/stats", ScopeLinksRead, false, s.linkStats},
		{"GET /v1/links/{code}/stats/live", ScopeLinksRead, false, s.liveStats},
		{"GET /v1/stats", ScopeLinksRead, false, s.topLinks},
		{"GET /v1/digest", ScopeLinksRead, false, s.digest},
		{"GET /v1/digest/buckets/{i}", ScopeLinksRead, false, s.digestBucket},
		{"POST /v1/keys", ScopeAdmin, true, s.createKey},
		{"GET /v1/keys", ScopeAdmin, false, s.listKeys},
		{"DELETE /v1/keys/{id}", ScopeAdmin, false, s.revokeKey},
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/openapi.json", s.instrument("GET /v1/openapi.json", s.openAPI))
	// The web dashboard: its page at / and its assets, no key needed
	// (it calls this API from the browser with the creator's key).
	dash := dashboard.Handler()
	for _, p := range dashboard.Patterns {
		mux.Handle(p, s.instrument("dashboard", func(w http.ResponseWriter, r *http.Request) error {
			dash.ServeHTTP(w, r)
			return nil
		}))
	}
	for _, rt := range routes {
		mux.Handle(rt.pattern, s.instrument(rt.pattern, func(w http.ResponseWriter, r *http.Request) error {
			return s.serve(w, r, rt)
		}))
	}
	unmatched := s.instrument(routeUnmatched, func(w http.ResponseWriter, r *http.Request) error {
		return s.unmatched(mux, w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			unmatched.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// unmatched answers a request no route matched with the JSON form of
// what the mux would have said: 405 with Allow, or 404.
func (s *Server) unmatched(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) error {
	h, _ := mux.Handler(r)
	probe := &headerProbe{h: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.h.Get("Allow"))
		return ErrMethodNotAllowed
	}
	return ErrRouteNotFound
}

// headerProbe records what a handler would answer, without a body.
type headerProbe struct {
	h      http.Header
	status int
}

func (p *headerProbe) Header() http.Header { return p.h }
func (p *headerProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *headerProbe) WriteHeader(status int) {
	if p.status == 0 {
		p.status = status
	}
}

// serve authenticates, rate-limits and authorizes one API call (a
// refused call still spends a token, so probing scopes is limited too),
// bounds its body and calls the route. It holds storeMu for reading
// throughout, so the store cannot close under a request.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) error {
	s.storeMu.RLock()
	defer s.storeMu.RUnlock()
	if s.closed.Load() {
		return ErrUnavailable
	}
	p, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.key = p.id
	}
	if err := s.allow(w, p); err != nil {
		return err
	}
	if !p.has(rt.scope) {
		return withDetail(ErrForbidden, fmt.Sprintf("this call needs scope %q", rt.scope))
	}
	if rt.body {
		if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
			return err
		}
		limit := s.cfg.MaxBodyBytes
		if rt.pattern == batchRoute {
			limit = s.cfg.MaxBatchBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	return rt.fn(w, r, p)
}

// instrument wraps one route: it recovers panics, answers the returned
// error, counts the request in linkpop_origin_requests_total{route,code},
// times it in linkpop_origin_request_duration_seconds{route} and logs it.
func (s *Server) instrument(routeName string, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	label := strconv.Quote(routeName)
	duration := s.metrics.GetOrCreatePrometheusHistogram(`linkpop_origin_request_duration_seconds{route=` + label + `}`)
	// The counter of each status, looked up by name once.
	var byStatus [600]atomic.Pointer[metrics.Counter]
	counter := func(status int) *metrics.Counter {
		if status < 0 || status >= len(byStatus) {
			status = http.StatusInternalServerError
		}
		if c := byStatus[status].Load(); c != nil {
			return c
		}
		c := s.metrics.GetOrCreateCounter(`linkpop_origin_requests_total{route=` + label + `,code="` + strconv.Itoa(status) + `"}`)
		byStatus[status].Store(c)
		return c
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if s.cfg.HA.Enabled {
			// Tools given several origin URLs pick the leader by it.
			w.Header().Set(RoleHeader, s.Role())
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				err := fmt.Errorf("panic: %v", v)
				if sw.status == 0 {
					s.writeError(sw, r, err)
				} else {
					s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "route", routeName, "err", err)
				}
			}
			if sw.status == 0 {
				sw.status = http.StatusOK
			}
			elapsed := time.Since(start)
			counter(sw.status).Inc()
			duration.Update(elapsed.Seconds())
			// Checked first: the arguments alone would cost six
			// allocations per request with the line not written.
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "route", routeName,
					"status", sw.status, "duration", elapsed, "key", sw.key, "remote", r.RemoteAddr)
			}
		}()
		if err := fn(sw, r); err != nil {
			s.writeError(sw, r, err)
		}
	})
}

// statusWriter remembers the status a handler answered with, and the API
// key id once authenticated, for the request's log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	key    string
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// checkContentType accepts a JSON body: no Content-Type at all,
// application/json, any application/*+json, and
// application/x-www-form-urlencoded, which is what `curl -d` sends by
// default (the body is parsed as JSON all the same; Bearer auth makes
// browser form posts harmless). Everything else is 415.
func checkContentType(ct string) error {
	if ct == "" || ct == "application/json" {
		return nil // without parsing: what every client sends
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ErrUnsupportedMediaType
	}
	switch {
	case mt == "application/json", mt == "application/x-www-form-urlencoded":
		return nil
	case strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		return nil
	}
	return withDetail(ErrUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not JSON; send application/json", mt))
}

// readJSON reads the body (already bounded by MaxBytesReader) and decodes
// exactly one JSON object into v, a struct of jsontext.Value fields. It is
// the one place request bodies are decoded. Member names are matched
// exactly (case-sensitively: "URL" is not "url"); unknown and duplicate
// names, anything after the object and a body that breaks off are
// refused. Invalid UTF-8 is let through to the field it is in, so each
// field refuses it with its own code (decodeValue is strict).
func readJSON(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return bodyReadError(err)
	}
	return decodeJSON(b, v)
}

// maxBodyPrealloc bounds what a Content-Length alone makes readBody
// allocate before any byte has arrived.
const maxBodyPrealloc = 1 << 20

// readBody reads the whole body: into one buffer of its Content-Length
// when it has one (net/http ends the body there), else growing.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= maxBodyPrealloc {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(r.Body)
}

// decodeJSON decodes exactly one JSON object from b into v, refusing
// unknown fields and anything after the object (a whole body, or one
// item of a batch).
func decodeJSON(b []byte, v any) error {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 {
		return withDetail(link.ErrInvalidJSON, "request body is empty; send a JSON object")
	}
	if trimmed[0] != '{' {
		return withDetail(link.ErrInvalidJSON, "request body must be a JSON object")
	}
	if f, ok := v.(fields); ok {
		if fastObject(trimmed, f) {
			return nil
		}
		f.reset()
	}
	err := jsonv2.Unmarshal(trimmed, v,
		jsonv2.RejectUnknownMembers(true),
		jsonv2.MatchCaseInsensitiveNames(false),
		jsontext.AllowDuplicateNames(false),
		jsontext.AllowInvalidUTF8(true))
	if err != nil {
		return jsonError(err)
	}
	return nil
}

// decodeValue decodes one field's raw value into v: strict JSON, invalid
// UTF-8 and lone surrogates refused.
func decodeValue(m jsontext.Value, v any) error {
	if len(m) == 0 {
		return io.ErrUnexpectedEOF
	}
	if fastDecodeValue(m, v) {
		return nil
	}
	return jsonv2.Unmarshal(m, v)
}

// bodyReadError classifies an error reading the request body: too large
// is 413; anything else (a chunked body with a bad chunk size or no last
// chunk, a body shorter than its Content-Length, a connection that broke
// off) is the client's doing: 400 malformed_request.
func bodyReadError(err error) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return withDetail(ErrPayloadTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit))
	}
	return withDetail(ErrMalformedRequest, "the request body could not be read: it is shorter than its Content-Length or its chunked encoding is broken")
}

// jsonError turns a decoding error into invalid_json with a message that
// says what was wrong, and the field when one is known.
func jsonError(err error) error {
	var sem *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		field := sem.JSONPointer.LastToken()
		return link.OnField(field, withDetail(link.ErrInvalidJSON, fmt.Sprintf("unknown field %q (names are case-sensitive)", field)))
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		field := syn.JSONPointer.LastToken()
		return link.OnField(field, withDetail(link.ErrInvalidJSON, fmt.Sprintf("duplicate field %q", field)))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return withDetail(link.ErrInvalidJSON, "truncated JSON")
	case errors.As(err, &syn):
		return withDetail(link.ErrInvalidJSON, fmt.Sprintf("malformed JSON at byte %d", syn.ByteOffset))
	case errors.As(err, &sem):
		return withDetail(link.ErrInvalidJSON, fmt.Sprintf("JSON %s is not valid at %q", sem.JSONKind, string(sem.JSONPointer)))
	}
	return withDetail(link.ErrInvalidJSON, "request body is not valid JSON")
}
