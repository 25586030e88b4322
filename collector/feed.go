package collector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"
)

// The clicked feed: the codes whose clicks a commit counted, in commit
// order, for the origin's max_visits. A collector keeps the last
// FeedCapacity of them in memory; a reader follows with a FeedCursor and
// waits for the next commit (a long poll, in process or over the
// partition API), so the origin learns of a click that reached a limit
// as soon as it is committed, whether the collector runs in the origin
// or on its own. The feed names codes only: the origin checks its own
// store for the few that carry a max_visits and asks their totals, so
// the collector never needs to know the links and only the origin writes
// them.
//
// A reader that lost entries (its cursor is older than the oldest kept,
// or it comes from another run of the collector, whose feed was in
// memory) gets Complete false and must check every limited link once
// (the origin's sweep); a first read (zero cursor) is such a reader.

// FeedCapacity is how many (commit, code) entries a collector's feed
// keeps for readers that fall behind.
const FeedCapacity = 1 << 16

// FeedPageMax bounds the codes of one FeedPage (whole commits: one may
// exceed it).
const FeedPageMax = 8192

// FeedCursor is a reader's position in one collector's feed.
type FeedCursor struct {
	// Epoch names the collector run whose feed Seq counts in.
	Epoch string `json:"epoch"`
	// Seq is the last commit read.
	Seq uint64 `json:"seq"`
}

// FeedPage is an answer of the feed (and of the partition API's
// /collector/v1/clicked).
type FeedPage struct {
	// Cursor is where the next read starts.
	Cursor FeedCursor `json:"cursor"`
	// Complete says no commit between the asked cursor and this page was
	// lost to the reader.
	Complete bool `json:"complete"`
	// Codes clicked in the commits after the asked cursor, up to Cursor,
	// each once.
	Codes []string `json:"codes"`
}

// ClickFeed is a collector's feed: a Store in process, a Remote over the
// partition API.
type ClickFeed interface {
	// Clicked returns the codes clicked after cur, waiting up to wait for
	// a commit when there is none yet (an empty page after the wait).
	Clicked(ctx context.Context, cur FeedCursor, wait time.Duration) (FeedPage, error)
}

var (
	_ ClickFeed = (*Store)(nil)
	_ ClickFeed = (*Remote)(nil)
)

type feedEntry struct {
	seq  uint64
	code string
}

// clickFeed is the in-memory feed of one Store.
type clickFeed struct {
	epoch string

	mu      sync.Mutex
	seq     uint64      // last commit added
	floor   uint64      // entries of commits <= floor were dropped
	entries []feedEntry // by seq
	wake    chan struct{}
}

func newClickFeed() *clickFeed {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &clickFeed{epoch: hex.EncodeToString(b[:]), wake: make(chan struct{})}
}

// add records one commit's clicked codes and wakes the readers.
func (f *clickFeed) add(codes []string) {
	if len(codes) == 0 {
		return
	}
	f.mu.Lock()
	f.seq++
	for _, c := range codes {
		f.entries = append(f.entries, feedEntry{f.seq, c})
	}
	if n := len(f.entries); n > FeedCapacity {
		// Drop whole commits, down to half the capacity, so the copy is
		// amortised.
		cut := n - FeedCapacity/2
		for cut < n && f.entries[cut].seq == f.entries[cut-1].seq {
			cut++
		}
		f.floor = f.entries[cut-1].seq
		f.entries = append(f.entries[:0], f.entries[cut:]...)
	}
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// read answers the codes after cur, without waiting; wake is closed by
// the next add.
func (f *clickFeed) read(cur FeedCursor) (FeedPage, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	after := cur.Seq
	complete := cur.Epoch == f.epoch && after >= f.floor && after <= f.seq
	if !complete {
		after = 0
	}
	i := sort.Search(len(f.entries), func(i int) bool { return f.entries[i].seq > after })
	page := FeedPage{Cursor: FeedCursor{Epoch: f.epoch, Seq: f.seq}, Complete: complete, Codes: []string{}}
	seen := map[string]struct{}{}
	for ; i < len(f.entries); i++ {
		e := f.entries[i]
		if len(page.Codes) >= FeedPageMax && e.seq != f.entries[i-1].seq {
			page.Cursor.Seq = f.entries[i-1].seq
			break
		}
		if _, ok := seen[e.code]; !ok {
			seen[e.code] = struct{}{}
			page.Codes = append(page.Codes, e.code)
		}
	}
	return page, f.wake
}

// Clicked returns the codes clicked after cur (see ClickFeed). A
// reader with a zero cursor, or one from another run of the collector,
// gets every code the feed holds with Complete false.
func (s *Store) Clicked(ctx context.Context, cur FeedCursor, wait time.Duration) (FeedPage, error) {
	page, wake := s.feed.read(cur)
	if len(page.Codes) > 0 || !page.Complete || wait <= 0 {
		return page, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
		return page, nil
	case <-ctx.Done():
		return page, ctx.Err()
	}
	page, _ = s.feed.read(cur)
	return page, nil
}
