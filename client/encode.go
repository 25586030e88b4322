package client

import (
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// The link object is the one answer the API sends by the thousand (a
// batch, an export page), so it has a hand-written encoder: encoding/json
// reflects over every field and re-scans what time.Time writes. Its output
// is byte for byte what encoding/json writes for the struct tags of Link
// (TestLinkAppendJSON compares the two on random links): the tags stay the
// definition.

// appender is a type that writes its own JSON without HTML escaping;
// Encode uses it instead of encoding/json.
type appender interface {
	AppendJSON(b []byte) ([]byte, error)
}

// MarshalJSON writes the link object.
func (l Link) MarshalJSON() ([]byte, error) { return l.AppendJSON(nil) }

// AppendJSON appends the link object to b, as encoding/json writes it with
// HTML escaping off.
func (l *Link) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"code":`...)
	b = appendString(b, l.Code)
	b = append(b, `,"url":`...)
	b = appendString(b, l.URL)
	b = append(b, `,"short_url":`...)
	b = appendString(b, l.ShortURL)
	b = append(b, `,"redirect":`...)
	b = strconv.AppendInt(b, int64(l.Redirect), 10)
	b = append(b, `,"status":`...)
	b = appendString(b, l.Status)
	b = append(b, `,"created_at":`...)
	if b, err = appendTime(b, l.CreatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"updated_at":`...)
	if b, err = appendTime(b, l.UpdatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"expires_at":`...)
	if l.ExpiresAt == nil {
		b = append(b, "null"...)
	} else if b, err = appendTime(b, *l.ExpiresAt); err != nil {
		return nil, err
	}
	b = append(b, `,"revision":`...)
	b = strconv.AppendUint(b, l.Revision, 10)
	b = append(b, `,"tags":`...)
	if l.Tags == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range l.Tags {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	b = append(b, `,"max_visits":`...)
	if l.MaxVisits == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendUint(b, *l.MaxVisits, 10)
	}
	return append(b, '}'), nil
}

// MarshalJSON writes the link object or {"error": {...}}.
func (r BatchResult) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }

// AppendJSON appends the link object or {"error": {...}} to b.
func (r *BatchResult) AppendJSON(b []byte) ([]byte, error) {
	if e := r.Error; e != nil {
		b = append(b, `{"error":{"code":`...)
		b = appendString(b, e.Code)
		b = append(b, `,"message":`...)
		b = appendString(b, e.Message)
		if e.Field != "" {
			b = append(b, `,"field":`...)
			b = appendString(b, e.Field)
		}
		if e.Leader != "" {
			b = append(b, `,"leader":`...)
			b = appendString(b, e.Leader)
		}
		return append(b, "}}"...), nil
	}
	if r.Link == nil {
		return nil, errors.New("batch result has neither a link nor an error")
	}
	return r.Link.AppendJSON(b)
}

// AppendJSON appends the batch answer to b.
func (r *BatchResponse) AppendJSON(b []byte) ([]byte, error) {
	if r.Results == nil {
		return append(b, `{"results":null}`...), nil
	}
	b = append(b, `{"results":[`...)
	for i := range r.Results {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = r.Results[i].AppendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, "]}"...), nil
}

// MarshalJSON writes the batch answer.
func (r BatchResponse) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }

// appendTime writes t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds when set; years 0 to 9999 only).
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y >= 10000 {
		// time.Time's own error, for the same refusal as encoding/json.
		_, err := t.MarshalJSON()
		return nil, err
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string as encoding/json does with HTML
// escaping off: invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029 are
// escaped for JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
