package link_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

func sampleRecord() link.Record {
	now := time.UnixMilli(1_700_000_000_000).UTC()
	return link.Record{
		Code: "abc123", URL: "https://example.com/a?b=c", Redirect: 301, Status: link.StatusActive,
		CreatedAt: now, UpdatedAt: now.Add(time.Second), ExpiresAt: now.Add(time.Hour),
		Revision: 42, Tags: []string{"x", "y"}, Freshness: link.FreshnessStrict,
	}
}

func TestChangeRoundTrip(t *testing.T) {
	c := link.Change{Op: link.OpUpdate, Record: sampleRecord(), CommittedAt: time.Unix(0, 1_700_000_000_123_456_789)}
	b, err := link.MarshalChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := link.UnmarshalChange(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.CommittedAt.Equal(c.CommittedAt) || !reflect.DeepEqual(got.Record, c.Record) || got.Op != c.Op {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	r := sampleRecord()
	r.ExpiresAt = time.Time{}
	rb, err := link.MarshalRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := link.UnmarshalRecord(rb)
	if err != nil || !r2.ExpiresAt.IsZero() || r2.Code != r.Code {
		t.Fatalf("record round trip: %+v, %v", r2, err)
	}
}

func TestUnmarshalChangeRefuses(t *testing.T) {
	enc := func(mod func(*linkpb.Change)) []byte {
		r := sampleRecord()
		c := link.Change{Op: link.OpCreate, Record: r}
		b, _ := link.MarshalChange(&c)
		var pb linkpb.Change
		if err := proto.Unmarshal(b, &pb); err != nil {
			t.Fatal(err)
		}
		mod(&pb)
		out, _ := proto.Marshal(&pb)
		return out
	}
	f := func(name string, b []byte, want error) {
		t.Helper()
		if _, err := link.UnmarshalChange(b); !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
		}
	}
	f("garbage", []byte("\xff\xff\xff\xff"), link.ErrCorrupt)
	f("oversize", make([]byte, link.MaxEncodedLen+1), link.ErrCorrupt)
	f("future change schema", enc(func(c *linkpb.Change) { c.SchemaVersion = 2 }), link.ErrUnsupportedSchema)
	f("future record schema", enc(func(c *linkpb.Change) { c.Record.SchemaVersion = 9 }), link.ErrUnsupportedSchema)
	f("no record", enc(func(c *linkpb.Change) { c.Record = nil }), link.ErrCorrupt)
	f("bad op", enc(func(c *linkpb.Change) { c.Op = 9 }), link.ErrCorrupt)
	f("bad code", enc(func(c *linkpb.Change) { c.Record.Code = "a/b" }), link.ErrCorrupt)
	f("CRLF url", enc(func(c *linkpb.Change) { c.Record.Url = "https://x/\r\nSet-Cookie: a" }), link.ErrCorrupt)
	f("javascript url", enc(func(c *linkpb.Change) { c.Record.Url = "javascript:alert(1)" }), link.ErrCorrupt)
	f("bad redirect", enc(func(c *linkpb.Change) { c.Record.Redirect = 200 }), link.ErrCorrupt)
	f("bad status", enc(func(c *linkpb.Change) { c.Record.Status = 7 }), link.ErrCorrupt)
	f("zero revision", enc(func(c *linkpb.Change) { c.Record.Revision = 0 }), link.ErrCorrupt)
	f("unknown freshness", enc(func(c *linkpb.Change) { c.Record.Freshness = 2 }), link.ErrCorrupt)
	f("freshness 256", enc(func(c *linkpb.Change) { c.Record.Freshness = 256 }), link.ErrCorrupt)
	f("empty", nil, link.ErrUnsupportedSchema)
}

func TestRecordExpiry(t *testing.T) {
	r := sampleRecord()
	if !r.Redirects(r.ExpiresAt.Add(-time.Millisecond)) || r.Redirects(r.ExpiresAt) {
		t.Fatal("expiry boundary wrong: a link expires at expires_at")
	}
	r.ExpiresAt = time.Time{}
	if !r.Redirects(time.Now().Add(100 * 365 * 24 * time.Hour)) {
		t.Fatal("link without expiry expired")
	}
	r.Status = link.StatusDisabled
	if r.Redirects(time.Now()) {
		t.Fatal("disabled link redirects")
	}
}

func TestValidateTags(t *testing.T) {
	f := func(tags []string, ok bool) {
		t.Helper()
		if err := link.ValidateTags(tags); (err == nil) != ok {
			t.Errorf("ValidateTags(%q) = %v, want ok=%v", tags, err, ok)
		}
	}
	f(nil, true)
	f([]string{"a", "b c", "ünï"}, true)
	f([]string{""}, false)
	f([]string{"a", "a"}, false)
	f([]string{"a\nb"}, false)
	f([]string{string(make([]byte, 65))}, false)
	f(make([]string, 17), false)
}

func FuzzUnmarshalChange(f *testing.F) {
	r := sampleRecord()
	good, _ := link.MarshalChange(&link.Change{Op: link.OpCreate, Record: r})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("\x08\x02"))
	f.Add(append([]byte{}, good[:len(good)/2]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := link.UnmarshalChange(b)
		if err != nil {
			if !errors.Is(err, link.ErrCorrupt) && !errors.Is(err, link.ErrUnsupportedSchema) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		// Anything accepted is safe to serve: valid code, header-safe URL.
		if err := c.Record.Validate(); err != nil {
			t.Fatalf("accepted invalid record: %v", err)
		}
		if err := link.ValidStoredURL(c.Record.URL); err != nil {
			t.Fatalf("accepted unsafe url %q", c.Record.URL)
		}
	})
}

// FuzzMarshalChangeOf checks that MarshalChangeOf writes exactly what
// MarshalChange writes for the same change.
func FuzzMarshalChangeOf(f *testing.F) {
	f.Add("abc123", "https://example.com/a?b=c", uint8(1), int64(1_700_000_000_123_456_789), uint64(42), "x", uint64(0), "")
	f.Add("z", "https://example.com/", uint8(3), int64(0), uint64(1), "", uint64(7), "blocked")
	f.Add("neg", "https://example.com/n", uint8(2), int64(-5), uint64(1<<40), "tag", uint64(1), "")
	f.Fuzz(func(t *testing.T, code, url string, op uint8, committed int64, rev uint64, tag string, maxVisits uint64, reason string) {
		r := sampleRecord()
		r.Code, r.URL, r.Revision, r.MaxVisits, r.DisabledReason = code, url, rev, maxVisits, reason
		r.Tags = nil
		if tag != "" {
			r.Tags = []string{tag}
		}
		c := link.Change{Op: link.Op(op%3 + 1), Record: r, CommittedAt: time.Unix(0, committed)}
		want, err := link.MarshalChange(&c)
		if err != nil {
			t.Skip()
		}
		rec, err := link.MarshalRecord(&r)
		if err != nil {
			t.Fatal(err)
		}
		if got := link.MarshalChangeOf(c.Op, rec, c.CommittedAt); string(got) != string(want) {
			t.Fatalf("MarshalChangeOf\n got %x\nwant %x", got, want)
		}
	})
}

// FuzzChangeRecordBytes checks that the record bytes a change carries are
// what MarshalRecord writes for its record, and that a change carrying
// its record in two fields (which protobuf merges) gives none.
func FuzzChangeRecordBytes(f *testing.F) {
	f.Add("abc123", "https://example.com/a?b=c", uint8(1), int64(1_700_000_000_123_456_789), uint64(42), "x")
	f.Add("z", "https://example.com/", uint8(3), int64(0), uint64(1), "")
	f.Fuzz(func(t *testing.T, code, url string, op uint8, committed int64, rev uint64, tag string) {
		r := sampleRecord()
		r.Code, r.URL, r.Revision = code, url, rev
		r.Tags = nil
		if tag != "" {
			r.Tags = []string{tag}
		}
		c := link.Change{Op: link.Op(op%3 + 1), Record: r, CommittedAt: time.Unix(0, committed)}
		data, err := link.MarshalChange(&c)
		if err != nil {
			t.Skip()
		}
		want, err := link.MarshalRecord(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := link.ChangeRecordBytes(data)
		if !ok || string(got) != string(want) {
			t.Fatalf("ChangeRecordBytes = %x, %v; want %x", got, ok, want)
		}
		// The record twice: protobuf merges the two, so neither is it.
		recordTag := (&linkpb.Change{}).ProtoReflect().Descriptor().Fields().ByName("record").Number()
		twice := protowire.AppendBytes(protowire.AppendTag(slices.Clone(data), recordTag, protowire.BytesType), want)
		if got, ok := link.ChangeRecordBytes(twice); ok {
			t.Fatalf("a change with two record fields gave %x", got)
		}
	})
}
