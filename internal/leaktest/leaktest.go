// Package leaktest fails a test that leaves goroutines running after its
// cleanup: every Run(ctx) must stop what it started.
package leaktest

import (
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Check records the goroutines running now and, at the end of the test
// (after later-registered cleanups, so call it first), waits up to five
// seconds for every goroutine started since to exit. Call it at the top of
// a test, before anything registers its own cleanup.
func Check(t testing.TB) {
	t.Helper()
	before := stacks()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		var leaked []string
		for {
			leaked = leaked[:0]
			for id, s := range stacks() {
				if _, ok := before[id]; !ok && !ignorable(s) {
					leaked = append(leaked, s)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			sort.Strings(leaked)
			t.Errorf("%d goroutine(s) leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// ignorable goroutines belong to the runtime or the test framework, or are
// process-wide singletons libraries start once and keep by design.
func ignorable(s string) bool {
	for _, frag := range []string{
		"testing.(*T).Run",
		"testing.tRunner",
		"testing.runTests",
		"testing.(*M).",
		"runtime.goexit0",
		"os/signal.signal_recv",
		"os/signal.loop",
		"runtime/trace",
	} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	// Process-wide background goroutines of libraries we use.
	for _, frag := range []string{
		"github.com/valyala/fasthttp.init",
		"github.com/valyala/fasthttp.updateServerDate",
		"github.com/valyala/fasthttp.(*workerPool)", // stopped asynchronously after Shutdown
		"go.opencensus.io",
		"github.com/cockroachdb/pebble/v2/internal/invariants",
	} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

// stacks returns the current goroutines keyed by their "goroutine N" header.
func stacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		id, _, _ := strings.Cut(strings.TrimPrefix(header, "goroutine "), " ")
		if id == "" {
			continue
		}
		out[id] = g
	}
	return out
}
