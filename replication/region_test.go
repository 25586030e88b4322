package replication_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/replication"
)

func TestRegionConfigValidate(t *testing.T) {
	f := func(cfg replication.RegionConfig, want string) {
		t.Helper()
		err := cfg.Validate()
		if want == "" {
			if err != nil {
				t.Errorf("%+v: %v", cfg, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want an error with %q", cfg, err, want)
		}
	}
	f(replication.RegionConfig{Domain: "eu"}, "")
	f(replication.RegionConfig{Domain: "eu-west_1", HubDomain: "core", Replicas: 3}, "")
	f(replication.RegionConfig{}, "Domain")
	f(replication.RegionConfig{Domain: "eu.west"}, "Domain")
	f(replication.RegionConfig{Domain: "hub"}, "differ")
	f(replication.RegionConfig{Domain: "eu", HubDomain: "a b"}, "HubDomain")
	f(replication.RegionConfig{Domain: "eu", Replicas: 7}, "Replicas")
	if err := (replication.ClickStreamConfig{Regions: []string{"eu", "us.east"}}).Validate(); err == nil {
		t.Error("a region domain with a dot was accepted")
	}
	if got := (replication.RegionConfig{Domain: "eu"}).ClickStream().SubjectPrefix; got != "linkpop.clicks.eu" {
		t.Errorf("regional click prefix %q", got)
	}
}

// startHub starts an in-process JetStream server of domain "hub" with a
// leafnode listener on leafPort, its store in dir (a restart keeps both).
func startHub(t *testing.T, dir string, leafPort int) *server.Server {
	t.Helper()
	return startServer(t, &server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: "hub", StoreDir: dir,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort, NoAdvertise: true},
	})
}

// startLeaf starts an in-process JetStream server of domain "eu" on
// client port (-1: any), its store in dir, connected as a leaf node to
// the hub's leafnode listener on leafPort.
func startLeaf(t *testing.T, port int, dir string, leafPort int) *server.Server {
	t.Helper()
	return startServer(t, &server.Options{
		ServerName: "eu", Host: "127.0.0.1", Port: port, JetStream: true, JetStreamDomain: "eu", StoreDir: dir,
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 100 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", leafPort)}}}}},
	})
}

// dialServer connects to url, closed when the test ends.
func dialServer(ctx context.Context, t *testing.T, url string) *replication.Conn {
	t.Helper()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{url}, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.NoLog, o.NoSigs = true, true
	o.PingInterval, o.MaxPingsOut = 250*time.Millisecond, 2
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server %s not ready", o.ServerName)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// publishChange publishes revision 1 of code (retrying while a restarted
// hub comes up) and returns its stream sequence.
func publishChange(t *testing.T, pub *replication.Publisher, code string) uint64 {
	t.Helper()
	var seq uint64
	wait.For(t, 20*time.Second, "publish "+code, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, _, err := pub.Publish(ctx, change(code, 1))
		seq = s
		return err == nil
	})
	return seq
}

// TestRegionMirror runs a hub and a region's leaf server (domain "eu")
// in-process: the region's mirror (EnsureRegion) follows the hub's
// change stream and a consumer reading the mirror proves its freshness;
// with the hub gone the mirror still answers, but the consumer's contact
// and proof stop (they come from the mirror's contact with the hub), and
// resume when the hub is back. Click batches published in the region
// reach the hub's click stream under the hub's subjects. The netns test
// (internal/regions) runs the same topology across network namespaces.
func TestRegionMirror(t *testing.T) {
	leafPort := proctest.FreePort(t)
	hubDir := t.TempDir()
	hub := startHub(t, hubDir, leafPort)
	leaf := startLeaf(t, -1, t.TempDir(), leafPort)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hubNC, leafNC := dialServer(ctx, t, hub.ClientURL()), dialServer(ctx, t, leaf.ClientURL())
	links := replication.StreamConfig{}
	if err := replication.EnsureStreams(ctx, hubNC, links, replication.OriginStream(links, time.Hour), replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}
	region := replication.RegionConfig{Domain: "eu"}
	if err := replication.EnsureRegion(ctx, leafNC, region); err != nil {
		t.Fatal(err)
	}
	if err := replication.EnsureClickStreamConn(ctx, hubNC, replication.ClickStreamConfig{Regions: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}

	pub, err := replication.NewPublisher(hubNC, links)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 5 {
		last = publishChange(t, pub, fmt.Sprintf("m-%d", i))
	}
	a := newPebbleApplier(t)
	con, err := replication.NewConsumer(leafNC, replication.ConsumerConfig{Stream: links, Applier: a, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- con.Run(cctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	wait.For(t, 30*time.Second, "the mirror's reader proves the hub's last sequence", func() bool {
		s := con.Status()
		return s.Applied == last && s.ProvenSeq == last && time.Since(s.ProvenAt) < 2*time.Second
	})

	// Clicks published in the region land in the hub's click stream,
	// renamed to the hub's subjects.
	cs := region.ClickStream()
	cp, err := replication.NewClickPublisher(leafNC, cs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.PublishClicks(ctx, "edge1", "i1", 1, []byte("batch")); err != nil {
		t.Fatalf("publish in the region: %v", err)
	}
	js, err := jetstream.New(hubNC)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the region's batch in the hub's click stream", func() bool {
		st, err := js.Stream(ctx, "LINKPOP_CLICKS")
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, "linkpop.clicks.edge1")
		return err == nil && string(m.Data) == "batch"
	})

	// The hub goes away: the mirror still answers the consumer, but its
	// contact with the hub, and so the consumer's contact and proof, stop.
	hub.Shutdown()
	hub.WaitForShutdown()
	cutAt := time.Now()
	wait.For(t, 10*time.Second, "the consumer's contact falls behind", func() bool {
		return time.Since(con.Status().LastContact) > 2*time.Second
	})
	s := con.Status()
	if !s.Connected {
		t.Fatal("the consumer lost its connection to the leaf server")
	}
	if !s.ProvenAt.Before(cutAt) {
		t.Fatalf("proof at %v, after the hub went away at %v: a mirror's answer counted as the hub's", s.ProvenAt, cutAt)
	}

	// The hub is back: the mirror catches up, and the proof follows.
	hub = startHub(t, hubDir, leafPort)
	hubNC2 := dialServer(ctx, t, hub.ClientURL())
	pub2, err := replication.NewPublisher(hubNC2, links)
	if err != nil {
		t.Fatal(err)
	}
	last = publishChange(t, pub2, "after")
	wait.For(t, 30*time.Second, "proof of the change made after the heal", func() bool {
		s := con.Status()
		return s.Applied == last && s.ProvenSeq >= last && time.Since(s.LastContact) < 2*time.Second
	})
}

// TestConsumerFallback: a consumer reading a region's mirror (primary)
// with the hub's stream as its fallback. The region's server goes away:
// the consumer resumes on the hub's stream right after its position (the
// mirror keeps the hub's sequences), follows the changes made meanwhile
// and proves its freshness there. The region's server comes back on its
// store: the consumer switches back to the mirror once the mirror has
// caught up, and follows it again, every change applied once, in order.
// With the hub gone while the consumer reads it, it returns to the
// region's mirror.
func TestConsumerFallback(t *testing.T) {
	leafPort, leafClient := proctest.FreePort(t), proctest.FreePort(t)
	hub := startHub(t, t.TempDir(), leafPort)
	leafDir := t.TempDir()
	leaf := startLeaf(t, leafClient, leafDir, leafPort)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hubNC, leafNC := dialServer(ctx, t, hub.ClientURL()), dialServer(ctx, t, leaf.ClientURL())
	links := replication.StreamConfig{}
	if err := replication.EnsureStreams(ctx, hubNC, links, replication.OriginStream(links, time.Hour), replication.ClickStreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := replication.EnsureRegion(ctx, leafNC, replication.RegionConfig{Domain: "eu"}); err != nil {
		t.Fatal(err)
	}
	pub, err := replication.NewPublisher(hubNC, links)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 5 {
		last = publishChange(t, pub, fmt.Sprintf("a-%d", i))
	}
	a := newPebbleApplier(t)
	edgeNC, edgeHubNC := dialServer(ctx, t, leaf.ClientURL()), dialServer(ctx, t, hub.ClientURL())
	con, err := replication.NewConsumer(edgeNC, replication.ConsumerConfig{
		Stream: links, Applier: a, PollInterval: 100 * time.Millisecond, Heartbeat: 500 * time.Millisecond, Fallback: edgeHubNC,
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- con.Run(cctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	caughtUp := func(what string, fallback bool) {
		t.Helper()
		wait.For(t, 30*time.Second, what, func() bool {
			s := con.Status()
			return s.Applied == last && s.Fallback == fallback && s.ProvenSeq >= last && time.Since(s.ProvenAt) < 2*time.Second
		})
	}
	caughtUp("the mirror's reader applies and proves the hub's stream", false)

	leaf.Shutdown()
	leaf.WaitForShutdown()
	for i := range 5 {
		last = publishChange(t, pub, fmt.Sprintf("b-%d", i))
	}
	caughtUp("the consumer follows the hub's stream while the region's server is down", true)

	leaf = startLeaf(t, leafClient, leafDir, leafPort)
	for i := range 5 {
		last = publishChange(t, pub, fmt.Sprintf("c-%d", i))
	}
	caughtUp("the consumer is back on the mirror and has every change", false)
	if s := con.Status(); s.ConsumerRecreations == 0 {
		t.Errorf("status %+v: no consumer was recreated across two switches", s)
	}

	// On the fallback again, then the hub goes away and the region's
	// server comes back: the consumer returns to the region's mirror,
	// which answers though it cannot prove anything newer.
	leaf.Shutdown()
	leaf.WaitForShutdown()
	last = publishChange(t, pub, "d-0")
	caughtUp("the consumer is on the hub's stream again", true)
	hub.Shutdown()
	hub.WaitForShutdown()
	startLeaf(t, leafClient, leafDir, leafPort)
	wait.For(t, 30*time.Second, "the consumer leaves the unreachable hub for the region's mirror", func() bool {
		s := con.Status()
		return !s.Fallback && s.Connected && s.Applied == last
	})
	// Every change once, in stream order, and never a rewind.
	a.mu.Lock()
	seqs, resets := slices.Clone(a.seqs), a.resets
	a.mu.Unlock()
	want := make([]uint64, 0, last)
	for i := uint64(1); i <= last; i++ {
		want = append(want, i)
	}
	if !slices.Equal(seqs, want) || resets != 0 {
		t.Fatalf("applied sequences %v (%d resets), want 1..%d once each", seqs, resets, last)
	}
	if got := a.revisions(t); len(got) != 16 {
		t.Errorf("replica holds %d codes, want 16: %v", len(got), got)
	}
}
