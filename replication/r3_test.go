package replication_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// r3 is a three-server cluster and a connection to it, shared by the
// subtests of one test.
type r3 struct {
	c  *natstest.Cluster
	nc *nats.Conn
	js jetstream.JetStream
}

func startR3(t *testing.T) *r3 {
	t.Helper()
	c := natstest.StartCluster(t, 3)
	nc, err := replication.Dial(context.Background(), replication.ConnConfig{URLs: c.URLs(), ReconnectWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &r3{c: c, nc: nc, js: js}
}

// publisher makes an R3 change stream named name and a publisher on it.
func (r *r3) publisher(t testing.TB, name string) (*replication.Publisher, replication.StreamConfig) {
	t.Helper()
	cfg := replication.StreamConfig{Name: name, SubjectPrefix: "test." + name, Replicas: 3}
	p, err := replication.NewPublisher(r.nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, natstest.ClusterReadyTimeout, "stream "+name+" created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return p.EnsureStream(ctx) == nil
	})
	r.c.WaitStreamLeader(t, name)
	return p, cfg
}

func encoded(t testing.TB, code string, rev uint64) []byte {
	t.Helper()
	now := time.Now().UTC()
	data, err := link.MarshalChange(&link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
		Code: code, URL: "https://example.com/" + code, Redirect: 302, Status: link.StatusActive,
		CreatedAt: now, UpdatedAt: now, Revision: rev}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// On a replicated stream, the expected-last-sequence check is made by the
// leader before it proposes: a stale expectation is refused cleanly and
// the stream keeps its leader and its writes. And the check against
// Nats-Expected-Last-Msg-Id, which the relay used before, wedges it: this
// test pins that server behaviour so nobody brings the header back
// unknowingly, and notices when an upstream fix lands.
func TestR3ExpectedHeaders(t *testing.T) {
	r := startR3(t)

	t.Run("wrong last sequence is refused cleanly", func(t *testing.T) {
		p, _ := r.publisher(t, "SEQ")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ch := replication.NewChain(p, nil)
		events := make([]replication.Event, 50)
		for i := range events {
			code := "c" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			events[i] = replication.Event{Code: code, Revision: uint64(i + 1), Data: encoded(t, code, uint64(i+1))}
		}
		if n, err := ch.Publish(ctx, events, nil); n != len(events) || err != nil {
			t.Fatalf("chain publish: %d of %d, %v", n, len(events), err)
		}
		leader := r.c.StreamLeader("SEQ")
		a, err := p.PublishRawAsyncAt("stale", 51, encoded(t, "stale", 51), 10)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Wait(ctx); !errors.Is(err, replication.ErrWrongLastSequence) {
			t.Fatalf("stale expectation: %v, want ErrWrongLastSequence", err)
		}
		a, err = p.PublishRawAsyncAt("fresh", 51, encoded(t, "fresh", 51), 50)
		if err != nil {
			t.Fatal(err)
		}
		if seq, dup, err := a.Wait(ctx); seq != 51 || dup || err != nil {
			t.Fatalf("right expectation after a refusal: seq %d dup %v err %v, want 51", seq, dup, err)
		}
		if l := r.c.StreamLeader("SEQ"); l != leader {
			t.Fatalf("stream leader moved from n%d to n%d after a refused publish", leader, l)
		}
		// A stored event sent again is a duplicate whatever it expects.
		a, err = p.PublishRawAsyncAt("fresh", 51, encoded(t, "fresh", 51), 3)
		if err != nil {
			t.Fatal(err)
		}
		if seq, dup, err := a.Wait(ctx); seq != 51 || !dup || err != nil {
			t.Fatalf("re-publish: seq %d dup %v err %v, want the duplicate of 51", seq, dup, err)
		}
		if tail, err := p.Tail(ctx); err != nil || tail != (replication.Tail{Seq: 51, Found: true, Code: "fresh", Revision: 51, MsgID: "fresh:51", LastMsgSeq: 51}) {
			t.Fatalf("tail: %+v %v", tail, err)
		}
	})

	t.Run("chain after a foreign append", func(t *testing.T) {
		p, cfg := r.publisher(t, "FOREIGN")
		chainAfterForeignAppend(t, chainEnvOn(p, r.js, cfg))
	})

	t.Run("wrong last msg id wedges the stream", func(t *testing.T) {
		const name = "WEDGE"
		_, cfg := r.publisher(t, name)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.js.Publish(ctx, cfg.Subject("a"), []byte("1"), jetstream.WithMsgID("a:1")); err != nil {
			t.Fatal(err)
		}
		_, err := r.js.Publish(ctx, cfg.Subject("b"), []byte("2"), jetstream.WithMsgID("b:2"),
			jetstream.WithExpectLastMsgID("not-the-last"))
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10070 {
			t.Fatalf("publish with a wrong Nats-Expected-Last-Msg-Id: %v, want error 10070", err)
		}
		// Since nats-server 2.14 every replica treats the mismatch as an
		// unrecoverable write error and steps down. Bounded wait: 10s.
		deadline := time.Now().Add(10 * time.Second)
		for r.c.StreamLeader(name) >= 0 {
			if time.Now().After(deadline) {
				t.Fatalf("upstream behaviour changed: stream %s still has a leader (n%d) 10s after a wrong "+
					"Nats-Expected-Last-Msg-Id on nats-server %s; if it no longer wedges R3 streams, update this test "+
					"and research/ha-regions.md §0 (the relay still must not use the header: atomic batches reject it)",
					name, r.c.StreamLeader(name), server.VERSION)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := range 3 {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			_, err := r.js.Publish(pctx, cfg.Subject("c"), []byte("3"), jetstream.WithMsgID("c:"+string(rune('0'+i))))
			pcancel()
			if err == nil {
				t.Fatalf("upstream behaviour changed: stream %s accepted a write after a wrong "+
					"Nats-Expected-Last-Msg-Id on nats-server %s; update this test and research/ha-regions.md §0",
					name, server.VERSION)
			}
		}
		if l := r.c.StreamLeader(name); l >= 0 {
			t.Fatalf("upstream behaviour changed: stream %s elected n%d after a wrong Nats-Expected-Last-Msg-Id", name, l)
		}
		// The cluster itself is fine: other streams keep working.
		p, _ := r.publisher(t, "AFTER")
		if _, _, err := p.PublishRaw(ctx, "x", 1, encoded(t, "x", 1)); err != nil {
			t.Fatalf("other stream after the wedge: %v", err)
		}
	})
}

// No code of the module, outside tests, may set Nats-Expected-Last-Msg-Id
// (see TestR3ExpectedHeaders): a guard for publishers other than the
// relay, which TestRelayOnR3Cluster watches on the wire.
func TestNoExpectedLastMsgIDInCode(t *testing.T) {
	root := filepath.Join("..")
	banned := []string{"WithExpectLastMsgID(", "ExpectedLastMsgIDHeader", `"Nats-Expected-Last-Msg-Id"`, "ExpectLastMsgId("}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range banned {
			if strings.Contains(string(b), s) {
				t.Errorf("%s uses %s: Nats-Expected-Last-Msg-Id wedges R3 streams; expect the last sequence (replication.Chain)", path, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
