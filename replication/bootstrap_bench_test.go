package replication_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// BenchmarkBootstrap measures a fresh edge's replay: N changes
// (LINKPOP_BOOTSTRAP_N, default 200,000) are published to a file-backed
// embedded stream, then each iteration runs a Consumer into a new
// edge/replica.Replica on disk until it applied the whole stream. It
// reports changes applied per second of wall time, and the CPU time of the
// process (the embedded server's included). The figure of issue 3 is taken
// with LINKPOP_BOOTSTRAP_N=1000000 -benchtime=1x; LINKPOP_BOOTSTRAP_SYNC=1
// makes every batch durable (MaxUnsynced 1ns), for comparison.
// LINKPOP_BOOTSTRAP_CPUPROFILE=file writes a CPU profile of the replays
// alone (-cpuprofile would include the publishing).
func BenchmarkBootstrap(b *testing.B) {
	n := 200_000
	if s := os.Getenv("LINKPOP_BOOTSTRAP_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("LINKPOP_BOOTSTRAP_N=%q: want a positive integer", s)
		}
		n = v
	}
	ns := natstest.Start(b)
	ctx := context.Background()
	pnc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer pnc.Close()
	pub, err := replication.NewPublisher(pnc, replication.StreamConfig{})
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		b.Fatal(err)
	}
	publishBench(b, pub, n)
	last, err := pub.LastSequence(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if last != uint64(n) {
		b.Fatalf("stream holds %d messages, want %d", last, n)
	}

	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var spent, cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		rep, err := replica.Open(replica.Options{Dir: filepath.Join(b.TempDir(), strconv.Itoa(i))})
		if err != nil {
			b.Fatal(err)
		}
		cfg := replication.ConsumerConfig{Applier: rep}
		if os.Getenv("LINKPOP_BOOTSTRAP_SYNC") != "" {
			// Every batch durable: the figure without Batch.NoSync.
			cfg.MaxUnsynced = time.Nanosecond
		}
		con, err := replication.NewConsumer(nc, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if prof := os.Getenv("LINKPOP_BOOTSTRAP_CPUPROFILE"); prof != "" && i == 0 {
			f, err := os.Create(prof)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				b.Fatal(err)
			}
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- con.Run(rctx) }()
		tick := time.NewTicker(time.Millisecond)
	poll:
		for {
			select {
			case err := <-errc:
				b.Fatalf("consumer ended before the replay: %v", err)
			case <-tick.C:
				if s := con.Status(); s.Applied >= last && s.Bootstrapped {
					break poll
				}
			}
		}
		spent += time.Since(start)
		cpu += cpuTime() - cpu0
		b.StopTimer()
		tick.Stop()
		cancel()
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		if got := rep.Stats().Links; got != uint64(n) {
			b.Fatalf("replica holds %d links, want %d", got, n)
		}
		if err := rep.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/spent.Seconds(), "changes/s")
	b.ReportMetric(spent.Seconds()/float64(b.N), "s/bootstrap")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/bootstrap")
}

// cpuTime returns the CPU time this process has used, the embedded NATS
// server's included: a figure less sensitive than wall time to a shared
// machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// publishBench publishes n creations of distinct codes, a few thousand
// acks in flight at a time.
func publishBench(b *testing.B, pub *replication.Publisher, n int) {
	b.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	const window = 2048
	pending := make([]*replication.PendingAck, 0, window)
	flush := func() {
		for _, p := range pending {
			if _, _, err := p.Wait(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		pending = pending[:0]
	}
	code := make([]byte, link.DefaultCodeLen)
	for i := range n {
		v := uint64(i)
		for j := range code {
			code[j] = link.Base62[v%62]
			v /= 62
		}
		c := link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
			Code:      string(code),
			URL:       fmt.Sprintf("https://www.example.com/articles/2026/01/some-longer-slug-for-a-realistic-url-%d?utm_source=newsletter", i),
			Redirect:  302,
			Status:    link.StatusActive,
			CreatedAt: now,
			UpdatedAt: now,
			Revision:  uint64(i + 1),
		}}
		data, err := link.MarshalChange(&c)
		if err != nil {
			b.Fatal(err)
		}
		p, err := pub.PublishRawAsync(c.Record.Code, c.Record.Revision, data)
		if err != nil {
			b.Fatal(err)
		}
		if pending = append(pending, p); len(pending) == window {
			flush()
		}
	}
	flush()
}
