package edge

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/internal/leaktest"
)

// timedServer serves a fixed 302 on 127.0.0.1 with connTimeouts, as the
// edge's redirect listener does, and returns its address.
func timedServer(t *testing.T, read, write, idle time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ct := newConnTimeouts(read, write, idle)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusFound)
			ctx.Response.Header.Set("Location", "https://example.com/")
		},
		ConnState:       ct.connState,
		CloseOnShutdown: true,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ct.listener(ln)) }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
		ct.stopSweeper()
	})
	return ln.Addr().String()
}

// closedByServer reports whether the server closed c: a read returns EOF
// or a reset within wait (a read timeout on the client side is "not yet").
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	var b [512]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
}

// The budgets are enforced without fasthttp's per-request deadlines: a
// connection that sends half a request, one that sends nothing and an idle
// keep-alive connection are each closed by the server. (Without the
// sweeper fasthttp, which has no timeouts here, would wait forever and
// closedByServer would report false.)
func TestConnTimeoutsClose(t *testing.T) {
	leaktest.Check(t)
	addr := timedServer(t, 300*time.Millisecond, 300*time.Millisecond, 600*time.Millisecond)
	for name, send := range map[string]string{
		"half a request (slowloris)": "GET /abc HTTP/1.1\r\nHost: x\r\nX-Slow: ",
		"nothing":                    "",
		"idle after an answer":       "GET /abc HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if send != "" {
				if _, err := io.WriteString(c, send); err != nil {
					t.Fatal(err)
				}
			}
			if !closedByServer(c, 30*time.Second) {
				t.Fatal("the server did not close the connection")
			}
		})
	}
}

// A keep-alive connection that keeps asking is never closed: every
// request on it, spaced by a tenth of the idle budget for several budgets,
// is answered.
func TestConnTimeoutsKeepBusyConnections(t *testing.T) {
	leaktest.Check(t)
	idle := 2 * time.Second
	addr := timedServer(t, idle, idle, idle)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 40 {
		if _, err := io.WriteString(c, "GET /abc HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		time.Sleep(idle / 10)
	}
}

// overdue applies each phase's budget; a blocked write has its own.
func TestConnTimeoutsOverdue(t *testing.T) {
	ct := &connTimeouts{read: 5 * time.Second, write: 3 * time.Second, idle: 60 * time.Second}
	s := int64(time.Second)
	for _, tc := range []struct {
		name    string
		phase   uint64
		since   int64 // coarse time the phase began
		writing int64 // coarse time a write began + 1, or 0
		now     int64
		want    bool
	}{
		{"new within read", phaseNew, 0, 0, 5 * s, false},
		{"new past read", phaseNew, 0, 0, 5*s + 1, true},
		{"active within read+write", phaseActive, 10 * s, 0, 18 * s, false},
		{"active past read+write", phaseActive, 10 * s, 0, 18*s + 1, true},
		{"idle within idle", phaseIdle, 0, 0, 60 * s, false},
		{"idle past idle", phaseIdle, 0, 0, 60*s + 1, true},
		{"write blocked past write", phaseActive, 10 * s, 11*s + 1, 14*s + 1, true},
		{"write within write", phaseIdle, 10 * s, 11*s + 1, 14 * s, false},
	} {
		c := &timedConn{t: ct}
		c.phase.Store(tc.phase<<phaseShift | uint64(tc.since))
		c.writing.Store(tc.writing)
		if got := ct.overdue(c, tc.now); got != tc.want {
			t.Errorf("%s: overdue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// shutdownCloseServer serves a 302 with connTimeouts on 127.0.0.1; on
// the second request of its one connection, closeAt closes it as
// fasthttp's Shutdown does (closeIdleConns) either before or after the
// request goes active. It returns the address and the count of requests
// the handler would count a click for (connInfo: not lost).
func shutdownCloseServer(t *testing.T, closeBeforeActive bool) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ct := newConnTimeouts(readTimeout, writeTimeout, idleTimeout)
	var counted, active atomic.Int64
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if _, lost, _ := connInfo(ctx); !lost {
				counted.Add(1)
			}
			ctx.SetStatusCode(fasthttp.StatusFound)
			ctx.Response.Header.Set("Location", "https://example.com/")
		},
		ConnState: func(c net.Conn, st fasthttp.ConnState) {
			// closeIdleConns reads the idle mark, then closes: its Close
			// can land after the next request was read, before or after
			// StateActive. Here it lands there every time.
			second := st == fasthttp.StateActive && active.Add(1) == 2
			if second && closeBeforeActive {
				_ = c.Close()
			}
			ct.connState(c, st)
			if second && !closeBeforeActive {
				_ = c.Close()
			}
		},
		CloseOnShutdown: true,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ct.listener(ln)) }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
		ct.stopSweeper()
	})
	return ln.Addr().String(), &counted
}

// twoRequests sends two GETs on one keep-alive connection and returns the
// status of each (0: no answer, the connection ended).
func twoRequests(t *testing.T, addr string) [2]int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	var got [2]int
	for i := range got {
		if _, err := io.WriteString(c, "GET /abc HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return got
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("request %d: no answer and the connection stayed open", i)
			}
			return got
		}
		resp.Body.Close()
		got[i] = resp.StatusCode
	}
	return got
}

// A close from fasthttp's Shutdown that lands while a request is active
// waits for its answer: the client gets the redirect the handler counted
// (closed at once, the handler counted a click the client never got, and
// Go's http.Transport sent the GET again: TestClicksExactThroughFaults/
// EdgeRestart counted one click too many), then the connection closes.
func TestConnTimeoutsShutdownCloseWhileActive(t *testing.T) {
	leaktest.Check(t)
	addr, counted := shutdownCloseServer(t, false)
	if got := twoRequests(t, addr); got != [2]int{http.StatusFound, http.StatusFound} {
		t.Fatalf("answers %v, want two 302s", got)
	}
	if n := counted.Load(); n != 2 {
		t.Fatalf("%d requests counted, want 2", n)
	}
}

// A close that lands before the request goes active (fasthttp has read it
// and still runs the handler) is lost (connInfo): no answer, and nothing counted.
func TestConnTimeoutsShutdownCloseBeforeActive(t *testing.T) {
	leaktest.Check(t)
	addr, counted := shutdownCloseServer(t, true)
	if got := twoRequests(t, addr); got != [2]int{http.StatusFound, 0} {
		t.Fatalf("answers %v, want a 302 and none", got)
	}
	if n := counted.Load(); n != 1 {
		t.Fatalf("%d requests counted, want 1: the unanswered one counted", n)
	}
}

// BenchmarkConnTimeouts compares, over TCP on loopback with 64 keep-alive
// connections, a fasthttp 302 server without timeouts, with fasthttp's
// ReadTimeout/WriteTimeout/IdleTimeout (three deadline updates per
// request, what the edge had) and with connTimeouts (what it has). The
// client runs in the same process, so cpu-ns/req is client and server
// together: the differences between the three are the server's.
//
//	go test -run '^$' -bench ConnTimeouts -benchtime 200000x ./edge/
func BenchmarkConnTimeouts(b *testing.B) {
	for _, mode := range []string{"none", "deadlines", "swept"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &fasthttp.Server{
				Handler: func(ctx *fasthttp.RequestCtx) {
					ctx.SetStatusCode(fasthttp.StatusFound)
					ctx.Response.Header.Set("Location", "https://example.com/landing/page")
				},
				NoDefaultContentType: true,
			}
			var served net.Listener = ln
			switch mode {
			case "deadlines":
				srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = readTimeout, writeTimeout, idleTimeout
			case "swept":
				ct := newConnTimeouts(readTimeout, writeTimeout, idleTimeout)
				defer ct.stopSweeper()
				srv.ConnState = ct.connState
				served = ct.listener(ln)
			}
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(served) }()
			defer func() { _ = srv.Shutdown(); <-done }()

			const conns = 64
			per := b.N/conns + 1
			req := []byte("GET /bench01 HTTP/1.1\r\nHost: sho.rt\r\n\r\n")
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			var wg sync.WaitGroup
			for range conns {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() {
					defer c.Close()
					br := bufio.NewReader(c)
					for range per {
						if _, err := c.Write(req); err != nil {
							b.Error(err)
							return
						}
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							b.Error(err)
							return
						}
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(per*conns), "cpu-ns/req")
		})
	}
}
