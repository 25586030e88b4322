package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
)

// TestCrashCloneKeepsAcknowledged takes crash images of the store's file
// system while creates, updates and outbox deletes are running (pebble's
// crashable MemFS keeps what was synced and a random part of what was
// not) and checks each image: every acknowledged mutation is there, every
// link's newest change is still in the outbox unless the relay asked to
// delete it, and the counters agree with the data. The process-level
// SIGKILL test lives with cmd/origin; this one covers torn, unsynced
// tails cheaply.
func TestCrashCloneKeepsAcknowledged(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { crashOnce(t, seed) })
	}
}

func crashOnce(t *testing.T, seed int64) {
	fs := vfs.NewCrashableMem()
	s, err := Open(Options{FS: fs, Dir: "db", MaxBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var (
		mu        sync.Mutex
		acked     = map[string]uint64{} // code → acknowledged revision
		requested = map[uint64]bool{}   // outbox revisions the "relay" asked to delete
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			var mine []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var rec link.Record
				var err error
				if len(mine) > 0 && rng.IntN(3) == 0 {
					u := fmt.Sprintf("https://example.com/u/%d/%d", w, i)
					rec, err = s.Update(ctx, UpdateRequest{Code: mine[rng.IntN(len(mine))], URL: &u})
				} else {
					rec, _, err = s.Create(ctx, CreateRequest{URL: fmt.Sprintf("https://example.com/%d/%d", w, i)})
					mine = append(mine, rec.Code)
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[rec.Code] = max(acked[rec.Code], rec.Revision)
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() { // a relay that publishes nothing but deletes eagerly
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-s.OutboxNotify():
			}
			entries, err := s.Outbox(32)
			if err != nil {
				t.Error(err)
				return
			}
			var revs []uint64
			mu.Lock()
			for _, e := range entries {
				requested[e.Revision] = true
				revs = append(revs, e.Revision)
			}
			mu.Unlock()
			if err := s.OutboxDelete(revs...); err != nil && !errors.Is(err, ErrClosed) {
				t.Error(err)
				return
			}
		}
	}()

	// Crash once enough has happened, remembering what was acknowledged
	// before the image was taken.
	rng := rand.New(rand.NewPCG(uint64(seed), 99))
	target := 200 + rng.IntN(400)
	wait.For(t, 30*time.Second, "enough acknowledged mutations", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= target || t.Failed()
	})
	mu.Lock()
	ackedBefore := make(map[string]uint64, len(acked))
	for k, v := range acked {
		ackedBefore[k] = v
	}
	mu.Unlock()
	img := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
	close(stop)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	deleteAsked := requested
	mu.Unlock()

	r, err := Open(Options{FS: img, Dir: "db"})
	if err != nil {
		t.Fatalf("open crash image: %v", err)
	}
	defer r.Close()
	for code, rev := range ackedBefore {
		got, err := r.Get(code)
		if err != nil {
			t.Fatalf("acknowledged %s rev %d lost: %v", code, rev, err)
		}
		if got.Revision < rev {
			t.Fatalf("%s: revision %d after crash, %d acknowledged", code, got.Revision, rev)
		}
	}
	outbox, err := r.Outbox(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	byRev := map[uint64]OutboxEntry{}
	for _, e := range outbox {
		byRev[e.Revision] = e
	}
	var links, maxRev uint64
	err = r.ScanAll(func(rec link.Record) error {
		links++
		maxRev = max(maxRev, rec.Revision)
		e, ok := byRev[rec.Revision]
		if !ok {
			if !deleteAsked[rec.Revision] {
				return fmt.Errorf("%s rev %d: no outbox entry and no delete asked", rec.Code, rec.Revision)
			}
			return nil
		}
		c, err := link.UnmarshalChange(e.Data)
		if err != nil {
			return err
		}
		if c.Record.Code != rec.Code || c.Record.URL != rec.URL {
			return fmt.Errorf("%s rev %d: outbox entry carries %s %s", rec.Code, rec.Revision, c.Record.Code, c.Record.URL)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range outbox {
		maxRev = max(maxRev, e.Revision)
	}
	if r.Links() != links || r.Revision() != maxRev {
		t.Fatalf("after crash: counters say %d links rev %d, data says %d links rev %d", r.Links(), r.Revision(), links, maxRev)
	}
	if depth, _ := r.OutboxStats(); depth != len(outbox) {
		t.Fatalf("outbox stats %d, outbox holds %d", depth, len(outbox))
	}
	// The store keeps working: the next revision follows the recovered one.
	rec, _, err := r.Create(ctx, CreateRequest{URL: "https://example.com/after"})
	if err != nil || rec.Revision != maxRev+1 {
		t.Fatalf("create after crash: rev %d %v, want %d", rec.Revision, err, maxRev+1)
	}
}
