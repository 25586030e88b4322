package clicks

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRecord is the per-click cost on the redirect path: one viral
// code from parallel connections (each goroutine its own stripe), 64
// visitors. It must not allocate.
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(testKey, Limits{})
	now := time.Now()
	var stripes atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		stripe := stripes.Add(1)
		c := &Click{Code: []byte("viral01"), Time: now, UserAgent: []byte(uaChrome), Referer: []byte("https://t.co/abc"), Stripe: stripe}
		i := 0
		for pb.Next() {
			c.Addr = netip.AddrFrom4([4]byte{8, 8, byte(stripe), byte(i & 63)})
			r.Record(c)
			i++
		}
	})
}

// The enrichment steps, to decide which run per click and which once per
// distinct value when the batch is built.

func BenchmarkVisitorHash(b *testing.B) {
	addr, ua := netip.MustParseAddr("2001:db8::1"), []byte(uaChrome)
	for b.Loop() {
		testKey.Visitor(addr, UAHash(ua))
	}
}

func BenchmarkCountry(b *testing.B) {
	addr := netip.MustParseAddr("81.2.69.160")
	b.ReportAllocs()
	for b.Loop() {
		Country(addr)
	}
}

// BenchmarkClassify is why User-Agents are classified at seal time, once
// per distinct User-Agent, and never on the redirect path.
func BenchmarkClassify(b *testing.B) {
	c := NewClassifier()
	uas := []string{uaChrome, uaIPhone, uaSlack, uaGoogle, uaFirefox}
	i := 0
	for b.Loop() {
		c.Classify(uas[i%len(uas)])
		i++
	}
}
