package edge_test

import (
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

const benchURL = "https://example.com/landing/page?utm_source=newsletter&utm_medium=email"

// benchEdge is a running edge (no stream: the replica is seeded directly)
// holding one link, "bench01".
func benchEdge(b *testing.B) *runningEdge {
	e := startEdge(b, edgeConfig(b, unreachableNATS(b)))
	if _, err := e.Replica().Put(record("bench01", benchURL, 302, 1)); err != nil {
		b.Fatal(err)
	}
	return e
}

func benchCtx(b *testing.B, target string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(target)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	return &ctx
}

// BenchmarkResolveHot measures the redirect handler alone on a link in the
// hot cache; it must not allocate.
func BenchmarkResolveHot(b *testing.B) {
	e := benchEdge(b)
	ctx := benchCtx(b, "/bench01")
	e.Resolve(ctx) // the first lookup reads Pebble and fills the hot cache
	if ctx.Response.StatusCode() != 302 || string(ctx.Response.Header.Peek("Location")) != benchURL {
		b.Fatalf("warm-up: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Location"))
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		e.Resolve(ctx)
	}
}

// BenchmarkResolveMiss measures an unknown code (answered by the bloom
// filter without touching disk).
func BenchmarkResolveMiss(b *testing.B) {
	e := benchEdge(b)
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
// writes a fixed 302, in the same run. edge/bare near 1 means the
// resolver costs little next to HTTP itself.
func BenchmarkResolveListener(b *testing.B) {
	e := benchEdge(b)
	loc := []byte(benchURL)
	bare := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.SetStatusCode(302)
		ctx.Response.Header.SetCanonical([]byte("Location"), loc)
		ctx.Response.Header.SetCanonical([]byte("Cache-Control"), []byte("private, max-age=0"))
	}
	bareSrv, bareDo := serveInMemory(b, bare)
	edgeSrv, edgeDo := serveInMemory(b, e.Resolve)
	defer bareSrv()
	defer edgeSrv()
	workers := 4 * runtime.GOMAXPROCS(0)
	var bareTime, edgeTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	const perWorker = 50
	for b.Loop() {
		bareTime += timeParallel(b, workers, perWorker, bareDo)
		edgeTime += timeParallel(b, workers, perWorker, edgeDo)
	}
	n := float64(b.N * workers * perWorker)
	b.ReportMetric(float64(bareTime.Nanoseconds())/n, "bare-ns/req")
	b.ReportMetric(float64(edgeTime.Nanoseconds())/n, "edge-ns/req")
	b.ReportMetric(float64(edgeTime)/float64(bareTime), "edge/bare")
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
