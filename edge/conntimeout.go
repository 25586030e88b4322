package edge

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/linkpop/linkpop/edge/clicks"
)

// connTimeouts enforces the redirect listener's read, write and idle
// timeouts without a deadline update per request.
//
// fasthttp's ReadTimeout, WriteTimeout and IdleTimeout set a socket
// deadline three times per keep-alive request (idle before the first
// byte, read after it, write before the answer): each is a clock read and
// a runtime timer update under the poller's lock. On this 2-core machine
// that was 2-4 µs of a 23 µs request (a fasthttp 302 server with and
// without them, wrk on loopback), the largest difference between the edge
// and the bare server of the benchmark. Here fasthttp has no timeouts;
// every accepted connection is wrapped, its phase and the coarse time it
// entered it are one atomic word set from fasthttp's ConnState hook, a
// write in progress another, and one goroutine sweeps every connection
// each tick and closes the ones over their budget:
//
//   - a new connection without its first request byte after read;
//   - a request still being read or answered after read + write (the
//     handler runs between the two; it answers from memory or from the
//     origin fallback, which has its own deadline);
//   - a write blocked for longer than write (a client that does not read);
//   - a keep-alive connection idle for longer than idle.
//
// A budget is enforced at tick granularity: a connection is closed between
// its budget and its budget plus one tick.
type connTimeouts struct {
	read, write, idle time.Duration
	tick              time.Duration

	now atomic.Int64 // coarse clock: nanoseconds since start, set every tick

	mu    sync.Mutex
	conns map[*timedConn]struct{}

	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// Connection phases, in the top bits of timedConn.phase, and the close
// flags below them.
const (
	phaseNew uint64 = iota
	phaseActive
	phaseIdle
	phaseShift = 62
	// closedBit: the connection is closed; a request read before it was
	// closed is not answered, so the handler counts no click for it
	// (connInfo).
	closedBit = 1 << 61
	// closeLater: a Close came while a request was active; the connection
	// closes once the request is answered (StateIdle) or fasthttp ends it
	// (StateClosed).
	closeLater = 1 << 60
	phaseMask  = 1<<60 - 1
)

// timedConn is an accepted connection and the phase it is in.
type timedConn struct {
	net.Conn
	t *connTimeouts
	// phase is the phase << phaseShift | the close flags | the coarse
	// time it began.
	phase atomic.Uint64
	// writing is the coarse time a Write began + 1, or 0.
	writing atomic.Int64
	// peer is the socket peer's address, unmapped, read once at accept:
	// every request of the connection needs it for its click (and a 404
	// for the enumeration limiter), and asking the connection each time
	// was an interface call chain and a net.IP conversion per request.
	peer netip.Addr
	// sender caches the hashes and country of the connection's last
	// click (clicks.Sender); only its handler, one request at a time,
	// uses it.
	sender clicks.Sender
}

// newConnTimeouts starts the sweeper; stopSweeper ends it.
func newConnTimeouts(read, write, idle time.Duration) *connTimeouts {
	t := &connTimeouts{
		read: read, write: write, idle: idle,
		tick:  min(read, write, idle) / 5,
		conns: make(map[*timedConn]struct{}),
		start: time.Now(),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	t.tick = max(t.tick, 10*time.Millisecond)
	go t.sweeper()
	return t
}

func (t *connTimeouts) stopSweeper() {
	close(t.stop)
	<-t.done
}

// listener wraps ln so every connection it accepts is timed.
func (t *connTimeouts) listener(ln net.Listener) net.Listener {
	return &timedListener{Listener: ln, t: t}
}

type timedListener struct {
	net.Listener
	t *connTimeouts
}

func (l *timedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &timedConn{Conn: c, t: l.t, peer: peerAddr(c.RemoteAddr())}
	tc.phase.Store(phaseNew<<phaseShift | uint64(l.t.now.Load()))
	l.t.mu.Lock()
	l.t.conns[tc] = struct{}{}
	l.t.mu.Unlock()
	return tc, nil
}

// connState is the fasthttp.Server's ConnState hook: two calls per
// request, each an atomic load and compare-and-swap.
func (t *connTimeouts) connState(c net.Conn, st fasthttp.ConnState) {
	tc, ok := c.(*timedConn)
	if !ok {
		return
	}
	switch st {
	case fasthttp.StateActive:
		tc.enter(phaseActive)
	case fasthttp.StateIdle:
		if tc.enter(phaseIdle)&closeLater != 0 {
			_ = tc.closeNow()
		}
	case fasthttp.StateClosed:
		// fasthttp called Close, which may have been put off.
		_ = tc.closeNow()
	case fasthttp.StateHijacked:
		t.forget(tc)
	}
}

// enter sets the connection's phase, begun at the coarse now, keeping its
// close flags, and returns the word it replaced.
func (c *timedConn) enter(phase uint64) uint64 {
	for {
		old := c.phase.Load()
		if c.phase.CompareAndSwap(old, old&(closedBit|closeLater)|phase<<phaseShift|uint64(c.t.now.Load())) {
			return old
		}
	}
}

// peerAddr is the unmapped IP address of a connection's remote address
// (the zero Addr for a non-IP one).
func peerAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// connPeer returns the socket peer of ctx's connection: the address read
// at accept for a timed connection.
func connPeer(ctx *fasthttp.RequestCtx) netip.Addr {
	peer, _, _ := connInfo(ctx)
	return peer
}

// connInfo returns the socket peer of ctx's connection (connPeer),
// whether the connection was closed before its request went active
// (fasthttp still runs the handler on a request it had read, but its
// answer is never written, so no click is counted for it) and its click
// cache (nil for a connection that is not timed). One look at the
// connection, as a click needs all three.
func connInfo(ctx *fasthttp.RequestCtx) (peer netip.Addr, lost bool, sender *clicks.Sender) {
	if tc, ok := ctx.Conn().(*timedConn); ok {
		return tc.peer, tc.phase.Load()&closedBit != 0, &tc.sender
	}
	peer, _ = netip.AddrFromSlice(ctx.RemoteIP())
	return peer.Unmap(), false, nil
}

func (t *connTimeouts) forget(tc *timedConn) {
	t.mu.Lock()
	delete(t.conns, tc)
	t.mu.Unlock()
}

func (c *timedConn) Write(b []byte) (int, error) {
	c.writing.Store(c.t.now.Load() + 1)
	n, err := c.Conn.Write(b)
	c.writing.Store(0)
	return n, err
}

// Close closes the connection, unless a request is active on it: then
// the close waits until the request is answered. fasthttp's Shutdown
// closes the connections it sees idle, and one whose next request has
// just been read is still idle to it: closed then, its request would be
// handled (a click counted) and never answered, and a client that sent it
// on a kept-alive connection retries it, as Go's http.Transport does with
// a GET. Either the close lands before the request goes active, and the
// handler sees the connection lost (connInfo), or after, and the answer is written first.
func (c *timedConn) Close() error {
	for {
		p := c.phase.Load()
		switch {
		case p&closedBit != 0:
			return nil
		case p>>phaseShift == phaseActive:
			if p&closeLater != 0 || c.phase.CompareAndSwap(p, p|closeLater) {
				return nil
			}
		case c.phase.CompareAndSwap(p, p|closedBit):
			c.t.forget(c)
			return c.Conn.Close()
		}
	}
}

// closeNow closes the connection whatever it is doing.
func (c *timedConn) closeNow() error {
	if c.phase.Or(closedBit)&closedBit != 0 {
		return nil
	}
	c.t.forget(c)
	return c.Conn.Close()
}

// overdue reports whether the connection is over its budget at now.
func (t *connTimeouts) overdue(c *timedConn, now int64) bool {
	if w := c.writing.Load(); w != 0 && time.Duration(now-(w-1)) > t.write {
		return true
	}
	p := c.phase.Load()
	since := time.Duration(now - int64(p&phaseMask))
	switch p >> phaseShift {
	case phaseNew:
		return since > t.read
	case phaseActive:
		return since > t.read+t.write
	default:
		return since > t.idle
	}
}

func (t *connTimeouts) sweeper() {
	defer close(t.done)
	tk := time.NewTicker(t.tick)
	defer tk.Stop()
	var late []*timedConn
	for {
		select {
		case <-t.stop:
			return
		case <-tk.C:
		}
		now := int64(time.Since(t.start))
		t.now.Store(now)
		late = late[:0]
		t.mu.Lock()
		for c := range t.conns {
			if t.overdue(c, now) {
				late = append(late, c)
			}
		}
		t.mu.Unlock()
		// Closing unblocks fasthttp's read or write on the connection,
		// which then ends it.
		for _, c := range late {
			_ = c.closeNow()
		}
	}
}
