package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/client"
)

// benchLinks is the size of the import benchmark's file; the default is
// 100,000 (LINKPOP_BENCH_LINKS changes it).
func benchLinks() int {
	if n, err := strconv.Atoi(os.Getenv("LINKPOP_BENCH_LINKS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// BenchmarkImport imports a JSONL file of benchLinks() links through the
// real CLI binary and POST /v1/links/batch into a real origin (Pebble on
// disk, every batch synced) and reports links/s, the whole CLI run
// (process start, reading, HTTP, commit) included. Each iteration uses
// its own codes.
//
//	go test -run '^$' -bench BenchmarkImport -benchtime 1x ./client/cli/
func BenchmarkImport(b *testing.B) {
	api, _ := startOrigin(b)
	n := benchLinks()
	dir := b.TempDir()
	var total, cliCPU, selfCPU time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		file := filepath.Join(dir, fmt.Sprintf("links-%d.jsonl", i))
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriter(f)
		for j := range n {
			fmt.Fprintf(w, `{"code":"b%d-%07d","url":"https://example.com/bench/%d/%d?utm_source=import","tags":["bench"]}`+"\n", i, j, i, j)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		e := newEnv(b, api, adminKey)
		b.StartTimer()
		start, self0 := time.Now(), processCPU()
		r := e.run("", "import", file)
		total += time.Since(start)
		selfCPU += processCPU() - self0
		cliCPU += r.cpu
		if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("created %d,", n)) {
			b.Fatalf("import: exit %d\n%s", r.code, r.stderr)
		}
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "links/s")
	// CPU per 100,000 links, steadier than links/s on a shared machine:
	// the CLI process, and this process (origin, relay and the embedded
	// NATS server).
	per := 100_000 / float64(n*b.N)
	b.ReportMetric(cliCPU.Seconds()*per, "cli-cpu-s/100k")
	b.ReportMetric(selfCPU.Seconds()*per, "origin-cpu-s/100k")
}

// processCPU is this process's user and system time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCreateSingle creates links one POST /v1/links each from 16
// concurrent clients, for comparison with the batch import.
//
//	go test -run '^$' -bench BenchmarkCreateSingle -benchtime 20000x ./client/cli/
func BenchmarkCreateSingle(b *testing.B) {
	api, _ := startOrigin(b)
	c, err := client.New(client.Config{BaseURL: api, Key: adminKey})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	b.ResetTimer()
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := c.CreateLink(context.Background(), client.CreateLink{URL: fmt.Sprintf("https://example.com/single/%d", i)}, client.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "links/s")
}
