package edge_test

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

const benchURL = "https://example.com/landing/page?utm_source=newsletter&utm_medium=email"

// benchEdge is a running edge (no stream: the replica is seeded directly)
// holding one link, "bench01".
func benchEdge(b *testing.B) *runningEdge { return benchEdgeWith(b, false) }

// benchEdgeWith is benchEdge with click analytics on or off. With it on,
// the shipper seals every second as in production (into the journal: the
// stream is unreachable).
func benchEdgeWith(b *testing.B, analytics bool) *runningEdge {
	cfg := edgeConfig(b, unreachableNATS(b))
	if analytics {
		cfg.AnalyticsKey = []byte("bench-analytics-key-0123456789")
	}
	e := startEdge(b, cfg)
	if _, err := e.Replica().Put(record("bench01", benchURL, 302, 1)); err != nil {
		b.Fatal(err)
	}
	return e
}

const benchUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

func benchCtx(b *testing.B, target string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(target)
	req.Header.SetUserAgent(benchUA)
	req.Header.SetReferer("https://news.example.com/item?id=1")
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	return &ctx
}

// BenchmarkResolveHot measures the redirect handler alone on a link in the
// hot cache; it must not allocate.
func BenchmarkResolveHot(b *testing.B) {
	b.Run("analytics=off", func(b *testing.B) { benchResolveHot(b, false) })
	b.Run("analytics=on", func(b *testing.B) { benchResolveHot(b, true) })
}

func benchResolveHot(b *testing.B, analytics bool) {
	e := benchEdgeWith(b, analytics)
	ctx := benchCtx(b, "/bench01")
	e.Resolve(ctx) // the first lookup reads Pebble and fills the hot cache
	if ctx.Response.StatusCode() != 302 || string(ctx.Response.Header.Peek("Location")) != benchURL {
		b.Fatalf("warm-up: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Location"))
	}
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		ctx.Response.Reset()
		e.Resolve(ctx)
	}
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime returns the CPU time this process has used (the click shipper's
// sealing included): steadier than wall time on a shared machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkResolveMiss measures an unknown code (answered by the bloom
// filter without touching disk), with the enumeration limiter off, which
// would answer this one client 429 after its burst
// (BenchmarkNotFoundFlood measures it).
func BenchmarkResolveMiss(b *testing.B) {
	cfg := edgeConfig(b, unreachableNATS(b))
	cfg.NoNotFoundLimit = true
	e := startEdge(b, cfg)
	ctx := benchCtx(b, "/nosuch1")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		e.Resolve(ctx)
	}
	if ctx.Response.StatusCode() != 404 {
		b.Fatalf("miss: %d", ctx.Response.StatusCode())
	}
}

// BenchmarkResolveListener serves real HTTP over fasthttp's in-memory
// listener and compares the edge's handler with a bare handler that
// writes a fixed 302, and with the same edge recording clicks
// (analytics on), in the same rounds. edge/bare near 1 means the resolver
// costs little next to HTTP itself; off/on is the throughput of the edge
// with analytics relative to without (target >= 0.95).
func BenchmarkResolveListener(b *testing.B) {
	e := benchEdge(b)
	loc := []byte(benchURL)
	bare := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.SetStatusCode(302)
		ctx.Response.Header.SetCanonical([]byte("Location"), loc)
		ctx.Response.Header.SetCanonical([]byte("Cache-Control"), []byte("private, max-age=0"))
	}
	clk := benchEdgeWith(b, true)
	bareSrv, bareDo := serveInMemory(b, bare)
	edgeSrv, edgeDo := serveInMemory(b, e.Resolve)
	clkSrv, clkDo := serveInMemory(b, clk.Resolve)
	defer bareSrv()
	defer edgeSrv()
	defer clkSrv()
	workers := 4 * runtime.GOMAXPROCS(0)
	var bareTime, edgeTime, clkTime time.Duration
	var bareCPU, edgeCPU, clkCPU time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	const perWorker = 50
	for b.Loop() {
		c0 := cpuTime()
		bareTime += timeParallel(b, workers, perWorker, bareDo)
		c1 := cpuTime()
		edgeTime += timeParallel(b, workers, perWorker, edgeDo)
		c2 := cpuTime()
		clkTime += timeParallel(b, workers, perWorker, clkDo)
		c3 := cpuTime()
		bareCPU, edgeCPU, clkCPU = bareCPU+c1-c0, edgeCPU+c2-c1, clkCPU+c3-c2
	}
	n := float64(b.N * workers * perWorker)
	b.ReportMetric(float64(bareTime.Nanoseconds())/n, "bare-ns/req")
	b.ReportMetric(float64(edgeTime.Nanoseconds())/n, "edge-ns/req")
	b.ReportMetric(float64(clkTime.Nanoseconds())/n, "analytics-ns/req")
	b.ReportMetric(float64(edgeTime)/float64(bareTime), "edge/bare")
	// Throughput with analytics relative to without: time off / time on;
	// and CPU per request (client and server, both in this process) with
	// analytics relative to without.
	b.ReportMetric(float64(edgeTime)/float64(clkTime), "on/off-throughput")
	b.ReportMetric(float64(clkCPU)/float64(edgeCPU), "on/off-cpu")
	b.ReportMetric(float64(bareCPU.Nanoseconds())/n, "bare-cpu-ns/req")
}

// serveInMemory serves h on an in-memory listener with the edge's server
// settings and returns a stop function and a request function.
func serveInMemory(b *testing.B, h fasthttp.RequestHandler) (stop func(), get func() error) {
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: h, Name: "linkpop", NoDefaultContentType: true, ReadBufferSize: 8 << 10}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	client := &fasthttp.HostClient{
		Addr:     "sho.rt",
		Dial:     func(string) (net.Conn, error) { return ln.Dial() },
		MaxConns: 1024,
	}
	get = func() error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://sho.rt/bench01")
		req.Header.SetUserAgent(benchUA)
		if err := client.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != 302 || string(resp.Header.Peek("Location")) != benchURL {
			b.Errorf("got %d %q", resp.StatusCode(), resp.Header.Peek("Location"))
		}
		return nil
	}
	return func() {
		client.CloseIdleConnections()
		_ = srv.Shutdown()
		<-done
	}, get
}

// timeParallel runs per requests on each of workers goroutines and
// returns the wall time taken.
func timeParallel(b *testing.B, workers, per int, do func() error) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range per {
				if err := do(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// BenchmarkLatencyHistogram is what the request duration histogram adds to
// every request (parallel, so its mutex is contended as in production).
// Compare it with edge-ns/req of BenchmarkResolveListener.
func BenchmarkLatencyHistogram(b *testing.B) {
	h := metrics.NewSet().NewHistogram("linkpop_bench_seconds")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		start := time.Now()
		for pb.Next() {
			h.Update(time.Since(start).Seconds())
		}
	})
}
