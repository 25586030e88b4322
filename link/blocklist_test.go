package link_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

// TestParseBlocklist: the three formats, mixed, with comments, junk and
// duplicates; entries come back canonical.
func TestParseBlocklist(t *testing.T) {
	f := func(in string, want []string, wantSkipped int) {
		t.Helper()
		got, skipped, err := link.ParseBlocklist(strings.NewReader(in))
		if err != nil {
			t.Fatalf("ParseBlocklist(%q): %v", in, err)
		}
		if !slices.Equal(got, want) || skipped != wantSkipped {
			t.Errorf("ParseBlocklist(%q) = %q, %d skipped; want %q, %d", in, got, skipped, want, wantSkipped)
		}
	}
	// Plain domain list.
	f("evil.example\n# comment\n\nEVIL.example.\nBücher.example\n", []string{"evil.example", "xn--bcher-kva.example"}, 0)
	f("*.wild.example\n||adblock.example^\n! adblock comment\nbad..name\n", []string{"wild.example", "adblock.example"}, 1)
	f("phish.example # reported 2026-01-02\n127.1\n[::1]\n", []string{"phish.example", "127.0.0.1", "::1"}, 0)
	// Hosts file: the machine's own names are not entries.
	f("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n0.0.0.0 0.0.0.0\n"+
		"0.0.0.0 ads.example tracker.example # two names\n127.0.0.1\tmal.example\n",
		[]string{"ads.example", "tracker.example", "mal.example"}, 0)
	f("not-an-ip ads.example\n", nil, 1)
	// URLhaus CSV (its header is a comment).
	f(`################################################################
# abuse.ch URLhaus Database Dump (CSV - recent URLs only)
# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
"3412345","2026-01-02 10:00:00","http://malware.example/bins/x.arm7","online","2026-01-02 10:00:00","malware_download","elf,mirai","https://urlhaus.abuse.ch/url/3412345/","someone"
"3412346","2026-01-02 10:01:00","https://user@Drop.Example:8443/a?b#c","online","","malware_download","","https://urlhaus.abuse.ch/url/3412346/","x"
"3412347","2026-01-02 10:02:00","http://[2001:db8::66]/p","offline","","malware_download","","",""
"3412348","2026-01-02 10:03:00","http://1.2.3.4:8080/i","online","","malware_download","","",""
`, []string{"malware.example", "drop.example", "2001:db8::66", "1.2.3.4"}, 0)
	// A CSV of domains without URLs takes the first field.
	f("domain,reason\nspam.example,spam\n", []string{"domain", "spam.example"}, 0)
	f(`"http://%65vil.example/"`+"\n", nil, 1)
}

// TestParseBlocklistLongLine: a line past MaxBlocklistLine is not a
// blocklist.
func TestParseBlocklistLongLine(t *testing.T) {
	_, _, err := link.ParseBlocklist(strings.NewReader(strings.Repeat("a", link.MaxBlocklistLine+1)))
	if !errors.Is(err, link.ErrBlocklistLine) {
		t.Fatalf("err = %v; want ErrBlocklistLine", err)
	}
}

// TestPolicyWithHosts: listed hosts block themselves and their
// subdomains in every spelling, BlockedBy names the entry, and the
// policy the list was added to is unchanged.
func TestPolicyWithHosts(t *testing.T) {
	base := mustPolicy(t, "lnk.example")
	hosts, _, err := link.ParseBlocklist(strings.NewReader("evil.example\n0.0.0.0 bücher.example\n10.9.8.7\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := base.WithHosts(hosts)
	if p.Len() != 4 || base.Len() != 1 {
		t.Fatalf("Len = %d, base %d; want 4, 1", p.Len(), base.Len())
	}
	f := func(u, entry string) {
		t.Helper()
		_, err := p.NormalizeURL(u)
		got, ok := p.BlockedBy(u)
		if entry == "" {
			if err != nil || ok {
				t.Errorf("%q: NormalizeURL %v, BlockedBy %q %v; want allowed", u, err, got, ok)
			}
			return
		}
		if !errors.Is(err, link.ErrURLBlocked) || !ok || got != entry {
			t.Errorf("%q: NormalizeURL %v, BlockedBy %q %v; want url_blocked by %q", u, err, got, ok, entry)
		}
	}
	f("https://evil.example/x", "evil.example")
	f("https://a.b.EVIL.example./x", "evil.example")
	f("https://shop.bücher.example/", "xn--bcher-kva.example")
	f("http://10.9.8.7:81/", "10.9.8.7")
	f("http://0xa.9.8.7/", "10.9.8.7")
	f("https://lnk.example/abc", "lnk.example")
	f("https://notevil.example/", "")
	f("https://evil.example.org/", "")
	f("http://10.9.8.8/", "")
	if _, err := base.NormalizeURL("https://evil.example/"); err != nil {
		t.Errorf("base policy changed: %v", err)
	}
}

// FuzzParseBlocklist: any input parses without panic, and every entry
// returned is canonical and blocks itself.
func FuzzParseBlocklist(f *testing.F) {
	f.Add("evil.example\n0.0.0.0 a.example b.example\n")
	f.Add(`"1","2026","http://x.example/a","online"` + "\n")
	f.Add("||a.example^\n*.b.example\n[::1]\n# c\n")
	f.Fuzz(func(t *testing.T, in string) {
		hosts, _, err := link.ParseBlocklist(strings.NewReader(in))
		if err != nil {
			return
		}
		p := link.URLPolicy{}.WithHosts(hosts)
		for _, h := range hosts {
			c, err := link.CanonicalHost(h)
			if err != nil || c != h {
				t.Fatalf("entry %q not canonical (%q, %v)", h, c, err)
			}
			u := "http://" + h + "/"
			if strings.IndexByte(h, ':') >= 0 {
				u = "http://[" + h + "]/"
			}
			if e, ok := p.BlockedBy(u); !ok || e != h {
				t.Fatalf("entry %q does not block %q (%q, %v)", h, u, e, ok)
			}
		}
	})
}
