package client

import (
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
func (l *Link) decodeFast(b []byte) bool {
	d := fastDec{b: b}
	return d.link(l) && d.end()
}

// link reads a link object at the scanner's position into l (zero).
func (d *fastDec) link(l *Link) bool {
	if !d.byte('{') {
		return false
	}
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		key, ok := d.str()
		if !ok || !d.byte(':') {
			return false
		}
		d.ws()
		switch key {
		case "code":
			ok = d.strField(&l.Code)
		case "url":
			ok = d.strField(&l.URL)
		case "short_url":
			ok = d.strField(&l.ShortURL)
		case "status":
			ok = d.strField(&l.Status)
		case "disabled_reason":
			ok = d.strField(&l.DisabledReason)
		case "freshness":
			ok = d.strField(&l.Freshness)
		case "redirect":
			if d.null() {
				break
			}
			var lit []byte
			if lit, ok = d.number(true); ok {
				n, err := strconv.ParseInt(string(lit), 10, 0)
				l.Redirect, ok = int(n), err == nil
			}
		case "revision":
			if d.null() {
				break
			}
			ok = d.uint(&l.Revision)
		case "max_visits":
			if d.null() {
				l.MaxVisits = nil
				break
			}
			var n uint64
			if ok = d.uint(&n); ok {
				l.MaxVisits = &n
			}
		case "created_at":
			ok = d.timeField(&l.CreatedAt)
		case "updated_at":
			ok = d.timeField(&l.UpdatedAt)
		case "expires_at":
			if d.null() {
				l.ExpiresAt = nil
				break
			}
			var t time.Time
			if ok = d.timeField(&t); ok {
				l.ExpiresAt = &t
			}
		case "tags":
			ok = d.tags(&l.Tags)
		default:
			return false
		}
		if !ok {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			continue
		case '}':
			d.i++
			return true
		}
		return false
	}
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

func decodeBatchFast(b []byte) ([]BatchResult, bool) {
	d := fastDec{b: b}
	if !d.byte('{') {
		return nil, false
	}
	if key, ok := d.str(); !ok || key != "results" || !d.byte(':') || !d.byte('[') {
		return nil, false
	}
	links := []Link{}
	if d.peek() == ']' {
		d.i++
	} else {
		for {
			var l Link
			if !d.link(&l) {
				return nil, false
			}
			links = append(links, l)
			if d.byte(',') {
				continue
			}
			if !d.byte(']') {
				return nil, false
			}
			break
		}
	}
	if !d.byte('}') || !d.end() {
		return nil, false
	}
	out := make([]BatchResult, len(links))
	for i := range links {
		out[i].Link = &links[i]
	}
	return out, true
}

// fastDec scans the subset of JSON decodeFast reads.
type fastDec struct {
	b []byte
	i int
}

func (d *fastDec) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDec) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// byte consumes c after whitespace.
func (d *fastDec) byte(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.i++
	return true
}

// end is true when only whitespace is left.
func (d *fastDec) end() bool {
	d.ws()
	return d.i == len(d.b)
}

func (d *fastDec) null() bool {
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// raw reads a string of printable ASCII without escapes and returns it
// with its quotes.
func (d *fastDec) raw() ([]byte, bool) {
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	for j := d.i + 1; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[d.i : j+1]
			d.i = j + 1
			return s, true
		case c < 0x20 || c == '\\' || c >= utf8.RuneSelf:
			return nil, false
		}
	}
	return nil, false
}

func (d *fastDec) str() (string, bool) {
	s, ok := d.raw()
	if !ok {
		return "", false
	}
	return string(s[1 : len(s)-1]), true
}

// strField reads a string, or null (which leaves it, as encoding/json
// does).
func (d *fastDec) strField(p *string) bool {
	if d.null() {
		return true
	}
	s, ok := d.str()
	*p = s
	return ok
}

func (d *fastDec) timeField(p *time.Time) bool {
	if d.null() {
		return true
	}
	s, ok := d.raw()
	return ok && p.UnmarshalJSON(s) == nil
}

// number reads an integer literal: -?(0|[1-9][0-9]*), no fraction or
// exponent (those go to encoding/json).
func (d *fastDec) number(signed bool) ([]byte, bool) {
	start := d.i
	if signed && d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || (n > 1 && d.b[digits] == '0') {
		return nil, false
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return d.b[start:d.i], true
}

func (d *fastDec) uint(p *uint64) bool {
	lit, ok := d.number(false)
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(string(lit), 10, 64)
	*p = n
	return err == nil
}

// tags reads an array of strings, or null.
func (d *fastDec) tags(p *[]string) bool {
	if d.null() {
		*p = nil
		return true
	}
	if !d.byte('[') {
		return false
	}
	out := []string{}
	if d.peek() == ']' {
		d.i++
		*p = out
		return true
	}
	for {
		s, ok := d.str()
		if !ok {
			return false
		}
		out = append(out, s)
		switch d.peek() {
		case ',':
			d.i++
			continue
		case ']':
			d.i++
			*p = out
			return true
		}
		return false
	}
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
