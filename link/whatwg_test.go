package link_test

import (
	"net/url"
	"strings"
	"testing"

	whatwg "github.com/nlnwa/whatwg-url/url"

	"github.com/linkpop/linkpop/link"
)

// browserHost is the host a WHATWG-conformant parser (what browsers
// implement) reads from raw, bracketed for IPv6 as in a URL.
func browserHost(raw string) (string, error) {
	u, err := whatwg.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.Hostname(), nil
}

// storedHost is the host of a canonical URL, as linkpop wrote it.
func storedHost(t testing.TB, stored string) string {
	t.Helper()
	u, err := url.Parse(stored)
	if err != nil {
		t.Fatalf("stored URL %q does not parse: %v", stored, err)
	}
	h := u.Hostname()
	if strings.IndexByte(h, ':') >= 0 {
		h = "[" + h + "]"
	}
	return h
}

// checkBrowserHost is the property: a browser given either the creator's
// input or the stored URL goes to the host linkpop stored. The one
// difference allowed is the trailing dot of a fully qualified name,
// which browsers keep and linkpop drops ("example.com." and
// "example.com" are one DNS name).
func checkBrowserHost(t testing.TB, raw, stored string) {
	t.Helper()
	ours := storedHost(t, stored)
	if signedNumberLabel(ours) {
		return
	}
	got, err := browserHost(stored)
	if err != nil || got != ours {
		t.Fatalf("stored %q: browser host %q (%v), linkpop host %q", stored, got, err, ours)
	}
	if got, err := browserHost(raw); err != nil || strings.TrimSuffix(got, ".") != ours {
		t.Fatalf("input %q: browser host %q (%v), linkpop host %q (stored %q)", raw, got, err, ours, stored)
	}
}

// TestBrowserHostProperty: for every accepted target of a corpus of
// host spellings, the host a WHATWG URL parser reads equals the one
// linkpop stores (and so checks against its blocklist).
func TestBrowserHostProperty(t *testing.T) {
	p := link.URLPolicy{}
	n := 0
	for _, raw := range hostCorpus {
		out, err := p.NormalizeURL(raw)
		if err != nil {
			continue
		}
		n++
		checkBrowserHost(t, raw, out)
	}
	if n < len(hostCorpus)/2 {
		t.Fatalf("only %d of %d corpus targets accepted", n, len(hostCorpus))
	}
}

// hostCorpus are host spellings: numeric IPv4 forms, IPv6, IDN,
// hyphens, case, dots, ports.
var hostCorpus = []string{
	"http://127.1/", "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/",
	"http://127.000.000.001/", "http://0x7f000001/", "http://127.0.0.1./", "http://１２７.０.０.１/",
	"http://127。0。0。1/", "http://10.1/", "http://0xa.0x1.0x0.0x1:8080/x", "http://167772161/",
	"http://0/", "http://0x/", "http://1.0xg/", "http://1.a/", "http://0x100.1/", "http://0.0.0.0x100/",
	"http://[::1]/", "http://[0:0:0:0:0:0:0:1]/", "http://[::ffff:1.2.3.4]/", "http://[2001:DB8:0:0:1:0:0:1]/",
	"http://[1:0:0:2:0:0:0:3]/", "http://[0:0:1:0:0:0:0:0]/", "http://[::]/", "http://[1::]:8080/",
	"https://bücher.example/", "https://BÜCHER.EXAMPLE./", "https://xn--bcher-kva.example/",
	"https://shop.bücher.example/", "https://münchen.example/", "https://ＥＸＡＭＰＬＥ.com/",
	"https://faß.de/", "https://straße.example/", "https://ε.example/", "https://日本語。jp/",
	"https://r3---sn-abc.googlevideo.com/", "https://ab--cd.example/", "https://-a-.example/",
	"https://a-.example/", "https://-/", "https://a_b.example.com/", "http://A./", "HTTP://Example.COM:80/",
	"https://example.com:443/", "https://example.com:08443/", "https://\u0430pple.com/", "http://a.b.c.d.e/",
}

// signedNumberLabel reports whether host's last label is one that
// nlnwa/whatwg-url v0.6.2 wrongly takes for an IPv4 number: it parses the
// parts with strconv.ParseInt, which accepts a sign, where the standard's
// IPv4 number parser fails on any character that is not a digit of the
// radix. By the standard "http://-0/" is the domain "-0" (what linkpop
// stores), and the library's 0.0.0.0 is its bug, so such hosts are left
// to the table in TestBrowserHostTable.
func signedNumberLabel(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	switch {
	case len(last) >= 2 && (last[:2] == "0x" || last[:2] == "0X"):
		last = last[2:]
	case len(last) >= 2 && last[0] == '0':
		last = last[1:]
	}
	return last != "" && (last[0] == '-' || last[0] == '+')
}

// TestBrowserHostTable: hosts the library gets wrong, with the standard's
// answer (WHATWG URL, "IPv4 number parser": a character that is not a
// radix-R digit is a failure, so these do not end in a number).
func TestBrowserHostTable(t *testing.T) {
	for raw, want := range map[string]string{
		"http://-0/":       "http://-0/",
		"http://a.-1/":     "http://a.-1/",
		"http://0x-1/":     "http://0x-1/",
		"http://0-1.b/":    "http://0-1.b/",
		"http://1.2.3.-4/": "http://1.2.3.-4/",
	} {
		got, err := link.URLPolicy{}.NormalizeURL(raw)
		if err != nil || got != want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
}
