package link_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

func TestNormalizeURL(t *testing.T) {
	p := mustPolicy(t, "lnk.example", "127.0.0.1")
	ok := func(in, want string) {
		t.Helper()
		got, err := p.NormalizeURL(in)
		if err != nil || got != want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := func(in string, want error) {
		t.Helper()
		got, err := p.NormalizeURL(in)
		if !errors.Is(err, want) {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %v", in, got, err, want)
		}
	}
	ok("https://example.com", "https://example.com/")
	ok("HTTPS://EXAMPLE.com/Path?Q=1#Frag", "https://example.com/Path?Q=1#Frag")
	ok("http://example.com:80/a", "http://example.com/a")
	ok("https://example.com:443/a", "https://example.com/a")
	ok("https://example.com:8443/a", "https://example.com:8443/a")
	ok("https://bücher.example/ü?q=ä#ö", "https://xn--bcher-kva.example/%C3%BC?q=%C3%A4#%C3%B6")
	ok("https://example.com/a%20b?x=%0d%0a", "https://example.com/a%20b?x=%0d%0a")
	ok("https://example.com./", "https://example.com/")
	ok("http://[::1]:8080/x", "http://[::1]:8080/x")
	ok("http://10.0.0.1/", "http://10.0.0.1/")
	ok("https://example.com?", "https://example.com/?")
	ok("https://a_b.example.com/", "https://a_b.example.com/")

	bad("", link.ErrInvalidURL)
	bad("javascript:alert(1)", link.ErrURLSchemeNotAllowed)
	bad("JavaScript://%0aalert(1)", link.ErrURLSchemeNotAllowed)
	bad("data:text/html,<script>", link.ErrURLSchemeNotAllowed)
	bad("ftp://example.com/", link.ErrURLSchemeNotAllowed)
	bad("example.com", link.ErrInvalidURL)
	bad("//example.com", link.ErrInvalidURL)
	bad("https:example.com", link.ErrInvalidURL)
	bad("https://", link.ErrInvalidURL)
	bad("https:///path", link.ErrInvalidURL)
	bad("https://example.com/\r\nSet-Cookie: x", link.ErrInvalidURL)
	bad("https://example.com/\x00", link.ErrInvalidURL)
	bad("https://example.com/\x7f", link.ErrInvalidURL)
	bad("https://example.com\\@evil.com/", link.ErrInvalidURL)
	bad("https://example.com/a b", link.ErrInvalidURL)
	bad("https://user:pass@example.com/", link.ErrInvalidURL)
	bad("https://google.com@evil.com/", link.ErrInvalidURL)
	bad("https://example.com:0/", link.ErrInvalidURL)
	bad("https://example.com:99999/", link.ErrInvalidURL)
	bad("https://ex ample.com/", link.ErrInvalidURL)
	bad("https://exa%41mple.com/", link.ErrInvalidURL)
	bad("https://a..b/", link.ErrInvalidURL)
	bad("https://lnk.example/abc", link.ErrURLBlocked)
	bad("https://WWW.LNK.EXAMPLE/abc", link.ErrURLBlocked)
	bad("http://127.0.0.1:8080/abc", link.ErrURLBlocked)
	bad("https://example.com/"+strings.Repeat("a", link.MaxURLLen), link.ErrURLTooLong)
	// Canonicalisation may grow a URL past the limit: still refused.
	bad("https://example.com/"+strings.Repeat("ü", link.MaxURLLen/2-20), link.ErrURLTooLong)

	// Exactly at the limit is accepted.
	u := "https://example.com/" + strings.Repeat("a", link.MaxURLLen-len("https://example.com/"))
	ok(u, u)
}

// An IDN confusable is stored in its punycode form, which makes the
// deception visible to anyone reading the target.
func TestNormalizeURLConfusable(t *testing.T) {
	got, err := link.URLPolicy{}.NormalizeURL("https://\u0430pple.com/") // Cyrillic а
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "https://xn--") {
		t.Fatalf("confusable host not in IDNA ASCII form: %q", got)
	}
}

func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com/", "javascript:alert(1)", "data:text/html;base64,xx",
		"https://example.com/%0d%0aSet-Cookie:x", "https://example.com/\r\n", "http://a\\b/",
		"https://user@example.com", "https://\u0430pple.com", "https://ex\x00ample.com",
		"https://" + strings.Repeat("a", 8001), "HTTP://[::ffff:1.2.3.4]:80/", "https://xn--80ak6aa92e.com/",
		"https://example.com/?a=ü#ü", "http://%41/", "https://a.b:08080/",
		// Issue 12's classes: trailing dots, numeric IPv4, IDN blocklist
		// spellings, hyphen labels, invalid UTF-8.
		"http://A../", "http://a。./", "http://127.1/", "http://0x7f.1/", "http://0177.0.0.1/",
		"http://2130706433/", "http://127.000.000.001/", "http://4294967296/", "http://[::ffff:127.0.0.1]/",
		"https://BÜCHER.example./x", "https://xn--bcher-kva.example/", "https://r3---sn-abc.googlevideo.com/",
		"https://ab--cd.example/", "https://-a-.example/", "https://example.com/\xff", "https://ex\xc3.com/",
	} {
		f.Add(s)
	}
	for _, s := range hostCorpus {
		f.Add(s)
	}
	p := mustPolicy(f, "lnk.example", "bücher.example", "127.0.0.1", "::1")
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := p.NormalizeURL(raw)
		if err != nil {
			if link.ErrorCode(err) == "" {
				t.Fatalf("error without a stable code: %v", err)
			}
			return
		}
		if err := link.ValidStoredURL(out); err != nil {
			t.Fatalf("NormalizeURL(%q) = %q, which fails ValidStoredURL: %v", raw, out, err)
		}
		if !strings.HasPrefix(out, "http://") && !strings.HasPrefix(out, "https://") {
			t.Fatalf("accepted non-http(s) target %q from %q", out, raw)
		}
		// Canonical form is a fixed point.
		again, err := p.NormalizeURL(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, out, again, err)
		}
		// A browser goes where linkpop checked.
		checkBrowserHost(t, raw, out)
	})
}

func mustPolicy(t testing.TB, blocked ...string) link.URLPolicy {
	t.Helper()
	p, err := link.NewURLPolicy(blocked)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNormalizeURLHostClasses covers the host classes of issue 12: each
// row is a spelling an attacker or a real site uses, with the canonical
// form browsers resolve it to (or the refusal).
func TestNormalizeURLHostClasses(t *testing.T) {
	p := mustPolicy(t, "lnk.example", "Bücher.Example.", "127.0.0.1", "[::1]", "xn--mnchen-3ya.example")
	for _, tc := range []struct {
		in   string
		want string // canonical form, or "" when err is set
		err  error
	}{
		// Numeric spellings of IPv4 are dotted decimal, then checked.
		{"http://127.1/", "", link.ErrURLBlocked},
		{"http://2130706433/", "", link.ErrURLBlocked},
		{"http://0x7f.1/", "", link.ErrURLBlocked},
		{"http://0X7F.0.0.1/", "", link.ErrURLBlocked},
		{"http://0177.0.0.1/", "", link.ErrURLBlocked},
		{"http://127.000.000.001/", "", link.ErrURLBlocked},
		{"http://0x7f000001/", "", link.ErrURLBlocked},
		{"http://127.0.0.1./", "", link.ErrURLBlocked},
		{"http://１２７.０.０.１/", "", link.ErrURLBlocked}, // full-width digits
		{"http://127。0。0。1/", "", link.ErrURLBlocked}, // ideographic full stops
		{"http://10.1/", "http://10.0.0.1/", nil},
		{"http://0xa.0x1.0x0.0x1:8080/x", "http://10.1.0.1:8080/x", nil},
		{"http://167772161/", "http://10.0.0.1/", nil},
		{"http://0/", "http://0.0.0.0/", nil},
		{"http://0x/", "http://0.0.0.0/", nil},
		{"http://1.2.3.4.5/", "", link.ErrInvalidURL},
		{"http://256.0.0.1/", "", link.ErrInvalidURL},
		{"http://1.2.3.256/", "", link.ErrInvalidURL},
		{"http://4294967296/", "", link.ErrInvalidURL},
		{"http://0X100000010/", "", link.ErrInvalidURL},             // a number, too large
		{"http://99999999999999999999999/", "", link.ErrInvalidURL}, // beyond uint64
		{"http://1.0x10000000000000000000/", "", link.ErrInvalidURL},
		{"http://09.0.0.1/", "", link.ErrInvalidURL}, // 9 is not octal
		{"http://0xg.1/", "", link.ErrInvalidURL},    // ends in a number, not IPv4
		{"http://1.0xg/", "http://1.0xg/", nil},      // does not end in a number: a name
		{"http://a.1/", "", link.ErrInvalidURL},      // ends in a number: must be IPv4
		{"http://1.a/", "http://1.a/", nil},
		// IPv6 in the browser's serialisation.
		{"http://[::1]/", "", link.ErrURLBlocked},
		{"http://[0:0:0:0:0:0:0:1]/", "", link.ErrURLBlocked},
		{"http://[::ffff:1.2.3.4]/", "http://[::ffff:102:304]/", nil},
		{"http://[2001:DB8:0:0:1:0:0:1]/", "http://[2001:db8::1:0:0:1]/", nil},
		{"http://[::1%25eth0]/", "", link.ErrInvalidURL},
		{"http://[1.2.3.4]/", "", link.ErrInvalidURL},
		// IDN blocklist entries match every spelling.
		{"https://bücher.example/", "", link.ErrURLBlocked},
		{"https://BÜCHER.EXAMPLE./", "", link.ErrURLBlocked},
		{"https://xn--bcher-kva.example/", "", link.ErrURLBlocked},
		{"https://XN--BCHER-KVA.EXAMPLE/", "", link.ErrURLBlocked},
		{"https://shop.bücher.example/", "", link.ErrURLBlocked},
		{"https://münchen.example/", "", link.ErrURLBlocked},
		{"https://bücher.example.org/", "https://xn--bcher-kva.example.org/", nil},
		{"https://notbücher.example/", "https://xn--notbcher-95a.example/", nil},
		// Hyphens anywhere in a label, as browsers accept.
		{"https://r3---sn-abc.googlevideo.com/", "https://r3---sn-abc.googlevideo.com/", nil},
		{"https://ab--cd.example/", "https://ab--cd.example/", nil},
		{"https://-a-.example/", "https://-a-.example/", nil},
		{"https://a-.example/", "https://a-.example/", nil},
		{"https://-/", "https://-/", nil},
		{"https://xn--zz.example/", "", link.ErrInvalidURL}, // invalid punycode
		{"https://a≠b.example/", "", link.ErrInvalidURL},    // STD3-disallowed symbol
		{"http://Xn--0ChB0000A/", "", link.ErrInvalidURL},
		{"http://xn--_-dha/", "", link.ErrInvalidURL}, // '_' inside a Unicode label
		{"http://ä_b.example/", "", link.ErrInvalidURL},
		{"https://a_b.münchen.de/", "", link.ErrInvalidURL}, // '_' only in all-ASCII names
		{"http://xn--80a._/", "", link.ErrInvalidURL},
		{"http://＿/", "", link.ErrInvalidURL},           // full-width '_'
		{"http://a！b.example/", "", link.ErrInvalidURL}, // full-width '!'
		{"http://ＥＸＡＭＰＬＥ.com/", "http://example.com/", nil},
		{"https://a_b.example.de/", "https://a_b.example.de/", nil},
		// Trailing dots: one is dropped, more are empty labels.
		{"http://A./", "http://a/", nil},
		{"http://A../", "", link.ErrInvalidURL},
		{"http://a.b../", "", link.ErrInvalidURL},
		{"http://a。./", "", link.ErrInvalidURL},
		{"http://./", "", link.ErrInvalidURL},
		{"http://.a/", "", link.ErrInvalidURL},
		// Characters browsers tolerate in hosts but DNS names never hold.
		{"http://a*b.example/", "", link.ErrInvalidURL},
		{"http://a!b.example/", "", link.ErrInvalidURL},
		{"http://a~b.example/", "", link.ErrInvalidURL},
		// Invalid UTF-8 anywhere is refused, never replaced.
		{"https://example.com/\xff", "", link.ErrInvalidURL},
		{"https://example.com/?q=\xc3", "", link.ErrInvalidURL},
		{"https://exa\xe2\x82mple.com/", "", link.ErrInvalidURL},
		{"https://example.com/\uFFFD", "https://example.com/%EF%BF%BD", nil}, // a real U+FFFD is what was sent
	} {
		got, err := p.NormalizeURL(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("NormalizeURL(%q) = %q, %v; want %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if again, err := p.NormalizeURL(got); err != nil || again != got {
			t.Errorf("not a fixed point: %q -> %q -> %q, %v", tc.in, got, again, err)
		}
	}
}

// TestNewURLPolicy: an entry without a canonical form is a start-up error
// naming it.
func TestNewURLPolicy(t *testing.T) {
	for _, bad := range []string{"", "a..b", "xn--zz", "a b", "ex%41mple.com", "\xff.example", "[::1%eth0]", "256.1.1.1"} {
		_, err := link.NewURLPolicy([]string{"ok.example", bad})
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("NewURLPolicy(%q) = %v; want an error naming it", bad, err)
		}
	}
	if _, err := link.NewURLPolicy([]string{"bücher.example", "LNK.example.", "0x7f.1", "::1", "[2001:db8::1]", "r3---sn-abc.example"}); err != nil {
		t.Errorf("NewURLPolicy refused valid entries: %v", err)
	}
}
