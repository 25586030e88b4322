package origin

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestSharedScan: callers that ask together share scans (at most two for
// any number of them: the one running when they asked, then one for all
// of them), and each gets the result of a scan that began after it
// asked.
func TestSharedScan(t *testing.T) {
	var l sharedScan
	var began atomic.Int64
	release := make(chan struct{})
	fn := func(context.Context) ([]link.Record, error) {
		n := began.Add(1)
		if n == 1 {
			<-release // the first scan runs while the others ask
		}
		return []link.Record{{Code: strconv.FormatInt(n, 10)}}, nil
	}
	ctx := context.Background()
	first := make(chan []link.Record, 1)
	go func() {
		recs, _ := l.scan(ctx, fn)
		first <- recs
	}()
	wait.For(t, 10*time.Second, "the first scan begins", func() bool { return began.Load() == 1 })
	const callers = 16
	var wg sync.WaitGroup
	var entered atomic.Int64
	for i := range callers {
		wg.Go(func() {
			asked := began.Load()
			entered.Add(1)
			recs, err := l.scan(ctx, fn)
			if err != nil {
				t.Error(err)
				return
			}
			n, _ := strconv.ParseInt(recs[0].Code, 10, 64)
			if n <= asked {
				t.Errorf("caller %d asked after scan %d began and got scan %d", i, asked, n)
			}
		})
	}
	wait.For(t, 10*time.Second, "the callers ask", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return entered.Load() == callers && l.next != nil
	})
	close(release)
	wg.Wait()
	if recs := <-first; recs[0].Code != "1" {
		t.Errorf("the first caller got scan %s, want 1", recs[0].Code)
	}
	// Two, unless a caller counted as entered had not yet taken the lock
	// when the second scan began: then a third serves it.
	if n := began.Load(); n < 2 || n > 3 {
		t.Errorf("%d scans for 1 + %d callers, want 2 (3 at most)", n, callers)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running || l.next != nil {
		t.Errorf("after the scans: running %v, next %v", l.running, l.next)
	}
}
