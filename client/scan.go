package client

import (
	"bytes"
	"unicode/utf8"
)

// The API's JSON is decoded by a fast path wherever it is decoded by the
// thousand: the client's link and batch answers here, the origin's create
// bodies and batch items. Both read the same plain shape, with this one
// scanner: an object whose member names and string values have no escapes
// or control characters and are valid UTF-8, whose numbers are integers
// -?(0|[1-9][0-9]*) of at most 18 digits, and whose other values are
// true, false, null or arrays of such strings. Anything else (an escape, a
// float, a nested object, bad syntax) is left to a strict decoder, which
// also gives the error. What the scanner accepts, every strict decoder
// reads the same way: FuzzLinkDecode (here) and FuzzFastJSON (origin)
// compare them.

// PlainObject scans b, which must hold one object of the plain shape and
// nothing else but white space, calling member with each member's name
// and raw value in order. It reports false when b is outside the shape or
// member returns false; member may then have been called already.
func PlainObject(b []byte, member func(name, value []byte) bool) bool {
	end, ok := plainObjectAt(b, skipWS(b, 0), member)
	return ok && skipWS(b, end) == len(b)
}

// PlainString returns the contents of v when it is one plain string
// (quotes included in v, nothing around them).
func PlainString(v []byte) ([]byte, bool) {
	s, end, ok := plainString(v, 0)
	return s, ok && end == len(v)
}

// PlainStrings calls fn with the contents of each string of v when v is
// one plain array of strings (nothing around it), and reports whether it
// was.
func PlainStrings(v []byte, fn func(s []byte)) bool {
	if len(v) < 2 || v[0] != '[' {
		return false
	}
	if end, ok := plainValue(v, 0); !ok || end != len(v) {
		return false
	}
	for i := skipWS(v, 1); v[i] != ']'; {
		s, e, _ := plainString(v, i)
		fn(s)
		i = skipWS(v, e)
		if v[i] == ',' {
			i = skipWS(v, i+1)
		}
	}
	return true
}

// PlainInt reports whether v is one plain integer literal (at most 18
// digits, so it fits an int64).
func PlainInt(v []byte) bool {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return false
	}
	end, ok := plainInt(v, 0)
	return ok && end == len(v)
}

// plainObjectAt scans the object at b[i] and returns the index after it.
func plainObjectAt(b []byte, i int, member func(name, value []byte) bool) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		name, j, ok := plainString(b, i)
		if !ok {
			return 0, false
		}
		i = skipWS(b, j)
		if i == len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipWS(b, i+1)
		end, ok := plainValue(b, i)
		if !ok || !member(name, b[i:end:end]) {
			return 0, false
		}
		i = skipWS(b, end)
		if i == len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
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
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, 0, false
}

// plainValue returns the end of the value at b[i] when it is in the plain
// shape.
func plainValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		_, end, ok := plainString(b, i)
		return end, ok
	case c == '-' || (c >= '0' && c <= '9'):
		return plainInt(b, i)
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
