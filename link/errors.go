package link

import (
	"errors"
	"fmt"
)

// Error is a refusal with a stable machine-readable code. The sentinels
// below are the only values; callers match them with errors.Is and read the
// code with errors.As. Code strings are part of the public API contract.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func newError(code, msg string) *Error { return &Error{Code: code, Message: msg} }

// Sentinel errors. Their Code values are the contract's error codes.
var (
	ErrInvalidJSON         = newError("invalid_json", "request body is not valid JSON for this call")
	ErrInvalidURL          = newError("invalid_url", "url is not a valid absolute http(s) URL")
	ErrURLSchemeNotAllowed = newError("url_scheme_not_allowed", "only http and https targets are allowed")
	ErrURLTooLong          = newError("url_too_long", fmt.Sprintf("url is longer than %d bytes", MaxURLLen))
	ErrURLBlocked          = newError("url_blocked", "url points at a domain that cannot be a target")
	ErrInvalidCode         = newError("invalid_code", fmt.Sprintf("code must be %d-%d characters of A-Z, a-z, 0-9, '_' and '-'", MinCodeLen, MaxCodeLen))
	ErrCodeReserved        = newError("code_reserved", "code is reserved")
	ErrCodeTaken           = newError("code_taken", "code is already in use")
	ErrNotFound            = newError("not_found", "no such link")
	ErrRevisionMismatch    = newError("revision_mismatch", "the link's revision does not match If-Match")
	ErrInvalidRedirect     = newError("invalid_redirect", "redirect must be one of 301, 302, 307, 308")
	ErrInvalidExpiry       = newError("invalid_expires_at", "expires_at must be an RFC 3339 time in the future, or null")
	ErrInvalidTags         = newError("invalid_tags", fmt.Sprintf("at most %d tags of 1-%d printable characters each", MaxTags, MaxTagLen))
	ErrUnsupportedSchema   = newError("unsupported_schema", "record schema version is not supported by this build")
	ErrCorrupt             = newError("corrupt_record", "record does not decode to a valid link")
)

// FieldError attaches the name of the offending request field to an error.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// OnField wraps err with the field it refers to; nil stays nil.
func OnField(field string, err error) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: field, Err: err}
}

// ErrorCode returns the machine code carried by err, or "" if err is not a
// link.Error (wrapped or not).
func ErrorCode(err error) string {
	var le *Error
	if errors.As(err, &le) {
		return le.Code
	}
	return ""
}

// ErrorField returns the request field err refers to, or "".
func ErrorField(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// ErrIdempotencyKeyReused: an Idempotency-Key was sent again with a
// different request.
var ErrIdempotencyKeyReused = newError("idempotency_key_reused", "Idempotency-Key was already used with a different request")
