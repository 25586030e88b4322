package origin

import (
	"math/rand/v2"
	"reflect"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// strictObject is decodeJSON's strict decoder alone.
func strictObject(b []byte, v any) error {
	return jsonv2.Unmarshal(b, v,
		jsonv2.RejectUnknownMembers(true),
		jsonv2.MatchCaseInsensitiveNames(false),
		jsontext.AllowDuplicateNames(false),
		jsontext.AllowInvalidUTF8(true))
}

// FuzzFastJSON: whatever the fast paths accept, the strict decoder
// accepts too, with the same members and the same values.
//
//	go test -run '^$' -fuzz FuzzFastJSON -fuzztime 60s ./origin/
func FuzzFastJSON(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://example.com/"}`,
		` { "url" : "https://example.com/a?b=c" , "code":"abc","tags":[ "x" ,"y"],"redirect":301,"max_visits":5 } `,
		`{"url":"https://example.com/","expires_at":null,"freshness":"strict","status":"disabled"}`,
		`{"url":"https://example.com/","tags":[]}`,
		`{"url":"https://例え.jp/é"}`,
		`{"url":"a","url":"b"}`,
		`{"URL":"a"}`,
		`{"url":"a\u0041"}`,
		`{"redirect":-0}`,
		`{"redirect":01}`,
		`{"redirect":3.0}`,
		`{"redirect":true,"tags":false}`,
		`{}`,
		`{"url":"https://example.com/"} x`,
		"{\"url\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast linkBody
		if fastObject(b, &fast) {
			var strict linkBody
			if err := strictObject(b, &strict); err != nil {
				t.Fatalf("fast path accepted %q, the strict decoder refused it: %v", b, err)
			}
			if !reflect.DeepEqual(fast, strict) {
				t.Fatalf("%q:\nfast   %+v\nstrict %+v", b, fast, strict)
			}
		}
		// Each field decoder's fast path, on the raw value as a member.
		m := jsontext.Value(b)
		var s, s2 string
		if fastDecodeValue(m, &s) {
			if err := jsonv2.Unmarshal(m, &s2); err != nil || s != s2 {
				t.Fatalf("string %q: fast %q, strict %q (%v)", b, s, s2, err)
			}
		}
		var l, l2 []string
		if fastDecodeValue(m, &l) {
			if err := jsonv2.Unmarshal(m, &l2); err != nil || !reflect.DeepEqual(l, l2) {
				t.Fatalf("list %q: fast %q, strict %q (%v)", b, l, l2, err)
			}
		}
		var n, n2 int
		if fastDecodeValue(m, &n) {
			if err := jsonv2.Unmarshal(m, &n2); err != nil || n != n2 {
				t.Fatalf("int %q: fast %d, strict %d (%v)", b, n, n2, err)
			}
		}
	})
}

// TestFastJSONMatchesStrict runs FuzzFastJSON's check on bodies built at
// random from the pieces where the two decoders could part: names,
// whitespace, escapes, numbers, literals, arrays, UTF-8 and repeats.
func TestFastJSONMatchesStrict(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{`"url"`, `"code"`, `"redirect"`, `"expires_at"`, `"tags"`, `"max_visits"`, `"freshness"`, `"status"`, `"URL"`, `"u\u0072l"`, `"other"`, `"url"`}
	values := []string{`"https://example.com/"`, `"a\"b"`, `"é"`, "\"\xff\"", "\"\x01\"", `""`, `0`, `-0`, `01`, `301`, `-7`, `1.5`, `1e3`, `123456789012345678`, `1234567890123456789`,
		`null`, `true`, `false`, `nul`, `[]`, `[ ]`, `["a"]`, `[ "a" , "b" ]`, `["a",]`, `[1]`, `[null]`, `{}`, `{"a":1}`, `"\u2028"`, `"x` + "\t" + `"`}
	ws := []string{"", " ", "\n", "\t\r ", "\v"}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	accepted := 0
	for range 20000 {
		var b []byte
		b = append(b, pick(ws)...)
		b = append(b, '{')
		n := r.IntN(5)
		for i := range n {
			if i > 0 {
				b = append(b, pick(ws)+","+pick(ws)...)
			}
			b = append(b, pick(ws)+pick(names)+pick(ws)+":"+pick(ws)+pick(values)+pick(ws)...)
		}
		b = append(b, '}')
		if r.IntN(10) == 0 {
			b = append(b, pick([]string{" x", "}", ",", " {}"})...)
		}
		b = append(b, pick(ws)...)
		var fast, strict linkBody
		if !fastObject(b, &fast) {
			continue
		}
		accepted++
		if err := strictObject(b, &strict); err != nil {
			t.Fatalf("fast path accepted %q, the strict decoder refused it: %v", b, err)
		}
		if !reflect.DeepEqual(fast, strict) {
			t.Fatalf("%q:\nfast   %+v\nstrict %+v", b, fast, strict)
		}
	}
	if accepted < 1000 {
		t.Fatalf("the fast path took only %d of 20,000 bodies: the test checks too little", accepted)
	}
	for _, v := range values {
		m := jsontext.Value(v)
		var s, s2 string
		if fastDecodeValue(m, &s) && (jsonv2.Unmarshal(m, &s2) != nil || s != s2) {
			t.Fatalf("string %q: fast %q, strict %q", v, s, s2)
		}
		var l, l2 []string
		if fastDecodeValue(m, &l) && (jsonv2.Unmarshal(m, &l2) != nil || !reflect.DeepEqual(l, l2)) {
			t.Fatalf("list %q: fast %q, strict %q", v, l, l2)
		}
		var n, n2 int
		if fastDecodeValue(m, &n) && (jsonv2.Unmarshal(m, &n2) != nil || n != n2) {
			t.Fatalf("int %q: fast %d, strict %d", v, n, n2)
		}
	}
}
