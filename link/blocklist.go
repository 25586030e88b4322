package link

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// MaxBlocklistLine is the longest line ParseBlocklist reads.
const MaxBlocklistLine = 64 << 10

// ErrBlocklistLine is returned by ParseBlocklist for a line longer than
// MaxBlocklistLine: the file is not a blocklist.
var ErrBlocklistLine = errors.New("blocklist line too long")

// hostsSelf are the names a hosts file gives the machine itself; they are
// the file's own housekeeping, not entries.
var hostsSelf = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "local": true, "broadcasthost": true,
	"ip6-localhost": true, "ip6-loopback": true, "ip6-localnet": true, "ip6-mcastprefix": true,
	"ip6-allnodes": true, "ip6-allrouters": true, "ip6-allhosts": true, "0.0.0.0": true,
}

// ParseBlocklist reads a list of hosts to refuse in any of the common
// formats, recognised line by line so concatenated lists work:
//
//   - a plain domain list: one domain or IP address a line
//     ("evil.example", also "*.evil.example" and adblock's
//     "||evil.example^");
//   - a hosts file: an address followed by names
//     ("0.0.0.0 evil.example other.example"); the names a hosts file
//     gives the machine itself (localhost, broadcasthost, ip6-…) are not
//     entries;
//   - a URLhaus-style CSV: quoted, comma-separated fields, the host taken
//     from the first field that is a URL ("http://evil.example/x.exe");
//     a CSV line without a URL takes its first field as the host.
//
// Blank lines and lines starting with '#' or '!' are comments, as is
// anything after " #" on a domain or hosts line. Each entry is returned
// in canonical form (CanonicalHost), without duplicates; an entry that
// has none is counted in skipped rather than failing the whole list,
// since lists from outside hold some junk. A listed name blocks its
// subdomains too (URLPolicy.WithHosts).
func ParseBlocklist(r io.Reader) (hosts []string, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxBlocklistLine)
	seen := make(map[string]struct{})
	add := func(h string) {
		c, err := blocklistHost(h)
		if err != nil {
			skipped++
			return
		}
		if _, dup := seen[c]; !dup {
			seen[c] = struct{}{}
			hosts = append(hosts, c)
		}
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		if line[0] == '"' || strings.IndexByte(line, ',') >= 0 {
			if h, ok := csvHost(line); ok {
				add(h)
			} else {
				skipped++
			}
			continue
		}
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) > 1 {
			if _, err := netip.ParseAddr(f[0]); err != nil {
				skipped++ // neither a domain nor a hosts line
				continue
			}
			for _, name := range f[1:] {
				if !hostsSelf[strings.ToLower(name)] {
					add(name)
				}
			}
			continue
		}
		add(f[0])
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, 0, fmt.Errorf("%w (more than %d bytes)", ErrBlocklistLine, MaxBlocklistLine)
		}
		return nil, 0, err
	}
	return hosts, skipped, nil
}

// blocklistHost canonicalises one plain entry.
func blocklistHost(h string) (string, error) {
	h = strings.TrimPrefix(h, "||")
	h = strings.TrimSuffix(h, "^")
	h = strings.TrimPrefix(h, "*.")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if h == "" {
		return "", ErrInvalidURL
	}
	return CanonicalHost(h)
}

// csvHost returns the host of a CSV line: that of its first URL field,
// else its first field.
func csvHost(line string) (string, bool) {
	cr := csv.NewReader(strings.NewReader(line))
	cr.LazyQuotes = true
	cr.FieldsPerRecord = -1
	fields, err := cr.Read()
	if err != nil || len(fields) == 0 {
		return "", false
	}
	for _, f := range fields {
		f = strings.TrimSpace(f)
		i := strings.Index(f, "://")
		if i <= 0 {
			continue
		}
		auth := f[i+3:]
		if j := strings.IndexAny(auth, "/?#"); j >= 0 {
			auth = auth[:j]
		}
		if j := strings.LastIndexByte(auth, '@'); j >= 0 {
			auth = auth[j+1:]
		}
		if strings.HasPrefix(auth, "[") {
			if j := strings.IndexByte(auth, ']'); j > 0 {
				return auth[:j+1], true
			}
			return "", false
		}
		if j := strings.LastIndexByte(auth, ':'); j >= 0 {
			auth = auth[:j]
		}
		return auth, auth != ""
	}
	f := strings.TrimSpace(fields[0])
	return f, f != ""
}
