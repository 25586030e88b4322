package origin_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// BenchmarkCreate measures POST /v1/links over real HTTP against an
// in-process origin with its Pebble store on disk (every 201 follows a
// synced commit) and an embedded JetStream server, at 1, 16 and 64
// concurrent clients. Besides ns/op it reports:
//
//	creates/s    acknowledged creates per second of wall time
//	p50-ms p99-ms  latency of one create as the client sees it
//	lag-ms       outbox→stream lag: from the last 201 until the stream
//	             holds an event for every link created (polled every 10ms)
//	creates/commit  creates per Pebble commit: how well group commit
//	             shares fsyncs
//
//	go test -run '^$' -bench BenchmarkCreate -benchtime 5000x ./origin/
func BenchmarkCreate(b *testing.B) {
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchCreate(b, conc, origin.AckLocal, 1, false) })
	}
}

// BenchmarkCreateAck is BenchmarkCreate with each -ack mode, on one
// server (R1) and on a three-server cluster with an R3 stream (every
// server fsyncs before it acknowledges):
//
//	go test -run '^$' -bench BenchmarkCreateAck -benchtime 5000x ./origin/
func BenchmarkCreateAck(b *testing.B) {
	for _, ack := range []string{origin.AckLocal, origin.AckReplicated} {
		for _, r := range []int{1, 3} {
			for _, conc := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("ack=%s/r%d/conc=%d", ack, r, conc), func(b *testing.B) { benchCreate(b, conc, ack, r, true) })
			}
		}
	}
}

// BenchmarkCreateAckProcs is the R3 case of BenchmarkCreateAck at 64
// clients with the three servers as child processes (the production
// shape: the origin does not share its process, and the CPU each side
// spends can be told apart), with two references measured on the same
// cluster in the same run: raw JetStream publishes into an R3 stream, by
// 64 goroutines each waiting for its ack (the most 64 clients that each
// wait for a replicated write can get from this cluster), and through one
// pipelined Chain (the most one relay can get); and bursts of 1, 4 and 16
// fenced events, each event on its own or each burst as one atomic batch
// (what a Raft round and an event cost the servers; benchRawBursts).
// Besides BenchmarkCreate's
// figures it reports the CPU of this process (the origin and its HTTP
// clients) and of the servers (their /proc stat) per create or publish,
// in µs:
//
//	go test -run '^$' -bench BenchmarkCreateAckProcs -benchtime 5000x ./origin/
func BenchmarkCreateAckProcs(b *testing.B) {
	c := natstest.StartClusterProcesses(b, 3)
	for _, ack := range []string{origin.AckLocal, origin.AckReplicated} {
		b.Run(fmt.Sprintf("ack=%s/r3procs/conc=64", ack), func(b *testing.B) { benchCreateOn(b, 64, ack, 3, true, c) })
	}
	b.Run("raw-r3-publish/conc=64", func(b *testing.B) { benchRawR3(b, c, 64) })
	b.Run("raw-r3-chain", func(b *testing.B) { benchRawR3(b, c, 0) })
	for _, atomic := range []bool{false, true} {
		for _, burst := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("raw-r3-bursts/atomic=%v/burst=%d", atomic, burst), func(b *testing.B) { benchRawBursts(b, c, burst, atomic) })
		}
	}
}

// benchRawBursts publishes b.N 300-byte events into a fresh R3 stream on
// c in bursts of burst events, four bursts in flight, each event fenced
// as the relay fences it (Nats-Expected-Last-Sequence): each event on
// its own, or each burst as one atomic batch (Nats-Batch-Id, only its
// first event fenced, one ack for the burst). The servers' CPU per event
// against the burst size tells what a Raft round costs them and what an
// event does; atomic=true shows what JetStream's atomic batch publish
// would save the relay.
func benchRawBursts(b *testing.B, c *natstest.Cluster, burst int, atomic bool) {
	ctx := context.Background()
	nc, err := replication.Dial(ctx, c.Conn(natsauth.Operator))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("BURSTS_%d", time.Now().UnixNano())
	prefix := "bursts." + strings.ToLower(name)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".*"},
		MaxMsgsPerSubject: 1, Discard: jetstream.DiscardOld, Replicas: 3, AllowAtomicPublish: true}); err != nil {
		b.Fatal(err)
	}
	c.WaitStreamLeader(b, name)
	data := bytes.Repeat([]byte("x"), 300)
	queue := make(chan []jetstream.PubAckFuture, 4)
	acked := make(chan error, 1)
	go func() {
		var err error
		for futs := range queue {
			for _, f := range futs {
				select {
				case <-f.Ok():
				case e := <-f.Err():
					err = cmp.Or(err, e)
				}
			}
		}
		acked <- err
	}()
	cpu0, ncpu0 := benchCPU(b, c)
	b.ResetTimer()
	start := time.Now()
	var tail uint64
	for i, batch := 0, 0; i < b.N; batch++ {
		n := min(burst, b.N-i)
		var futs []jetstream.PubAckFuture
		for j := range n {
			m := nats.NewMsg(prefix + ".c" + strconv.Itoa(i+j))
			m.Data = data
			m.Header.Set(jetstream.MsgIDHeader, "c"+strconv.Itoa(i+j)+":1@1")
			m.Header.Set(replication.EpochHeader, "1")
			m.Header.Set(jetstream.ExpectedStreamHeader, name)
			if !atomic || j == 0 {
				m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(tail, 10))
			}
			if !atomic {
				tail++
			} else {
				m.Header.Set("Nats-Batch-Id", "b"+strconv.Itoa(batch))
				m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j+1))
				if j < n-1 {
					// Without a reply subject the server does not
					// answer an event inside a batch.
					if err := nc.PublishMsg(m); err != nil {
						b.Fatal(err)
					}
					continue
				}
				m.Header.Set("Nats-Batch-Commit", "1")
				tail += uint64(n)
			}
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		queue <- futs
		i += n
	}
	close(queue)
	if err := <-acked; err != nil {
		b.Fatal(err)
	}
	benchRawReport(b, c, start, cpu0, ncpu0)
}

// benchRawR3 publishes b.N 200-byte events into a fresh R3 stream on c:
// from conc goroutines each waiting for its ack, or (conc 0) through one
// Chain in windows of 1024.
func benchRawR3(b *testing.B, c *natstest.Cluster, conc int) {
	ctx := context.Background()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: c.URLs(), Name: "bench-raw"})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	name := fmt.Sprintf("RAW%d_%d", conc, time.Now().UnixNano())
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{Name: name, SubjectPrefix: "raw." + strings.ToLower(name), Replicas: 3})
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		b.Fatal(err)
	}
	c.WaitStreamLeader(b, name)
	data := bytes.Repeat([]byte("x"), 200)
	cpu0, ncpu0 := benchCPU(b, c)
	b.ResetTimer()
	start := time.Now()
	var lat []time.Duration
	if conc == 0 {
		ch := replication.NewChain(pub, nil)
		for i := 0; i < b.N; {
			n := min(1024, b.N-i)
			events := make([]replication.Event, n)
			for j := range events {
				events[j] = replication.Event{Code: fmt.Sprintf("c%d", i+j), Revision: uint64(i + j + 1), Data: data}
			}
			if got, err := ch.Publish(ctx, events, nil); got != n || err != nil {
				b.Fatal(got, err)
			}
			i += n
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		lats := make([][]time.Duration, conc)
		for g := range conc {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
					t0 := time.Now()
					if _, _, err := pub.PublishRaw(ctx, fmt.Sprintf("c%d", i), uint64(i), data); err != nil {
						b.Error(err)
						return
					}
					lats[g] = append(lats[g], time.Since(t0))
				}
			})
		}
		wg.Wait()
		lat = slices.Concat(lats...)
	}
	benchRawReport(b, c, start, cpu0, ncpu0)
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(benchQuantile(lat, 0.50).Seconds()*1e3, "p50-ms")
		b.ReportMetric(benchQuantile(lat, 0.99).Seconds()*1e3, "p99-ms")
	}
}

// benchRawReport stops b's timer and reports the events per second since
// start and the CPU per event of this process and of c's servers since
// cpu0 and ncpu0 (benchCPU).
func benchRawReport(b *testing.B, c *natstest.Cluster, start time.Time, cpu0, ncpu0 time.Duration) {
	elapsed := time.Since(start)
	b.StopTimer()
	cpu1, ncpu1 := benchCPU(b, c)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "client-cpu-us/op")
	b.ReportMetric(float64((ncpu1-ncpu0).Microseconds())/float64(b.N), "nats-cpu-us/op")
}

// benchCPU returns this process's CPU time and the sum of c's server
// processes' (0 for in-process servers).
func benchCPU(b *testing.B, c *natstest.Cluster) (self, servers time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if c == nil {
		return self, 0
	}
	for i := range c.Size() {
		pid := c.PID(i)
		if pid == 0 {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name (which may hold spaces): state is
		// the 3rd field, utime and stime the 14th and 15th.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		servers += time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return self, servers
}

const benchAdminKey = "bench-admin-key-8d2f4b6a1e9c"

func benchCreate(b *testing.B, conc int, ack string, replicas int, noCollector bool) {
	benchCreateOn(b, conc, ack, replicas, noCollector, nil)
}

// benchCreateOn is benchCreate on cluster c (nil: a new server or
// cluster of replicas).
func benchCreateOn(b *testing.B, conc int, ack string, replicas int, noCollector bool, c *natstest.Cluster) {
	var urls []string
	switch {
	case c != nil:
		urls = c.URLs()
	case replicas == 1:
		urls = []string{natstest.Start(b).URL()}
	default:
		urls = natstest.StartCluster(b, replicas).URLs()
	}
	srv, err := origin.New(origin.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     b.TempDir(),
		NATS:        replication.ConnConfig{URLs: urls},
		Stream:      replication.StreamConfig{Replicas: replicas},
		AdminKey:    benchAdminKey,
		Ack:         ack,
		NoCollector: noCollector,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	client := &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			MaxIdleConns:        2 * conc,
			MaxIdleConnsPerHost: 2 * conc,
			DisableCompression:  true,
		},
	}
	b.Cleanup(func() {
		client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			b.Errorf("origin Run: %v", err)
		}
	})
	api, admin := "http://"+srv.Addr(), "http://"+srv.AdminAddr()
	wait.For(b, 30*time.Second, "origin /readyz", func() bool {
		resp, err := client.Get(admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	create := func(i int64) time.Duration {
		body := fmt.Appendf(nil, `{"url":"https://example.com/bench/%d/%d"}`, conc, i)
		req, err := http.NewRequest(http.MethodPost, api+"/v1/links", bytes.NewReader(body))
		if err != nil {
			b.Error(err)
			return 0
		}
		req.Header.Set("Authorization", "Bearer "+benchAdminKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return 0
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusCreated {
			b.Errorf("create: status %d, err %v: %s", resp.StatusCode, err, raw)
		}
		return took
	}
	// Warm up: one connection per client, and the stream created.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() { create(-next.Add(1)) })
	}
	wg.Wait()
	warm := next.Load()
	next.Store(0)
	commits0, err := outageScrape(client, admin, "linkpop_store_commits")
	if err != nil {
		b.Fatal(err)
	}

	lat := make([][]time.Duration, conc)
	cpu0, ncpu0 := benchCPU(b, c)
	b.ResetTimer()
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N) && !b.Failed(); i = next.Add(1) {
				lat[g] = append(lat[g], create(i))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if b.Failed() {
		return
	}
	cpu1, ncpu1 := benchCPU(b, c)
	if c != nil {
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "origin+clients-cpu-us/op")
		b.ReportMetric(float64((ncpu1-ncpu0).Microseconds())/float64(b.N), "nats-cpu-us/op")
	}
	commits1, err := outageScrape(client, admin, "linkpop_store_commits")
	if err != nil {
		b.Fatal(err)
	}

	// Outbox→stream lag: every create is a new code, so the stream holds
	// one message per link once the relay has caught up.
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: urls, Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	total := uint64(warm) + uint64(b.N)
	wait.For(b, 5*time.Minute, fmt.Sprintf("the stream to hold all %d links", total), func() bool {
		return outageStreamMsgs(ctx, js) >= total
	})
	lag := time.Since(start.Add(elapsed))

	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "creates/s")
	b.ReportMetric(benchQuantile(all, 0.50).Seconds()*1e3, "p50-ms")
	b.ReportMetric(benchQuantile(all, 0.99).Seconds()*1e3, "p99-ms")
	b.ReportMetric(lag.Seconds()*1e3, "lag-ms")
	// Group commit at work: creates per synced Pebble commit (the relay's
	// outbox deletes are commits too, so this understates it a little).
	b.ReportMetric(float64(b.N)/max(commits1-commits0, 1), "creates/commit")
}

// benchQuantile returns the q-quantile of sorted durations.
func benchQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}
