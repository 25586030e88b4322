package edge

import (
	"hash/maphash"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Enumeration limiter defaults (Config.NotFoundRate and friends).
const (
	DefaultNotFoundRate    = 2
	DefaultNotFoundBurst   = 100
	DefaultNotFoundClients = 1 << 16
	// notFoundWays is the associativity of the limiter table: a client's
	// bucket lives in one of the ways of the set its address hashes to.
	notFoundWays = 4
)

var (
	bodyTooMany = []byte("too many unknown codes\n")
	hdrRetry    = []byte(fasthttp.HeaderRetryAfter)
)

// notFoundLimiter is the enumeration limiter: a token bucket per client
// address, spent only by answers that would be 404 for a well-formed
// code, so a client that walks the code space is refused (429) once it
// has collected burst unknown codes faster than rate per second. A
// client's redirects never touch it.
//
// Memory is fixed: a table of clients entries, notFoundWays-way set
// associative, one mutex per set. A new client takes an empty way or the
// one whose bucket is fullest (the least suspicious); so a flood of new
// addresses can evict a limited client, which then starts again with a
// full bucket, but can never make the table grow. IPv6 clients are keyed
// by their /64, the block one subscriber gets, so rotating through the
// addresses of a /64 does not refill the bucket.
type notFoundLimiter struct {
	rate  float64 // tokens per second
	burst float64
	seed  maphash.Seed
	sets  []notFoundSet
	mask  uint64
	retry []byte // Retry-After value: seconds until one token
}

type notFoundSet struct {
	mu   sync.Mutex
	ways [notFoundWays]notFoundEntry
}

type notFoundEntry struct {
	key    uint64 // 0: empty
	last   int64  // unix nanoseconds of the last refill
	tokens float64
}

func newNotFoundLimiter(rate float64, burst, clients int) *notFoundLimiter {
	n := 1
	for n*notFoundWays < clients {
		n <<= 1
	}
	return &notFoundLimiter{
		rate:  rate,
		burst: float64(burst),
		seed:  maphash.MakeSeed(),
		sets:  make([]notFoundSet, n),
		mask:  uint64(n - 1),
		retry: []byte(strconv.Itoa(int(math.Ceil(1 / rate)))),
	}
}

// key is the client's bucket key: the address, or an IPv6 address's /64.
func (l *notFoundLimiter) key(a netip.Addr) uint64 {
	a = a.Unmap()
	var h uint64
	if a.Is4() {
		b := a.As4()
		h = maphash.Comparable(l.seed, b)
	} else {
		b := a.As16()
		var p [8]byte
		copy(p[:], b[:8])
		h = maphash.Comparable(l.seed, p)
	}
	if h == 0 {
		h = 1
	}
	return h
}

// allow spends one token of a's bucket at now and reports whether there
// was one.
func (l *notFoundLimiter) allow(a netip.Addr, now time.Time) bool {
	k := l.key(a)
	set := &l.sets[k&l.mask]
	t := now.UnixNano()
	set.mu.Lock()
	defer set.mu.Unlock()
	victim, victimTokens := 0, -1.0
	for i := range set.ways {
		e := &set.ways[i]
		if e.key == k {
			e.tokens = min(l.burst, e.tokens+l.rate*float64(t-e.last)/1e9)
			e.last = t
			if e.tokens < 1 {
				return false
			}
			e.tokens--
			return true
		}
		tok := l.burst + 1 // an empty way is the best victim
		if e.key != 0 {
			tok = min(l.burst, e.tokens+l.rate*float64(t-e.last)/1e9)
		}
		if tok > victimTokens {
			victim, victimTokens = i, tok
		}
	}
	set.ways[victim] = notFoundEntry{key: k, last: t, tokens: l.burst - 1}
	return true
}

// clients is the number of buckets in use.
func (l *notFoundLimiter) clients() int {
	n := 0
	for i := range l.sets {
		s := &l.sets[i]
		s.mu.Lock()
		for _, e := range s.ways {
			if e.key != 0 {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// notFound answers an unknown well-formed code: 404, or 429 with
// Retry-After once the client's enumeration bucket is empty.
func (s *Server) notFound(ctx *fasthttp.RequestCtx, now time.Time) int {
	if s.nf != nil && !s.nf.allow(s.clientAddr(ctx), now) {
		ctx.Response.Header.SetCanonical(hdrRetry, s.nf.retry)
		return textStatus(ctx, fasthttp.StatusTooManyRequests, bodyTooMany)
	}
	return textStatus(ctx, fasthttp.StatusNotFound, bodyNotFound)
}
