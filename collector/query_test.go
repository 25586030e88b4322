package collector

import (
	"errors"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

func TestParseRange(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 34, 56, 0, time.UTC)
	ok := func(from, to, iv string, wantFrom, wantTo string, wantIv Interval) {
		t.Helper()
		r, err := ParseRange(from, to, iv, now)
		if err != nil {
			t.Fatalf("ParseRange(%q, %q, %q): %v", from, to, iv, err)
		}
		if got := r.From.Format(time.RFC3339); got != wantFrom {
			t.Fatalf("ParseRange(%q, %q, %q): from %s, want %s", from, to, iv, got, wantFrom)
		}
		if got := r.To.Format(time.RFC3339); got != wantTo {
			t.Fatalf("ParseRange(%q, %q, %q): to %s, want %s", from, to, iv, got, wantTo)
		}
		if r.Interval != wantIv {
			t.Fatalf("ParseRange(%q, %q, %q): interval %s, want %s", from, to, iv, r.Interval, wantIv)
		}
	}
	bad := func(from, to, iv, field string) {
		t.Helper()
		_, err := ParseRange(from, to, iv, now)
		var re *RangeError
		if !errors.Is(err, ErrInvalidRange) || !errors.As(err, &re) || re.Field != field {
			t.Fatalf("ParseRange(%q, %q, %q): %v, want invalid_range on %s", from, to, iv, err, field)
		}
	}
	// Default: the last 7 days, hourly.
	ok("", "", "", "2026-11-24T12:00:00Z", "2026-12-01T13:00:00Z", Hour)
	ok("", "", "day", "2026-11-24T00:00:00Z", "2026-12-02T00:00:00Z", Day)
	ok("2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z", "", "2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z", Minute)
	ok("2026-12-01T10:00:30Z", "2026-12-01T10:00:30Z", "minute", "2026-12-01T10:00:00Z", "2026-12-01T10:01:00Z", Minute)
	ok("2026-12-01T10:00:00+02:00", "2026-12-01T10:30:00.5+02:00", "", "2026-12-01T08:00:00Z", "2026-12-01T08:31:00Z", Minute)
	ok("2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "", "2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z", Day)
	ok("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", Hour)
	ok("", "2026-06-01T00:00:00Z", "", "2026-05-25T00:00:00Z", "2026-06-01T00:00:00Z", Hour)
	bad("yesterday", "", "", "from")
	bad("", "2026-13-01T00:00:00Z", "", "to")
	bad("2026-12-01T00:00:00", "", "", "from")
	bad("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z", "", "from")
	bad("", "", "week", "interval")
	bad("", "", "Minute", "interval")
	bad("2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "minute", "interval") // > 10,000 minutes
	bad("1970-01-01T00:00:00Z", "", "", "from")
	bad("2026-01-01T00:00:00Z", "9999-01-01T00:00:00Z", "day", "to")
	// Exactly 10,000 intervals is allowed; one more is not.
	ok("2026-01-01T00:00:00Z", "2026-01-07T22:40:00Z", "minute", "2026-01-01T00:00:00Z", "2026-01-07T22:40:00Z", Minute)
	bad("2026-01-01T00:00:00Z", "2026-01-07T22:41:00Z", "minute", "interval")
}

// FuzzParseRange: any input is a valid aligned range of at most
// MaxIntervals intervals or an invalid_range error, never a panic.
func FuzzParseRange(f *testing.F) {
	for _, s := range [][3]string{
		{"", "", ""}, {"2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z", "minute"},
		{"2026-12-01T10:00:00+14:00", "", "day"}, {"x", "y", "z"}, {"2026-01-01T00:00:00.999999999Z", "2199-12-31T23:59:59Z", "day"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	now := time.Date(2026, 12, 1, 12, 34, 56, 0, time.UTC)
	f.Fuzz(func(t *testing.T, from, to, iv string) {
		r, err := ParseRange(from, to, iv, now)
		if err != nil {
			if !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("error %v is not invalid_range", err)
			}
			return
		}
		d := r.Interval.Duration()
		if r.From.UnixNano()%int64(d) != 0 || r.To.UnixNano()%int64(d) != 0 {
			t.Fatalf("range %v..%v not aligned to %v", r.From, r.To, d)
		}
		if n := r.Buckets(); n < 1 || n > MaxIntervals {
			t.Fatalf("range of %d intervals", n)
		}
	})
}

// TestCompleteness: complete_through is the oldest mark of the live
// edges; a lagging edge is listed; an edge silent past RetireAfter (by
// the edges' own marks) stops holding complete_through back and stays
// listed until ForgetAfter; a new instance of an edge carries on.
func TestCompleteness(t *testing.T) {
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), RetireAfter: time.Hour, StaleAfter: 10 * time.Second, ForgetAfter: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if c := st.Completeness(time.Now()); c.CompleteThrough != nil || len(c.IncompleteEdges) != 0 {
		t.Fatalf("no edge yet: %+v", c)
	}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	seqs := map[string]uint64{}
	mark := func(edge, inst string, at time.Time) {
		t.Helper()
		seqs[edge+inst]++
		v := applyAll(t, st, &linkpb.ClickBatch{Edge: edge, Instance: inst, Seq: seqs[edge+inst], ThroughUnixMs: at.UnixMilli()})
		if v[0] != replication.ClickApplied {
			t.Fatalf("verdict %v", v)
		}
	}
	check := func(to time.Time, wantThrough time.Time, wantEdges ...string) {
		t.Helper()
		c := st.Completeness(to)
		if c.CompleteThrough == nil || !c.CompleteThrough.Equal(wantThrough) {
			t.Fatalf("complete_through %v, want %v", c.CompleteThrough, wantThrough)
		}
		if len(c.IncompleteEdges) != len(wantEdges) {
			t.Fatalf("incomplete_edges %v, want %v", c.IncompleteEdges, wantEdges)
		}
		for i := range wantEdges {
			if c.IncompleteEdges[i] != wantEdges[i] {
				t.Fatalf("incomplete_edges %v, want %v", c.IncompleteEdges, wantEdges)
			}
		}
	}
	mark("a", "1", t0)
	mark("b", "1", t0.Add(2*time.Second))
	check(t0.Add(time.Hour), t0)
	// b goes on, a stays silent: a holds complete_through and is listed
	// once it is StaleAfter behind.
	mark("b", "1", t0.Add(30*time.Second))
	check(t0.Add(time.Hour), t0, "a")
	// A query that ends before a's mark does not list it.
	check(t0, t0)
	// Past RetireAfter, a is retired: complete_through moves to b's mark,
	// a is still listed.
	mark("b", "1", t0.Add(61*time.Minute))
	check(t0.Add(2*time.Hour), t0.Add(61*time.Minute), "a")
	// Past ForgetAfter, a is no longer listed.
	mark("b", "1", t0.Add(25*time.Hour))
	check(t0.Add(26*time.Hour), t0.Add(25*time.Hour))
	// a comes back under a new instance (its disk was replaced): it holds
	// complete_through again from its new mark.
	mark("a", "2", t0.Add(25*time.Hour-5*time.Second))
	check(t0.Add(26*time.Hour), t0.Add(25*time.Hour-5*time.Second))
	// The marks survive a restart.
	dir := st.o.Dir
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	check(t0.Add(26*time.Hour), t0.Add(25*time.Hour-5*time.Second))
}

// TestRetention: minute and hour rollups past retention are pruned (and
// never written), day rollups stay; breakdowns are bounded with the
// remainder under OtherKey and exact totals.
func TestRetention(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), Now: func() time.Time { return now }, BreakdownLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := now.Add(-8 * 24 * time.Hour).Unix()
	recent := now.Add(-time.Hour).Unix()
	refs := []*linkpb.KeyCount{{Key: "a", Count: 5}, {Key: "b", Count: 4}, {Key: "c", Count: 3}, {Key: "d", Count: 2}, {Key: "e", Count: 1}}
	applyAll(t, st, &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, Links: []*linkpb.LinkMinute{
		{Code: "abc", MinuteUnix: old - old%60, Clicks: 15, Referrers: refs},
		{Code: "abc", MinuteUnix: recent - recent%60, Clicks: 1},
	}})
	count := func(iv string, from time.Time) uint64 {
		r, err := ParseRange(from.Format(time.RFC3339), now.Format(time.RFC3339), iv, now)
		if err != nil {
			t.Fatal(err)
		}
		s, err := st.LinkStats("abc", r)
		if err != nil {
			t.Fatal(err)
		}
		return s.Clicks
	}
	from := now.Add(-6 * 24 * time.Hour)
	if got := count("minute", from); got != 1 {
		t.Fatalf("minute clicks %d, want 1 (the old minute is past retention)", got)
	}
	if got := count("hour", now.Add(-9*24*time.Hour)); got != 16 {
		t.Fatalf("hour clicks %d, want 16", got)
	}
	now = now.Add(90 * 24 * time.Hour)
	if _, err := st.Prune(); err != nil {
		t.Fatal(err)
	}
	if got := count("hour", now.Add(-100*24*time.Hour)); got != 0 {
		t.Fatalf("hour clicks %d after pruning, want 0", got)
	}
	r, _ := ParseRange("2026-11-01T00:00:00Z", "2026-12-02T00:00:00Z", "day", now)
	s, err := st.LinkStats("abc", r)
	if err != nil {
		t.Fatal(err)
	}
	if s.Clicks != 16 {
		t.Fatalf("day clicks %d, want 16", s.Clicks)
	}
	want := []KeyCount{{OtherKey, 6}, {"a", 5}, {"b", 4}}
	if len(s.Referrers) != 3 || s.Referrers[0] != want[0] || s.Referrers[1] != want[1] || s.Referrers[2] != want[2] {
		t.Fatalf("referrers %v, want %v", s.Referrers, want)
	}
}

// TestUniquesCover: the uniques of a range that spans whole days and
// partial ones (at hour and minute interval) are the distinct visitors
// of exactly that range, from day, hour and minute sketches together.
func TestUniquesCover(t *testing.T) {
	day0 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	st, err := OpenStore(StoreOptions{Dir: t.TempDir(), Now: func() time.Time { return day0.Add(4 * 24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One visitor per minute over 3 days, each distinct: the exact
	// uniques of a range are its minutes.
	var seq uint64
	var msgs []replication.ClickMsg
	for m := int64(0); m < 3*1440; m++ {
		seq++
		msgs = append(msgs, replication.ClickMsg{Batch: &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: seq,
			Links: []*linkpb.LinkMinute{{Code: "abc", MinuteUnix: day0.Unix() + 60*m, Clicks: 1, Visitors: []uint64{mix(uint64(m))}}}}})
	}
	if err := st.ApplyClicks(msgs); err != nil {
		t.Fatal(err)
	}
	f := func(from, to time.Time, iv string) {
		t.Helper()
		r, err := ParseRange(from.Format(time.RFC3339), to.Format(time.RFC3339), iv, day0)
		if err != nil {
			t.Fatal(err)
		}
		s, err := st.LinkStats("abc", r)
		if err != nil {
			t.Fatal(err)
		}
		exact := int(r.To.Sub(r.From) / time.Minute)
		if int(s.Clicks) != exact {
			t.Fatalf("%v..%v %s: clicks %d, want %d", from, to, iv, s.Clicks, exact)
		}
		if d := float64(s.Uniques) - float64(exact); d > hllBound(exact) || -d > hllBound(exact) {
			t.Fatalf("%v..%v %s: uniques %d, exact %d", from, to, iv, s.Uniques, exact)
		}
	}
	f(day0.Add(5*time.Hour), day0.Add(55*time.Hour), "hour")
	f(day0.Add(5*time.Hour+7*time.Minute), day0.Add(50*time.Hour+3*time.Minute), "minute")
	f(day0.Add(23*time.Hour+59*time.Minute), day0.Add(24*time.Hour+time.Minute), "minute")
	f(day0, day0.Add(72*time.Hour), "day")
	f(day0.Add(time.Hour), day0.Add(2*time.Hour), "hour")
}

func TestConfigValidate(t *testing.T) {
	nats := replication.ConnConfig{URLs: []string{"nats://127.0.0.1:1"}}
	f := func(c Config, wantErr bool) {
		t.Helper()
		if err := c.Validate(); (err != nil) != wantErr {
			t.Fatalf("Validate(%+v) = %v, want error %v", c, err, wantErr)
		}
	}
	f(Config{Dir: "x", NATS: nats}, false)
	f(Config{NATS: nats}, true)
	f(Config{Dir: "x"}, true)
	f(Config{Dir: "x", NATS: nats, AckWait: 5 * time.Minute}, true)
	f(Config{Dir: "x", NATS: nats, AckWait: 5 * time.Minute, GapTimeout: 10 * time.Minute}, false)
	f(Config{Dir: "x", NATS: nats, Durable: "bad name"}, true)
	f(Config{Dir: "x", NATS: nats, Partition: 1, Partitions: 2}, false)
	f(Config{Dir: "x", NATS: nats, Partition: 2, Partitions: 2}, true)
	f(Config{Dir: "x", NATS: nats, Partition: -1, Partitions: 2}, true)
	f(Config{Dir: "x", NATS: nats, Partitions: MaxPartitions + 1}, true)
	f(Config{Dir: "x", NATS: nats, StatsListen: "127.0.0.1:0"}, true)
	f(Config{Dir: "x", NATS: nats, StatsListen: "127.0.0.1:0", StatsToken: "t"}, false)
	f(Config{Dir: "x", NATS: nats, BreakdownLimit: 1}, true)
	f(Config{Dir: "x", NATS: nats, RetireAfter: -time.Second}, true)
}
