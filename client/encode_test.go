package client

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// stdEncode is what encoding/json writes for v with HTML escaping off.
func stdEncode(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func checkLinkJSON(t *testing.T, l *Link) {
	t.Helper()
	want := stdEncode(t, (*linkFields)(l))
	got, err := Encode(l)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Encode(%+v):\n got %s %v\nwant %s", l, got, err, want)
	}
	// json.Marshal escapes HTML in what MarshalJSON writes, as it does
	// for the plain struct.
	wantM, err1 := json.Marshal((*linkFields)(l))
	gotM, err2 := json.Marshal(l)
	if err1 != nil || err2 != nil || !bytes.Equal(gotM, wantM) {
		t.Fatalf("json.Marshal(%+v):\n got %s %v\nwant %s %v", l, gotM, err2, wantM, err1)
	}
	var back Link
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("read back %s: %v", got, err)
	}
}

// TestLinkAppendJSON checks the hand-written link encoder against
// encoding/json on the struct tags, over strings that need escaping,
// times with and without fractions, and unset fields.
func TestLinkAppendJSON(t *testing.T) {
	mv := uint64(17)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.UTC)
	weird := "q\"b\\s/<>&\x00\x01\x1f\x7f\b\f\n\r\tü€𝄞\u2028\u2029\xff\xc3(end"
	links := []Link{
		{},
		{Code: "abc", URL: "https://example.com/?a=1&b=<2>", ShortURL: "https://lnk.test/abc", Redirect: 302, Status: StatusActive,
			CreatedAt: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), UpdatedAt: time.Date(2026, 12, 2, 0, 0, 0, 123000000, time.UTC),
			Revision: 1<<64 - 1, Tags: []string{}},
		{Code: weird, URL: weird, ShortURL: weird, Redirect: -1, Status: weird, ExpiresAt: &exp, Tags: []string{weird, "", "x"}, MaxVisits: &mv,
			CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 1, time.FixedZone("x", 3600))},
	}
	for i := range links {
		checkLinkJSON(t, &links[i])
	}
	if _, err := Encode(&Link{CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Fatal("year 10000 encoded")
	}
	// A batch answer is its items joined.
	r := BatchResponse{Results: []BatchResult{{Link: &links[1]}, {Error: &ErrorObject{Code: "code_taken", Message: "a <b>", Field: "code"}}, {Error: &ErrorObject{Code: "not_leader", Message: "m", Leader: "http://x/"}}}}
	type plainResult struct {
		*linkFields
		Error *ErrorObject `json:"error,omitempty"`
	}
	want := stdEncode(t, map[string][]plainResult{"results": {{linkFields: (*linkFields)(&links[1])}, {Error: r.Results[1].Error}, {Error: r.Results[2].Error}}})
	got, err := Encode(&r)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("batch:\n got %s %v\nwant %s", got, err, want)
	}
}

// FuzzLinkJSON compares the hand-written link encoder with encoding/json
// on arbitrary strings and numbers.
func FuzzLinkJSON(f *testing.F) {
	f.Add("abc", "https://example.com/", "active", "tag", int64(1764633600123456789), uint64(3), 302)
	f.Add("\xff\u2028<", "\x00\"\\", "", "\xed\xa0\x80", int64(0), uint64(0), 0)
	f.Fuzz(func(t *testing.T, code, url, status, tag string, ns int64, rev uint64, redirect int) {
		at := time.Unix(0, ns).UTC()
		l := Link{Code: code, URL: url, ShortURL: "https://lnk.test/" + code, Status: status, Redirect: redirect,
			CreatedAt: at, UpdatedAt: at, Revision: rev, Tags: []string{tag}}
		if rev%2 == 0 {
			l.ExpiresAt, l.MaxVisits, l.Tags = &at, &rev, nil
		}
		checkLinkJSON(t, &l)
	})
}

// FuzzLinkDecode checks the link object's fast decoder against
// encoding/json on the struct tags: whatever it accepts, encoding/json
// accepts too and reads the same link.
func FuzzLinkDecode(f *testing.F) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 600000000, time.FixedZone("", 3600))
	mv := uint64(9)
	for _, l := range []Link{
		{Code: "abc", URL: "https://example.com/?a=1&b=2", ShortURL: "https://lnk.test/abc", Redirect: 302, Status: StatusActive,
			CreatedAt: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), UpdatedAt: time.Date(2026, 12, 2, 0, 0, 0, 123000000, time.UTC), Revision: 7, Tags: []string{}},
		{Code: "x", ExpiresAt: &exp, MaxVisits: &mv, Tags: []string{"a", "b"}},
	} {
		b, _ := Encode(&l)
		f.Add(b)
	}
	for _, s := range []string{`{}`, `null`, ` { "code" : "a" , "tags" : [ ] } `, `{"redirect":-0}`, `{"revision":-0}`, `{"revision":01}`,
		`{"redirect":1e2}`, `{"code":"a","code":"b"}`, `{"CODE":"a"}`, `{"code":"\u00e9"}`, `{"expires_at":null,"max_visits":null,"tags":null}`,
		`{"created_at":"2026-01-01T00:00:00+01:00"}`, `{"created_at":"bad"}`, `{"error":{"code":"x"}}`, `{"code":"a"} x`, `{"code":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast Link
		if !fast.decodeFast(b) {
			return
		}
		var std Link
		if err := json.Unmarshal(b, (*linkFields)(&std)); err != nil {
			t.Fatalf("fast decoder accepted %q, encoding/json refuses it: %v", b, err)
		}
		gf, errF := Encode(&fast)
		gs, errS := Encode(&std)
		if (errF == nil) != (errS == nil) || !bytes.Equal(gf, gs) {
			t.Fatalf("%q:\nfast %s %v\n std %s %v", b, gf, errF, gs, errS)
		}
	})
}

// TestBatchResultDecode reads both item forms, through the fast path
// and through encoding/json.
func TestBatchResultDecode(t *testing.T) {
	var out BatchResponse
	in := `{"results":[{"code":"a","tags":[],"status":"active"},{"error":{"code":"code_taken","message":"m","field":"code"}},{"code":"\u00e9","tags":["t"]}]}`
	if err := json.Unmarshal([]byte(in), &out); err != nil {
		t.Fatal(err)
	}
	r := out.Results
	if len(r) != 3 || r[0].Link == nil || r[0].Link.Code != "a" || r[0].Error != nil || r[1].Error == nil || r[1].Link != nil ||
		r[1].Error.Field != "code" || r[2].Link == nil || r[2].Link.Code != "é" || len(r[2].Link.Tags) != 1 {
		t.Fatalf("%+v", r)
	}
}

// createFields is CreateLink without its methods.
type createFields CreateLink

// FuzzCreateJSON compares the hand-written create-body encoder with
// encoding/json on the struct tags.
func FuzzCreateJSON(f *testing.F) {
	f.Add("https://example.com/?a=<1>&b", "abc", "t", "disabled", int64(1764633600123456789), uint64(3), 302, uint8(0xff))
	f.Add("", "", "", "", int64(0), uint64(0), 0, uint8(0))
	f.Fuzz(func(t *testing.T, url, code, tag, status string, ns int64, mv uint64, redirect int, set uint8) {
		c := CreateLink{URL: url, Code: code, Redirect: redirect, Status: status}
		at := time.Unix(0, ns).UTC()
		if set&1 != 0 {
			c.ExpiresAt = &at
		}
		if set&2 != 0 {
			c.MaxVisits = &mv
		}
		switch set & 12 {
		case 4:
			c.Tags = []string{tag}
		case 8:
			c.Tags = []string{}
		case 12:
			c.Tags = []string{tag, code}
		}
		want := stdEncode(t, (*createFields)(&c))
		got, err := Encode(&c)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Encode(%+v):\n got %s %v\nwant %s", c, got, err, want)
		}
		wantB := stdEncode(t, map[string][]*createFields{"links": {(*createFields)(&c), (*createFields)(&c)}})
		gotB, err := Encode(&BatchRequest{Links: []CreateLink{c, c}})
		if err != nil || !bytes.Equal(gotB, wantB) {
			t.Fatalf("batch:\n got %s %v\nwant %s", gotB, err, wantB)
		}
	})
}

// FuzzBatchDecode checks the batch answer's fast reader against
// encoding/json item by item.
func FuzzBatchDecode(f *testing.F) {
	l := Link{Code: "abc", URL: "https://example.com/", Tags: []string{}, Status: StatusActive, CreatedAt: time.Unix(1764633600, 0).UTC()}
	one, _ := Encode(&BatchResponse{Results: []BatchResult{{Link: &l}, {Link: &l}}})
	f.Add(one)
	for _, s := range []string{`{"results":[]}`, `{"results":null}`, `{"results":[{}]}`, `{"results":[{"error":{"code":"x","message":"m"}}]}`,
		`{"results":[{"code":"a"}],"x":1}`, ` {"results" : [ {"code":"a"} , {"code":"b"} ] } `, `{"results":[{"code":"a"},]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, ok := decodeBatchFast(b)
		if !ok {
			return
		}
		var std struct {
			Results []struct {
				linkFields
				Error *ErrorObject `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("fast reader accepted %q, encoding/json refuses it: %v", b, err)
		}
		if len(std.Results) != len(res) {
			t.Fatalf("%q: %d results, encoding/json %d", b, len(res), len(std.Results))
		}
		for i := range res {
			sl := Link(std.Results[i].linkFields)
			gf, _ := Encode(res[i].Link)
			gs, _ := Encode(&sl)
			if std.Results[i].Error != nil || !bytes.Equal(gf, gs) {
				t.Fatalf("%q item %d:\nfast %s\n std %s %+v", b, i, gf, gs, std.Results[i].Error)
			}
		}
	})
}
