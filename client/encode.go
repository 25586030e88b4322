package client

import (
	"bytes"
	"encoding/json"
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
	if l.DisabledReason != "" {
		b = append(b, `,"disabled_reason":`...)
		b = appendString(b, l.DisabledReason)
	}
	b = append(b, `,"freshness":`...)
	b = appendString(b, l.Freshness)
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

// linkFields is Link without its methods: encoding/json reads and writes
// it by the struct tags alone.
type linkFields Link

// UnmarshalJSON reads a link object. The usual shape (the API's own
// answers: members of the link object only, ASCII strings without
// escapes) is read by a small scanner; anything else (another member,
// an escape, a wrong type, bad syntax) is left to encoding/json on the
// struct tags, which also gives the error. FuzzLinkDecode checks that the
// scanner agrees with encoding/json on everything it accepts.
func (l *Link) UnmarshalJSON(b []byte) error {
	var fast Link
	if fast.decodeFast(b) {
		*l = fast
		return nil
	}
	return json.Unmarshal(b, (*linkFields)(l))
}

// decodeFast decodes b into l (zero) and reports whether it could.
func (l *Link) decodeFast(b []byte) bool { return PlainObject(b, l.member) }

// member reads one member of a link object into l, as encoding/json
// would: null leaves a string or time as it is and clears a pointer or
// list; false for another name or a value of another type.
func (l *Link) member(name, v []byte) bool {
	null := string(v) == "null"
	switch string(name) {
	case "code":
		return null || plainField(v, &l.Code)
	case "url":
		return null || plainField(v, &l.URL)
	case "short_url":
		return null || plainField(v, &l.ShortURL)
	case "status":
		return null || plainField(v, &l.Status)
	case "disabled_reason":
		return null || plainField(v, &l.DisabledReason)
	case "freshness":
		return null || plainField(v, &l.Freshness)
	case "redirect":
		if null {
			return true
		}
		if !PlainInt(v) {
			return false
		}
		n, err := strconv.ParseInt(string(v), 10, 0)
		l.Redirect = int(n)
		return err == nil
	case "revision":
		return null || plainUint(v, &l.Revision)
	case "max_visits":
		if null {
			l.MaxVisits = nil
			return true
		}
		var n uint64
		if !plainUint(v, &n) {
			return false
		}
		l.MaxVisits = &n
		return true
	case "created_at":
		return null || plainTime(v, &l.CreatedAt)
	case "updated_at":
		return null || plainTime(v, &l.UpdatedAt)
	case "expires_at":
		if null {
			l.ExpiresAt = nil
			return true
		}
		var t time.Time
		if !plainTime(v, &t) {
			return false
		}
		l.ExpiresAt = &t
		return true
	case "tags":
		if null {
			l.Tags = nil
			return true
		}
		out := []string{}
		if !PlainStrings(v, func(s []byte) { out = append(out, string(s)) }) {
			return false
		}
		l.Tags = out
		return true
	}
	return false
}

func plainField(v []byte, p *string) bool {
	s, ok := PlainString(v)
	if ok {
		*p = string(s)
	}
	return ok
}

func plainUint(v []byte, p *uint64) bool {
	if !PlainInt(v) || v[0] == '-' {
		return false
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	*p = n
	return err == nil
}

func plainTime(v []byte, p *time.Time) bool {
	_, ok := PlainString(v)
	return ok && p.UnmarshalJSON(v) == nil
}

// UnmarshalJSON reads a batch answer. One whose items are all link
// objects of the API's own shape is read by the link scanner; anything
// else (an error item, another member) by encoding/json, item by item.
func (r *BatchResponse) UnmarshalJSON(b []byte) error {
	if res, ok := decodeBatchFast(b); ok {
		r.Results = res
		return nil
	}
	var w struct {
		Results []BatchResult `json:"results"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	r.Results = w.Results
	return nil
}

// decodeBatchFast reads {"results":[link, ...]} whose links are all of
// the plain shape.
func decodeBatchFast(b []byte) ([]BatchResult, bool) {
	const head = `"results"`
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if !bytes.HasPrefix(b[i:], []byte(head)) {
		return nil, false
	}
	i = skipWS(b, i+len(head))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	links := []Link{}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			var l Link
			end, ok := plainObjectAt(b, i, l.member)
			if !ok {
				return nil, false
			}
			links = append(links, l)
			i = skipWS(b, end)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i >= len(b) || b[i] != ']' {
				return nil, false
			}
			i++
			break
		}
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != '}' || skipWS(b, i+1) != len(b) {
		return nil, false
	}
	out := make([]BatchResult, len(links))
	for i := range links {
		out[i].Link = &links[i]
	}
	return out, true
}

// MarshalJSON writes the create body.
func (c CreateLink) MarshalJSON() ([]byte, error) { return c.AppendJSON(nil) }

// AppendJSON appends the create body to b, as encoding/json writes it with
// HTML escaping off (zero fields left out).
func (c *CreateLink) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"url":`...)
	b = appendString(b, c.URL)
	if c.Code != "" {
		b = append(b, `,"code":`...)
		b = appendString(b, c.Code)
	}
	if c.Redirect != 0 {
		b = append(b, `,"redirect":`...)
		b = strconv.AppendInt(b, int64(c.Redirect), 10)
	}
	if c.ExpiresAt != nil {
		b = append(b, `,"expires_at":`...)
		if b, err = appendTime(b, *c.ExpiresAt); err != nil {
			return nil, err
		}
	}
	if len(c.Tags) > 0 {
		b = append(b, `,"tags":[`...)
		for i, t := range c.Tags {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	if c.MaxVisits != nil {
		b = append(b, `,"max_visits":`...)
		b = strconv.AppendUint(b, *c.MaxVisits, 10)
	}
	if c.Freshness != "" {
		b = append(b, `,"freshness":`...)
		b = appendString(b, c.Freshness)
	}
	if c.Status != "" {
		b = append(b, `,"status":`...)
		b = appendString(b, c.Status)
	}
	return append(b, '}'), nil
}

// MarshalJSON writes the batch body.
func (r BatchRequest) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }

// AppendJSON appends the batch body to b.
func (r *BatchRequest) AppendJSON(b []byte) ([]byte, error) {
	if r.Links == nil {
		return append(b, `{"links":null}`...), nil
	}
	b = append(b, `{"links":[`...)
	for i := range r.Links {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = r.Links[i].AppendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, "]}"...), nil
}
