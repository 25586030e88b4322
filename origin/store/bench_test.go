package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCreateParallel measures synced creates per second on a real
// disk with 1, 16 and 64 concurrent callers; group commit lets the
// concurrent callers share fsyncs. Run with
//
//	go test -run '^$' -bench CreateParallel -benchtime 20000x ./origin/store/
func BenchmarkCreateParallel(b *testing.B) {
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("par=%d", par), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < par; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, _, err := s.Create(ctx, CreateRequest{URL: "https://example.com/some/path?q=1", Tags: []string{"bench"}}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "creates/s")
			b.ReportMetric(float64(b.N)/float64(max(s.Commits(), 1)), "creates/commit")
		})
	}
}
