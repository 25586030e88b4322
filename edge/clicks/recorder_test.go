package clicks

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/linkpop/linkpop/proto/linkpb"
)

const (
	uaChrome  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	uaIPhone  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
	uaSlack   = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
	uaGoogle  = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	uaFirefox = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
)

var testKey = NewVisitorKey([]byte("0123456789abcdef-test-key"))

// sealAll seals r with a fresh builder, as the shipper does.
func sealAll(b *builder, r *Recorder) ([]*linkpb.LinkMinute, sealStats) {
	olds := make([]*agg, len(r.shards))
	for i := range r.shards {
		olds[i] = r.shards[i].swap(newAgg(), false)
	}
	b.learn(olds)
	return b.build(olds)
}

func find(t *testing.T, links []*linkpb.LinkMinute, code string) *linkpb.LinkMinute {
	t.Helper()
	for _, lm := range links {
		if lm.Code == code {
			return lm
		}
	}
	t.Fatalf("no entry for %q in %v", code, links)
	return nil
}

func counts(kc []*linkpb.KeyCount) map[string]uint64 {
	m := map[string]uint64{}
	for _, k := range kc {
		m[k.Key] = k.Count
	}
	return m
}

// TestRecorderViralCode hammers one code from many goroutines (each its
// own stripe, as connections are) and checks the count is exact, the
// visitors are exactly the distinct ones, and nothing is dropped.
func TestRecorderViralCode(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	const goroutines, per, visitorsPer = 64, 2000, 50
	now := time.Unix(1_700_000_040, 0)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ua := []byte(uaChrome)
			for i := range per {
				addr := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i % visitorsPer)})
				r.Record(&Click{Code: []byte("viral1"), Time: now, Addr: addr, UserAgent: ua, Stripe: uint64(g)})
			}
		})
	}
	wg.Wait()
	links, st := sealAll(newBuilder(), r)
	if len(links) != 1 {
		t.Fatalf("got %d entries, want 1", len(links))
	}
	lm := links[0]
	if lm.Clicks != goroutines*per || lm.Bots != 0 || st.recorded != goroutines*per || st.dropped != 0 || st.degraded != 0 {
		t.Fatalf("clicks %d bots %d recorded %d dropped %d degraded %d, want %d clicks", lm.Clicks, lm.Bots, st.recorded, st.dropped, st.degraded, goroutines*per)
	}
	if len(lm.Visitors) != goroutines*visitorsPer {
		t.Fatalf("visitors %d, want %d", len(lm.Visitors), goroutines*visitorsPer)
	}
	if lm.MinuteUnix != 1_700_000_040-1_700_000_040%60 {
		t.Fatalf("minute %d", lm.MinuteUnix)
	}
}

// TestRecorderBreakdowns checks bots, devices, browsers, OS, referrers and
// countries against a plain count, over two seals (so the second one uses
// what the first learnt).
func TestRecorderBreakdowns(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	b := newBuilder()
	now := time.Unix(1_700_000_000, 0)
	us := netip.MustParseAddr("8.8.8.8")
	private := netip.MustParseAddr("192.168.1.10")
	rec := func(ua, ref string, addr netip.Addr, stripe uint64) {
		r.Record(&Click{Code: []byte("abc"), Time: now, Addr: addr, UserAgent: []byte(ua), Referer: []byte(ref), Stripe: stripe})
	}
	for round := range 2 {
		for i := range 10 {
			rec(uaChrome, "https://News.Example.com:8443/a?b", us, uint64(i))
		}
		for i := range 5 {
			rec(uaIPhone, "", private, uint64(i))
		}
		rec(uaSlack, "https://slack.com/", us, 3)
		rec(uaGoogle, "", us, 4)
		rec(uaFirefox, "not a url", private, 5)
		links, st := sealAll(b, r)
		lm := find(t, links, "abc")
		if lm.Clicks != 16 || lm.Bots != 2 || st.recorded != 18 {
			t.Fatalf("round %d: clicks %d bots %d recorded %d", round, lm.Clicks, lm.Bots, st.recorded)
		}
		// Chrome at 8.8.8.8, iPhone at 192.168.1.10, Firefox there: 3 visitors.
		if len(lm.Visitors) != 3 {
			t.Fatalf("round %d: %d visitors, want 3", round, len(lm.Visitors))
		}
		eq := func(what string, got map[string]uint64, want map[string]uint64) {
			t.Helper()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("round %d: %s = %v, want %v", round, what, got, want)
			}
		}
		eq("referrers", counts(lm.Referrers), map[string]uint64{"news.example.com": 10, "": 6})
		eq("countries", counts(lm.Countries), map[string]uint64{"US": 10, "ZZ": 6})
		eq("devices", counts(lm.Devices), map[string]uint64{"desktop": 11, "mobile": 5, "bot": 2})
		dev := counts(lm.Browsers)
		if dev["Chrome"] != 10 || dev["Safari"] != 5 || dev["Firefox"] != 1 {
			t.Errorf("round %d: browsers %v", round, dev)
		}
		os := counts(lm.Os)
		if os["Windows"] != 10 || os["iOS"] != 5 || os["Linux"] != 1 {
			t.Errorf("round %d: os %v", round, os)
		}
	}
}

// TestRecorderBound fills a tiny recorder: clicks on held codes still
// count, clicks needing a new entry are dropped and counted.
func TestRecorderBound(t *testing.T) {
	r := NewRecorder(testKey, Limits{Entries: 1})
	r.perShard = 4 // the code (with its first tuple and visitor) + 3 visitors
	now := time.Unix(1_700_000_000, 0)
	for i := range 10 {
		r.Record(&Click{Code: []byte("held"), Time: now, Addr: netip.AddrFrom4([4]byte{1, 2, 3, byte(i)}), UserAgent: []byte(uaChrome)})
	}
	r.Record(&Click{Code: []byte("other"), Time: now, Addr: netip.AddrFrom4([4]byte{1, 2, 3, 4}), UserAgent: []byte(uaChrome)})
	links, st := sealAll(newBuilder(), r)
	lm := find(t, links, "held")
	if lm.Clicks != 10 || len(lm.Visitors) != 4 || st.dropped != 1 || st.recorded != 11 || st.degraded != 6 {
		t.Fatalf("clicks %d visitors %d dropped %d recorded %d degraded %d", lm.Clicks, len(lm.Visitors), st.dropped, st.recorded, st.degraded)
	}
}

// TestRecorderForget: once the shipper forgets what it learnt, the
// shards send the strings again and classification stays right.
func TestRecorderForget(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	b := newBuilder()
	now := time.Unix(1_700_000_000, 0)
	rec := func() {
		r.Record(&Click{Code: []byte("f1"), Time: now, Addr: netip.AddrFrom4([4]byte{1, 1, 1, 1}), UserAgent: []byte(uaGoogle), Referer: []byte("https://a.example/")})
	}
	seal := func(forget bool) *linkpb.LinkMinute {
		olds := make([]*agg, len(r.shards))
		for i := range r.shards {
			olds[i] = r.shards[i].swap(newAgg(), forget)
		}
		b.learn(olds)
		links, _ := b.build(olds)
		if forget {
			clear(b.uaClass)
			clear(b.refStr)
		}
		return find(t, links, "f1")
	}
	rec()
	seal(false)
	rec()
	if lm := seal(true); lm.Bots != 1 {
		t.Fatalf("before forgetting: bots %d", lm.Bots)
	}
	rec()
	if lm := seal(false); lm.Bots != 1 || lm.Clicks != 0 {
		t.Fatalf("after forgetting: bots %d clicks %d", lm.Bots, lm.Clicks)
	}
}

// TestRecordAllocs: steady-state recording does not allocate.
func TestRecordAllocs(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	c := &Click{Code: []byte("abc"), Time: time.Now(), Addr: netip.MustParseAddr("8.8.8.8"), UserAgent: []byte(uaChrome), Referer: []byte("https://t.co/x")}
	r.Record(c)
	if n := testing.AllocsPerRun(1000, func() { r.Record(c) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}

func TestSplit(t *testing.T) {
	var links []*linkpb.LinkMinute
	for i := range 50 {
		lm := &linkpb.LinkMinute{Code: fmt.Sprintf("code%02d", i), MinuteUnix: 60, Clicks: 300, Bots: 1,
			Referrers: []*linkpb.KeyCount{{Key: "x.example", Count: 300}}}
		for v := range 200 {
			lm.Visitors = append(lm.Visitors, uint64(i*1000+v))
		}
		links = append(links, lm)
	}
	big := &linkpb.LinkMinute{Code: "huge", MinuteUnix: 120, Clicks: 5000, Bots: 7, Devices: []*linkpb.KeyCount{{Key: "bot", Count: 7}}}
	for v := range 4000 {
		big.Visitors = append(big.Visitors, uint64(1e9+v))
	}
	links = append(links, big)
	const limit = 8 << 10
	groups := split(links, limit)
	var clicks, bots, visitors uint64
	for _, g := range groups {
		b := &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1, Links: g}
		data, err := marshalForTest(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > limit {
			t.Fatalf("batch of %d bytes over %d", len(data), limit)
		}
		seen := map[string]bool{}
		for _, lm := range g {
			if seen[lm.Code] {
				t.Fatalf("two entries for %s in one batch", lm.Code)
			}
			seen[lm.Code] = true
			clicks += lm.Clicks
			bots += lm.Bots
			visitors += uint64(len(lm.Visitors))
		}
	}
	if clicks != 50*300+5000 || bots != 57 || visitors != 50*200+4000 {
		t.Fatalf("split sums: clicks %d bots %d visitors %d", clicks, bots, visitors)
	}
	if len(groups) < 3 {
		t.Fatalf("only %d groups", len(groups))
	}
}

// TestSipHash checks the reference vectors of SipHash-2-4 (key 00..0f,
// message 00..n-1) for messages of 16 bytes and more, the only lengths
// Visitor hashes.
func TestSipHash(t *testing.T) {
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	m0, m1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	f := func(n int, want uint64) {
		t.Helper()
		if got := sipHash(k0, k1, m0, m1, msg[16:n]); got != want {
			t.Errorf("siphash of %d bytes = %#x, want %#x", n, got, want)
		}
	}
	f(16, 0x3f2acc7f57c29bdb)
	f(17, 0x699ae9f52cbe4794)
	f(63, 0x958a324ceb064572)
}
