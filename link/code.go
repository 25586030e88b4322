package link

import (
	"crypto/rand"
	"fmt"
	"strings"
)

const (
	// MinCodeLen and MaxCodeLen bound the length of every code, custom or random.
	MinCodeLen = 3
	MaxCodeLen = 64
	// DefaultCodeLen is the length of random codes unless configured otherwise.
	// 62^7 ≈ 3.5e12 codes: at 100M links/day a collision-free draw needs
	// about 1 retry in 35,000 after ten years.
	DefaultCodeLen = 7
)

// Base62 is the alphabet of random codes.
const Base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// codeByte reports whether c may appear in a code: [A-Za-z0-9_-].
var codeByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t['-'] = true, true
	return t
}()

// ValidCode reports whether s has the syntax of a code. It does not check
// reservation. It allocates nothing, so the edge calls it on every request.
func ValidCode(s string) bool {
	if len(s) < MinCodeLen || len(s) > MaxCodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !codeByte[s[i]] {
			return false
		}
	}
	return true
}

// ValidCodeBytes is ValidCode for a byte slice (fasthttp request paths).
func ValidCodeBytes(b []byte) bool {
	if len(b) < MinCodeLen || len(b) > MaxCodeLen {
		return false
	}
	for _, c := range b {
		if !codeByte[c] {
			return false
		}
	}
	return true
}

// DefaultReserved are codes no one may claim: they collide with paths the
// service itself serves or may serve, or they invite confusion. Matching is
// case-insensitive.
var DefaultReserved = []string{
	"v1", "v2", "api", "admin", "app", "assets", "static", "public",
	"health", "healthz", "readyz", "livez", "metrics", "debug", "status",
	"login", "logout", "signin", "signup", "auth", "oauth", "account",
	"settings", "docs", "help", "support", "about", "terms", "privacy",
	"robots", "favicon", "sitemap", "well-known", "www", "linkpop",
}

// Reserved is a set of reserved codes, matched case-insensitively.
type Reserved map[string]struct{}

// NewReserved builds a set from the given codes.
func NewReserved(codes ...[]string) Reserved {
	r := Reserved{}
	for _, list := range codes {
		for _, c := range list {
			r[strings.ToLower(c)] = struct{}{}
		}
	}
	return r
}

// Contains reports whether code is reserved.
func (r Reserved) Contains(code string) bool {
	_, ok := r[strings.ToLower(code)]
	return ok
}

// ParseCode validates a custom code chosen by a creator: syntax first, then
// reservation.
func ParseCode(s string, reserved Reserved) (string, error) {
	if !ValidCode(s) {
		return "", ErrInvalidCode
	}
	if reserved.Contains(s) {
		return "", ErrCodeReserved
	}
	return s, nil
}

// RandomCode draws a base62 code of length n from crypto/rand, with
// rejection sampling so every symbol is equally likely.
func RandomCode(n int) (string, error) {
	if n < MinCodeLen || n > MaxCodeLen {
		return "", fmt.Errorf("random code length %d outside [%d, %d]", n, MinCodeLen, MaxCodeLen)
	}
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("read random: %w", err)
		}
		for _, b := range buf {
			// 62*4 = 248: bytes >= 248 would bias the first 8 symbols.
			if b >= 248 {
				continue
			}
			out = append(out, Base62[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}
