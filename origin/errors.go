package origin

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/store"
)

// Error is an API error the origin owns (link errors live in package
// link): an HTTP status and a stable machine code.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// The origin's own API errors. Link validation and state errors
// (invalid_url, code_taken, not_found, ...) are link's sentinels.
var (
	ErrUnauthorized          = &Error{http.StatusUnauthorized, "unauthorized", "a valid API key is required: Authorization: Bearer <key>"}
	ErrForbidden             = &Error{http.StatusForbidden, "forbidden", "the API key lacks the scope this call needs"}
	ErrRateLimited           = &Error{http.StatusTooManyRequests, "rate_limited", "too many requests for this API key; retry after Retry-After seconds"}
	ErrPayloadTooLarge       = &Error{http.StatusRequestEntityTooLarge, "payload_too_large", "request body is too large"}
	ErrRouteNotFound         = &Error{http.StatusNotFound, "not_found", "no such resource"}
	ErrMethodNotAllowed      = &Error{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this resource; see Allow"}
	ErrUnsupportedMediaType  = &Error{http.StatusUnsupportedMediaType, "unsupported_media_type", "request bodies must be JSON (Content-Type: application/json)"}
	ErrUnavailable           = &Error{http.StatusServiceUnavailable, "unavailable", "the origin is shutting down or its store is closed; retry later"}
	ErrInvalidLimit          = &Error{http.StatusBadRequest, "invalid_limit", "limit must be an integer in [1, 1000]"}
	ErrInvalidIfMatch        = &Error{http.StatusBadRequest, "invalid_if_match", `If-Match must be a revision, "<revision>" or *`}
	ErrInvalidIdempotencyKey = &Error{http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters"}
	ErrInvalidName           = &Error{http.StatusBadRequest, "invalid_name", "name must be 1-64 printable characters"}
	ErrInvalidScopes         = &Error{http.StatusBadRequest, "invalid_scopes", `scopes must be a non-empty list of "links:read", "links:write", "admin"`}
	ErrInvalidRateLimit      = &Error{http.StatusBadRequest, "invalid_rate_limit", "rate_limit must be a number of requests per second (negative: unlimited)"}
	ErrInvalidBurst          = &Error{http.StatusBadRequest, "invalid_burst", "burst must be a non-negative integer"}
	ErrKeyNotFound           = &Error{http.StatusNotFound, "not_found", "no such API key"}
	ErrInvalidBucket         = &Error{http.StatusBadRequest, "invalid_bucket", "bucket must be an integer in [0, 255]"}
	ErrInvalidMaxVisits      = &Error{http.StatusBadRequest, "invalid_max_visits", "max_visits must be a positive integer or null"}
	ErrInvalidFreshness      = &Error{http.StatusBadRequest, "invalid_freshness", `freshness must be "relaxed" or "strict"`}
	ErrInvalidStatus         = &Error{http.StatusBadRequest, "invalid_status", "status must be \"active\", \"disabled\" or null"}
	ErrInvalidRange          = &Error{http.StatusBadRequest, "invalid_range", "from and to must be RFC 3339 times, from not after to, interval minute, hour or day, at most 10,000 intervals"}
	ErrInternal              = &Error{http.StatusInternalServerError, "internal", "internal error; it has been logged"}
	// ErrNotLeader answers a write sent to a standby origin (or to a
	// leader that lost its lease); the body's leader field names the
	// leader's API URL when it is known.
	ErrNotLeader = &Error{http.StatusServiceUnavailable, "not_leader", "this origin is a standby and takes no writes; send them to the leader"}
	// ErrMalformedRequest is a request net/http or the body reader cannot
	// parse: broken chunked encoding, a body shorter than Content-Length,
	// duplicate Content-Length, bytes not allowed in a header, an
	// unsupported Transfer-Encoding.
	ErrMalformedRequest = &Error{http.StatusBadRequest, "malformed_request", "the request is not well-formed HTTP/1.1"}
	// ErrHeadersTooLarge: the request headers exceed the server's limit.
	ErrHeadersTooLarge = &Error{http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", "the request headers are too large"}
	// ErrClientClosed is what a request whose client went away before its
	// answer is counted as (status 499, as nginx does): not a server
	// failure, and logged at debug.
	ErrClientClosed = &Error{StatusClientClosedRequest, "client_closed_request", "the client closed the connection before the answer"}
)

// StatusClientClosedRequest is nginx's non-standard status for a request
// whose client disconnected; it is only ever seen in metrics and logs.
const StatusClientClosedRequest = 499

// linkStatus maps link's error codes to HTTP statuses; codes not listed
// are validation errors (400).
var linkStatus = map[string]int{
	link.ErrCodeTaken.Code:            http.StatusConflict,
	link.ErrNotFound.Code:             http.StatusNotFound,
	link.ErrRevisionMismatch.Code:     http.StatusPreconditionFailed,
	link.ErrIdempotencyKeyReused.Code: http.StatusUnprocessableEntity,
	link.ErrUnsupportedSchema.Code:    http.StatusInternalServerError,
	link.ErrCorrupt.Code:              http.StatusInternalServerError,
}

// detail gives an error a more specific message without changing its code
// (for example which JSON field was unknown).
type detail struct {
	err error
	msg string
}

func (d *detail) Error() string { return d.msg }
func (d *detail) Unwrap() error { return d.err }

func withDetail(err error, msg string) error { return &detail{err: err, msg: msg} }

// retryAfter carries the Retry-After seconds of a rate_limited answer.
type retryAfter struct {
	err     error
	seconds int
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// classify maps err to the status and body the API answers with. The
// boolean says the error is the server's fault and must be logged.
func classify(err error) (status int, obj client.ErrorObject, internal bool) {
	var oe *Error
	var le *link.Error
	switch {
	case errors.As(err, &oe):
		status, obj = oe.Status, client.ErrorObject{Code: oe.Code, Message: oe.Message}
	case errors.As(err, &le):
		status = http.StatusBadRequest
		if s, ok := linkStatus[le.Code]; ok {
			status = s
		}
		obj = client.ErrorObject{Code: le.Code, Message: le.Message}
		if status >= 500 {
			return http.StatusInternalServerError, client.ErrorObject{Code: ErrInternal.Code, Message: ErrInternal.Message}, true
		}
	case errors.Is(err, store.ErrReadOnly):
		// An expected answer of a standby, not a server failure.
		return ErrNotLeader.Status, client.ErrorObject{Code: ErrNotLeader.Code, Message: ErrNotLeader.Message}, false
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, obj = ErrUnavailable.Status, client.ErrorObject{Code: ErrUnavailable.Code, Message: ErrUnavailable.Message}
	default:
		return http.StatusInternalServerError, client.ErrorObject{Code: ErrInternal.Code, Message: ErrInternal.Message}, true
	}
	var d *detail
	if errors.As(err, &d) {
		obj.Message = d.msg
	}
	obj.Field = link.ErrorField(err)
	return status, obj, status >= 500
}

// clientGone reports whether err is the result of the client going away:
// its request context is canceled (net/http cancels it when the
// connection closes) and err is that cancellation. A body that breaks off
// is a malformed request (400) whether or not the client stayed to read
// the answer.
func clientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && errors.Is(r.Context().Err(), context.Canceled)
}

// writeError is the one place an error becomes an HTTP answer.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if clientGone(r, err) {
		s.log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "route", r.Pattern, "err", err)
		err = ErrClientClosed
	}
	status, obj, internal := classify(err)
	if obj.Code == ErrNotLeader.Code {
		if l := s.ha.leaderAPI(); l != "" && l != s.cfg.HA.AdvertiseURL {
			obj.Leader = l
		}
	}
	if internal {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "route", r.Pattern, "err", err)
	} else if status == http.StatusServiceUnavailable {
		s.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	h := w.Header()
	switch status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="linkpop"`)
	case http.StatusTooManyRequests:
		secs := 1
		var ra *retryAfter
		if errors.As(err, &ra) && ra.seconds > 1 {
			secs = ra.seconds
		}
		h.Set("Retry-After", strconv.Itoa(secs))
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	writeJSON(w, status, client.ErrorBody{Error: obj})
}

// The constant header values of every JSON answer, shared (nothing
// changes a header value in place).
var (
	hdrJSON    = []string{"application/json"}
	hdrNosniff = []string{"nosniff"}
	hdrNoStore = []string{"no-store"}
)

// writeJSON writes v as the JSON body of a status answer. HTML is not
// escaped: targets keep their '&' readable.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := client.Encode(v)
	if err != nil {
		// Only the client package's types reach here; they always marshal.
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error; it has been logged"}}` + "\n")
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["X-Content-Type-Options"] = hdrNosniff
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
