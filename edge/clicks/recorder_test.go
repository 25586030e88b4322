package clicks

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/link"
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

// sealAll seals r with b, as the shipper does.
func sealAll(b *builder, r *Recorder) ([]*linkpb.LinkMinute, sealStats) {
	return sealWith(b, r, false)
}

// sealWith swaps r's aggregates out (with forget, the shards forget the
// strings they sent), encodes them and decodes the batch sections back.
func sealWith(b *builder, r *Recorder, forget bool) ([]*linkpb.LinkMinute, sealStats) {
	olds := make([]*agg, len(r.shards))
	for i := range r.shards {
		olds[i] = r.take(i, newAgg())
		r.addLog(olds[i], nil)
	}
	b.learn(olds, nil)
	st := b.gather(olds)
	var e batchEnc
	e.reset(link.MaxClickBatchLen - batchOverhead)
	b.encode(&e, nil)
	e.flush()
	return decodeSections(&e), st
}

// decodeSections decodes the LinkMinutes of e's sections, each as the
// links of a batch.
func decodeSections(e *batchEnc) []*linkpb.LinkMinute {
	var links []*linkpb.LinkMinute
	e.sections(func(sec []byte, _ uint64) {
		var b linkpb.ClickBatch
		if err := proto.Unmarshal(sec, &b); err != nil {
			panic(err)
		}
		links = append(links, b.Links...)
	})
	return links
}

// find returns the entries of code added up, as the collector adds them:
// one per shard whose connections clicked it.
func find(t *testing.T, links []*linkpb.LinkMinute, code string) *linkpb.LinkMinute {
	t.Helper()
	var of []*linkpb.LinkMinute
	for _, lm := range links {
		if lm.Code == code {
			of = append(of, lm)
		}
	}
	if len(of) == 0 {
		t.Fatalf("no entry for %q in %v", code, links)
	}
	return addUp(of)
}

// addUp adds entries of one code and minute up: counts and breakdowns
// summed (breakdowns by count, then key), visitors deduplicated.
func addUp(of []*linkpb.LinkMinute) *linkpb.LinkMinute {
	sum := &linkpb.LinkMinute{Code: of[0].Code, MinuteUnix: of[0].MinuteUnix}
	dims := make([]map[string]uint64, 5)
	for i := range dims {
		dims[i] = map[string]uint64{}
	}
	for _, lm := range of {
		sum.Clicks += lm.Clicks
		sum.Bots += lm.Bots
		sum.Visitors = append(sum.Visitors, lm.Visitors...)
		for i, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
			for _, kc := range kcs {
				dims[i][kc.Key] += kc.Count
			}
		}
	}
	slices.Sort(sum.Visitors)
	sum.Visitors = slices.Compact(sum.Visitors)
	out := make([][]*linkpb.KeyCount, 5)
	for i, d := range dims {
		for k, n := range d {
			out[i] = append(out[i], &linkpb.KeyCount{Key: k, Count: n})
		}
		slices.SortFunc(out[i], func(x, y *linkpb.KeyCount) int {
			return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Key, y.Key))
		})
	}
	sum.Referrers, sum.Countries, sum.Devices, sum.Browsers, sum.Os = out[0], out[1], out[2], out[3], out[4]
	return sum
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
	if len(links) > len(r.shards) {
		t.Fatalf("got %d entries, want at most one per shard (%d)", len(links), len(r.shards))
	}
	lm := find(t, links, "viral1")
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
		links, _ := sealWith(b, r, forget)
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

// TestRecordAllocs: steady-state recording does not allocate, with a
// connection's Sender or without.
func TestRecordAllocs(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	for _, sender := range []*Sender{nil, {}} {
		c := &Click{Code: []byte("abc"), Time: time.Now(), Addr: netip.MustParseAddr("8.8.8.8"), UserAgent: []byte(uaChrome), Referer: []byte("https://t.co/x"), Sender: sender}
		r.Record(c)
		if n := testing.AllocsPerRun(1000, func() { r.Record(c) }); n != 0 {
			t.Fatalf("Record (sender %v) allocates %v times", sender != nil, n)
		}
	}
}

// TestRecordSender: clicks recorded through a connection's Sender, whose
// address and User-Agent change between requests (a proxy's connection,
// a long User-Agent past the cache), seal to exactly what the same
// clicks seal to without one.
func TestRecordSender(t *testing.T) {
	long := strings.Repeat("Mozilla/5.0 ", 60)
	uas := []string{uaChrome, uaChrome, uaIPhone, uaGoogle, uaChrome, long, long, uaFirefox, uaFirefox}
	addrs := []string{"81.2.69.160", "81.2.69.160", "81.2.69.160", "2001:db8::1", "8.8.8.8", "8.8.8.8", "81.2.69.160", "81.2.69.160", "8.8.8.8"}
	seal := func(sender *Sender) *linkpb.LinkMinute {
		r := NewRecorder(testKey, Limits{})
		now := time.Now()
		for i := range 3 * len(uas) {
			r.Record(&Click{Code: []byte("snd"), Time: now, Addr: netip.MustParseAddr(addrs[i%len(addrs)]), UserAgent: []byte(uas[i%len(uas)]), Sender: sender})
		}
		links, _ := sealAll(newBuilder(), r)
		return find(t, links, "snd")
	}
	if with, without := seal(&Sender{}), seal(nil); !proto.Equal(with, without) {
		t.Fatalf("with a Sender:\n%v\nwithout:\n%v", with, without)
	}
}

// TestSplit: the seal of many codes and of one code with more visitors
// than a batch holds fits in batches under the limit, the parts of the
// cut entry each in a batch of their own, and the parts sum to the whole.
func TestSplit(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	now := time.Unix(1_700_000_040, 0)
	for i := range 50 {
		code := []byte(fmt.Sprintf("code%02d", i))
		for v := range 300 {
			r.Record(&Click{Code: code, Time: now, Addr: netip.AddrFrom4([4]byte{10, byte(i), byte(v / 200), byte(v % 200)}),
				UserAgent: []byte(uaChrome), Referer: []byte("https://x.example/"), Stripe: uint64(v % 3)})
		}
		r.Record(&Click{Code: code, Time: now, Addr: netip.AddrFrom4([4]byte{1, 1, 1, 1}), UserAgent: []byte(uaGoogle)})
	}
	// One connection: one entry, cut into parts.
	for v := range 5000 {
		r.Record(&Click{Code: []byte("huge"), Time: now, Addr: netip.AddrFrom4([4]byte{11, byte(v >> 8), byte(v), 1}),
			UserAgent: []byte(uaChrome), Referer: []byte(fmt.Sprintf("https://r%d.example/", v%40))})
	}
	for range 7 {
		r.Record(&Click{Code: []byte("huge"), Time: now, Addr: netip.AddrFrom4([4]byte{1, 1, 1, 1}), UserAgent: []byte(uaGoogle)})
	}
	const limit = 8 << 10
	b := newBuilder()
	olds := make([]*agg, len(r.shards))
	for i := range r.shards {
		olds[i] = r.take(i, newAgg())
		r.addLog(olds[i], nil)
	}
	b.learn(olds, nil)
	b.gather(olds)
	var e batchEnc
	e.reset(limit - batchOverhead)
	b.encode(&e, nil)
	e.flush()
	var clicks, bots, visitors, sections uint64
	e.sections(func(sec []byte, n uint64) {
		sections++
		hdr := link.AppendClickBatch(nil, &linkpb.ClickBatch{Edge: "e", Instance: "i", Seq: 1 << 60, ThroughUnixMs: 1 << 50, Dropped: 1 << 40})
		data := append(hdr, sec...)
		if len(data) > limit {
			t.Fatalf("batch of %d bytes over %d", len(data), limit)
		}
		bt, err := link.UnmarshalClickBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		var inSec uint64
		huge := 0
		for _, lm := range bt.Links {
			if lm.Code == "huge" {
				huge++
			}
			clicks += lm.Clicks
			bots += lm.Bots
			inSec += lm.Clicks + lm.Bots
			visitors += uint64(len(lm.Visitors))
		}
		if inSec != n {
			t.Fatalf("section counts %d clicks, holds %d", n, inSec)
		}
		if huge > 1 {
			t.Fatalf("%d parts of the cut entry in one batch", huge)
		}
	})
	if clicks != 50*300+5000 || bots != 57 || visitors != 50*300+5000 {
		t.Fatalf("split sums: clicks %d bots %d visitors %d", clicks, bots, visitors)
	}
	if sections < 6 {
		t.Fatalf("only %d batches", sections)
	}
}

// TestSealModel records random clicks (codes, minutes, User-Agents,
// referrers, addresses and stripes drawn from small sets, so entries are
// single and merged, in one shard and in several, and in some rounds all
// codes on one hash, and in some a log so small that most clicks are added
// up as they come instead of at the seal) and compares the decoded seal
// with a plain count per (code, minute).
func TestSealModel(t *testing.T) {
	uas := []string{uaChrome, uaIPhone, uaSlack, uaGoogle, uaFirefox, ""}
	refs := []string{"", "https://a.example/x", "https://B.example:8080/", "junk"}
	addrs := []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("81.2.69.160"), netip.MustParseAddr("2001:db8::7")}
	cls := NewClassifier()
	classes := map[string]Class{}
	for _, ua := range uas {
		classes[ua] = cls.Classify(ua)
	}
	type key struct {
		code   string
		minute int64
	}
	type model struct {
		clicks, bots                           uint64
		visitors                               map[string]bool
		refs, countries, devices, browsers, os map[string]uint64
	}
	b := newBuilder()
	for round := range 20 {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		lim := Limits{}
		if round%3 == 1 {
			lim.LogBytes = 200 // a few clicks per shard, then added up at once
		}
		r := NewRecorder(testKey, lim)
		// Every fourth round, every code hashes alike: one list per shard.
		r.collide = round%4 == 3
		want := map[key]*model{}
		for range 1 + rng.IntN(3000) {
			code := fmt.Sprintf("m%d", rng.IntN(1+rng.IntN(200)))
			at := time.Unix(1_700_000_000+int64(rng.IntN(180)), 0)
			ua, ref, addr := uas[rng.IntN(len(uas))], refs[rng.IntN(len(refs))], addrs[rng.IntN(len(addrs))]
			r.Record(&Click{Code: []byte(code), Time: at, Addr: addr, UserAgent: []byte(ua), Referer: []byte(ref), Stripe: rng.Uint64()})
			k := key{code, at.Unix() - at.Unix()%60}
			m := want[k]
			if m == nil {
				m = &model{visitors: map[string]bool{}, refs: map[string]uint64{}, countries: map[string]uint64{}, devices: map[string]uint64{}, browsers: map[string]uint64{}, os: map[string]uint64{}}
				want[k] = m
			}
			c := classes[ua]
			m.devices[c.Device]++
			if c.Bot {
				m.bots++
				continue
			}
			m.clicks++
			m.visitors[addr.String()+"|"+ua] = true
			var buf [253]byte
			m.refs[string(refererHost([]byte(ref), &buf))]++
			cc := Country(addr)
			m.countries[string(cc[:])]++
			m.browsers[c.Browser]++
			m.os[c.OS]++
		}
		links, _ := sealAll(b, r)
		entries := map[key][]*linkpb.LinkMinute{}
		for _, lm := range links {
			k := key{lm.Code, lm.MinuteUnix}
			entries[k] = append(entries[k], lm)
			for _, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
				if !slices.IsSortedFunc(kcs, func(x, y *linkpb.KeyCount) int { return cmp.Compare(y.Count, x.Count) }) {
					t.Fatalf("round %d: %v: breakdown not by count: %v", round, k, kcs)
				}
			}
		}
		got := map[key]*linkpb.LinkMinute{}
		for k, of := range entries {
			if len(of) > len(r.shards) {
				t.Fatalf("round %d: %v: %d entries, more than the %d shards", round, k, len(of), len(r.shards))
			}
			got[k] = addUp(of)
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: %d entries, want %d", round, len(got), len(want))
		}
		for k, m := range want {
			lm := got[k]
			if lm == nil {
				t.Fatalf("round %d: no entry for %v", round, k)
			}
			if lm.Clicks != m.clicks || lm.Bots != m.bots || len(lm.Visitors) != len(m.visitors) {
				t.Fatalf("round %d: %v: clicks %d bots %d visitors %d, want %d %d %d", round, k, lm.Clicks, lm.Bots, len(lm.Visitors), m.clicks, m.bots, len(m.visitors))
			}
			for _, d := range []struct {
				name string
				got  []*linkpb.KeyCount
				want map[string]uint64
			}{{"referrers", lm.Referrers, m.refs}, {"countries", lm.Countries, m.countries}, {"devices", lm.Devices, m.devices}, {"browsers", lm.Browsers, m.browsers}, {"os", lm.Os, m.os}} {
				if fmt.Sprint(counts(d.got)) != fmt.Sprint(d.want) {
					t.Fatalf("round %d: %v: %s %v, want %v", round, k, d.name, counts(d.got), d.want)
				}
			}
		}
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

// TestReduce: the counts-only form of a seal keeps every entry's code,
// minute, clicks and bots, and nothing else.
func TestReduce(t *testing.T) {
	r := NewRecorder(testKey, Limits{})
	now := time.Unix(1_700_000_040, 0)
	for i := range 300 {
		ua := uaChrome
		if i%7 == 0 {
			ua = uaGoogle
		}
		r.Record(&Click{Code: []byte(fmt.Sprintf("r%d", i%40)), Time: now.Add(time.Duration(i%3) * time.Minute), Addr: netip.AddrFrom4([4]byte{9, 9, 9, byte(i)}),
			UserAgent: []byte(ua), Referer: []byte("https://q.example/"), Stripe: uint64(i)})
	}
	b := newBuilder()
	olds := make([]*agg, len(r.shards))
	for i := range r.shards {
		olds[i] = r.take(i, newAgg())
		r.addLog(olds[i], nil)
	}
	b.learn(olds, nil)
	b.gather(olds)
	var full, red batchEnc
	full.reset(2 << 10)
	b.encode(&full, nil)
	full.flush()
	red.reset(2 << 10)
	b.reduce(&full, &red)
	red.flush()
	type key struct {
		code   string
		minute int64
	}
	sum := func(links []*linkpb.LinkMinute, bare bool) map[key][2]uint64 {
		out := map[key][2]uint64{}
		for _, lm := range links {
			if bare && (len(lm.Visitors) > 0 || len(lm.Referrers)+len(lm.Countries)+len(lm.Devices)+len(lm.Browsers)+len(lm.Os) > 0) {
				t.Fatalf("reduced entry with detail: %v", lm)
			}
			k := key{lm.Code, lm.MinuteUnix}
			c := out[k]
			out[k] = [2]uint64{c[0] + lm.Clicks, c[1] + lm.Bots}
		}
		return out
	}
	want, got := sum(decodeSections(&full), false), sum(decodeSections(&red), true)
	if len(want) != 120 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reduced %v\nwant %v", got, want)
	}
	if len(red.ends) >= len(full.ends) {
		t.Fatalf("reduced into %d batches, full %d", len(red.ends), len(full.ends))
	}
}
