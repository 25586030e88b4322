package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/origin/relay"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
)

// BenchmarkRelayDrain measures how fast the relay moves a full outbox
// into a file-backed embedded JetStream stream (publish, ack, delete).
// Run with
//
//	go test -run '^$' -bench RelayDrain -benchtime 20000x ./origin/relay/
func BenchmarkRelayDrain(b *testing.B) {
	ns := natstest.Start(b)
	ctx := context.Background()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{})
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(store.Options{FS: vfs.NewMem()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Create(ctx, store.CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	r, err := relay.New(relay.Config{Store: st, Publisher: pub, Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- r.Run(runCtx) }()
	for {
		if depth, _ := st.OutboxStats(); depth == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
