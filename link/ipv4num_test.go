package link

import (
	"errors"
	"math"
	"strconv"
	"testing"
)

// TestParseIPv4NumberMatchesStrconv checks the digit pre-check of
// parseIPv4Number against what strconv alone decides for every label of
// up to three characters over the bytes that matter (digits, hex letters,
// the prefix letters, signs, '_', and one letter outside hex).
func TestParseIPv4NumberMatchesStrconv(t *testing.T) {
	ref := func(s string) (uint64, bool) { // the function before the pre-check
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
		if s[0] == '+' || s[0] == '-' || s[0] == '_' {
			return 0, false
		}
		n, err := strconv.ParseUint(s, base, 64)
		if errors.Is(err, strconv.ErrRange) {
			return math.MaxUint64, true
		}
		return n, err == nil
	}
	const alphabet = "0789afAFxXg+-_."
	var labels []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		labels = append(labels, prefix)
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			gen(prefix+alphabet[i:i+1], n-1)
		}
	}
	gen("", 4)
	labels = append(labels, "com", "0x", "0x100000000000000000", "99999999999999999999999", "0777777777777777777777777")
	for _, s := range labels {
		gn, gok := parseIPv4Number(s)
		wn, wok := ref(s)
		if gn != wn || gok != wok {
			t.Errorf("parseIPv4Number(%q) = %d, %v; strconv says %d, %v", s, gn, gok, wn, wok)
		}
	}
}
