package harness

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/linkpop/linkpop/link"
)

// dataset is the link table every system serves, and the request streams
// every system is asked for.
type dataset struct {
	codes   []string // base62, length link.DefaultCodeLen, distinct even case-insensitively
	set     map[string]struct{}
	targets []string // targets[i] is where codes[i] redirects
	// caseCollisions counts the codes of the first draw that shared their
	// lower-case form with another code: nginx map keys and golink IDs are
	// case-insensitive, so those would redirect to the wrong target. They
	// were redrawn, so every system serves the same, correct table.
	caseCollisions int
	rng            *rand.Rand
}

// targetPrefix starts every target; bare302's Location has the same length.
const targetPrefix = "https://example.com/t/"

func target(code string) string { return targetPrefix + code }

// newDataset draws n codes from a PCG seeded with seed.
func newDataset(n int, seed uint64) *dataset {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	d := &dataset{rng: rng, set: make(map[string]struct{}, n)}
	lower := make(map[string]int, n) // lower-case form → codes holding it
	codes := make([]string, 0, n)
	for len(codes) < n {
		c := randomCode(rng)
		if _, dup := d.set[c]; dup {
			continue
		}
		d.set[c] = struct{}{}
		lower[strings.ToLower(c)]++
		codes = append(codes, c)
	}
	// Count, then replace, every code whose lower-case form is shared.
	kept := codes[:0]
	for _, c := range codes {
		if lower[strings.ToLower(c)] > 1 {
			d.caseCollisions++
			delete(d.set, c)
			continue
		}
		kept = append(kept, c)
	}
	for len(kept) < n {
		c := randomCode(rng)
		l := strings.ToLower(c)
		if _, taken := lower[l]; taken {
			continue
		}
		lower[l] = 1
		d.set[c] = struct{}{}
		kept = append(kept, c)
	}
	d.codes = kept
	d.targets = make([]string, n)
	for i, c := range kept {
		d.targets[i] = target(c)
	}
	return d
}

func randomCode(rng *rand.Rand) string {
	var b [link.DefaultCodeLen]byte
	for i := range b {
		b[i] = link.Base62[rng.IntN(len(link.Base62))]
	}
	return string(b[:])
}

// unknownCode draws a code that is not in the table.
func (d *dataset) unknownCode() string {
	for {
		c := randomCode(d.rng)
		if _, ok := d.set[c]; !ok {
			return c
		}
	}
}

// writePaths writes m request paths ("/code", one a line) to path:
// uniform or Zipf over the codes (ranked in a random order, so the popular
// codes are not the first drawn), or, for "unknown", codes not in the
// table.
func (d *dataset) writePaths(path, dist string, m int, zipfS float64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	n := len(d.codes)
	var next func() string
	switch dist {
	case DistUniform:
		next = func() string { return d.codes[d.rng.IntN(n)] }
	case DistZipf:
		rank := d.rng.Perm(n)
		z := rand.NewZipf(d.rng, zipfS, 1, uint64(n-1))
		next = func() string { return d.codes[rank[z.Uint64()]] }
	case "unknown":
		next = d.unknownCode
	default:
		f.Close()
		return fmt.Errorf("unknown distribution %q", dist)
	}
	for range m {
		w.WriteByte('/')
		w.WriteString(next())
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
