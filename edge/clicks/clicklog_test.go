package clicks

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// openLogShipper opens a shipper on dir whose batches stay in the journal
// (the publisher always fails and Run is never called), with a recorder
// of its own: each call is a new process on the same data directory.
func openLogShipper(t *testing.T, dir string, lim Limits) (*Recorder, *Shipper) {
	t.Helper()
	r := NewRecorder(testKey, lim)
	s, err := NewShipper(ShipperConfig{Edge: "logtest", Dir: dir, Recorder: r, Publisher: failingPublisher{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.cl == nil {
		t.Skip("no shared file mappings on this platform")
	}
	return r, s
}

// journaled sums the journal's batches: clicks, bots, and the referrer
// and device breakdowns.
func journaled(t *testing.T, s *Shipper) (clicks, bots uint64, refs, devices map[string]uint64) {
	t.Helper()
	refs, devices = map[string]uint64{}, map[string]uint64{}
	s.j.mu.Lock()
	pending := append([]*entry(nil), s.j.pending...)
	s.j.mu.Unlock()
	for _, e := range pending {
		data, err := batchData(e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := link.UnmarshalClickBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, lm := range b.Links {
			clicks += lm.Clicks
			bots += lm.Bots
			add := func(m map[string]uint64, kcs []*linkpb.KeyCount) {
				for _, kc := range kcs {
					m[kc.Key] += kc.Count
				}
			}
			add(refs, lm.Referrers)
			add(devices, lm.Devices)
		}
	}
	return clicks, bots, refs, devices
}

// recordMix records n clicks on a few codes: every fifth from a bot, every
// other with a referrer.
func recordMix(r *Recorder, n int) {
	now := time.Now()
	for i := range n {
		c := &Click{Code: []byte(fmt.Sprintf("logc%02d", i%7)), Time: now, Addr: netip.AddrFrom4([4]byte{8, 8, byte(i >> 8), byte(i)}),
			UserAgent: []byte(uaChrome), Stripe: uint64(i)}
		if i%5 == 0 {
			c.UserAgent = []byte(uaGoogle)
		}
		if i%2 == 0 {
			c.Referer = []byte("https://News.Example/item")
		}
		r.Record(c)
	}
}

// TestClickLogRestore: clicks recorded after the last seal of a process
// that ends without sealing (a SIGKILL: its logs are in the file) are
// recorded again by the next process on the same directory and ship in
// its first seal, breakdowns and bots included; clicks sealed before are
// not counted again.
func TestClickLogRestore(t *testing.T) {
	dir := t.TempDir()
	r, s := openLogShipper(t, dir, Limits{})
	recordMix(r, 100)
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	recordMix(r, 50) // 10 bots, 25 with a referrer: in the log only

	// The next process.
	_, s2 := openLogShipper(t, dir, Limits{})
	if got := s2.met.restored.Get(); got != 50 {
		t.Fatalf("restored %d clicks, want 50", got)
	}
	if err := s2.Seal(); err != nil {
		t.Fatal(err)
	}
	clicks, bots, refs, devices := journaled(t, s2)
	if clicks != 120 || bots != 30 || refs["news.example"] != 60 || devices["bot"] != 30 {
		t.Fatalf("journal: clicks %d bots %d refs %v devices %v; want 120, 30, 60 from news.example", clicks, bots, refs, devices)
	}

	// A third process finds nothing more to add back.
	_, s3 := openLogShipper(t, dir, Limits{})
	if got := s3.met.restored.Get(); got != 0 {
		t.Fatalf("restored %d clicks after a clean seal", got)
	}
}

// TestClickLogCrashWindows: the two places a crash can land in a seal.
// Between the journal and the done flag, the region is covered by the
// journal and not added back; between the batch files of a seal of
// several batches, the batches written are removed (never published) and
// the region is added back: every click counted once either way.
func TestClickLogCrashWindows(t *testing.T) {
	t.Run("journaled, not done", func(t *testing.T) {
		dir := t.TempDir()
		r, s := openLogShipper(t, dir, Limits{})
		recordMix(r, 40)
		// Seal, then put its regions' headers back as they were between
		// the journal and the done flag: as if killed there.
		regs := []*region{}
		for i := range r.shards {
			regs = append(regs, r.shards[i].cur.reg)
		}
		gens := make([]uint64, len(regs))
		for i, g := range regs {
			gens[i] = g.gen()
		}
		if err := s.Seal(); err != nil {
			t.Fatal(err)
		}
		seq := s.j.nextSeq() - 1
		for i, g := range regs {
			g.set(gens[i], seq, seq, 0)
		}
		_, s2 := openLogShipper(t, dir, Limits{})
		if got := s2.met.restored.Get(); got != 0 {
			t.Fatalf("restored %d clicks already journaled", got)
		}
		if clicks, bots, _, _ := journaled(t, s2); clicks+bots != 40 {
			t.Fatalf("journal holds %d clicks, want 40", clicks+bots)
		}
	})
	t.Run("journaled in part", func(t *testing.T) {
		dir := t.TempDir()
		r, s := openLogShipper(t, dir, Limits{})
		recordMix(r, 40)
		regs := []*region{}
		for i := range r.shards {
			regs = append(regs, r.shards[i].cur.reg)
		}
		gens := make([]uint64, len(regs))
		for i, g := range regs {
			gens[i] = g.gen()
		}
		if err := s.Seal(); err != nil {
			t.Fatal(err)
		}
		seq := s.j.nextSeq() - 1
		// As if the seal had needed two batches and was killed between
		// them: its regions name seq and seq+1, and are not done (their
		// generation still that of the interval).
		for i, g := range regs {
			g.set(gens[i], seq, seq+1, 0)
		}
		_, s2 := openLogShipper(t, dir, Limits{})
		if got := s2.met.restored.Get(); got != 40 {
			t.Fatalf("restored %d clicks, want 40", got)
		}
		if n, _, _ := s2.j.state(); n != 0 || s2.j.nextSeq() != seq {
			t.Fatalf("journal: %d batches, next seq %d; want the partial seal's batch %d removed", n, s2.j.nextSeq(), seq)
		}
		if err := s2.Seal(); err != nil {
			t.Fatal(err)
		}
		if clicks, bots, _, _ := journaled(t, s2); clicks+bots != 40 {
			t.Fatalf("journal holds %d clicks, want 40", clicks+bots)
		}
	})
}

// TestClickLogTornRecord: a record whose tag was not written (the process
// stopped inside Record) ends the log; the records before it count.
func TestClickLogTornRecord(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	a := r.shards[0].cur
	a.tag = 9
	for i := range 3 {
		a.appendClick([]byte("torn"), 1_700_000_040, uint64(i), tuple{ua: reservedHash, ref: refDirect})
	}
	// The third record's tag, as if never written.
	third := 2 * recSize(4)
	copy(a.log[third:], []byte{8, 0, 0, 0})
	n := 0
	if used := scanLog(a.log, 9, func([]byte, byte) { n++ }); n != 2 || used != third {
		t.Fatalf("scanned %d records, %d bytes; want 2, %d", n, used, third)
	}
}

// TestSealForgetKeepsClasses: the seal at which the shipper forgets what
// it learnt (past maxKnownStrings) still classifies its own clicks: it
// forgets before it learns the interval's strings, not after.
func TestSealForgetKeepsClasses(t *testing.T) {
	r, s := openLogShipper(t, t.TempDir(), Limits{})
	recordMix(r, 50) // 10 bots
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	recordMix(r, 50)
	s.forgetNext = true
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	if clicks, bots, _, devices := journaled(t, s); clicks != 80 || bots != 20 || devices["bot"] != 20 {
		t.Fatalf("clicks %d bots %d devices %v; want 80, 20", clicks, bots, devices)
	}
}
