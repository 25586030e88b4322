package clicks

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
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

// BenchmarkRecordConn is the per-click cost of one keep-alive connection
// (one address, one User-Agent) over spread codes, with the connection's
// Sender and without.
func BenchmarkRecordConn(b *testing.B) {
	for _, bc := range []struct {
		name   string
		sender *Sender
	}{{"sender", &Sender{}}, {"none", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			r := NewRecorder(testKey, Limits{})
			codes := make([][]byte, 1024)
			for i := range codes {
				codes[i] = []byte(fmt.Sprintf("c%06d", i))
			}
			c := &Click{Time: time.Now(), Addr: netip.MustParseAddr("81.2.69.160"), UserAgent: []byte(uaChrome), Referer: []byte("https://t.co/abc"), Sender: bc.sender}
			bl := newBuilder()
			n := 0
			var sealCPU time.Duration
			cpu := cpuTime()
			for b.Loop() {
				c.Code = codes[n%len(codes)]
				r.Record(c)
				n++
				if n%20_000 == 0 {
					// Keep the logs from filling; not counted.
					b.StopTimer()
					s := cpuTime()
					sealAll(bl, r)
					sealCPU += cpuTime() - s
					b.StartTimer()
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu-sealCPU).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
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

// BenchmarkSealDistinctCodes is the whole per-click cost when every click
// is on a different code (a uniform spread over many links): recording,
// then sealing, building and encoding the batch. ns/op is per click.
func BenchmarkSealDistinctCodes(b *testing.B) {
	const perSeal = 10_000
	r := NewRecorder(testKey, Limits{})
	sh, err := NewShipper(ShipperConfig{Edge: "bench", Dir: b.TempDir(), Recorder: r, Publisher: failingPublisher{}, SpillMaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	codes := make([][]byte, perSeal)
	for i := range codes {
		codes[i] = []byte(fmt.Sprintf("c%06d", i))
	}
	now := time.Now()
	c := &Click{Time: now, Addr: netip.MustParseAddr("8.8.8.8"), UserAgent: []byte(uaChrome)}
	b.ReportAllocs()
	n := 0
	cpu := cpuTime()
	for b.Loop() {
		c.Code = codes[n%perSeal]
		c.Stripe = uint64(n)
		r.Record(c)
		n++
		if n%perSeal == 0 {
			if err := sh.Seal(); err != nil {
				b.Fatal(err)
			}
			// Keep the journal from growing through the benchmark.
			for e := sh.j.oldest(); e != nil; e = sh.j.oldest() {
				_ = sh.j.ack(e)
			}
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time this process has used (GC included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
