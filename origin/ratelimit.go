package origin

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiters holds one token bucket per API key id. Keys are few (minted
// by an admin), so the map is bounded by the key table; revocation drops
// a key's bucket.
type limiters struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newLimiters() *limiters { return &limiters{m: map[string]*rate.Limiter{}} }

func (l *limiters) get(id string, r float64, burst int) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[id]
	if !ok || lim.Limit() != rate.Limit(r) || lim.Burst() != burst {
		lim = rate.NewLimiter(rate.Limit(r), burst)
		l.m[id] = lim
	}
	return lim
}

func (l *limiters) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, id)
}

// allow takes one token from p's bucket and sets the RateLimit-Limit,
// -Remaining and -Reset headers (draft-ietf-httpapi-ratelimit-headers:
// the bucket size, the whole tokens left, and the seconds until the bucket
// is full again). An unlimited key gets no headers. Over the limit it
// returns ErrRateLimited carrying the seconds until one token is back.
func (s *Server) allow(w http.ResponseWriter, p *principal) error {
	if p.rate <= 0 || math.IsInf(p.rate, 1) {
		return nil
	}
	lim := s.limits.get(p.id, p.rate, p.burst)
	now := time.Now()
	ok := lim.AllowN(now, 1)
	tokens := lim.TokensAt(now)
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(p.burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(0, int(math.Floor(tokens)))))
	h.Set("RateLimit-Reset", strconv.Itoa(secondsCeil((float64(p.burst)-tokens)/p.rate)))
	if !ok {
		return &retryAfter{err: ErrRateLimited, seconds: max(1, secondsCeil((1-tokens)/p.rate))}
	}
	return nil
}

func secondsCeil(s float64) int {
	if s <= 0 {
		return 0
	}
	if s > 1<<30 {
		return 1 << 30
	}
	return int(math.Ceil(s))
}
