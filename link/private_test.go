package link_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

// TestPrivateTargets: every spelling of an internal address a browser
// reads (decimal, octal, hex, short forms, full-width digits, IPv6
// forms embedding an IPv4 address) is refused with url_blocked by a
// policy refusing private addresses, and public ones are not.
func TestPrivateTargets(t *testing.T) {
	p := link.URLPolicy{}.RefusingPrivateAddresses()
	f := func(in string, blocked bool) {
		t.Helper()
		out, err := p.NormalizeURL(in)
		switch {
		case blocked && !errors.Is(err, link.ErrURLBlocked):
			t.Errorf("NormalizeURL(%q) = %q, %v; want url_blocked", in, out, err)
		case !blocked && err != nil:
			t.Errorf("NormalizeURL(%q) = %v; want it accepted", in, err)
		}
		// Whatever the policy says, the zero policy accepts it: the
		// refusal is the policy's, not a syntax rule.
		if _, err := (link.URLPolicy{}).NormalizeURL(in); err != nil {
			t.Errorf("zero policy refused %q: %v", in, err)
		}
	}
	// Loopback in every IPv4 spelling.
	f("http://127.0.0.1/", true)
	f("http://127.1/", true)
	f("http://2130706433/", true)
	f("http://0x7f.1/", true)
	f("http://0X7F.0.0.1/", true)
	f("http://0177.0.0.1/", true)
	f("http://0177.1/", true)
	f("http://0x7f000001/", true)
	f("http://017700000001/", true)
	f("http://127.000.000.001/", true)
	f("http://127.0.0.1./", true)
	f("http://１２７.０.０.１/", true)
	f("http://127。0。0。1/", true)
	f("http://127.255.255.254:8080/admin", true)
	// "This network": 0.0.0.0 reaches the local host on Linux.
	f("http://0/", true)
	f("http://0x/", true)
	f("http://0.0.0.0:9000/", true)
	// RFC 1918.
	f("http://10.1/", true)
	f("http://167772161/", true)
	f("http://0xa.0x1.0x0.0x1:8080/x", true)
	f("http://012.0.0.1/", true)
	f("http://172.16.0.1/", true)
	f("http://172.31.255.255/", true)
	f("http://192.168.1.1/", true)
	f("http://0xc0.0xa8.1.1/", true)
	f("http://3232235777/", true)
	f("http://192.168.257/", true) // 192.168.1.1 in the three-part form
	// Cloud metadata and link-local.
	f("http://169.254.169.254/latest/meta-data/", true)
	f("http://0xa9fea9fe/", true)
	f("http://2852039166/", true)
	f("http://0251.0376.0251.0376/", true)
	f("http://169.254.43518/", true)
	f("http://0xa9.0xfe.0xa9.0xfe/", true)
	f("http://100.100.100.200/", true) // Alibaba Cloud
	f("http://192.0.0.192/", true)     // Oracle Cloud
	f("http://[fd00:ec2::254]/", true) // AWS over IPv6
	f("http://[fe80::1]/", true)
	// Carrier-grade NAT, multicast, reserved, broadcast.
	f("http://100.64.0.1/", true)
	f("http://224.0.0.1/", true)
	f("http://240.0.0.1/", true)
	f("http://255.255.255.255/", true)
	f("http://4294967295/", true)
	// IPv6 loopback, unspecified, unique local, and IPv4 embedded in IPv6.
	f("http://[::1]/", true)
	f("http://[0:0:0:0:0:0:0:1]/", true)
	f("http://[0000::0001]/", true)
	f("http://[::]/", true)
	f("http://[::ffff:127.0.0.1]/", true)
	f("http://[::ffff:7f00:1]/", true)
	f("http://[::FFFF:169.254.169.254]/", true)
	f("http://[::ffff:a9fe:a9fe]/", true)
	f("http://[::127.0.0.1]/", true)
	f("http://[64:ff9b::a9fe:a9fe]/", true)
	f("http://[64:ff9b::10.0.0.1]/", true)
	f("http://[2002:7f00:1::]/", true)
	f("http://[2002:c0a8:101::1]/", true)
	f("http://[fc00::1]/", true)
	f("http://[fdff:ffff::1]/", true)
	f("http://[ff02::1]/", true)
	// Names reserved for one machine or a private network.
	f("http://localhost/", true)
	f("http://LOCALHOST./", true)
	f("http://app.localhost:3000/", true)
	f("http://printer.local/", true)
	f("http://metadata.google.internal/computeMetadata/v1/", true)
	f("http://router.home.arpa/", true)
	// Public addresses and names stay allowed.
	f("http://8.8.8.8/", false)
	f("http://134744072/", false) // 8.8.8.8
	f("http://1.1.1.1/", false)
	f("http://11.0.0.1/", false)
	f("http://172.32.0.1/", false)
	f("http://172.15.255.255/", false)
	f("http://100.128.0.1/", false)
	f("http://192.169.0.1/", false)
	f("http://169.255.0.1/", false)
	f("http://223.255.255.255/", false)
	f("http://[2606:4700:4700::1111]/", false)
	f("http://[::ffff:8.8.8.8]/", false)
	f("http://[2002:808:808::]/", false)
	f("http://[64:ff9b::808:808]/", false)
	f("https://example.com/", false)
	f("https://localhost.example.com/", false)
	f("https://local.example/", false)
	f("https://internal.example.com/", false)
	f("https://notlocalhost/", false)
}

// TestPrivateHostBoundaries: the first and last address of every range,
// and the ones just outside, straight through PrivateHost.
func TestPrivateHostBoundaries(t *testing.T) {
	f := func(host string, want bool) {
		t.Helper()
		if got := link.PrivateHost(host); got != want {
			t.Errorf("PrivateHost(%q) = %v; want %v", host, got, want)
		}
	}
	f("9.255.255.255", false)
	f("10.0.0.0", true)
	f("10.255.255.255", true)
	f("100.63.255.255", false)
	f("100.64.0.0", true)
	f("100.127.255.255", true)
	f("126.255.255.255", false)
	f("128.0.0.0", false)
	f("169.253.255.255", false)
	f("169.254.0.0", true)
	f("172.15.255.255", false)
	f("172.16.0.0", true)
	f("172.32.0.0", false)
	f("191.255.255.255", false)
	f("192.0.0.0", true)
	f("192.0.1.0", false)
	f("192.167.255.255", false)
	f("192.168.0.0", true)
	f("198.17.255.255", false)
	f("198.18.0.0", true)
	f("198.19.255.255", true)
	f("198.20.0.0", false)
	f("223.255.255.255", false)
	f("224.0.0.0", true)
	f("::2", true) // IPv4-compatible 0.0.0.2
	f("fbff:ffff::", false)
	f("fe00::", false)
	f("fe80::", true)
	f("febf:ffff::", true)
	f("fec0::", true)
	f("ff00::", true)
	f("2001:db8::1", false)
}

// FuzzPrivateTarget: for any target the zero policy accepts, the
// private-refusing policy refuses it exactly when the host a WHATWG URL
// parser (a browser) reads from the input is an internal address, so no
// spelling reaches an internal address past the check. Hosts the
// library misreads (signedNumberLabel) are left to TestBrowserHostTable.
func FuzzPrivateTarget(f *testing.F) {
	for _, s := range []string{
		"127.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.000.000.001", "0x7f000001", "１２７.０.０.１",
		"169.254.43518", "0251.0376.0251.0376", "0xa9fea9fe", "[::ffff:127.0.0.1]", "[64:ff9b::a9fe:a9fe]",
		"[2002:7f00:1::]", "[fd00:ec2::254]", "localhost", "a.localhost", "8.8.8.8", "example.com", "0", "0x",
		"10.1", "192.168.257", "[::]", "[::1]", "1.1.1.1", "3232235777",
	} {
		f.Add(s)
	}
	refuse := link.URLPolicy{}.RefusingPrivateAddresses()
	f.Fuzz(func(t *testing.T, host string) {
		raw := "http://" + host + "/"
		out, err := link.URLPolicy{}.NormalizeURL(raw)
		if err != nil {
			return
		}
		stored := storedHost(t, out)
		if signedNumberLabel(stored) {
			return
		}
		bh, err := browserHost(raw)
		if err != nil {
			t.Fatalf("%q accepted as %q, but a browser does not parse it: %v", raw, out, err)
		}
		bh = strings.TrimSuffix(bh, ".")
		private := link.PrivateHost(strings.Trim(stored, "[]"))
		if a, err := netip.ParseAddr(strings.Trim(bh, "[]")); err == nil {
			if browserPrivate := link.PrivateHost(a.String()); browserPrivate != private {
				t.Fatalf("%q: browser reads %s (private %v), linkpop stored %s (private %v)", raw, bh, browserPrivate, stored, private)
			}
		}
		_, err = refuse.NormalizeURL(raw)
		if private != errors.Is(err, link.ErrURLBlocked) {
			t.Fatalf("%q (host %s, private %v): refusing policy answered %v", raw, stored, private, err)
		}
	})
}
