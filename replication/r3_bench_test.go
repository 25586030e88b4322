package replication_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/replication"
)

// BenchmarkR3Publish measures publishing through a Chain into an R3 stream
// on three in-process servers, with sync_interval: always and with the
// server's default (fsync every 2 minutes): one event at a time (each
// waits for its ack, reported as p50/p99 latency) and in windows of 512
// (the relay's default, reported as events per second).
//
//	go test -run '^$' -bench BenchmarkR3Publish -benchtime 2000x ./replication
func BenchmarkR3Publish(b *testing.B) {
	for _, always := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync_always=%v", always), func(b *testing.B) {
			c := natstest.StartCluster(b, 3, func(_ int, o *server.Options) { o.SyncAlways = always })
			r := &r3{c: c}
			nc, err := replication.Dial(context.Background(), replication.ConnConfig{URLs: c.URLs()})
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			r.nc = nc
			if r.js, err = jetstream.New(nc); err != nil {
				b.Fatal(err)
			}
			data := encoded(b, "bench", 1) // ~200 B; the size matters little next to the fsync
			data = append(data, make([]byte, 700-len(data))...)
			rev := uint64(0)
			next := func() replication.Event {
				rev++
				return replication.Event{Code: fmt.Sprintf("c%d", rev), Revision: rev, Data: data}
			}
			b.Run("sequential", func(b *testing.B) {
				p, _ := r.publisher(b, "SEQ")
				ch := replication.NewChain(p, nil)
				lat := make([]time.Duration, 0, b.N)
				ctx := context.Background()
				for b.Loop() {
					start := time.Now()
					if n, err := ch.Publish(ctx, []replication.Event{next()}, nil); n != 1 || err != nil {
						b.Fatal(n, err)
					}
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
			})
			b.Run("window512", func(b *testing.B) {
				p, _ := r.publisher(b, "WIN")
				ch := replication.NewChain(p, nil)
				ctx := context.Background()
				window := make([]replication.Event, 0, 512)
				flush := func() {
					if n, err := ch.Publish(ctx, window, nil); n != len(window) || err != nil {
						b.Fatal(n, err)
					}
					window = window[:0]
				}
				start := time.Now()
				for b.Loop() {
					window = append(window, next())
					if len(window) == cap(window) {
						flush()
					}
				}
				flush()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			})
		})
	}
}
