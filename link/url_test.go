package link_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

func TestNormalizeURL(t *testing.T) {
	p := link.URLPolicy{BlockedDomains: []string{"lnk.example", "127.0.0.1"}}
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
	} {
		f.Add(s)
	}
	p := link.URLPolicy{BlockedDomains: []string{"lnk.example"}}
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
	})
}
