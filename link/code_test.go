package link_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/linkpop/linkpop/link"
)

func TestParseCode(t *testing.T) {
	reserved := link.NewReserved(link.DefaultReserved)
	f := func(in string, want error) {
		t.Helper()
		got, err := link.ParseCode(in, reserved)
		if !errors.Is(err, want) || (err == nil && got != in) {
			t.Errorf("ParseCode(%q) = %q, %v; want %v", in, got, err, want)
		}
	}
	f("abc", nil)
	f("A_b-9", nil)
	f(strings.Repeat("x", 64), nil)
	f("ab", link.ErrInvalidCode)
	f(strings.Repeat("x", 65), link.ErrInvalidCode)
	f("a.b", link.ErrInvalidCode)
	f("a/b", link.ErrInvalidCode)
	f("abc ", link.ErrInvalidCode)
	f("ab%", link.ErrInvalidCode)
	f("über", link.ErrInvalidCode)
	f("", link.ErrInvalidCode)
	f("api", link.ErrCodeReserved)
	f("HealthZ", link.ErrCodeReserved)
	f("metrics", link.ErrCodeReserved)
}

func TestRandomCode(t *testing.T) {
	seen := map[string]bool{}
	counts := map[byte]int{}
	for i := 0; i < 2000; i++ {
		c, err := link.RandomCode(link.DefaultCodeLen)
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != link.DefaultCodeLen || !link.ValidCode(c) {
			t.Fatalf("bad random code %q", c)
		}
		for j := 0; j < len(c); j++ {
			if !strings.ContainsRune(link.Base62, rune(c[j])) {
				t.Fatalf("non-base62 symbol in %q", c)
			}
			counts[c[j]]++
		}
		if seen[c] {
			t.Fatalf("duplicate random code %q in 2000 draws", c)
		}
		seen[c] = true
	}
	// 14,000 symbols over 62 values: every symbol appears (expected ~226).
	if len(counts) != 62 {
		t.Fatalf("only %d of 62 symbols drawn", len(counts))
	}
	if _, err := link.RandomCode(2); err == nil {
		t.Fatal("RandomCode(2) accepted a length below MinCodeLen")
	}
}

func FuzzParseCode(f *testing.F) {
	for _, s := range []string{"abc", "ab", "a.b", "api", "../x", "%2e%2e", "abc\r\nx", "\x00\x00\x00", strings.Repeat("z", 65)} {
		f.Add(s)
	}
	reserved := link.NewReserved(link.DefaultReserved)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := link.ParseCode(s, reserved)
		if link.ValidCodeBytes([]byte(s)) != link.ValidCode(s) {
			t.Fatalf("ValidCode and ValidCodeBytes disagree on %q", s)
		}
		if err != nil {
			if link.ErrorCode(err) == "" {
				t.Fatalf("error without code: %v", err)
			}
			return
		}
		if got != s || len(s) < link.MinCodeLen || len(s) > link.MaxCodeLen {
			t.Fatalf("accepted %q as %q", s, got)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				t.Fatalf("accepted byte %q in %q", c, s)
			}
		}
	})
}
