package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/relay"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
)

type env struct {
	ns    *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	scfg  replication.StreamConfig
	pub   *replication.Publisher
	st    *store.Store
	relay *relay.Relay
	set   *metrics.Set
}

// start runs an embedded JetStream, a store and a relay; cleanups stop
// them in reverse order.
func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, nil)
}

// startWith is start calling before, if not nil, once the store, the
// stream and the relay exist but before the relay runs.
func startWith(t *testing.T, before func(e *env)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := &env{ns: natstest.Start(t), scfg: replication.StreamConfig{Name: "LINKS", DuplicateWindow: time.Minute}, set: metrics.NewSet()}
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{e.ns.URL()}, ReconnectWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.nc = nc
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if e.pub, err = replication.NewPublisher(nc, e.scfg); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	if e.st, err = store.Open(store.Options{FS: vfs.NewMem(), Metrics: e.set}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.st.Close(); err != nil {
			t.Error(err)
		}
	})
	e.relay, err = relay.New(relay.Config{Store: e.st, Publisher: e.pub, Metrics: e.set, BatchSize: 64,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(e)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.relay.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay run: %v", err)
		}
	})
	return e
}

func (e *env) create(t *testing.T, n int) []link.Record {
	t.Helper()
	recs := make([]link.Record, n)
	var wg sync.WaitGroup
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _, err := e.st.Create(context.Background(), store.CreateRequest{URL: fmt.Sprintf("https://example.com/%d", i)})
			if err != nil {
				t.Error(err)
			}
			recs[i] = r
		}()
	}
	wg.Wait()
	return recs
}

func (e *env) waitDrained(t *testing.T, timeout time.Duration) {
	t.Helper()
	wait.For(t, timeout, "outbox drained", func() bool {
		depth, _ := e.st.OutboxStats()
		return depth == 0
	})
}

// streamState reads each code's last event from the stream and checks it
// carries the store's current state. It returns the events in stream
// order.
func (e *env) streamState(t *testing.T) []jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.scfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.RawStreamMsg
	err = e.st.ScanAll(func(rec link.Record) error {
		m, err := s.GetLastMsgForSubject(ctx, e.scfg.Subject(rec.Code))
		if err != nil {
			return fmt.Errorf("%s: %w", rec.Code, err)
		}
		c, err := link.UnmarshalChange(m.Data)
		if err != nil {
			return err
		}
		if c.Record.Revision != rec.Revision || c.Record.Status != rec.Status || c.Record.URL != rec.URL {
			return fmt.Errorf("%s: stream holds rev %d %v %s, store rev %d %v %s", rec.Code,
				c.Record.Revision, c.Record.Status, c.Record.URL, rec.Revision, rec.Status, rec.URL)
		}
		msgs = append(msgs, *m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(msgs, func(a, b jetstream.RawStreamMsg) int { return int(a.Sequence) - int(b.Sequence) })
	return msgs
}

// inRevisionOrder checks that msgs, in stream order, carry increasing
// revisions, and returns them.
func inRevisionOrder(t *testing.T, msgs []jetstream.RawStreamMsg) []uint64 {
	t.Helper()
	var revs []uint64
	for _, m := range msgs {
		c, err := link.UnmarshalChange(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) != replication.MsgID(c.Record.Code, c.Record.Revision) {
			t.Fatalf("seq %d: msg id %q", m.Sequence, m.Header.Get(jetstream.MsgIDHeader))
		}
		revs = append(revs, c.Record.Revision)
	}
	if !slices.IsSorted(revs) {
		t.Fatalf("stream is not in revision order: %v", revs)
	}
	return revs
}

// wholeStream reads every message in the stream in sequence order and
// checks that their revisions strictly increase; it returns them.
func (e *env) wholeStream(t *testing.T) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, e.scfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		msgs = append(msgs, *m)
	}
	revs := inRevisionOrder(t, msgs)
	for i := 1; i < len(revs); i++ {
		if revs[i] == revs[i-1] {
			t.Fatalf("stream holds revision %d twice: %v", revs[i], revs)
		}
	}
	return revs
}

// createSeq creates n links one after another.
func (e *env) createSeq(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, _, err := e.st.Create(context.Background(), store.CreateRequest{URL: fmt.Sprintf("https://example.com/s%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// wantRevisions checks that revs are exactly 1..n.
func wantRevisions(t *testing.T, revs []uint64, n int) {
	t.Helper()
	if len(revs) != n || revs[0] != 1 || revs[n-1] != uint64(n) {
		t.Fatalf("stream holds %d events %v, want revisions 1..%d", len(revs), revs, n)
	}
}

// A publish that fails in the middle of a window must not be overtaken by
// the events sent after it: the server refuses them, and the relay
// resumes from the failed one.
func TestRelayKeepsOrderWhenAPublishFails(t *testing.T) {
	leaktest.Check(t)
	const n = 300
	var (
		mu       sync.Mutex
		attempts = map[uint64]int{}
	)
	e := startWith(t, func(e *env) {
		// The whole outbox is waiting when the relay starts, so its first
		// pass sends a full window of 64.
		e.createSeq(t, n)
		relay.SetPublishAt(e.relay, func(orig replication.SendFunc,
			code string, rev uint64, data []byte, last uint64) (*replication.PendingAck, error) {
			mu.Lock()
			attempts[rev]++
			first := attempts[rev] == 1
			mu.Unlock()
			if first && (rev == 30 || rev == 100 || rev == 101 || rev == 200) {
				// The stream refuses this one: the later events in
				// flight must not land before its retry.
				last += 1000
			}
			return orig(code, rev, data, last)
		})
	})
	e.waitDrained(t, 20*time.Second)
	wantRevisions(t, e.wholeStream(t), n)
	mu.Lock()
	defer mu.Unlock()
	// Each refused event was sent again. Which of the events after it were
	// already sent (and refused) when its refusal came back depends on
	// timing; that none of them overtook it is the revision order checked
	// above.
	for _, rev := range []uint64{30, 100, 101, 200} {
		if attempts[rev] != 2 {
			t.Fatalf("revision %d was sent %d times; a refused event is sent once more", rev, attempts[rev])
		}
	}
}

// Events already in the stream (acked but not deleted from the outbox
// before a crash, or whose ack was lost) come back as duplicates, which
// leave the stream's last message as it was: the relay must still make
// progress and keep the order.
func TestRelayResumesAfterEventsAlreadyStored(t *testing.T) {
	leaktest.Check(t)
	const n = 200
	e := startWith(t, func(e *env) {
		e.createSeq(t, n)
		entries, err := e.st.Outbox(40)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, en := range entries {
			if _, _, err := e.pub.PublishRaw(ctx, en.Code, en.Revision, en.Data); err != nil {
				t.Fatal(err)
			}
		}
	})
	e.waitDrained(t, 20*time.Second)
	wantRevisions(t, e.wholeStream(t), n)
}

// A stream deleted and created again (or purged) has another last message
// than the relay expects: it must not wedge the relay.
func TestRelayPublishesIntoRecreatedStream(t *testing.T) {
	leaktest.Check(t)
	e := start(t)
	e.createSeq(t, 50)
	e.waitDrained(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.js.DeleteStream(ctx, e.scfg.Name); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "stream recreated", func() bool { return e.pub.EnsureStream(ctx) == nil })
	e.createSeq(t, 30)
	e.waitDrained(t, 20*time.Second)
	revs := e.wholeStream(t)
	if len(revs) != 30 || revs[0] != 51 || revs[29] != 80 {
		t.Fatalf("recreated stream holds %v, want 51..80", revs)
	}

	s, err := e.js.Stream(ctx, e.scfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	e.createSeq(t, 20)
	e.waitDrained(t, 20*time.Second)
	revs = e.wholeStream(t)
	if len(revs) != 20 || revs[0] != 81 || revs[19] != 100 {
		t.Fatalf("purged stream holds %v, want 81..100", revs)
	}
}
func counter(set *metrics.Set, name string) uint64 { return set.GetOrCreateCounter(name).Get() }

func TestConfigValidate(t *testing.T) {
	st, err := store.Open(store.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := func(c relay.Config, want string) {
		t.Helper()
		_, err := relay.New(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%+v: err %v, want %q", c, err, want)
		}
	}
	f(relay.Config{}, "store: required")
	f(relay.Config{Store: st}, "publisher: required")
	f(relay.Config{BatchSize: -1}, "batch size")
	f(relay.Config{MinBackoff: -1}, "min backoff")
	f(relay.Config{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "backoff: min")
	f(relay.Config{AckTimeout: -1}, "ack timeout")
}

func TestRelayPublishesInRevisionOrder(t *testing.T) {
	leaktest.Check(t)
	e := start(t)
	recs := e.create(t, 300)
	e.waitDrained(t, 20*time.Second)
	// Creates only: one event per code, so the stream holds every event
	// and they must be exactly revisions 1..300 in order.
	revs := inRevisionOrder(t, e.streamState(t))
	if len(revs) != len(recs) || revs[0] != 1 || revs[len(revs)-1] != 300 {
		t.Fatalf("stream holds %d events %d..%d", len(revs), revs[0], revs[len(revs)-1])
	}
	// Updates and disables of the same codes, many per code in flight at
	// once: each code's newest event must win.
	ctx := context.Background()
	var wg sync.WaitGroup
	for i, r := range recs[:100] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 3; j++ {
				u := fmt.Sprintf("https://example.com/%d/v%d", i, j)
				if _, err := e.st.Update(ctx, store.UpdateRequest{Code: r.Code, URL: &u}); err != nil {
					t.Error(err)
				}
			}
			if i%2 == 0 {
				if _, err := e.st.Disable(ctx, r.Code, 0); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	e.waitDrained(t, 20*time.Second)
	inRevisionOrder(t, e.streamState(t))
	if got := counter(e.set, "linkpop_relay_published_total"); got < 300+300+50 {
		t.Fatalf("published_total %d", got)
	}
	if entries, err := e.st.Outbox(10); err != nil || len(entries) != 0 {
		t.Fatalf("outbox not empty: %d %v", len(entries), err)
	}
}

func TestRelaySurvivesOutage(t *testing.T) {
	leaktest.Check(t)
	e := start(t)
	e.create(t, 20)
	e.waitDrained(t, 20*time.Second)

	e.ns.Stop()
	recs := e.create(t, 100)
	if depth, _ := e.st.OutboxStats(); depth != 100 {
		t.Fatalf("outbox depth %d during outage, want 100", depth)
	}
	// The relay keeps failing and retrying; nothing leaves the outbox.
	errs := counter(e.set, "linkpop_relay_errors_total")
	wait.For(t, 20*time.Second, "relay errors while NATS is down", func() bool {
		return counter(e.set, "linkpop_relay_errors_total") > errs
	})
	if depth, _ := e.st.OutboxStats(); depth != 100 {
		t.Fatalf("outbox depth %d during outage, want 100", depth)
	}
	// More writes while down, updates of codes already waiting too.
	u := "https://example.com/during-outage"
	if _, err := e.st.Update(context.Background(), store.UpdateRequest{Code: recs[0].Code, URL: &u}); err != nil {
		t.Fatal(err)
	}

	e.ns.Restart()
	e.waitDrained(t, 30*time.Second)
	revs := inRevisionOrder(t, e.streamState(t))
	if len(revs) != 120 || e.st.Revision() != 121 {
		t.Fatalf("after the outage the stream has %d codes, store revision %d", len(revs), e.st.Revision())
	}
	// Every message in the stream, in sequence order, not just each
	// code's last: recs[0]'s create was replaced by its update.
	if all := e.wholeStream(t); len(all) != 120 || all[0] != 1 || all[119] != 121 {
		t.Fatalf("stream holds %d events %v", len(all), all)
	}
}

// The stream disappears while the relay has windows in flight and comes
// back in the middle of one: the events sent while it was gone fail at
// once, the ones after it is back must not be stored ahead of them.
func TestRelayKeepsOrderWhenStreamReturnsMidWindow(t *testing.T) {
	leaktest.Check(t)
	const n = 3000
	e := startWith(t, func(e *env) { e.createSeq(t, n) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait.For(t, 20*time.Second, "relay publishing", func() bool {
		return counter(e.set, "linkpop_relay_published_total") >= 300
	})
	if err := e.js.DeleteStream(ctx, e.scfg.Name); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "stream recreated", func() bool { return e.pub.EnsureStream(ctx) == nil })
	e.waitDrained(t, 30*time.Second)
	revs := e.wholeStream(t)
	for i, rev := range revs {
		if rev != revs[0]+uint64(i) || revs[len(revs)-1] != n {
			t.Fatalf("recreated stream holds %v, want a run of revisions up to %d", revs, n)
		}
	}
}

// NATS stops while the relay has windows in flight: whatever was sent
// but not stored, and whatever the client buffered to send on reconnect,
// must not land out of order.
func TestRelayKeepsOrderAcrossOutageMidWindow(t *testing.T) {
	leaktest.Check(t)
	const n = 3000
	e := startWith(t, func(e *env) { e.createSeq(t, n) })
	wait.For(t, 20*time.Second, "relay publishing", func() bool {
		return counter(e.set, "linkpop_relay_published_total") >= 100
	})
	e.ns.Stop()
	errs := counter(e.set, "linkpop_relay_errors_total")
	wait.For(t, 20*time.Second, "relay errors while NATS is down", func() bool {
		return counter(e.set, "linkpop_relay_errors_total") > errs
	})
	e.ns.Restart()
	e.waitDrained(t, 30*time.Second)
	wantRevisions(t, e.wholeStream(t), n)
}

func TestRepublishRestoresDeletedStream(t *testing.T) {
	leaktest.Check(t)
	e := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs := e.create(t, 150)
	for _, r := range recs[:10] {
		if _, err := e.st.Disable(ctx, r.Code, 0); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDrained(t, 20*time.Second)

	if err := e.js.DeleteStream(ctx, e.scfg.Name); err != nil {
		t.Fatal(err)
	}
	// The server may still be removing the old stream's files: a create
	// right after the delete can fail, and is retried.
	wait.For(t, 10*time.Second, "stream recreated", func() bool { return e.pub.EnsureStream(ctx) == nil })
	n, err := e.relay.Republish(ctx)
	if err != nil || n != len(recs) {
		t.Fatalf("republish: %d %v, want %d", n, err, len(recs))
	}
	msgs := e.streamState(t)
	if len(msgs) != len(recs) {
		t.Fatalf("stream holds %d codes, want %d", len(msgs), len(recs))
	}
	disabled := 0
	for _, m := range msgs {
		c, _ := link.UnmarshalChange(m.Data)
		if c.Op != link.OpUpdate {
			t.Fatalf("republished op %v", c.Op)
		}
		if c.Record.Status == link.StatusDisabled {
			disabled++
		}
	}
	if disabled != 10 {
		t.Fatalf("%d disabled links republished, want 10", disabled)
	}
	if got := counter(e.set, "linkpop_relay_republished_total"); got != uint64(len(recs)) {
		t.Fatalf("republished_total %d", got)
	}
}

func TestRepublishWithoutServer(t *testing.T) {
	leaktest.Check(t)
	e := start(t)
	e.create(t, 3)
	e.waitDrained(t, 20*time.Second)
	e.ns.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := e.relay.Republish(ctx); err == nil {
		t.Fatalf("republish with NATS down: %v", err)
	}
}
