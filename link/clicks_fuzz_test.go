package link_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

func sampleClickBatch() *linkpb.ClickBatch {
	return &linkpb.ClickBatch{Edge: "edge-a", Instance: "i0abc", Seq: 7, ThroughUnixMs: 1_700_000_000_123, Dropped: 2,
		Links: []*linkpb.LinkMinute{{
			Code: "abc", MinuteUnix: 1_700_000_040, Clicks: 5, Bots: 1, Visitors: []uint64{1, 2, 3},
			Referrers: []*linkpb.KeyCount{{Key: "", Count: 3}, {Key: "news.example", Count: 2}},
			Countries: []*linkpb.KeyCount{{Key: "US", Count: 5}},
			Devices:   []*linkpb.KeyCount{{Key: "desktop", Count: 5}, {Key: "bot", Count: 1}},
			Browsers:  []*linkpb.KeyCount{{Key: "Chrome", Count: 5}},
			Os:        []*linkpb.KeyCount{{Key: "Windows", Count: 5}},
		}}}
}

// FuzzUnmarshalClickBatch: the collector's decoder never panics, fails
// only with ErrCorrupt or ErrUnsupportedSchema, and whatever it accepts
// passes validation and survives a re-encode unchanged.
func FuzzUnmarshalClickBatch(f *testing.F) {
	good, err := link.MarshalClickBatch(sampleClickBatch())
	if err != nil {
		f.Fatal(err)
	}
	empty, _ := link.MarshalClickBatch(&linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1})
	f.Add(good)
	f.Add(empty)
	f.Add([]byte{})
	f.Add([]byte("\x08\x02"))
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := link.UnmarshalClickBatch(data)
		if err != nil {
			if !errors.Is(err, link.ErrCorrupt) && !errors.Is(err, link.ErrUnsupportedSchema) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if err := link.ValidateClickBatch(b); err != nil {
			t.Fatalf("accepted a batch that does not validate: %v", err)
		}
		for _, lm := range b.Links {
			if uint64(len(lm.Visitors)) > lm.Clicks {
				t.Fatalf("accepted %d visitors for %d clicks", len(lm.Visitors), lm.Clicks)
			}
		}
		again, err := link.MarshalClickBatch(b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		b2, err := link.UnmarshalClickBatch(again)
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v", err)
		}
		if !proto.Equal(b, b2) {
			t.Fatalf("re-encode changed the batch")
		}
		// AppendClickBatch writes the known fields only (an edge never has
		// others): the same bytes once unknown fields are dropped.
		clearUnknown(b)
		known, err := link.MarshalClickBatch(b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if fast := link.AppendClickBatch(nil, b); !bytes.Equal(fast, known) {
			t.Fatalf("AppendClickBatch differs from MarshalClickBatch")
		}
	})
}

// clearUnknown drops the unknown fields of b and of every message in it.
func clearUnknown(b *linkpb.ClickBatch) {
	b.ProtoReflect().SetUnknown(nil)
	for _, lm := range b.Links {
		lm.ProtoReflect().SetUnknown(nil)
		for _, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
			for _, kc := range kcs {
				kc.ProtoReflect().SetUnknown(nil)
			}
		}
	}
}

func TestUnmarshalClickBatchRoundTrip(t *testing.T) {
	in := sampleClickBatch()
	data, err := link.MarshalClickBatch(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := link.UnmarshalClickBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("round trip changed the batch")
	}
}

// TestAppendClickBatch: the edge's encoder writes exactly the bytes of the
// generated one, for batches of every shape.
func TestAppendClickBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	kcs := func() []*linkpb.KeyCount {
		var out []*linkpb.KeyCount
		for range rng.IntN(4) {
			keys := []string{"", "a", "news.example.com", strings.Repeat("k", 200)}
			out = append(out, &linkpb.KeyCount{Key: keys[rng.IntN(len(keys))], Count: rng.Uint64N(1 << uint(rng.IntN(60)+1))})
		}
		return out
	}
	for i := range 2000 {
		b := &linkpb.ClickBatch{Edge: "edge-a", Instance: "inst", Seq: rng.Uint64N(1 << 40), ThroughUnixMs: rng.Int64N(1 << 42), Dropped: rng.Uint64N(3)}
		if i%7 == 0 {
			b.Edge, b.Instance, b.Seq, b.ThroughUnixMs = "", "", 0, 0
		}
		for range rng.IntN(5) {
			lm := &linkpb.LinkMinute{Code: "code" + strings.Repeat("x", rng.IntN(40)), MinuteUnix: 60 * rng.Int64N(1<<30),
				Clicks: rng.Uint64N(1 << 20), Bots: rng.Uint64N(3),
				Referrers: kcs(), Countries: kcs(), Devices: kcs(), Browsers: kcs(), Os: kcs()}
			for range rng.IntN(300) {
				lm.Visitors = append(lm.Visitors, rng.Uint64())
			}
			b.Links = append(b.Links, lm)
		}
		want, err := link.MarshalClickBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := link.AppendClickBatch(nil, b); !bytes.Equal(got, want) {
			t.Fatalf("batch %d: AppendClickBatch differs from MarshalClickBatch\n got %x\nwant %x", i, got, want)
		}
	}
}
