package replication_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// pebbleApplier is a minimal replica: records and the position in one
// Pebble batch, a change applied only if its revision is newer. It also
// remembers every stream sequence it was handed, to check for gaps and
// re-deliveries.
type pebbleApplier struct {
	db *pebble.DB

	mu      sync.Mutex
	seqs    []uint64 // every message sequence, in the order applied
	poison  []replication.Poison
	resets  int // batches whose Through was below the stored position
	rewinds int // empty batches with Through 0 (Consumer.Resync)
	failErr error
}

var positionKey = []byte("position")

func newPebbleApplier(t *testing.T) *pebbleApplier {
	t.Helper()
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: pebbleLogger{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &pebbleApplier{db: db}
}

func (a *pebbleApplier) Position() (uint64, error) {
	return a.get(a.db, positionKey)
}

func (a *pebbleApplier) get(r pebble.Reader, key []byte) (uint64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return binary.BigEndian.Uint64(v), nil
}

func (a *pebbleApplier) Apply(b replication.Batch) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failErr != nil {
		return a.failErr
	}
	if len(b.Changes) == 0 && len(b.Poison) == 0 && b.Through == 0 {
		a.rewinds++
		return a.db.Set(positionKey, binary.BigEndian.AppendUint64(nil, 0), pebble.Sync)
	}
	batch := a.db.NewIndexedBatch()
	defer batch.Close()
	for _, e := range b.Changes {
		key := []byte("rec/" + e.Change.Record.Code)
		v, closer, err := batch.Get(key)
		if err == nil {
			old, uerr := link.UnmarshalRecord(v)
			closer.Close()
			if uerr != nil {
				return uerr
			}
			if old.Revision >= e.Change.Record.Revision {
				continue
			}
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		data, err := link.MarshalRecord(&e.Change.Record)
		if err != nil {
			return err
		}
		if err := batch.Set(key, data, nil); err != nil {
			return err
		}
	}
	pos, err := a.get(batch, positionKey)
	if err != nil {
		return err
	}
	if b.Through < pos {
		a.resets++
	}
	if err := batch.Set(positionKey, binary.BigEndian.AppendUint64(nil, b.Through), nil); err != nil {
		return err
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range b.Changes {
		seqs = append(seqs, e.Seq)
	}
	for _, p := range b.Poison {
		seqs = append(seqs, p.Seq)
	}
	slices.Sort(seqs)
	if len(seqs) == 0 || seqs[len(seqs)-1] != b.Through {
		return fmt.Errorf("batch through %d does not end with its last message %v", b.Through, seqs)
	}
	a.seqs = append(a.seqs, seqs...)
	a.poison = append(a.poison, b.Poison...)
	return nil
}

// revisions returns each stored code's revision.
func (a *pebbleApplier) revisions(t *testing.T) map[string]uint64 {
	t.Helper()
	it, err := a.db.NewIter(&pebble.IterOptions{LowerBound: []byte("rec/"), UpperBound: []byte("rec0")})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string]uint64{}
	for it.First(); it.Valid(); it.Next() {
		r, err := link.UnmarshalRecord(it.Value())
		if err != nil {
			t.Fatalf("stored record %q: %v", it.Key(), err)
		}
		out[r.Code] = r.Revision
	}
	return out
}

func (a *pebbleApplier) seen() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seqs)
}

// pebbleLogger keeps Pebble's informational chatter out of test output.
type pebbleLogger struct{ t testing.TB }

func (pebbleLogger) Infof(string, ...any)                {}
func (l pebbleLogger) Errorf(format string, args ...any) { l.t.Logf("pebble: "+format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// env is one test's JetStream server, a connection for the consumer, a
// separate one for publishing, and the stream.
type env struct {
	t   *testing.T
	ns  *natstest.Server
	nc  *nats.Conn // consumer's
	pub *replication.Publisher
	js  jetstream.JetStream // publisher side, for server-side surgery
	cfg replication.StreamConfig
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, ns: natstest.Start(t), cfg: replication.StreamConfig{Name: "TEST_LINKS"}}
	ctx := context.Background()
	var err error
	e.nc, err = replication.Dial(ctx, replication.ConnConfig{URLs: []string{e.ns.URL()}, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	pnc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{e.ns.URL()}, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pnc.Close)
	if e.pub, err = replication.NewPublisher(pnc, e.cfg); err != nil {
		t.Fatal(err)
	}
	if e.js, err = jetstream.New(pnc); err != nil {
		t.Fatal(err)
	}
	e.ensureStream()
	return e
}

func (e *env) ensureStream() {
	e.t.Helper()
	wait.For(e.t, 10*time.Second, "stream created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return e.pub.EnsureStream(ctx) == nil
	})
}

func change(code string, rev uint64) *link.Change {
	now := time.Now().UTC()
	op := link.OpUpdate
	if rev == 1 {
		op = link.OpCreate
	}
	return &link.Change{Op: op, CommittedAt: now, Record: link.Record{
		Code: code, URL: fmt.Sprintf("https://example.com/%s/%d", code, rev), Redirect: 302,
		Status: link.StatusActive, CreatedAt: now, UpdatedAt: now, Revision: rev}}
}

// publish publishes code at rev, retrying while the server recovers, and
// returns the stream sequence.
func (e *env) publish(code string, rev uint64) uint64 {
	e.t.Helper()
	var seq uint64
	wait.For(e.t, 10*time.Second, "publish "+code, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, _, err := e.pub.Publish(ctx, change(code, rev))
		seq = s
		return err == nil
	})
	return seq
}

func (e *env) publishRaw(code string, rev uint64, data []byte) uint64 {
	e.t.Helper()
	seq, _, err := e.pub.PublishRaw(context.Background(), code, rev, data)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// testLogger shows the consumer's logs with go test -v.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a Consumer whose Run goroutine the test owns.
type running struct {
	*replication.Consumer
	set    *metrics.Set
	cancel context.CancelFunc
	done   chan error
}

func (e *env) start(a replication.Applier) *running {
	e.t.Helper()
	return e.startWith(a, func(*replication.ConsumerConfig) {})
}

// startWith starts a consumer with test timings, changed by edit.
func (e *env) startWith(a replication.Applier, edit func(*replication.ConsumerConfig)) *running {
	e.t.Helper()
	set := metrics.NewSet()
	cfg := replication.ConsumerConfig{
		Stream:       e.cfg,
		Applier:      a,
		Metrics:      set,
		Logger:       testLogger(e.t),
		BatchSize:    16,
		StallTimeout: time.Second,
		PollInterval: 100 * time.Millisecond,
		Heartbeat:    500 * time.Millisecond,
	}
	edit(&cfg)
	c, err := replication.NewConsumer(e.nc, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Consumer: c, set: set, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels Run and waits for it; a second call does nothing.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func (r *running) metric(name string) string { return metricValue(r.set, name) }

// metricValue is the value of the metric called name in set, "" if none.
func metricValue(set *metrics.Set, name string) string {
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	for line := range strings.Lines(buf.String()) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// converge waits until the consumer has applied the stream's last
// sequence and the replica holds want.
func (e *env) converge(r *running, a *pebbleApplier, want map[string]uint64) {
	e.t.Helper()
	// Right after a server restart the client may not have reconnected
	// yet: ask until the stream answers.
	var last uint64
	var lastErr error
	wait.For(e.t, 15*time.Second, "the stream's last sequence", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		last, lastErr = e.pub.LastSequence(ctx)
		return lastErr == nil
	})
	wait.For(e.t, 15*time.Second, fmt.Sprintf("applied through %d", last), func() bool {
		s := r.Status()
		return s.Applied == last && s.StreamLast == last && s.Lag == 0
	})
	if got := a.revisions(e.t); !mapsEqual(got, want) {
		e.t.Fatalf("replica holds %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// strictlyIncreasing fails the test if seqs has a repeat or goes back:
// something was delivered twice.
func strictlyIncreasing(t *testing.T, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("sequence %d applied after %d: re-delivery (all: %v)", seqs[i], seqs[i-1], seqs)
		}
	}
}

func TestConsumerReplaysCompactedStream(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	want := map[string]uint64{}
	latest := map[uint64]bool{} // the sequence of each code's last revision
	for rev := uint64(1); rev <= 3; rev++ {
		for i := range 40 {
			code := fmt.Sprintf("code-%02d", i)
			seq := e.publish(code, rev)
			want[code] = rev
			if rev == 3 {
				latest[seq] = true
			}
		}
	}
	a := newPebbleApplier(t)
	r := e.start(a)
	e.converge(r, a, want)
	s := r.Status()
	if !s.Bootstrapped || s.Lag != 0 || s.LastApplied.IsZero() || s.LastContact.IsZero() || !s.Connected {
		t.Fatalf("status after replay: %+v", s)
	}
	if !s.CaughtUp(0, time.Minute) {
		t.Fatalf("not caught up: %+v", s)
	}
	seen := a.seen()
	strictlyIncreasing(t, seen)
	if len(seen) != len(latest) {
		t.Fatalf("applied %d messages, want the %d left after compaction", len(seen), len(latest))
	}
	for _, seq := range seen {
		if !latest[seq] {
			t.Fatalf("applied seq %d, which compaction removed", seq)
		}
	}
	if got := r.metric("linkpop_replication_applied_total"); got != "40" {
		t.Fatalf("applied_total = %q, want 40", got)
	}
	if got := r.metric("linkpop_replication_lag_messages"); got != "0" {
		t.Fatalf("lag_messages = %q, want 0", got)
	}
}

func TestConsumerResumesAfterPosition(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	want := map[string]uint64{}
	for i := range 20 {
		code := fmt.Sprintf("a-%02d", i)
		e.publish(code, 1)
		want[code] = 1
	}
	r := e.start(a)
	e.converge(r, a, want)
	r.stop(t)
	p, err := a.Position()
	if err != nil || p == 0 {
		t.Fatalf("position after first run = %d, %v", p, err)
	}
	before := len(a.seen())

	for i := range 20 {
		code := fmt.Sprintf("a-%02d", i)
		if i%2 == 0 {
			e.publish(code, 2)
			want[code] = 2
		}
		code = fmt.Sprintf("b-%02d", i)
		e.publish(code, 1)
		want[code] = 1
	}
	r = e.start(a)
	e.converge(r, a, want)
	after := a.seen()[before:]
	if len(after) == 0 || after[0] <= p {
		t.Fatalf("second run applied %v, want everything after position %d", after, p)
	}
	strictlyIncreasing(t, a.seen())
	if !r.Status().Bootstrapped {
		t.Fatal("resumed consumer not bootstrapped")
	}
}

// A replica with a position serves from disk at once: it is bootstrapped
// while NATS is down, and catches up when it returns.
func TestConsumerBootstrappedFromDiskWhileNATSDown(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	want := map[string]uint64{"x-1": 1, "x-2": 1}
	e.publish("x-1", 1)
	e.publish("x-2", 1)
	r := e.start(a)
	e.converge(r, a, want)
	r.stop(t)

	e.ns.Stop()
	wait.For(t, 5*time.Second, "consumer connection down", func() bool { return !e.nc.IsConnected() })
	r = e.start(a)
	wait.For(t, 5*time.Second, "bootstrapped from disk", func() bool { return r.Status().Bootstrapped })
	if s := r.Status(); s.Connected || s.CaughtUp(0, time.Hour) {
		t.Fatalf("status with NATS down: %+v", s)
	}
	e.ns.Restart()
	e.publish("x-3", 1)
	want["x-3"] = 1
	e.converge(r, a, want)
	strictlyIncreasing(t, a.seen())
}

func TestConsumerFreshNotBootstrappedUntilReplayed(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	e.publish("y-1", 1)
	e.ns.Stop()
	a := newPebbleApplier(t)
	r := e.start(a)
	// Without contact a fresh replica does not know what it misses.
	wait.For(t, 5*time.Second, "connection down", func() bool { return !e.nc.IsConnected() })
	if s := r.Status(); s.Bootstrapped || s.CaughtUp(1000, time.Hour) {
		t.Fatalf("fresh consumer without contact: %+v", s)
	}
	e.ns.Restart()
	e.converge(r, a, map[string]uint64{"y-1": 1})
	if !r.Status().Bootstrapped {
		t.Fatal("not bootstrapped after replay")
	}
}

// A restarted server has lost the consumer: missed heartbeats rebuild it
// (the watchdog is kept out of the way to test that path alone).
func TestConsumerSurvivesServerRestart(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.startWith(a, func(c *replication.ConsumerConfig) { c.StallTimeout = time.Hour })
	want := map[string]uint64{}
	for i := range 10 {
		code := fmt.Sprintf("r-%02d", i)
		e.publish(code, 1)
		want[code] = 1
	}
	e.converge(r, a, want)

	e.ns.Stop()
	wait.For(t, 5*time.Second, "Connected false", func() bool { return !r.Status().Connected })
	wait.For(t, 5*time.Second, "connected gauge 0", func() bool { return r.metric("linkpop_replication_connected") == "0" })
	e.ns.Restart()
	wait.For(t, 10*time.Second, "Connected true", func() bool { return r.Status().Connected })
	for i := range 10 {
		code := fmt.Sprintf("r-%02d", i)
		e.publish(code, 2)
		want[code] = 2
	}
	e.converge(r, a, want)
	if s := r.Status(); s.ConsumerRecreations == 0 {
		t.Fatalf("no rebuild after the server lost the consumer: %+v", s)
	}
	strictlyIncreasing(t, a.seen())
}

// After the server restarts (it lost the ephemeral consumer) the consumer
// resumes as soon as the connection is back, not when missed heartbeats
// or the stall watchdog notice: both are kept far out of the way here
// (heartbeat 15s, so 30s before two are missed; watchdog 1h), and the
// replica must converge within converge's 15s.
func TestConsumerResumesOnReconnect(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.startWith(a, func(c *replication.ConsumerConfig) {
		c.StallTimeout = time.Hour
		c.Heartbeat = 15 * time.Second
	})
	want := map[string]uint64{}
	for i := range 5 {
		code := fmt.Sprintf("q-%02d", i)
		e.publish(code, 1)
		want[code] = 1
	}
	e.converge(r, a, want)
	before := r.Status().ConsumerRecreations

	e.ns.Stop()
	wait.For(t, 5*time.Second, "Connected false", func() bool { return !r.Status().Connected })
	e.ns.Restart()
	wait.For(t, 10*time.Second, "Connected true", func() bool { return r.Status().Connected })
	for i := range 5 {
		code := fmt.Sprintf("q-%02d", i)
		e.publish(code, 2)
		want[code] = 2
	}
	e.converge(r, a, want)
	s := r.Status()
	if s.Stalls != 0 || s.ConsumerRecreations <= before {
		t.Fatalf("after a reconnect: %+v; want the consumer recreated (> %d) and no stall", s, before)
	}
	if got := r.metric("linkpop_replication_stalls_total"); got != "0" {
		t.Fatalf("stalls_total = %q", got)
	}
	strictlyIncreasing(t, a.seen())
}

func TestConsumerRebuildsDeletedConsumer(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.start(a)
	e.publish("d-1", 1)
	want := map[string]uint64{"d-1": 1}
	e.converge(r, a, want)

	ctx := context.Background()
	names := e.consumerNames()
	if len(names) != 1 {
		t.Fatalf("consumers on the stream: %v, want one", names)
	}
	if err := e.js.DeleteConsumer(ctx, e.cfg.Name, names[0]); err != nil {
		t.Fatal(err)
	}
	e.publish("d-2", 1)
	e.publish("d-1", 2)
	want["d-2"], want["d-1"] = 1, 2
	e.converge(r, a, want)
	if s := r.Status(); s.ConsumerRecreations == 0 {
		t.Fatalf("no rebuild after the consumer was deleted: %+v", s)
	}
	strictlyIncreasing(t, a.seen())
	wait.For(t, 5*time.Second, "one consumer left on the server", func() bool { return len(e.consumerNames()) == 1 })
}

// A consumer that stops delivering while the stream moves on (here:
// paused on the server) is rebuilt by the watchdog.
func TestConsumerWatchdogRebuildsStalledConsumer(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.start(a)
	e.publish("s-1", 1)
	want := map[string]uint64{"s-1": 1}
	e.converge(r, a, want)

	names := e.consumerNames()
	if len(names) != 1 {
		t.Fatalf("consumers on the stream: %v, want one", names)
	}
	if _, err := e.js.PauseConsumer(context.Background(), e.cfg.Name, names[0], time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.publish("s-2", 1)
	want["s-2"] = 1
	e.converge(r, a, want)
	if s := r.Status(); s.ConsumerRecreations == 0 || s.Stalls == 0 {
		t.Fatalf("stall not rebuilt: %+v", s)
	}
	for _, m := range []string{"linkpop_replication_consumer_recreations_total", "linkpop_replication_stalls_total"} {
		if got := r.metric(m); got == "" || got == "0" {
			t.Fatalf("%s = %q", m, got)
		}
	}
	strictlyIncreasing(t, a.seen())
}

func (e *env) consumerNames() []string {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), e.cfg.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	l := s.ConsumerNames(context.Background())
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		e.t.Fatal(err)
	}
	return names
}

func TestConsumerQuarantinesPoison(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.start(a)

	e.publish("p-1", 1)
	garbage := e.publishRaw("p-2", 1, []byte("\xff\xfe not a protobuf"))
	future, err := link.MarshalChange(change("p-3", 1))
	if err != nil {
		t.Fatal(err)
	}
	var pb linkpb.Change
	if err := proto.Unmarshal(future, &pb); err != nil {
		t.Fatal(err)
	}
	pb.SchemaVersion = link.SchemaVersion + 1
	if future, err = proto.Marshal(&pb); err != nil {
		t.Fatal(err)
	}
	newer := e.publishRaw("p-3", 1, future)
	other, err := link.MarshalChange(change("p-5", 1))
	if err != nil {
		t.Fatal(err)
	}
	misfiled := e.publishRaw("p-4", 1, other) // p-5's record on p-4's subject
	e.publish("p-6", 1)
	e.publish("p-1", 2)

	e.converge(r, a, map[string]uint64{"p-1": 2, "p-6": 1})
	if s := r.Status(); s.Quarantined != 3 {
		t.Fatalf("quarantined %d, want 3", s.Quarantined)
	}
	if got := r.metric("linkpop_replication_quarantined_total"); got != "3" {
		t.Fatalf("quarantined_total = %q, want 3", got)
	}
	a.mu.Lock()
	poison := slices.Clone(a.poison)
	a.mu.Unlock()
	f := func(i int, seq uint64, subject string, want error) {
		t.Helper()
		p := poison[i]
		if p.Seq != seq || p.Subject != e.cfg.Subject(subject) || !errors.Is(p.Err, want) || len(p.Data) == 0 {
			t.Fatalf("poison[%d] = seq %d subject %q err %v, want seq %d subject %q err %v", i, p.Seq, p.Subject, p.Err, seq, subject, want)
		}
	}
	f(0, garbage, "p-2", link.ErrCorrupt)
	f(1, newer, "p-3", link.ErrUnsupportedSchema)
	f(2, misfiled, "p-4", replication.ErrSubjectMismatch)
}

func TestConsumerReplaysRecreatedStream(t *testing.T) {
	f := func(name string, after int) {
		t.Run(name, func(t *testing.T) {
			leaktest.Check(t)
			e := newEnv(t)
			a := newPebbleApplier(t)
			r := e.start(a)
			want := map[string]uint64{}
			for i := range 20 {
				code := fmt.Sprintf("z-%02d", i)
				e.publish(code, 1)
				want[code] = 1
			}
			e.converge(r, a, want)

			if err := e.js.DeleteStream(context.Background(), e.cfg.Name); err != nil {
				t.Fatal(err)
			}
			e.ensureStream()
			wait.For(t, 10*time.Second, "replay of the new, empty stream begun", func() bool {
				return r.Status().Applied == 0 && r.metric("linkpop_replication_stream_reset_total") == "1"
			})
			// While the new stream stays behind the old position, the
			// watchdog must not take it for another reset, again and again.
			rebuilds, since := r.Status().ConsumerRecreations, time.Now()
			wait.For(t, 10*time.Second, "five more stream polls", func() bool {
				return r.Status().LastContact.After(since.Add(500 * time.Millisecond))
			})
			if s := r.Status(); s.ConsumerRecreations != rebuilds || !s.Bootstrapped {
				t.Fatalf("status while the new stream is empty: %+v, want %d rebuilds and still bootstrapped", s, rebuilds)
			}
			// The origin re-publishes: newer revisions of some codes
			// and new codes, starting again at sequence 1.
			for i := range after {
				code := fmt.Sprintf("z-%02d", i)
				if i >= 20 {
					code = fmt.Sprintf("n-%02d", i)
				}
				want[code] = 5
				e.publish(code, 5)
			}
			e.converge(r, a, want)
			a.mu.Lock()
			resets := a.resets
			a.mu.Unlock()
			if resets == 0 {
				t.Fatal("the position never went back: the recreated stream was not replayed")
			}
			if got := r.metric("linkpop_replication_stream_reset_total"); got != "1" {
				t.Fatalf("stream_reset_total = %q, want 1", got)
			}
		})
	}
	f("fewer messages", 5)
	f("more messages", 30)
}

type brokenApplier struct{ pos uint64 }

var errDisk = errors.New("disk on fire")

func (b brokenApplier) Position() (uint64, error)     { return b.pos, nil }
func (b brokenApplier) Apply(replication.Batch) error { return errDisk }

func TestConsumerRunFailsWhenApplyFails(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	e.publish("f-1", 1)
	c, err := replication.NewConsumer(e.nc, replication.ConsumerConfig{Stream: e.cfg, Applier: brokenApplier{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Run(ctx)
	if !errors.Is(err, replication.ErrReplica) || !errors.Is(err, errDisk) {
		t.Fatalf("Run = %v, want ErrReplica wrapping the Apply error", err)
	}
}

func TestConsumerConfigValidate(t *testing.T) {
	f := func(cfg replication.ConsumerConfig, wantErrs ...string) {
		t.Helper()
		err := cfg.Validate()
		if len(wantErrs) == 0 {
			if err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", cfg, err)
			}
			return
		}
		for _, w := range wantErrs {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Fatalf("Validate(%+v) = %v, want it to mention %q", cfg, err, w)
			}
		}
	}
	ok := brokenApplier{}
	f(replication.ConsumerConfig{Applier: ok})
	f(replication.ConsumerConfig{}, "Applier")
	f(replication.ConsumerConfig{Applier: ok, BatchSize: -1, BatchWait: -1, MaxUnsynced: -1}, "BatchSize", "BatchWait", "MaxUnsynced")
	f(replication.ConsumerConfig{Applier: ok, StallTimeout: -1, PollInterval: -1}, "StallTimeout", "PollInterval")
	f(replication.ConsumerConfig{Applier: ok, Heartbeat: time.Millisecond}, "Heartbeat")
	f(replication.ConsumerConfig{Applier: ok, Stream: replication.StreamConfig{Replicas: 9}}, "Replicas")
	f(replication.ConsumerConfig{Applier: ok, BatchSize: 1, BatchWait: time.Second, Heartbeat: time.Second})
}

func TestConsumerStatusCaughtUp(t *testing.T) {
	now := time.Now()
	f := func(s replication.ConsumerStatus, maxLag uint64, maxStale time.Duration, want bool) {
		t.Helper()
		if got := s.CaughtUp(maxLag, maxStale); got != want {
			t.Fatalf("%+v.CaughtUp(%d, %v) = %v, want %v", s, maxLag, maxStale, got, want)
		}
	}
	f(replication.ConsumerStatus{Bootstrapped: true, Lag: 0, LastContact: now}, 0, time.Minute, true)
	f(replication.ConsumerStatus{Bootstrapped: true, Lag: 5, LastContact: now}, 10, time.Minute, true)
	f(replication.ConsumerStatus{Bootstrapped: true, Lag: 11, LastContact: now}, 10, time.Minute, false)
	f(replication.ConsumerStatus{Bootstrapped: false, Lag: 0, LastContact: now}, 10, time.Minute, false)
	f(replication.ConsumerStatus{Bootstrapped: true, Lag: 0, LastContact: now.Add(-2 * time.Minute)}, 10, time.Minute, false)
	f(replication.ConsumerStatus{Bootstrapped: true, Lag: 0}, 10, time.Minute, false)
}

// BenchmarkConsumerReplay measures a fresh replica's replay of a
// compacted stream of 20,000 links into Pebble (in memory).
func BenchmarkConsumerReplay(b *testing.B) {
	const n = 20000
	ns := natstest.Start(b)
	nc, err := replication.Dial(context.Background(), replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	cfg := replication.StreamConfig{Name: "BENCH_LINKS"}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := replication.EnsureStream(context.Background(), js, cfg); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		code := fmt.Sprintf("bench-%06d", i)
		data, err := link.MarshalChange(change(code, 1))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(cfg.Subject(code), data); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				b.Fatal("async publish did not complete")
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: pebbleLogger{b}})
		if err != nil {
			b.Fatal(err)
		}
		a := &pebbleApplier{db: db}
		c, err := replication.NewConsumer(nc, replication.ConsumerConfig{Stream: cfg, Applier: a})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		wait.For(b, time.Minute, "replay", func() bool { return c.Status().Applied == n })
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// syncRecorder records the NoSync flag, Through and Pending of every
// Apply.
type syncRecorder struct {
	*pebbleApplier
	mu    sync.Mutex
	calls []replication.Batch // Changes and Poison dropped
}

func (s *syncRecorder) Apply(b replication.Batch) error {
	if err := s.pebbleApplier.Apply(b); err != nil {
		return err
	}
	s.mu.Lock()
	s.calls = append(s.calls, replication.Batch{Through: b.Through, NoSync: b.NoSync, Pending: b.Pending})
	s.mu.Unlock()
	return nil
}

// A lagging consumer lets batches be applied without sync, but Applied
// counts only durable ones, and the batch that catches up is durable.
func TestConsumerLaggingBatchesUnsyncedUntilCaughtUp(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	want := map[string]uint64{}
	var last uint64
	for i := range 200 {
		code := fmt.Sprintf("lag-%03d", i)
		last = e.publish(code, 1)
		want[code] = 1
	}
	a := &syncRecorder{pebbleApplier: newPebbleApplier(t)}
	r := e.startWith(a, func(c *replication.ConsumerConfig) { c.MaxUnsynced = time.Hour })
	e.converge(r, a.pebbleApplier, want)
	wait.For(t, 10*time.Second, "applied reaches the stream's last", func() bool { return r.Status().Applied == last })
	a.mu.Lock()
	calls := slices.Clone(a.calls)
	a.mu.Unlock()
	unsynced := 0
	for _, c := range calls {
		if c.NoSync {
			unsynced++
		}
	}
	// BatchSize is 16: the server had more for the consumer after the
	// second batch, and MaxUnsynced is an hour.
	if unsynced == 0 {
		t.Fatalf("no batch applied without sync in %d applies", len(calls))
	}
	if end := calls[len(calls)-1]; end.NoSync || end.Through != last {
		t.Fatalf("last apply %+v, want a durable one through %d", end, last)
	}
	if calls[0].NoSync {
		t.Fatal("the first batch of the session was not durable")
	}
	// Pending counts what the stream held past each batch: the
	// messages of the batches that followed, none after the last.
	for i, c := range calls {
		if want := last - c.Through; c.Pending != want {
			t.Errorf("apply %d through %d: Pending %d, want %d", i, c.Through, c.Pending, want)
		}
	}
}

// TestConsumerProvesFreshness: ProvenSeq/ProvenAt say that every message
// the stream held at ProvenAt is applied. They advance while the stream
// answers (idle too), never claim a sequence not applied, reach the last
// sequence once the replica caught up, and stop advancing when the
// stream is unreachable.
func TestConsumerProvesFreshness(t *testing.T) {
	leaktest.Check(t)
	e := newEnv(t)
	a := newPebbleApplier(t)
	r := e.start(a)
	var last uint64
	for i := range 20 {
		last = e.publish(fmt.Sprintf("p-%02d", i), 1)
		if s := r.Status(); s.ProvenSeq > s.Applied {
			t.Fatalf("proof of %d ahead of applied %d", s.ProvenSeq, s.Applied)
		}
	}
	wait.For(t, 15*time.Second, "proof reaches the last sequence", func() bool {
		s := r.Status()
		return s.ProvenSeq == last && !s.ProvenAt.IsZero()
	})
	first := r.Status().ProvenAt
	wait.For(t, 15*time.Second, "an idle stream keeps proving", func() bool { return r.Status().ProvenAt.After(first) })

	e.ns.Stop()
	wait.For(t, 5*time.Second, "Connected false", func() bool { return !r.Status().Connected })
	cut := r.Status().ProvenAt
	// Polls fail from here on; the connected gauge, refreshed by every
	// poll, shows one ran after the cut.
	wait.For(t, 5*time.Second, "a poll while down", func() bool { return r.metric("linkpop_replication_connected") == "0" })
	if s := r.Status(); !s.ProvenAt.Equal(cut) {
		t.Fatalf("proof advanced while the stream was down: %v -> %v", cut, s.ProvenAt)
	}
	e.ns.Restart()
	wait.For(t, 15*time.Second, "proof resumes after the stream is back", func() bool { return r.Status().ProvenAt.After(cut) })
}
