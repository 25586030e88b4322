package origin

import (
	"strconv"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/linkpop/linkpop/client"
)

// A create body is decoded once per create and once per batch item, so
// the plain shape the API's own clients send has a fast path: the
// client package's scanner (client.PlainObject, the one fast JSON reader
// of the API) over an object of known, distinct member names. Anything
// else (an escape, a float, an unknown or repeated name, invalid UTF-8)
// goes to the strict decoder, which also writes the error. What the fast
// path accepts it decodes exactly as the strict decoder does
// (FuzzFastJSON compares the two).

// fields names the jsontext.Value members of a body, for the fast path;
// reset empties them for the strict decoder after a fast path gave up.
type fields interface {
	field(name []byte) *jsontext.Value
	reset()
}

func (b *linkBody) reset() { *b = linkBody{} }

func (b *linkBody) field(name []byte) *jsontext.Value {
	switch string(name) {
	case "url":
		return &b.URL
	case "code":
		return &b.Code
	case "redirect":
		return &b.Redirect
	case "expires_at":
		return &b.ExpiresAt
	case "tags":
		return &b.Tags
	case "max_visits":
		return &b.MaxVisits
	case "freshness":
		return &b.Freshness
	case "status":
		return &b.Status
	}
	return nil
}

// fastObject fills v's members from the object b, or reports false
// (leaving v in any state) for anything outside the plain shape, an
// unknown name or a repeated one (the strict decoder says which).
func fastObject(b []byte, v fields) bool {
	return client.PlainObject(b, func(name, value []byte) bool {
		dst := v.field(name)
		if dst == nil || *dst != nil {
			return false
		}
		*dst = jsontext.Value(value)
		return true
	})
}

// fastDecodeValue is decodeValue's fast path for a string, a list of
// strings or an int in the plain shape; false sends m to the strict
// decoder.
func fastDecodeValue(m jsontext.Value, v any) bool {
	switch p := v.(type) {
	case *string:
		s, ok := client.PlainString(m)
		if ok {
			*p = string(s)
		}
		return ok
	case *[]string:
		out := []string{}
		if !client.PlainStrings(m, func(s []byte) { out = append(out, string(s)) }) {
			return false
		}
		*p = out
		return true
	case *int:
		if !client.PlainInt(m) {
			return false
		}
		n, err := strconv.Atoi(string(m))
		if err != nil {
			return false
		}
		*p = n
		return true
	}
	return false
}
