package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// TestPartitionsThroughJetStream: two collectors split the links by code
// (partition 0 and 1 of 2), each reading the whole stream through its own
// durable consumer and serving its partition API; a third, unpartitioned
// collector reads the same stream as the reference. Batches from two
// edges spread over codes of both partitions. Each partition holds only
// its codes; through Remote and Partitions every link's stats equal the
// model and, byte for byte, the reference's answer; the merged top links
// equal the reference's.
func TestPartitionsThroughJetStream(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	natsCfg := replication.ConnConfig{URLs: []string{ns.URL()}}
	const token = "partition-token"
	var parts [2]*Collector
	var remotes []Source
	for i := range parts {
		c, err := New(Config{Dir: t.TempDir(), NATS: natsCfg, Partition: i, Partitions: 2, StatsListen: "127.0.0.1:0", StatsToken: token})
		if err != nil {
			t.Fatal(err)
		}
		parts[i] = c
		defer runCollector(t, c)()
		rm, err := NewRemote(RemoteConfig{URL: "http://" + c.StatsAddr(), Token: token, Partition: i, Partitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		remotes = append(remotes, rm)
	}
	ref, err := New(Config{Dir: t.TempDir(), NATS: natsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer runCollector(t, ref)()
	merged, err := NewPartitions(remotes...)
	if err != nil {
		t.Fatal(err)
	}

	ctx := ctxT(t)
	nc, err := replication.Dial(ctx, natsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	base := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC).Unix()
	g := &gen{rng: rand.New(rand.NewPCG(11, 12)), codes: codesN(16), base: base, minutes: 120, visitors: 2000}
	var in [2]int
	for _, code := range g.codes {
		in[PartitionOf(code, 2)]++
	}
	if in[0] == 0 || in[1] == 0 {
		t.Fatalf("codes per partition %v: the test needs both", in)
	}
	m := newModel()
	for i := 1; i <= 30; i++ {
		for _, edge := range []string{"edge-a", "edge-b"} {
			b := g.batch(edge, "i1", uint64(i), (base+int64(i)*240)*1000, 20)
			m.add(b)
			if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range append(parts[:], ref) {
		wait.For(t, 30*time.Second, "every batch applied by every collector", func() bool {
			return c.LastSeq("edge-a", "i1") == 30 && c.LastSeq("edge-b", "i1") == 30
		})
	}
	for i, c := range parts {
		for _, code := range g.codes {
			n, err := c.Clicks(code)
			if err != nil {
				t.Fatal(err)
			}
			if own := PartitionOf(code, 2) == i; own != (n > 0 || m.total[code].clicks == 0) {
				t.Fatalf("partition %d holds %d clicks of %s (its own: %v)", i, n, code, own)
			}
		}
	}
	checkModel(t, merged, m, g)
	from := time.Unix(base, 0).UTC()
	r, err := ParseRange(from.Format(time.RFC3339), from.Add(2*time.Hour).Format(time.RFC3339), "minute", from)
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string, a, b any) {
		t.Helper()
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%s: partitions answered\n%s\nthe reference\n%s", what, ja, jb)
		}
	}
	for _, code := range g.codes {
		got, err := merged.LinkStats(code, r)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.LinkStats(code, r)
		if err != nil {
			t.Fatal(err)
		}
		same(code, got.API(), want.API())
		gt, err := merged.Totals(code)
		if err != nil {
			t.Fatal(err)
		}
		wt, _ := ref.Totals(code)
		if gt.Clicks != wt.Clicks || gt.Bots != wt.Bots || gt.Uniques != wt.Uniques {
			t.Fatalf("%s totals %+v, reference %+v", code, gt, wt)
		}
	}
	for _, limit := range []int{3, 1000} {
		got, err := merged.TopLinks(r, limit)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ref.TopLinks(r, limit)
		if err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("top %d", limit), got.API(), want.API())
	}

	// A wrong token, or URLs in the wrong order, is a partition that
	// cannot answer, never someone else's numbers.
	bad, _ := NewRemote(RemoteConfig{URL: "http://" + parts[0].StatsAddr(), Token: "wrong", Partition: 0, Partitions: 2})
	if _, err := bad.Totals(g.codes[0]); !errors.Is(err, ErrPartitionUnavailable) {
		t.Fatalf("wrong token: %v", err)
	}
	swapped, _ := NewRemote(RemoteConfig{URL: "http://" + parts[1].StatsAddr(), Token: token, Partition: 0, Partitions: 2})
	if _, err := swapped.TopLinks(r, 3); !errors.Is(err, ErrPartitionUnavailable) {
		t.Fatalf("swapped partitions: %v", err)
	}
}

// TestPartitionOfStable pins the partition function: the stored rollups
// of every partitioned collector depend on it (the expected values are
// FNV-1a 32 computed outside Go).
func TestPartitionOfStable(t *testing.T) {
	for _, c := range []struct {
		code string
		n    int
		want int
	}{{"abc", 1, 0}, {"abc", 2, 1}, {"abc", 7, 5}, {"xyz123", 4, 0}, {"", 3, 1}} {
		if got := PartitionOf(c.code, c.n); got != c.want {
			t.Errorf("PartitionOf(%q, %d) = %d, want %d", c.code, c.n, got, c.want)
		}
	}
}

// TestStorePartitionMismatch: a store opened as another partition than
// the one it holds is refused; the skipped codes' clicks are not kept.
func TestStorePartitionMismatch(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(StoreOptions{Dir: dir, Partition: 1, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	var mine, other string
	for i := 0; mine == "" || other == ""; i++ {
		code := fmt.Sprintf("c%d", i)
		if PartitionOf(code, 3) == 1 {
			mine = code
		} else {
			other = code
		}
	}
	minute := time.Now().Unix() / 60 * 60
	applyAll(t, st, &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, Links: []*linkpb.LinkMinute{
		{Code: mine, MinuteUnix: minute, Clicks: 3}, {Code: other, MinuteUnix: minute, Clicks: 4}}})
	if n, _ := st.Clicks(mine); n != 3 {
		t.Fatalf("own code: %d clicks, want 3", n)
	}
	if n, _ := st.Clicks(other); n != 0 {
		t.Fatalf("another partition's code: %d clicks, want 0", n)
	}
	if got := st.LastSeq("e", "i"); got != 1 {
		t.Fatalf("last seq %d, want 1", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]int{{0, 3}, {1, 2}, {0, 1}} {
		if _, err := OpenStore(StoreOptions{Dir: dir, Partition: p[0], Partitions: p[1]}); !errors.Is(err, ErrPartitionMismatch) {
			t.Fatalf("open as %d/%d: %v, want ErrPartitionMismatch", p[0], p[1], err)
		}
	}
	st, err = OpenStore(StoreOptions{Dir: dir, Partition: 1, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
}
