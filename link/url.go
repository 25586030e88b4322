package link

import (
	"net"
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
// lookup rules browsers apply, so a stored host is exactly what a browser
// would resolve and confusable Unicode is visible as xn-- labels.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.ValidateLabels(true),
	idna.StrictDomainName(false), // allow '_' in hosts, which real sites use
	idna.Transitional(false),
)

// URLPolicy says which targets are acceptable beyond the syntax rules.
type URLPolicy struct {
	// BlockedDomains are refused as targets, together with all their
	// subdomains: the service's own domains (a short link to a short link
	// makes redirect loops and hides the real target) and any abuse list.
	BlockedDomains []string
}

// NormalizeURL validates a creator's target URL and returns its canonical
// form: scheme and host lower-cased, host in IDNA ASCII form, default port
// dropped, path/query/fragment percent-encoded to pure ASCII. The result is
// what edges send, byte for byte, in Location.
//
// Refused: anything longer than MaxURLLen; control characters (including
// CR, LF, NUL, DEL), spaces and backslashes anywhere; schemes other than
// http and https; missing hosts; userinfo (user:pass@host is a phishing
// device); hosts that are not valid IDNA; targets on BlockedDomains.
func (p URLPolicy) NormalizeURL(raw string) (string, error) {
	if len(raw) > MaxURLLen {
		return "", ErrURLTooLong
	}
	if raw == "" {
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
	host, err := canonicalHost(hostname)
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
	if p.blocked(host) {
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

// canonicalHost lower-cases an IP literal or converts a DNS name to IDNA
// ASCII form.
func canonicalHost(h string) (string, error) {
	if ip := net.ParseIP(h); ip != nil {
		if ip4 := ip.To4(); ip4 != nil && strings.IndexByte(h, ':') < 0 {
			return ip4.String(), nil
		}
		return ip.String(), nil
	}
	if strings.IndexByte(h, '%') >= 0 || strings.IndexByte(h, ':') >= 0 {
		return "", ErrInvalidURL
	}
	h = strings.TrimSuffix(h, ".")
	if !utf8.ValidString(h) {
		return "", ErrInvalidURL
	}
	a, err := idnaProfile.ToASCII(h)
	if err != nil || a == "" || len(a) > 253 {
		return "", ErrInvalidURL
	}
	// The ASCII form must itself be valid (a fixed point); otherwise the
	// host held something IDNA maps but does not accept back, e.g. U+FFFD.
	if again, err := idnaProfile.ToASCII(a); err != nil || again != a {
		return "", ErrInvalidURL
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", ErrInvalidURL
		}
	}
	if strings.Contains(a, "..") || a[0] == '.' {
		return "", ErrInvalidURL
	}
	return a, nil
}

func (p URLPolicy) blocked(host string) bool {
	for _, d := range p.BlockedDomains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d == "" {
			continue
		}
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
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
