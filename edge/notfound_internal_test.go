package edge

import (
	"net/netip"
	"testing"
	"time"
)

// TestNotFoundBucket: a client gets burst answers at once, then one per
// 1/rate; another client has its own bucket; the addresses of one IPv6
// /64 share a bucket, and an IPv4-mapped address is its IPv4 address.
func TestNotFoundBucket(t *testing.T) {
	l := newNotFoundLimiter(2, 3, 1024)
	t0 := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !l.allow(a, t0) {
			t.Fatalf("answer %d refused within the burst", i)
		}
	}
	if l.allow(a, t0) {
		t.Fatal("fourth answer at once allowed")
	}
	if l.allow(netip.MustParseAddr("::ffff:192.0.2.1"), t0) {
		t.Fatal("the IPv4-mapped spelling has a bucket of its own")
	}
	if l.allow(a, t0.Add(400*time.Millisecond)) {
		t.Fatal("allowed before a token refilled (rate 2/s)")
	}
	if !l.allow(a, t0.Add(500*time.Millisecond)) {
		t.Fatal("refused after a token refilled")
	}
	if !l.allow(netip.MustParseAddr("192.0.2.2"), t0) {
		t.Fatal("another client refused")
	}
	v6 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for i, s := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"} {
		if !l.allow(v6(s), t0) {
			t.Fatalf("v6 answer %d refused", i)
		}
	}
	if l.allow(v6("2001:db8:1:2:dead:beef::1"), t0) {
		t.Fatal("a new address in the same /64 got a fresh bucket")
	}
	if !l.allow(v6("2001:db8:1:3::1"), t0) {
		t.Fatal("another /64 refused")
	}
	// A long rest refills to the burst, no more.
	later := t0.Add(time.Hour)
	for i := range 3 {
		if !l.allow(a, later) {
			t.Fatalf("after a rest, answer %d refused", i)
		}
	}
	if l.allow(a, later) {
		t.Fatal("a rest refilled beyond the burst")
	}
}

// TestNotFoundBounded: a flood of distinct addresses never grows the
// table past its size, and evicts the fullest buckets first, so a client
// that emptied its bucket stays limited while other clients come and go
// at a normal pace (new addresses spread over all sets).
func TestNotFoundBounded(t *testing.T) {
	l := newNotFoundLimiter(1, 10, 1024)
	size := len(l.sets) * notFoundWays
	t0 := time.Unix(1_700_000_000, 0)
	abuser := netip.MustParseAddr("198.51.100.7")
	for range 10 {
		l.allow(abuser, t0)
	}
	if l.allow(abuser, t0) {
		t.Fatal("abuser not limited")
	}
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.allow(a, t0)
		if i%997 == 0 && l.allow(abuser, t0) {
			t.Fatalf("abuser allowed again after %d new clients", i)
		}
	}
	if n := l.clients(); n > size || size > 2*1024 {
		t.Fatalf("%d clients in a table of %d (asked 1024)", n, size)
	}
}
