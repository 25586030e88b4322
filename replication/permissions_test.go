package replication_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// asyncErrors records the connection's asynchronous errors (the server's
// permission violations arrive that way).
type asyncErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrors) Enabled(context.Context, slog.Level) bool { return true }
func (a *asyncErrors) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *asyncErrors) WithGroup(string) slog.Handler            { return a }
func (a *asyncErrors) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(at slog.Attr) bool {
		if at.Key == "err" {
			a.mu.Lock()
			a.errs = append(a.errs, at.Value.String())
			a.mu.Unlock()
		}
		return true
	})
	return nil
}

// waitViolation waits until the server reported a permissions violation
// for kind ("Publish" or "Subscription") on subject.
func (a *asyncErrors) waitViolation(t *testing.T, kind, subject string) {
	t.Helper()
	want := `Permissions Violation for ` + kind + ` to "` + subject + `"`
	wait.For(t, 10*time.Second, want, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, e := range a.errs {
			if strings.Contains(e, want) {
				return true
			}
		}
		return false
	})
}

// dialRole connects as role and records its asynchronous errors.
func dialRole(t *testing.T, ns *natstest.Server, role natsauth.Role) (*nats.Conn, *asyncErrors) {
	t.Helper()
	rec := &asyncErrors{}
	cfg := ns.Conn(role)
	cfg.Logger = slog.New(rec)
	nc, err := replication.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wait.For(t, 10*time.Second, string(role)+" connected", nc.IsConnected)
	return nc, rec
}

func testChange(code string, rev uint64) *link.Change {
	now := time.Now().UTC()
	return &link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
		Code: code, URL: "https://example.com/" + code, Redirect: 302, Status: link.StatusActive,
		CreatedAt: now, UpdatedAt: now, Revision: rev}}
}

// TestRolePermissions proves the least-privilege users of natsauth: an
// edge's credential cannot publish a link change, purge or delete a
// stream, create one, or read another role's subjects (the change
// stream's subjects, the origin's and the collector's inboxes, the click
// stream), while it can do its own job; the origin cannot create streams
// or publish clicks; the collector cannot publish link changes; and a
// client without credentials cannot connect at all.
func TestRolePermissions(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Before the operator's step the origin finds no stream and may not
	// create one.
	early, _ := dialRole(t, ns, natsauth.Origin)
	epub0, err := replication.NewPublisher(early, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := epub0.OpenStream(ctx); !errors.Is(err, replication.ErrStreamMissing) {
		t.Fatalf("origin opens a missing stream: %v, want ErrStreamMissing", err)
	}

	// The operator's step: both streams.
	op, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if err := replication.EnsureStreams(ctx, op, replication.StreamConfig{}, replication.OriginStream(replication.StreamConfig{}, time.Hour), replication.ClickStreamConfig{}); err != nil {
		t.Fatalf("operator creates the streams: %v", err)
	}
	ojs, _ := jetstream.New(op)
	links, err := ojs.Stream(ctx, "LINKPOP_LINKS")
	if err != nil {
		t.Fatal(err)
	}
	msgs := func(s jetstream.Stream) uint64 {
		t.Helper()
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	// The origin publishes a link change: its job.
	onc, orec := dialRole(t, ns, natsauth.Origin)
	opub, err := replication.NewPublisher(onc, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := opub.OpenStream(ctx); err != nil {
		t.Fatalf("origin opens the existing stream: %v", err)
	}
	if _, _, err := opub.Publish(ctx, testChange("fromorigin", 1)); err != nil {
		t.Fatalf("origin publishes a link change: %v", err)
	}
	if _, err := opub.LastSequence(ctx); err != nil {
		t.Fatalf("origin reads the stream's last message: %v", err)
	}
	if n := msgs(links); n != 1 {
		t.Fatalf("links stream holds %d messages, want 1", n)
	}

	enc, erec := dialRole(t, ns, natsauth.Edge)
	ejs, _ := jetstream.New(enc)
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 500*time.Millisecond) }

	// An edge cannot publish a link change.
	epub, err := replication.NewPublisher(enc, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := short()
	_, _, err = epub.Publish(pctx, testChange("fromedge", 1))
	pcancel()
	if err == nil {
		t.Fatal("edge published a link change")
	}
	erec.waitViolation(t, "Publish", "linkpop.links.fromedge")

	// An edge cannot purge, delete or create a stream.
	pctx, pcancel = short()
	if err := ejs.DeleteStream(pctx, "LINKPOP_LINKS"); err == nil {
		t.Fatal("edge deleted the change stream")
	}
	pcancel()
	erec.waitViolation(t, "Publish", "$JS.API.STREAM.DELETE.LINKPOP_LINKS")
	if es, err := ejs.Stream(ctx, "LINKPOP_LINKS"); err != nil {
		t.Fatalf("edge reads the stream's info: %v", err)
	} else {
		pctx, pcancel = short()
		if err := es.Purge(pctx); err == nil {
			t.Fatal("edge purged the change stream")
		}
		pcancel()
	}
	erec.waitViolation(t, "Publish", "$JS.API.STREAM.PURGE.LINKPOP_LINKS")
	pctx, pcancel = short()
	if _, err := ejs.CreateStream(pctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
		t.Fatal("edge created a stream")
	}
	pcancel()
	erec.waitViolation(t, "Publish", "$JS.API.STREAM.CREATE.EVIL")
	if n := msgs(links); n != 1 {
		t.Fatalf("links stream holds %d messages after the edge's attempts, want 1", n)
	}

	// An edge cannot read another role's subjects: the change stream's
	// subjects directly, the origin's and the collector's inboxes (which
	// carry their publish acks and the messages their consumers deliver),
	// the default inbox, or the click stream through a consumer.
	for _, subj := range []string{"linkpop.links.>", natsauth.Origin.InboxPrefix() + ".>", natsauth.Collector.InboxPrefix() + ".>", "_INBOX.>", "linkpop.clicks.>"} {
		sub, err := enc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		erec.waitViolation(t, "Subscription", subj)
		_ = sub.Unsubscribe()
	}
	pctx, pcancel = short()
	if _, err := ejs.CreateOrUpdateConsumer(pctx, "LINKPOP_CLICKS", jetstream.ConsumerConfig{Durable: "sneak"}); err == nil {
		t.Fatal("edge created a consumer on the click stream")
	}
	pcancel()
	erec.waitViolation(t, "Publish", "$JS.API.CONSUMER.CREATE.LINKPOP_CLICKS.sneak")

	// What an edge may do: read the change stream through its own
	// consumer, and publish click batches.
	es, err := ejs.Stream(ctx, "LINKPOP_LINKS")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := es.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true})
	if err != nil {
		t.Fatalf("edge creates its consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if m.Subject() != "linkpop.links.fromorigin" {
			t.Fatalf("edge got %s", m.Subject())
		}
		got++
	}
	if got != 1 || batch.Error() != nil {
		t.Fatalf("edge fetched %d messages (%v), want 1", got, batch.Error())
	}
	if err := ejs.DeleteConsumer(ctx, "LINKPOP_LINKS", cons.CachedInfo().Name); err != nil {
		t.Fatalf("edge deletes its consumer: %v", err)
	}
	cpub, err := replication.NewClickPublisher(enc, replication.ClickStreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cpub.PublishClicks(ctx, "edge-a", "i1", 1, []byte("batch")); err != nil {
		t.Fatalf("edge publishes a click batch: %v", err)
	}

	// The origin may not create streams or publish clicks.
	ojsOrigin, _ := jetstream.New(onc)
	pctx, pcancel = short()
	if _, err := ojsOrigin.CreateStream(pctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
		t.Fatal("origin created a stream")
	}
	pcancel()
	orec.waitViolation(t, "Publish", "$JS.API.STREAM.CREATE.EVIL")
	if err := onc.Publish("linkpop.clicks.edge-a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	orec.waitViolation(t, "Publish", "linkpop.clicks.edge-a")

	// The collector consumes clicks and nothing else.
	cnc, crec := dialRole(t, ns, natsauth.Collector)
	if err := cnc.Publish("linkpop.links.fromcollector", []byte("x")); err != nil {
		t.Fatal(err)
	}
	crec.waitViolation(t, "Publish", "linkpop.links.fromcollector")
	cjs, _ := jetstream.New(cnc)
	ccons, err := cjs.CreateOrUpdateConsumer(ctx, "LINKPOP_CLICKS", jetstream.ConsumerConfig{Durable: "collector", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("collector creates its durable consumer: %v", err)
	}
	cb, err := ccons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range cb.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("collector acks: %v", err)
		}
		got++
	}
	if got != 2 {
		t.Fatalf("collector fetched %d click batches, want 1", got-1)
	}
	if n := msgs(links); n != 1 {
		t.Fatalf("links stream holds %d messages at the end, want 1", n)
	}

	// No credentials, no connection.
	_, err = nats.Connect("nats://"+ns.Addr(), nats.Timeout(5*time.Second))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect without credentials: %v, want an authorization error", err)
	}
}
