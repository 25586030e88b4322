package collector

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// FuzzApplyClickBatch feeds arbitrary bytes through the click batch
// decoder into the rollup store: whatever decodes applies without an
// error or a panic, counts its clicks exactly once per code, and a
// second delivery counts nothing.
func FuzzApplyClickBatch(f *testing.F) {
	seed := func(b *linkpb.ClickBatch) {
		data, err := link.MarshalClickBatch(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	seed(&linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, ThroughUnixMs: 1})
	seed(&linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, Links: []*linkpb.LinkMinute{
		{Code: "abc", MinuteUnix: 120, Clicks: 3, Bots: 1, Visitors: []uint64{1, 2},
			Referrers: []*linkpb.KeyCount{{Key: "t.co", Count: 3}}, Countries: []*linkpb.KeyCount{{Key: "", Count: 3}}},
		{Code: "abc", MinuteUnix: 180, Clicks: 1},
	}})
	f.Add([]byte("garbage"))
	st, err := OpenStore(StoreOptions{FS: vfs.NewMem(), Now: func() time.Time { return time.Unix(1<<32, 0) }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	n := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := link.UnmarshalClickBatch(data)
		if err != nil {
			return
		}
		// A fresh instance per input, so it applies.
		n++
		b.Instance = "f" + itoa(n)
		b.Seq = 1
		want := map[string]uint64{}
		for _, lm := range b.Links {
			c, err := st.Clicks(lm.Code)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := want[lm.Code]; !ok {
				want[lm.Code] = c
			}
			want[lm.Code] += lm.Clicks
		}
		for round, verdict := range []replication.ClickVerdict{replication.ClickApplied, replication.ClickDuplicate} {
			msgs := []replication.ClickMsg{{Batch: b}}
			if err := st.ApplyClicks(msgs); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if msgs[0].Verdict != verdict {
				t.Fatalf("round %d: verdict %v, want %v", round, msgs[0].Verdict, verdict)
			}
			for code, w := range want {
				if c, _ := st.Clicks(code); c != w {
					t.Fatalf("round %d: %s has %d clicks, want %d", round, code, c, w)
				}
			}
		}
	})
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
