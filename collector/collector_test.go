package collector

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// hllBound is the tolerance of a uniques estimate: four standard errors
// of precision 14 (0.81 %), and at least 2 for tiny sets.
func hllBound(exact int) float64 { return math.Max(2, 4*0.0081*float64(exact)) }

// checkModel compares the store's stats of every code at every level
// over the whole generated range with the model.
func checkModel(t *testing.T, s Source, m *model, g *gen) {
	t.Helper()
	from := time.Unix(g.base, 0).UTC()
	to := from.Add(time.Duration(g.minutes) * time.Minute)
	type q struct {
		from, to time.Time
		iv       string
	}
	qs := []q{{from, to, "minute"}, {from, to, "hour"}, {from, to, "day"},
		// A range that does not fall on hours: the uniques merge minutes
		// and hours.
		{from.Add(7 * time.Minute), to.Add(-13 * time.Minute), "minute"}}
	if g.minutes >= 180 {
		qs = append(qs, q{from.Add(61 * time.Minute), to.Add(-59 * time.Minute), "minute"})
	}
	for _, q := range qs {
		iv := q.iv
		r, err := ParseRange(q.from.Format(time.RFC3339), q.to.Format(time.RFC3339), iv, to)
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range g.codes {
			st, err := s.LinkStats(code, r)
			if err != nil {
				t.Fatal(err)
			}
			clicks, bots, vis, series, dims := m.stats(code, r)
			if st.Clicks != clicks || st.Bots != bots {
				t.Fatalf("%s %s: clicks %d bots %d, model %d %d", code, iv, st.Clicks, st.Bots, clicks, bots)
			}
			if d := math.Abs(float64(st.Uniques) - float64(vis)); d > hllBound(vis) {
				t.Fatalf("%s %s: uniques %d, exact %d", code, iv, st.Uniques, vis)
			}
			if len(st.Series) != len(series) {
				t.Fatalf("%s %s: %d points, model %d", code, iv, len(st.Series), len(series))
			}
			for i, p := range st.Series {
				w := series[i]
				if !p.T.Equal(w.T) || p.Clicks != w.Clicks || p.Bots != w.Bots ||
					math.Abs(float64(p.Uniques)-float64(w.Uniques)) > hllBound(int(w.Uniques)) {
					t.Fatalf("%s %s point %d: %+v, model %+v", code, iv, i, p, w)
				}
			}
			for d, got := range [][]KeyCount{st.Referrers, st.Countries, st.Devices, st.Browsers, st.OS, st.Edges} {
				want := top(dims[d])
				if len(got) != len(want) {
					t.Fatalf("%s %s dim %d: %v, model %v", code, iv, d, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s %s dim %d: %v, model %v", code, iv, d, got, want)
					}
				}
			}
		}
	}
}

// TestExactnessThroughJetStream ships scripted batches from two edges
// (with re-sent duplicates that the stream's dedup window does not
// catch, as after a long outage) through a real embedded JetStream into
// a running collector: every count equals the plain model exactly, the
// uniques within the HyperLogLog bound.
func TestExactnessThroughJetStream(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	set := metrics.NewSet()
	c, err := New(Config{
		Dir:     t.TempDir(),
		NATS:    replication.ConnConfig{URLs: []string{ns.URL()}},
		Metrics: set,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	stop := runCollector(t, c)
	defer stop()

	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 30, 22, 0, 0, 0, time.UTC).Unix()
	g := &gen{rng: rng, codes: codesN(12), base: base, minutes: 180, visitors: 5000}
	m := newModel()
	var sent []*linkpb.ClickBatch
	for i := 1; i <= 60; i++ {
		for _, edge := range []string{"edge-a", "edge-b"} {
			b := g.batch(edge, "inst1", uint64(i), (base+int64(i)*180)*1000, 25)
			m.add(b)
			sent = append(sent, b)
			if err := replication.PublishClickBatch(ctx, nc, replication.ClickStreamConfig{}, b); err != nil {
				t.Fatal(err)
			}
			// A re-send with another message id: only the collector's
			// sequence check can refuse it.
			if rng.IntN(4) == 0 {
				old := sent[rng.IntN(len(sent))]
				data, _ := link.MarshalClickBatch(old)
				if err := replication.PublishClickData(ctx, nc, "linkpop.clicks."+old.Edge, "resend-"+old.Edge+"-"+time.Now().String(), data); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	wait.For(t, 30*time.Second, "both edges applied through seq 60", func() bool {
		return c.LastSeq("edge-a", "inst1") == 60 && c.LastSeq("edge-b", "inst1") == 60
	})
	// Let any re-send still in flight arrive: the consumer has nothing
	// pending once it acknowledged everything.
	wait.For(t, 30*time.Second, "consumer drained", func() bool {
		st := c.cons.Status()
		return st.Pending == 0 && st.AckPending == 0
	})
	checkModel(t, c.Store, m, g)
	cp := c.Completeness(time.Unix(base, 0).Add(4 * time.Hour))
	if cp.CompleteThrough == nil || cp.CompleteThrough.UnixMilli() != (base+60*180)*1000 {
		t.Fatalf("complete_through %v, want %v", cp.CompleteThrough, time.UnixMilli((base+60*180)*1000))
	}
	if got := set.GetOrCreateCounter("linkpop_collector_duplicates_refused_total").Get(); got == 0 {
		t.Fatal("no duplicate was refused; the test did not exercise the sequence check")
	}
}
