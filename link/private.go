package link

import (
	"net/netip"
	"strings"
)

// privatePrefixes are the address ranges no public short link should
// point at: a visitor's browser would reach into its own machine or
// network, or a cloud instance's metadata service.
var privatePrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",      // "this network"; 0.0.0.0 reaches the local host
		"10.0.0.0/8",     // RFC 1918
		"100.64.0.0/10",  // carrier-grade NAT; Alibaba Cloud metadata 100.100.100.200
		"127.0.0.0/8",    // loopback
		"169.254.0.0/16", // link-local; AWS, GCP, Azure, OCI metadata 169.254.169.254
		"172.16.0.0/12",  // RFC 1918
		"192.0.0.0/24",   // IETF protocol assignments (192.0.0.192: Oracle metadata)
		"192.168.0.0/16", // RFC 1918
		"198.18.0.0/15",  // benchmarking, used inside networks
		"224.0.0.0/4",    // multicast
		"240.0.0.0/4",    // reserved, and 255.255.255.255
		"::/128",         // unspecified
		"::1/128",        // loopback
		"64:ff9b:1::/48", // local-use NAT64
		"100::/64",       // discard-only
		"fc00::/7",       // unique local; AWS metadata fd00:ec2::254
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local (deprecated, still routed inside some networks)
		"ff00::/8",       // multicast
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// privateNames are the DNS names reserved for one machine or one private
// network (RFC 6761 localhost, mDNS .local, ICANN's .internal, RFC 8375
// home.arpa): a name equal to one or under one is private.
var privateNames = []string{"localhost", "local", "internal", "home.arpa"}

// PrivateHost reports whether host, in canonical form (CanonicalHost, IPv6
// without brackets), is an internal address: loopback, RFC 1918 and
// unique-local, link-local, carrier-grade NAT, cloud metadata, multicast,
// reserved, or a name reserved for private use (localhost, *.local,
// *.internal, *.home.arpa). An IPv6 address that embeds an IPv4 one
// (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64
// 64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd::) is private if that IPv4
// address is. A name that merely resolves to a private address is not
// detected: the check is on what the target says, not on DNS, which the
// visitor's resolver answers at click time.
func PrivateHost(host string) bool {
	if !isIPHost(host) {
		for _, n := range privateNames {
			if host == n || strings.HasSuffix(host, "."+n) {
				return true
			}
		}
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return privateAddr(a)
}

func privateAddr(a netip.Addr) bool {
	a = a.WithZone("")
	if a.Is6() {
		b := a.As16()
		switch {
		case a.Is4In6(), // ::ffff:0:0/96
			b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0 &&
				b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == 0, // ::/96, IPv4-compatible (and ::, ::1)
			b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4]|b[5]|b[6]|b[7]|b[8]|b[9]|b[10]|b[11] == 0: // 64:ff9b::/96
			if privateAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})) {
				return true
			}
		case b[0] == 0x20 && b[1] == 0x02: // 2002::/16, 6to4
			if privateAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})) {
				return true
			}
		}
	}
	for _, p := range privatePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
