package origin

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// A create body is decoded once per create and once per batch item, so
// the plain shape the API's own clients send has a fast path: an object of
// known, distinct member names whose values are strings without escapes
// or control characters, integers, true, false, null or arrays of such
// strings. Anything else (an escape, a float, an unknown or repeated name,
// invalid UTF-8) goes to the strict decoder, which also writes the error.
// What the fast path accepts it decodes exactly as the strict decoder
// does (FuzzFastJSON compares the two).

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
// (leaving v in any state) for anything outside the fast path's shape.
func fastObject(b []byte, v fields) bool {
	i := skipWS(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		name, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		dst := v.field(name)
		if dst == nil || *dst != nil {
			return false // unknown or repeated: the strict decoder says which
		}
		i = skipWS(b, j)
		if i == len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		end, ok := fastValue(b, i)
		if !ok {
			return false
		}
		*dst = jsontext.Value(b[i:end:end])
		i = skipWS(b, end)
		if i == len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return skipWS(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString scans the string starting at b[i]: no escapes, no control
// characters, valid UTF-8. It returns its contents and the index after it.
func plainString(b []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s = b[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, 0, false
}

// fastValue returns the end of the value at b[i] when it is in the fast
// path's shape.
func fastValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		_, end, ok := plainString(b, i)
		return end, ok
	case c == '-' || (c >= '0' && c <= '9'):
		end, ok := plainInt(b, i)
		return end, ok
	case c == '[':
		j := skipWS(b, i+1)
		if j < len(b) && b[j] == ']' {
			return j + 1, true
		}
		for {
			_, end, ok := plainString(b, j)
			if !ok {
				return 0, false
			}
			j = skipWS(b, end)
			if j == len(b) {
				return 0, false
			}
			switch b[j] {
			case ',':
				j = skipWS(b, j+1)
			case ']':
				return j + 1, true
			default:
				return 0, false
			}
		}
	}
	for _, lit := range [...]string{"null", "true", "false"} {
		if bytes.HasPrefix(b[i:], []byte(lit)) {
			return i + len(lit), true
		}
	}
	return 0, false
}

// plainInt scans -?(0|[1-9][0-9]*) of at most 18 digits followed by a
// delimiter (no fraction or exponent).
func plainInt(b []byte, i int) (int, bool) {
	j := i
	if b[j] == '-' {
		j++
	}
	start := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n := j - start
	if n == 0 || n > 18 || (n > 1 && b[start] == '0') {
		return 0, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, false
	}
	return j, true
}

// fastDecodeValue is decodeValue's fast path for a string, a list of
// strings or an int in the fast path's shape; false sends m to the
// strict decoder.
func fastDecodeValue(m jsontext.Value, v any) bool {
	switch p := v.(type) {
	case *string:
		s, end, ok := plainString(m, 0)
		if !ok || end != len(m) {
			return false
		}
		*p = string(s)
		return true
	case *[]string:
		if len(m) < 2 || m[0] != '[' {
			return false
		}
		end, ok := fastValue(m, 0)
		if !ok || end != len(m) {
			return false
		}
		out := []string{}
		for i := skipWS(m, 1); m[i] != ']'; {
			s, e, _ := plainString(m, i)
			out = append(out, string(s))
			i = skipWS(m, e)
			if m[i] == ',' {
				i = skipWS(m, i+1)
			}
		}
		*p = out
		return true
	case *int:
		if len(m) == 0 || (m[0] != '-' && (m[0] < '0' || m[0] > '9')) {
			return false
		}
		end, ok := plainInt(m, 0)
		if !ok || end != len(m) {
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
