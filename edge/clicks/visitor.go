package clicks

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// MinKeyLen is the shortest analytics key accepted.
const MinKeyLen = 16

// VisitorKey is the fleet-wide secret of the visitor hash. Every edge of
// a fleet must use the same key, or the uniques sketches of different
// edges do not merge.
type VisitorKey struct{ k0, k1 uint64 }

// NewVisitorKey derives the SipHash key from the configured analytics key
// (SHA-256 of it, first 16 bytes), so a key of any length and alphabet
// works.
func NewVisitorKey(secret []byte) VisitorKey {
	sum := sha256.Sum256(secret)
	return VisitorKey{binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])}
}

// Visitor is the visitor identity of a click: SipHash-2-4, keyed with k,
// of the client address (16 bytes, IPv4 mapped) followed by uaHash, the
// XXH64 of the User-Agent (UAHash). Hashing the User-Agent first with an
// unkeyed hash keeps the keyed part short (24 bytes); the key still
// protects the address. The address itself is never kept.
func (k VisitorKey) Visitor(addr netip.Addr, uaHash uint64) uint64 {
	a := addr.As16()
	var tail [8]byte
	binary.LittleEndian.PutUint64(tail[:], uaHash)
	return sipHash(k.k0, k.k1, binary.LittleEndian.Uint64(a[0:8]), binary.LittleEndian.Uint64(a[8:16]), tail[:])
}

// UAHash is the hash of a User-Agent that Visitor takes (XXH64, seed 0),
// the same on every edge.
func UAHash(ua []byte) uint64 { return xxhash.Sum64(ua) }

// sipHash is SipHash-2-4 of the 16 bytes (m0, m1) followed by tail.
func sipHash(k0, k1, m0, m1 uint64, tail []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	n := 16 + len(tail)
	v0, v1, v2, v3 = sipBlock(v0, v1, v2, v3, m0)
	v0, v1, v2, v3 = sipBlock(v0, v1, v2, v3, m1)
	for len(tail) >= 8 {
		v0, v1, v2, v3 = sipBlock(v0, v1, v2, v3, binary.LittleEndian.Uint64(tail))
		tail = tail[8:]
	}
	last := uint64(n&0xff) << 56
	for i := len(tail) - 1; i >= 0; i-- {
		last |= uint64(tail[i]) << (8 * uint(i))
	}
	v0, v1, v2, v3 = sipBlock(v0, v1, v2, v3, last)
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return v0 ^ v1 ^ v2 ^ v3
}

func sipBlock(v0, v1, v2, v3, m uint64) (uint64, uint64, uint64, uint64) {
	v3 ^= m
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m
	return v0, v1, v2, v3
}

func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// Proxies are the trusted proxies: only a request whose socket peer is one
// of them may name the client in X-Forwarded-For or Forwarded.
type Proxies struct{ prefixes []netip.Prefix }

// NewProxies returns the proxy set of the given prefixes.
func NewProxies(prefixes []netip.Prefix) *Proxies {
	p := &Proxies{}
	for _, pr := range prefixes {
		p.prefixes = append(p.prefixes, pr.Masked())
	}
	return p
}

// Trusts reports whether a (unmapped) is a trusted proxy: only then do
// the forwarding headers matter.
func (p *Proxies) Trusts(a netip.Addr) bool { return p != nil && p.trusted(a) }

func (p *Proxies) trusted(a netip.Addr) bool {
	for _, pr := range p.prefixes {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the client address of a request: the socket peer, or,
// when the peer is a trusted proxy, the right-most address of the
// forwarding chain that is not a trusted proxy. The chain is Forwarded's
// "for=" parameters if the request has a Forwarded header, else
// X-Forwarded-For; each argument holds the header's values in the order
// they came. If every address of the chain is trusted the left-most one is
// the client; an element that is not an address (obfuscated, "unknown",
// garbage) ends the walk and the last address walked is the client.
// It does not allocate.
func (p *Proxies) ClientAddr(peer netip.Addr, xff, fwd [][]byte) netip.Addr {
	peer = peer.Unmap()
	if p == nil || len(p.prefixes) == 0 || !p.trusted(peer) {
		return peer
	}
	client := peer
	values, forwarded := xff, false
	if len(fwd) > 0 {
		values, forwarded = fwd, true
	}
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		end := len(v)
		for end > 0 {
			start := end - 1
			for start >= 0 && v[start] != ',' {
				start--
			}
			elem := v[start+1 : end]
			end = start
			if isBlank(elem) {
				continue
			}
			var a netip.Addr
			var ok bool
			if forwarded {
				a, ok = forwardedFor(elem)
			} else {
				a, ok = parseHop(trimSpace(elem))
			}
			if !ok {
				return client
			}
			client = a
			if !p.trusted(a) {
				return a
			}
		}
	}
	return client
}

// forwardedFor returns the address of the for= parameter of one
// Forwarded element.
func forwardedFor(elem []byte) (netip.Addr, bool) {
	for len(elem) > 0 {
		j := 0
		for j < len(elem) && elem[j] != ';' {
			j++
		}
		pair := trimSpace(elem[:j])
		if j < len(elem) {
			elem = elem[j+1:]
		} else {
			elem = nil
		}
		if len(pair) > 4 && (pair[0]|0x20) == 'f' && (pair[1]|0x20) == 'o' && (pair[2]|0x20) == 'r' && pair[3] == '=' {
			v := pair[4:]
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return parseHop(v)
		}
	}
	return netip.Addr{}, false
}

// parseHop parses an address as proxies write it: "1.2.3.4",
// "1.2.3.4:80", "2001:db8::1", "[2001:db8::1]" or "[2001:db8::1]:80".
func parseHop(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		end := 1
		for end < len(b) && b[end] != ']' {
			end++
		}
		if end == len(b) {
			return netip.Addr{}, false
		}
		b = b[1:end]
	} else if colons(b) == 1 {
		for i := range b {
			if b[i] == ':' {
				b = b[:i]
				break
			}
		}
	}
	// The string never outlives this call: ParseAddr copies what it keeps.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func colons(b []byte) int {
	n := 0
	for _, c := range b {
		if c == ':' {
			n++
		}
	}
	return n
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func isBlank(b []byte) bool { return len(trimSpace(b)) == 0 }
