package clicks

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/medama-io/go-useragent"
	"github.com/phuslu/iploc"
	"github.com/x-way/crawlerdetect"
)

// Breakdown keys the contract fixes.
const (
	DeviceDesktop = "desktop"
	DeviceMobile  = "mobile"
	DeviceTablet  = "tablet"
	DeviceBot     = "bot"
	DeviceOther   = "other"
	// CountryUnknown is the country of an address the database does not
	// place (private, loopback, unassigned).
	CountryUnknown = "ZZ"
	// otherKey is the browser or OS of a User-Agent the parser does not
	// recognise, and the referrer of clicks past the recorder's bound on
	// distinct referrers per interval.
	otherKey = "other"
	// maxUALen is how much of a User-Agent is classified (and kept while
	// waiting to be): longer ones are cut.
	maxUALen = 512
)

// Class is what a User-Agent says about a click.
type Class struct {
	// Bot: a known crawler or link previewer.
	Bot                 bool
	Device, Browser, OS string
}

// Classifier classifies User-Agents. It is not safe for concurrent use
// (the parser is); the shipper owns one.
type Classifier struct{ parser *useragent.Parser }

// NewClassifier loads the User-Agent parser.
func NewClassifier() *Classifier { return &Classifier{parser: useragent.NewParser()} }

// Classify classifies one User-Agent. It costs microseconds (the crawler
// list is one large regular expression), so the recorder never calls it
// per click: the shipper classifies each distinct User-Agent once.
func (c *Classifier) Classify(ua string) Class {
	if len(ua) > maxUALen {
		ua = ua[:maxUALen]
	}
	p := c.parser.Parse(ua)
	if crawlerdetect.IsCrawler(ua) || p.IsBot() {
		return Class{Bot: true, Device: DeviceBot, Browser: nonEmpty(p.GetBrowser()), OS: nonEmpty(p.GetOS())}
	}
	cl := Class{Device: DeviceOther, Browser: nonEmpty(p.GetBrowser()), OS: nonEmpty(p.GetOS())}
	switch {
	case p.IsTablet():
		cl.Device = DeviceTablet
	case p.IsMobile():
		cl.Device = DeviceMobile
	case p.IsDesktop():
		cl.Device = DeviceDesktop
	}
	return cl
}

func nonEmpty(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return otherKey
	}
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// Country is the ISO 3166-1 alpha-2 country of addr from the offline
// database compiled into the binary, or CountryUnknown. It costs tens of
// nanoseconds and does not allocate, so the recorder calls it per click.
func Country(addr netip.Addr) [2]byte {
	c := iploc.IPCountry(addr)
	if len(c) != 2 || c == "ZZ" || c == "--" {
		return [2]byte{'Z', 'Z'}
	}
	return [2]byte{c[0], c[1]}
}

// refererHost writes the lower-cased host of a Referer value into buf and
// returns it: "" for none (a direct visit) or for a value that is not an
// absolute URL with a host. The port and any user info are dropped.
func refererHost(ref []byte, buf *[253]byte) []byte {
	host, upper := refererHostIn(ref)
	if !upper {
		return host
	}
	return lowerHost(host, buf)
}

// lowerHost writes host lower-cased into buf and returns it.
func lowerHost(host []byte, buf *[253]byte) []byte {
	for j, c := range host {
		buf[j] = hostByte[c]
	}
	return buf[:len(host)]
}

// refererHostIn returns the host of a Referer value as it is in ref (see
// refererHost), and whether it holds upper-case letters, so the common
// lower-case host needs no copy.
func refererHostIn(ref []byte) (host []byte, upper bool) {
	i := bytes.Index(ref, schemeSep)
	if i <= 0 || i > 32 {
		return nil, false
	}
	for _, c := range ref[:i] {
		if !schemeByte[c] {
			return nil, false
		}
	}
	rest := ref[i+3:]
	end := 0
	at := -1
	for end < len(rest) {
		c := rest[end]
		if c == '/' || c == '?' || c == '#' {
			break
		}
		if c == '@' {
			at = end
		}
		end++
	}
	auth := rest[at+1 : end]
	if len(auth) > 0 && auth[0] == '[' { // IPv6 literal
		j := bytes.IndexByte(auth, ']')
		if j < 0 {
			return nil, false
		}
		auth = auth[:j+1]
	} else if j := bytes.IndexByte(auth, ':'); j >= 0 {
		auth = auth[:j]
	}
	for len(auth) > 0 && auth[len(auth)-1] == '.' {
		auth = auth[:len(auth)-1]
	}
	if len(auth) == 0 || len(auth) > 253 {
		return nil, false
	}
	for _, c := range auth {
		l := hostByte[c]
		if l == 0 {
			return nil, false
		}
		upper = upper || l != c
	}
	return auth, upper
}

var schemeSep = []byte("://")

// schemeByte marks the bytes of a URL scheme; hostByte maps the bytes a
// host may hold to their lower case (0 for the others).
var schemeByte, hostByte = func() (s [256]bool, h [256]byte) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		s[c] = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '+' || b == '-' || b == '.'
		switch {
		case b >= 'A' && b <= 'Z':
			h[c] = b + 'a' - 'A'
		case b <= ' ' || b == 0x7f || b == '%' || b == '"' || b == '\\' || b == '<' || b == '>':
		default:
			h[c] = b
		}
	}
	return
}()
