package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/linkpop/linkpop/link"
)

// Error is an error answer of the API: its HTTP status (0 for one item
// of a batch), the stable machine code and message of its body, the
// request field it concerns and, for 429 and 503, how long Retry-After
// asked to wait. errors.Is matches it against link's sentinels by code
// (errors.Is(err, link.ErrCodeTaken)) and against this package's
// sentinels below.
type Error struct {
	Status     int
	Code       string
	Message    string
	Field      string
	Leader     string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	msg := e.Code
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Field != "" {
		msg += " (field " + e.Field + ")"
	}
	if e.Status != 0 {
		msg = fmt.Sprintf("%d %s", e.Status, msg)
	}
	return msg
}

// Is matches a link sentinel or an *Error of the same code.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *link.Error:
		return t.Code == e.Code
	case *Error:
		return t.Code == e.Code
	}
	return false
}

// Sentinels for the API's own error codes (link's sentinels cover the
// link codes: invalid_url, code_taken, not_found, ...). Match with
// errors.Is; they carry no status.
var (
	ErrUnauthorized    = &Error{Code: "unauthorized"}
	ErrForbidden       = &Error{Code: "forbidden"}
	ErrRateLimited     = &Error{Code: "rate_limited"}
	ErrPayloadTooLarge = &Error{Code: "payload_too_large"}
	ErrUnavailable     = &Error{Code: "unavailable"}
	ErrNotLeader       = &Error{Code: "not_leader"}
	ErrInvalidRange    = &Error{Code: "invalid_range"}
	ErrBatchTooLarge   = &Error{Code: "batch_too_large"}
	// ErrNotFound is link.ErrNotFound's code, for resources other than
	// links (routes, keys).
	ErrNotFound = &Error{Code: "not_found"}
)

// CodeUnexpected is the Code of an *Error made from an answer whose body
// is not the API's error body (a proxy's page, for example).
const CodeUnexpected = "unexpected_response"

// ErrNotAvailable reports a call the server does not serve (404 for the
// route itself), such as the stats API on an origin without analytics.
var ErrNotAvailable = errors.New("not available on this server")

// statusError is an *Error for an answer without an error body.
func statusError(resp *http.Response, snippet string) *Error {
	msg := http.StatusText(resp.StatusCode)
	if snippet != "" {
		msg += ": " + snippet
	}
	return &Error{Status: resp.StatusCode, Code: CodeUnexpected, Message: msg}
}
