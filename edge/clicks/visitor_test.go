package clicks

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	p := NewProxies([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")})
	split := func(h string) [][]byte {
		if h == "" {
			return nil
		}
		var out [][]byte
		for _, v := range strings.Split(h, "|") {
			out = append(out, []byte(v))
		}
		return out
	}
	f := func(peer, xff, fwd, want string) {
		t.Helper()
		got := p.ClientAddr(netip.MustParseAddr(peer), split(xff), split(fwd))
		if got.String() != want {
			t.Errorf("peer %s xff %q fwd %q: got %s, want %s", peer, xff, fwd, got, want)
		}
	}
	// An untrusted peer is the client, whatever it claims.
	f("203.0.113.9", "1.2.3.4", "", "203.0.113.9")
	f("203.0.113.9", "", "for=1.2.3.4", "203.0.113.9")
	f("::ffff:203.0.113.9", "1.2.3.4", "", "203.0.113.9")
	// A trusted peer: the right-most untrusted address.
	f("10.0.0.1", "1.2.3.4", "", "1.2.3.4")
	f("10.0.0.1", "6.6.6.6, 1.2.3.4", "", "1.2.3.4")
	f("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1", "", "1.2.3.4")
	f("10.0.0.1", "6.6.6.6|1.2.3.4, 10.1.1.1", "", "1.2.3.4")
	f("10.0.0.1", "1.2.3.4:5678", "", "1.2.3.4")
	f("10.0.0.1", " 2001:db8::1 ", "", "2001:db8::1")
	f("10.0.0.1", "[2001:db8::1]:443", "", "2001:db8::1")
	f("10.0.0.1", "2001:db8::1, 2001:db8:ffff::5", "", "2001:db8::1")
	// Every hop trusted: the left-most.
	f("10.0.0.1", "10.2.2.2, 10.3.3.3", "", "10.2.2.2")
	// No header: the peer.
	f("10.0.0.1", "", "", "10.0.0.1")
	// Garbage ends the walk at the last address walked.
	f("10.0.0.1", "1.2.3.4, garbage", "", "10.0.0.1")
	f("10.0.0.1", "garbage, 1.2.3.4", "", "1.2.3.4")
	f("10.0.0.1", "1.2.3.4, unknown, 10.9.9.9", "", "10.9.9.9")
	f("10.0.0.1", ",,", "", "10.0.0.1")
	// Forwarded wins over X-Forwarded-For.
	f("10.0.0.1", "6.6.6.6", "for=1.2.3.4;proto=https", "1.2.3.4")
	f("10.0.0.1", "", `for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"`, "2001:db8:cafe::17")
	f("10.0.0.1", "", `for=192.0.2.60, for=10.4.4.4`, "192.0.2.60")
	f("10.0.0.1", "", `for=_hidden, for=10.4.4.4`, "10.4.4.4")
	f("10.0.0.1", "", `proto=https`, "10.0.0.1")
	// No trusted proxies configured: always the peer.
	if got := NewProxies(nil).ClientAddr(netip.MustParseAddr("10.0.0.1"), split("1.2.3.4"), nil); got.String() != "10.0.0.1" {
		t.Errorf("no proxies: got %s", got)
	}
}

func TestClientAddrAllocs(t *testing.T) {
	p := NewProxies([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	xff := [][]byte{[]byte("6.6.6.6, [2001:db8::1]:80, 10.1.1.1")}
	peer := netip.MustParseAddr("10.0.0.1")
	if n := testing.AllocsPerRun(100, func() { p.ClientAddr(peer, xff, nil) }); n != 0 {
		t.Fatalf("ClientAddr allocates %v times", n)
	}
}

func TestRefererHost(t *testing.T) {
	f := func(ref, want string) {
		t.Helper()
		var buf [253]byte
		if got := string(refererHost([]byte(ref), &buf)); got != want {
			t.Errorf("refererHost(%q) = %q, want %q", ref, got, want)
		}
	}
	f("", "")
	f("https://WWW.Example.COM/path?q=1", "www.example.com")
	f("http://user:pw@host.example:8080/", "host.example")
	f("https://example.com.", "example.com")
	f("https://[2001:db8::1]:443/x", "[2001:db8::1]")
	f("android-app://com.google.android.gm/", "com.google.android.gm")
	f("example.com/path", "")
	f("/relative", "")
	f("https://", "")
	f("https://a b/", "")
	f("https://"+strings.Repeat("a", 300)+"/", "")
}
