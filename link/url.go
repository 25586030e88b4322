package link

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxURLLen is the longest target accepted, in bytes, before and after
// canonicalisation.
const MaxURLLen = 8000

// idnaProfile converts hosts to their IDNA ASCII (punycode) form with the
// options of the WHATWG URL standard's "domain to ASCII" (UTS #46 with
// CheckHyphens=false, CheckBidi=true, CheckJoiners=true,
// UseSTD3ASCIIRules=false, Transitional_Processing=false), so a stored
// host is exactly the one a browser resolves and confusable Unicode is
// visible as xn-- labels.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.CheckHyphens(false),     // r3---sn-abc, ab--cd, -a-: browsers accept them
	idna.StrictDomainName(false), // '_' is used by real sites; hostByte limits the rest
	idna.Transitional(false),
)

// std3Profile is idnaProfile with the STD3 rules: it refuses Unicode
// labels holding symbols that are, or decompose to, ASCII punctuation
// ("≠" is "=" with a combining stroke). Browsers resolve some of them;
// no real site needs them, and like ASCII punctuation in a host they
// serve only deception.
var std3Profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.CheckHyphens(false),
	idna.StrictDomainName(true),
	idna.Transitional(false),
)

// URLPolicy says which targets are acceptable beyond the syntax rules.
// The zero value blocks nothing; NewURLPolicy builds one with a blocklist,
// WithHosts adds the entries of blocklist files (ParseBlocklist) and
// RefusingPrivateAddresses refuses internal addresses. A URLPolicy is an
// immutable value: an origin that reloads its lists builds a new one.
type URLPolicy struct {
	// deny holds the canonical form (CanonicalHost) of every blocked
	// domain or address.
	deny map[string]struct{}
	// refusePrivate refuses hosts that are internal addresses
	// (PrivateHost).
	refusePrivate bool
}

// NewURLPolicy returns a policy that refuses targets on the given
// domains, together with all their subdomains (the service's own domains:
// a short link to a short link makes redirect loops and hides the real
// target; and any abuse list), and on the given IP addresses. Entries are
// canonicalised like target hosts (CanonicalHost), so "Bücher.example.",
// "xn--bcher-kva.example" and a target in either spelling all match; an
// entry that has no canonical form is an error naming it.
func NewURLPolicy(blocked []string) (URLPolicy, error) {
	p := URLPolicy{deny: make(map[string]struct{}, len(blocked))}
	var errs []error
	for _, d := range blocked {
		h, err := CanonicalHost(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("blocked domain %q: %w", d, err))
			continue
		}
		p.deny[h] = struct{}{}
	}
	if len(errs) > 0 {
		return URLPolicy{}, errors.Join(errs...)
	}
	return p, nil
}

// WithHosts returns a copy of p that also refuses hosts, which must be
// canonical already (ParseBlocklist returns them so), with their
// subdomains.
func (p URLPolicy) WithHosts(hosts []string) URLPolicy {
	deny := make(map[string]struct{}, len(p.deny)+len(hosts))
	for h := range p.deny {
		deny[h] = struct{}{}
	}
	for _, h := range hosts {
		deny[h] = struct{}{}
	}
	p.deny = deny
	return p
}

// RefusingPrivateAddresses returns a copy of p that also refuses targets
// whose host is an internal address (PrivateHost), in any spelling
// CanonicalHost reads ("127.1", "2130706433", "0x7f.1", "[::ffff:7f00:1]").
func (p URLPolicy) RefusingPrivateAddresses() URLPolicy {
	p.refusePrivate = true
	return p
}

// BlockedBy reports which entry of p's blocklist refuses the target
// rawURL: the listed domain it is on (or under) or the listed address.
// ok is false when no entry does, including when rawURL is not a valid
// target at all. Private addresses are not entries: BlockedBy ignores
// RefusingPrivateAddresses.
func (p URLPolicy) BlockedBy(rawURL string) (entry string, ok bool) {
	u, err := URLPolicy{}.NormalizeURL(rawURL)
	if err != nil {
		return "", false
	}
	rest := u[strings.Index(u, "://")+3:]
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if strings.HasPrefix(rest, "[") {
		rest = rest[1:strings.IndexByte(rest, ']')]
	} else if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	return p.blockedBy(rest)
}

// Len is the number of entries on p's blocklist.
func (p URLPolicy) Len() int { return len(p.deny) }

// NormalizeURL validates a creator's target URL and returns its canonical
// form: scheme and host lower-cased, host in IDNA ASCII form, default port
// dropped, path/query/fragment percent-encoded to pure ASCII. The result is
// what edges send, byte for byte, in Location.
//
// Refused: anything longer than MaxURLLen; invalid UTF-8 (never replaced:
// what is stored is what the creator sent); control characters (including
// CR, LF, NUL, DEL), spaces and backslashes anywhere; schemes other than
// http and https; missing hosts; userinfo (user:pass@host is a phishing
// device); hosts CanonicalHost refuses; targets on the policy's blocklist
// and, if the policy refuses them, internal addresses (ErrURLBlocked).
//
// The result is a fixed point: NormalizeURL of a canonical URL returns it
// unchanged.
func (p URLPolicy) NormalizeURL(raw string) (string, error) {
	if len(raw) > MaxURLLen {
		return "", ErrURLTooLong
	}
	if raw == "" || !utf8.ValidString(raw) {
		return "", ErrInvalidURL
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c < 0x20 || c == 0x7f || c == '\\' || c == ' ' {
			return "", ErrInvalidURL
		}
	}
	// Look at the scheme first so "javascript:..." reports the scheme
	// rather than some later syntax problem.
	colon := strings.IndexByte(raw, ':')
	if colon <= 0 {
		return "", ErrInvalidURL
	}
	scheme := strings.ToLower(raw[:colon])
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", ErrInvalidURL
		}
	}
	if scheme != "http" && scheme != "https" {
		return "", ErrURLSchemeNotAllowed
	}
	if !strings.HasPrefix(raw[colon+1:], "//") {
		return "", ErrInvalidURL
	}
	// Percent-encoding in the authority is legal but only ever used to
	// disguise a host; refuse it rather than decode it.
	authority := raw[colon+3:]
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	if strings.IndexByte(authority, '%') >= 0 {
		return "", ErrInvalidURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return "", ErrInvalidURL
	}
	if u.User != nil {
		return "", ErrInvalidURL
	}
	hostname, port := u.Hostname(), u.Port()
	if hostname == "" {
		return "", ErrInvalidURL
	}
	host, err := CanonicalHost(hostname)
	if err != nil {
		return "", err
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || len(port) > 5 {
			return "", ErrInvalidURL
		}
		port = strconv.Itoa(n)
		if scheme == "http" && n == 80 || scheme == "https" && n == 443 {
			port = ""
		}
	}
	if _, ok := p.blockedBy(host); ok {
		return "", ErrURLBlocked
	}
	if p.refusePrivate && PrivateHost(host) {
		return "", ErrURLBlocked
	}

	var b strings.Builder
	b.Grow(len(raw) + 16)
	b.WriteString(scheme)
	b.WriteString("://")
	if strings.IndexByte(host, ':') >= 0 {
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
	} else {
		b.WriteString(host)
	}
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	b.WriteString(asciiOnly(path))
	if u.ForceQuery || u.RawQuery != "" {
		b.WriteByte('?')
		b.WriteString(asciiOnly(u.RawQuery))
	}
	if u.Fragment != "" || u.RawFragment != "" {
		b.WriteByte('#')
		b.WriteString(asciiOnly(u.EscapedFragment()))
	}
	out := b.String()
	if len(out) > MaxURLLen {
		return "", ErrURLTooLong
	}
	return out, nil
}

// CanonicalHost returns the canonical form of a URL host (without port
// or brackets), the form NormalizeURL stores and compares with the
// blocklist. It follows the WHATWG URL host parser, which is what browsers
// resolve:
//
//   - An IPv6 address is written in its RFC 5952 form without an embedded
//     dotted quad ("::ffff:7f00:1"), as browsers serialise it.
//   - A name is mapped to IDNA ASCII (UTS #46 lookup mapping: lower case,
//     full-width forms and ideographic full stops folded, punycode for
//     Unicode labels). One trailing dot is dropped ("example.com." is the
//     same name); other empty labels are refused.
//   - A name whose last label is a number (decimal, 0x-hex or 0-octal) is
//     an IPv4 address in one of its numeric spellings ("127.1",
//     "2130706433", "0x7f.1", "0177.0.0.1", "127.000.000.001"); it is
//     written in dotted decimal, and refused if it is not a valid address.
//   - Labels are letters, digits, '-' (anywhere, as browsers allow: "ab--cd",
//     "r3---sn-abc", "-a-") and, in names without Unicode labels, '_'. Every other character is refused,
//     including those browsers tolerate but no DNS name holds ('!', '$',
//     '*', '~', ...), Unicode symbols the STD3 rules disallow ("≠"),
//     percent-encoding, and zone identifiers.
//   - At most 253 bytes in ASCII form.
func CanonicalHost(h string) (string, error) {
	if h == "" || !utf8.ValidString(h) {
		return "", ErrInvalidURL
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if strings.IndexByte(h, ':') >= 0 {
		return canonicalIPv6(h)
	}
	a, err := idnaProfile.ToASCII(h)
	if err != nil || a == "" {
		return "", ErrInvalidURL
	}
	a = strings.TrimSuffix(a, ".")
	if a == "" || len(a) > 253 || a[0] == '.' || a[len(a)-1] == '.' || strings.Contains(a, "..") {
		return "", ErrInvalidURL
	}
	for i := 0; i < len(a); i++ {
		if !hostByte(a[i]) {
			return "", ErrInvalidURL
		}
	}
	// The ASCII form must itself be valid (a fixed point); otherwise the
	// host held something IDNA maps but does not accept back, e.g. U+FFFD.
	if again, err := idnaProfile.ToASCII(a); err != nil || again != a {
		return "", ErrInvalidURL
	}
	// A name written with Unicode, or with Unicode (xn--) labels, must
	// pass the STD3 rules whole: no disallowed symbol in its Unicode
	// labels, nothing that maps to ASCII punctuation ("＿", "！"), and no
	// '_' anywhere in it ('_' is allowed in all-ASCII names only, where
	// real sites use it).
	if !isASCII(h) || strings.Contains(a, "xn--") {
		if _, err := std3Profile.ToASCII(h); err != nil {
			return "", ErrInvalidURL
		}
	}
	if endsInNumber(a) {
		return parseIPv4(a)
	}
	return a, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func hostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
}

// isIPHost reports whether a canonical host is an IP address.
func isIPHost(h string) bool {
	return strings.IndexByte(h, ':') >= 0 || endsInNumber(h)
}

// canonicalIPv6 parses an IPv6 address (no zone) and writes it as the
// WHATWG URL serialiser does: lower-case hex groups without leading zeros,
// the first longest run of two or more zero groups as "::", and never a
// dotted quad.
func canonicalIPv6(h string) (string, error) {
	ip, err := netip.ParseAddr(h)
	if err != nil || !ip.Is6() || ip.Zone() != "" {
		return "", ErrInvalidURL
	}
	b := ip.As16()
	var g [8]uint16
	for i := range g {
		g[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	bestStart, bestLen := -1, 1
	for i := 0; i < 8; {
		if g[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && g[j] == 0 {
			j++
		}
		if j-i > bestLen {
			bestStart, bestLen = i, j-i
		}
		i = j
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if i == bestStart {
			sb.WriteString("::")
			i += bestLen - 1
			continue
		}
		if sb.Len() > 0 && !strings.HasSuffix(sb.String(), ":") {
			sb.WriteByte(':')
		}
		sb.WriteString(strconv.FormatUint(uint64(g[i]), 16))
	}
	return sb.String(), nil
}

// endsInNumber is the WHATWG URL "ends in a number" checker: the last
// label (ignoring one trailing empty label) is all decimal digits or a
// 0x-prefixed hex number. Such a host is parsed as IPv4 or refused.
func endsInNumber(h string) bool {
	h = strings.TrimSuffix(h, ".")
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return false
	}
	allDigits := true
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			allDigits = false
			break
		}
	}
	if allDigits {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

// parseIPv4 is the WHATWG URL IPv4 parser: one to four dot-separated
// numbers, each decimal, 0x-hex or 0-octal; all but the last at most 255,
// the last filling the remaining bytes. It returns dotted decimal.
func parseIPv4(h string) (string, error) {
	parts := strings.Split(h, ".")
	if len(parts) > 4 {
		return "", ErrInvalidURL
	}
	var addr uint64
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return "", ErrInvalidURL
		}
		if i < len(parts)-1 {
			if n > 255 {
				return "", ErrInvalidURL
			}
			addr |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(5-len(parts))) {
			return "", ErrInvalidURL
		}
		addr |= n
	}
	return netip.AddrFrom4([4]byte{byte(addr >> 24), byte(addr >> 16), byte(addr >> 8), byte(addr)}).String(), nil
}

// parseIPv4Number is the WHATWG URL IPv4 number parser ("" is not a
// number; "0x" alone is zero). ok reports the syntax; a value too large
// for uint64 saturates, so the range checks of parseIPv4 refuse it (the
// standard parses with arbitrary precision: "0x100000010" is a number,
// and too large an address).
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, base = s[2:], 16
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	}
	if s == "" {
		return 0, true
	}
	// Only digits of base reach strconv: a host label that is no number
	// ("example") is refused here, without the error value strconv would
	// allocate for it on every create.
	for i := 0; i < len(s); i++ {
		if !digitOf(s[i], base) {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, base, 64)
	if errors.Is(err, strconv.ErrRange) {
		return math.MaxUint64, true
	}
	return n, err == nil
}

// digitOf reports whether c is a digit of base (8, 10 or 16).
func digitOf(c byte, base int) bool {
	switch {
	case c >= '0' && c <= '7':
		return true
	case c == '8' || c == '9':
		return base >= 10
	case (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'):
		return base == 16
	}
	return false
}

// blockedBy returns the blocklist entry that host (canonical) is, or is
// a subdomain of. An IP address matches only itself.
func (p URLPolicy) blockedBy(host string) (string, bool) {
	if len(p.deny) == 0 {
		return "", false
	}
	if _, ok := p.deny[host]; ok {
		return host, true
	}
	if isIPHost(host) {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			if _, ok := p.deny[host[i+1:]]; ok {
				return host[i+1:], true
			}
		}
	}
	return "", false
}

// asciiOnly percent-encodes every byte outside printable ASCII, and the few
// printable bytes that must never reach a header unescaped.
func asciiOnly(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

func needsEscape(c byte) bool {
	return c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>' || c == '\\' || c == '`' || c == '{' || c == '}' || c == '|' || c == '^'
}
