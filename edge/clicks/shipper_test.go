package clicks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// clickStream is an embedded JetStream with the click stream and a
// publisher on it.
type clickStream struct {
	ns  *natstest.Server
	js  jetstream.JetStream
	pub *replication.ClickPublisher
}

func startClickStream(t *testing.T) *clickStream {
	t.Helper()
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}, ReconnectWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replication.EnsureClickStream(ctx, js, replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}
	pub, err := replication.NewClickPublisher(nc, replication.ClickStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &clickStream{ns: ns, js: js, pub: pub}
}

// shipped is one message of the click stream.
type shipped struct {
	msgID string
	data  []byte
	b     *linkpb.ClickBatch
}

// read returns every message of the click stream in stream order, each
// decoded by link.UnmarshalClickBatch.
func (s *clickStream) read(t *testing.T) []shipped {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, "LINKPOP_CLICKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []shipped
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get click message %d: %v", seq, err)
		}
		b, err := link.UnmarshalClickBatch(m.Data)
		if err != nil {
			t.Fatalf("click message %d: %v", seq, err)
		}
		out = append(out, shipped{msgID: m.Header.Get(jetstream.MsgIDHeader), data: m.Data, b: b})
	}
	return out
}

// totals sums the clicks and bots of batches.
func totals(msgs []shipped) (clicks, bots, dropped uint64) {
	for _, m := range msgs {
		dropped += m.b.Dropped
		for _, lm := range m.b.Links {
			clicks += lm.Clicks
			bots += lm.Bots
		}
	}
	return
}

// checkOrder checks that the batches of each (edge, instance) are numbered
// 1, 2, 3, ... in stream order, with non-decreasing through marks, and
// carry the message id ClickMsgID.
func checkOrder(t *testing.T, msgs []shipped) {
	t.Helper()
	next := map[string]uint64{}
	through := map[string]int64{}
	for i, m := range msgs {
		k := m.b.Edge + ":" + m.b.Instance
		if next[k] == 0 {
			next[k] = 1
		}
		if m.b.Seq != next[k] {
			t.Fatalf("message %d: %s seq %d, want %d", i, k, m.b.Seq, next[k])
		}
		next[k]++
		if m.b.ThroughUnixMs < through[k] {
			t.Fatalf("message %d: through %d went back from %d", i, m.b.ThroughUnixMs, through[k])
		}
		through[k] = m.b.ThroughUnixMs
		if want := replication.ClickMsgID(m.b.Edge, m.b.Instance, m.b.Seq); m.msgID != want {
			t.Fatalf("message %d: Nats-Msg-Id %q, want %q", i, m.msgID, want)
		}
	}
}

// runShipper runs a shipper until the returned stop is called (or the
// test ends).
func runShipper(t *testing.T, cfg ShipperConfig) (*Shipper, func()) {
	t.Helper()
	sh, err := NewShipper(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shipper Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return sh, stop
}

func clickFrom(code string, i int) *Click {
	return &Click{Code: []byte(code), Time: time.Now(), Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}),
		UserAgent: []byte(uaChrome), Referer: []byte("https://news.example/"), Stripe: uint64(i)}
}

// TestShipperOrderAndMarks: batches arrive in seq order, without gaps,
// empty ones carry through marks, and every click arrives once.
func TestShipperOrderAndMarks(t *testing.T) {
	leaktest.Check(t)
	cs := startClickStream(t)
	rec := NewRecorder(testKey, Limits{})
	set := metrics.NewSet()
	sh, stop := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: t.TempDir(), Recorder: rec, Publisher: cs.pub, Flush: 20 * time.Millisecond, Metrics: set})
	const n = 500
	for i := range n {
		rec.Record(clickFrom("ord1", i))
	}
	start := time.Now().UnixMilli()
	wait.For(t, 20*time.Second, "empty batches with later through marks", func() bool {
		msgs := cs.read(t)
		empty := 0
		for _, m := range msgs {
			if len(m.b.Links) == 0 && m.b.ThroughUnixMs > start {
				empty++
			}
		}
		return empty >= 3
	})
	for i := range n {
		rec.Record(clickFrom("ord2", i))
	}
	stop()
	msgs := cs.read(t)
	checkOrder(t, msgs)
	clicks, bots, dropped := totals(msgs)
	if clicks != 2*n || bots != 0 || dropped != 0 {
		t.Fatalf("shipped clicks %d bots %d dropped %d, want %d clicks", clicks, bots, dropped, 2*n)
	}
	if msgs[0].b.Edge != "edge-1" || msgs[0].b.Instance != sh.Instance() {
		t.Fatalf("first batch from %s/%s", msgs[0].b.Edge, msgs[0].b.Instance)
	}
	if got := set.GetOrCreateCounter("linkpop_edge_clicks_shipped_total").Get(); got != 2*n {
		t.Fatalf("shipped metric %d", got)
	}
	// No raw address in what was shipped.
	for _, m := range msgs {
		for i := range 256 {
			for _, raw := range [][]byte{{203, 0, 113, byte(i)}, []byte(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}).String())} {
				if bytes.Contains(m.data, raw) {
					t.Fatalf("batch %d holds the client address %v", m.b.Seq, raw)
				}
			}
		}
	}
}

// TestShipperOutage: NATS stops in the middle and comes back; every click
// is shipped exactly once, in order, and the spill is counted.
func TestShipperOutage(t *testing.T) {
	leaktest.Check(t)
	cs := startClickStream(t)
	rec := NewRecorder(testKey, Limits{})
	set := metrics.NewSet()
	dir := t.TempDir()
	_, stop := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: rec, Publisher: cs.pub, Flush: 20 * time.Millisecond, Metrics: set})
	published := set.GetOrCreateCounter("linkpop_edge_click_batches_published_total")
	sent := 0
	burst := func(code string) {
		for i := range 200 {
			rec.Record(clickFrom(code, i))
			sent++
		}
	}
	burst("out1")
	wait.For(t, 20*time.Second, "first batches published", func() bool { return published.Get() >= 2 })
	cs.ns.Stop()
	spill := set.GetOrCreateCounter("linkpop_edge_click_publish_errors_total")
	for i := range 3 {
		burst("out" + string(rune('a'+i)))
		before := spill.Get()
		wait.For(t, 20*time.Second, "a failed publish", func() bool { return spill.Get() > before })
	}
	entries, _ := os.ReadDir(dir)
	batches := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".batch") {
			batches++
		}
	}
	if batches == 0 {
		t.Fatal("no batch waits on disk during the outage")
	}
	cs.ns.Restart()
	burst("out2")
	wait.For(t, 30*time.Second, "the spill shipped", func() bool {
		clicks, _, _ := totals(cs.read(t))
		return clicks == uint64(sent)
	})
	stop()
	msgs := cs.read(t)
	checkOrder(t, msgs)
	if clicks, _, _ := totals(msgs); clicks != uint64(sent) {
		t.Fatalf("shipped %d clicks, sent %d", clicks, sent)
	}
	if set.GetOrCreateCounter("linkpop_edge_clicks_spilled_total").Get() == 0 {
		t.Fatal("spilled clicks not counted")
	}
}

// TestShipperStopFlush: stopping the shipper (SIGTERM) ships every click
// recorded before; with NATS down they wait on disk and the next run on
// the same journal ships them, continuing the sequence.
func TestShipperStopFlush(t *testing.T) {
	leaktest.Check(t)
	cs := startClickStream(t)
	dir := t.TempDir()
	rec := NewRecorder(testKey, Limits{})
	// A flush interval longer than the test: only the stop seals.
	_, stop := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: rec, Publisher: cs.pub, Flush: time.Minute})
	for i := range 300 {
		rec.Record(clickFrom("stop1", i))
	}
	stop()
	if clicks, _, _ := totals(cs.read(t)); clicks != 300 {
		t.Fatalf("after stop: %d clicks shipped, want 300", clicks)
	}

	cs.ns.Stop()
	rec2 := NewRecorder(testKey, Limits{})
	sh2, stop2 := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: rec2, Publisher: cs.pub, Flush: time.Minute, DrainTimeout: 200 * time.Millisecond})
	for i := range 100 {
		rec2.Record(clickFrom("stop2", i))
	}
	stop2()
	cs.ns.Restart()
	_, stop3 := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: NewRecorder(testKey, Limits{}), Publisher: cs.pub, Flush: time.Minute})
	wait.For(t, 20*time.Second, "the journal shipped", func() bool {
		clicks, _, _ := totals(cs.read(t))
		return clicks == 400
	})
	stop3()
	msgs := cs.read(t)
	checkOrder(t, msgs)
	if msgs[len(msgs)-1].b.Instance != sh2.Instance() {
		t.Fatal("instance changed across restarts")
	}
}

// TestShipperSplit: a seal larger than the batch limit becomes consecutive
// batches; only the last carries the new through mark.
func TestShipperSplit(t *testing.T) {
	cs := startClickStream(t)
	rec := NewRecorder(testKey, Limits{})
	sh, err := NewShipper(ShipperConfig{Edge: "edge-1", Dir: t.TempDir(), Recorder: rec, Publisher: cs.pub, maxBatchLen: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Seal(); err != nil {
		t.Fatal(err)
	}
	first := sh.through
	for c := range 40 {
		for i := range 30 {
			rec.Record(clickFrom(fmt.Sprintf("split%02d", c), i))
		}
	}
	if err := sh.Seal(); err != nil {
		t.Fatal(err)
	}
	var pending []*entry
	pending = append(pending, sh.j.pending...)
	if len(pending) < 4 {
		t.Fatalf("%d batches, want the second seal split", len(pending))
	}
	var clicks uint64
	for i, e := range pending {
		data, err := os.ReadFile(e.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 4<<10 {
			t.Fatalf("batch %d: %d bytes", e.seq, len(data))
		}
		b, err := link.UnmarshalClickBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		if b.Seq != uint64(i+1) {
			t.Fatalf("batch %d has seq %d", i, b.Seq)
		}
		switch {
		case i == 0 || i == len(pending)-1:
		case b.ThroughUnixMs != first:
			t.Fatalf("batch %d of the split carries through %d, want the previous mark %d", b.Seq, b.ThroughUnixMs, first)
		}
		for _, lm := range b.Links {
			clicks += lm.Clicks
		}
	}
	if clicks != 40*30 {
		t.Fatalf("%d clicks in the split batches", clicks)
	}
	if last := pending[len(pending)-1]; last.sealedAt.UnixMilli() != sh.through {
		t.Fatal("last batch does not carry the new mark")
	}
}

// failingPublisher never reaches the stream.
type failingPublisher struct{}

func (failingPublisher) PublishClicks(context.Context, string, string, uint64, []byte) error {
	return errors.New("unreachable")
}

// TestShipperSpillBound: at the journal's bound batches lose their detail,
// then their clicks, and every lost click is counted as dropped in the
// next batch that fits.
func TestShipperSpillBound(t *testing.T) {
	cs := startClickStream(t)
	dir := t.TempDir()
	rec := NewRecorder(testKey, Limits{})
	set := metrics.NewSet()
	sh, err := NewShipper(ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: rec, Publisher: failingPublisher{}, SpillMaxBytes: 3000, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for round := range 20 {
		for i := range 50 {
			rec.Record(clickFrom("bound"+string(rune('a'+round)), i))
			sent++
		}
		if err := sh.Seal(); err != nil && !errors.Is(err, ErrSpillFull) {
			t.Fatal(err)
		}
	}
	if set.GetOrCreateCounter("linkpop_edge_click_batches_reduced_total").Get() == 0 {
		t.Fatal("no batch reduced at the bound")
	}
	dropped := set.GetOrCreateCounter("linkpop_edge_clicks_dropped_total").Get()
	if dropped == 0 {
		t.Fatal("no click dropped at the bound")
	}
	// Ship what is on disk; the next batch that fits reports the drops.
	_, stop := runShipper(t, ShipperConfig{Edge: "edge-1", Dir: dir, Recorder: rec, Publisher: cs.pub, Flush: 20 * time.Millisecond, Metrics: metrics.NewSet(), SpillMaxBytes: 3000})
	wait.For(t, 20*time.Second, "shipped and dropped add up", func() bool {
		clicks, _, dr := totals(cs.read(t))
		return clicks+dr == uint64(sent)
	})
	stop()
	msgs := cs.read(t)
	checkOrder(t, msgs)
	_, _, dr := totals(msgs)
	if dr != dropped {
		t.Fatalf("batches report %d dropped, metrics %d", dr, dropped)
	}
	if _, err := os.Stat(filepath.Join(dir, "meta")); err != nil {
		t.Fatal(err)
	}
}

// TestSealPaced: a paced seal (Run's, every flush interval) pauses at
// least every sealSlice units of work (plus one User-Agent's
// classification), so with GOMAXPROCS=1 it never holds the core for the
// whole interval's clicks; its batch still counts every click. Seal, the
// quick one, does not pause.
func TestSealPaced(t *testing.T) {
	rec := NewRecorder(testKey, Limits{})
	sh, err := NewShipper(ShipperConfig{Edge: "edge-1", Dir: t.TempDir(), Recorder: rec, Publisher: failingPublisher{}})
	if err != nil {
		t.Fatal(err)
	}
	var pauses int
	sh.pause = func(time.Duration) { pauses++ }
	const n = 20_000
	for i := range n {
		rec.Record(clickFrom(fmt.Sprintf("paced%05d", i), i))
	}
	if err := sh.seal(true, nil); err != nil {
		t.Fatal(err)
	}
	p := sh.lastPacer
	// Every click is a unit when its log is added up and another when
	// its entry is encoded.
	if min := 2 * n / (sealSlice + classifyUnits); pauses != p.pauses || pauses < min {
		t.Fatalf("%d pauses (pacer counted %d) for %d clicks, want at least %d", pauses, p.pauses, n, min)
	}
	if p.longest >= sealSlice+classifyUnits {
		t.Fatalf("%d units of work without a pause, want under %d", p.longest, sealSlice+classifyUnits)
	}
	if clicks, _, _, _ := journaled(t, sh); clicks != n {
		t.Fatalf("paced seal journaled %d clicks, want %d", clicks, n)
	}

	pauses = 0
	for i := range n {
		rec.Record(clickFrom(fmt.Sprintf("quick%05d", i), i))
	}
	if err := sh.Seal(); err != nil {
		t.Fatal(err)
	}
	if pauses != 0 {
		t.Fatalf("Seal paused %d times", pauses)
	}
}
