package replication_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// chainEnv is a single server, a stream and a chain whose sends are
// counted per event and can be made to expect a wrong last sequence.
type chainEnv struct {
	pub *replication.Publisher
	js  jetstream.JetStream
	cfg replication.StreamConfig

	mu      sync.Mutex
	sent    map[string]int // msg id → sends
	corrupt map[string]bool
}

// newChainEnv starts a single server with a stream whose dedup window is
// window.
func newChainEnv(t *testing.T, window time.Duration) *chainEnv {
	t.Helper()
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := replication.StreamConfig{Name: "CHAIN", DuplicateWindow: window}
	pub, err := replication.NewPublisher(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return chainEnvOn(pub, js, cfg)
}

// chainEnvOn is a chainEnv on an existing stream.
func chainEnvOn(pub *replication.Publisher, js jetstream.JetStream, cfg replication.StreamConfig) *chainEnv {
	return &chainEnv{pub: pub, js: js, cfg: cfg, sent: map[string]int{}, corrupt: map[string]bool{}}
}

func (e *chainEnv) chain() *replication.Chain {
	return replication.NewChain(e.pub, func(code string, rev uint64, data []byte, last uint64) (*replication.PendingAck, error) {
		id := replication.MsgID(code, rev)
		e.mu.Lock()
		e.sent[id]++
		if e.corrupt[id] {
			delete(e.corrupt, id)
			last += 7
		}
		e.mu.Unlock()
		return e.pub.PublishRawAsyncAt(code, rev, data, last)
	})
}

func events(t *testing.T, specs ...string) []replication.Event {
	t.Helper()
	var evs []replication.Event
	for _, s := range specs {
		var code string
		var rev uint64
		if _, err := fmt.Sscanf(s, "%s %d", &code, &rev); err != nil {
			t.Fatal(s, err)
		}
		code = "lnk" + code // a valid code: 3 characters at least
		evs = append(evs, replication.Event{Code: code, Revision: rev, Data: encoded(t, code, rev)})
	}
	return evs
}

// stream returns the stream's messages as "code:rev" in sequence order.
func (e *chainEnv) stream(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := link.UnmarshalChange(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, replication.MsgID(c.Record.Code, c.Record.Revision))
	}
	return ids
}

func wantStream(t *testing.T, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stream holds %v, want %v", got, want)
	}
}

// A refused event stops everything sent after it; the next Publish
// resyncs and resends from it, in order.
func TestChainRefusalMidWindow(t *testing.T) {
	e := newChainEnv(t, time.Minute)
	ctx := context.Background()
	ch := e.chain()
	e.corrupt["lnkc:3"] = true
	evs := events(t, "a 1", "b 2", "c 3", "d 4", "e 5")
	n, err := ch.Publish(ctx, evs, nil)
	if n != 2 || !errors.Is(err, replication.ErrWrongLastSequence) {
		t.Fatalf("publish: %d, %v; want 2 and ErrWrongLastSequence", n, err)
	}
	var done []int
	n, err = ch.Publish(ctx, evs[n:], func(i int) { done = append(done, i) })
	if n != 3 || err != nil || fmt.Sprint(done) != "[0 1 2]" {
		t.Fatalf("second publish: %d %v done %v", n, err, done)
	}
	wantStream(t, e.stream(t), "lnka:1", "lnkb:2", "lnkc:3", "lnkd:4", "lnke:5")
	if e.sent["lnkd:4"] != 2 || e.sent["lnka:1"] != 1 {
		t.Fatalf("sends: %v; d:4 must have been refused once and sent again", e.sent)
	}
}

// A chain that starts on a stream holding some of its events (a relay
// restarted after they were acked but before its outbox forgot them)
// anchors on the stream's last message and sends only what follows it.
func TestChainSkipsWhatTheStreamHolds(t *testing.T) {
	e := newChainEnv(t, time.Minute)
	ctx := context.Background()
	for _, ev := range events(t, "a 1", "b 2", "a 3") {
		if _, _, err := e.pub.PublishRaw(ctx, ev.Code, ev.Revision, ev.Data); err != nil {
			t.Fatal(err)
		}
	}
	ch := e.chain()
	n, err := ch.Publish(ctx, events(t, "a 1", "b 2", "a 3", "c 4", "b 5"), nil)
	if n != 5 || err != nil {
		t.Fatalf("publish: %d %v", n, err)
	}
	if e.sent["lnka:1"]+e.sent["lnkb:2"]+e.sent["lnka:3"] != 0 || e.sent["lnkc:4"] != 1 || e.sent["lnkb:5"] != 1 {
		t.Fatalf("sends %v: stored events must not be sent again", e.sent)
	}
	// The stream keeps one message per code: a:1 and b:2 were replaced.
	wantStream(t, e.stream(t), "lnka:3", "lnkc:4", "lnkb:5")
}

// Past the dedup window a re-sent event would be stored again: the
// resync's lookup is what keeps it out. The window here is 100ms.
func TestChainExactlyOncePastDedupWindow(t *testing.T) {
	e := newChainEnv(t, 100*time.Millisecond)
	ctx := context.Background()
	evs := events(t, "a 1", "b 2", "c 3")
	if n, err := e.chain().Publish(ctx, evs[:2], nil); n != 2 || err != nil {
		t.Fatalf("publish: %d %v", n, err)
	}
	time.Sleep(300 * time.Millisecond) // let the dedup window pass
	// A new chain (a restarted relay whose outbox still holds a:1, b:2).
	if n, err := e.chain().Publish(ctx, evs, nil); n != 3 || err != nil {
		t.Fatalf("publish after restart: %d %v", n, err)
	}
	wantStream(t, e.stream(t), "lnka:1", "lnkb:2", "lnkc:3")
}

// Something else appends to the stream (here the very event the chain
// sends next) while the chain holds its tail: the chain must neither lose
// nor reorder events. A single server checks the expected last sequence
// before the dedup (10071, then a resync that skips the stored event); a
// cluster leader checks the dedup first (a duplicate ack, after which the
// tail is re-read). Either way the stream ends in order.
func TestChainAfterForeignAppend(t *testing.T) {
	chainAfterForeignAppend(t, newChainEnv(t, time.Minute))
}

func chainAfterForeignAppend(t *testing.T, e *chainEnv) {
	ctx := context.Background()
	ch := e.chain()
	if n, err := ch.Publish(ctx, events(t, "a 1"), nil); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	b := events(t, "b 2")[0]
	if _, _, err := e.pub.PublishRaw(ctx, b.Code, b.Revision, b.Data); err != nil {
		t.Fatal(err)
	}
	evs := events(t, "b 2", "c 3", "c 4", "d 5")
	n := 0
	for attempt := 0; n < len(evs); attempt++ {
		m, err := ch.Publish(ctx, evs[n:], nil)
		t.Logf("window from %d: %d in the stream, %v", n, m, err)
		if attempt == 3 {
			t.Fatalf("no progress after %d windows: %v", attempt, err)
		}
		n += m
	}
	wantStream(t, e.stream(t), "lnka:1", "lnkb:2", "lnkc:4", "lnkd:5")
}
