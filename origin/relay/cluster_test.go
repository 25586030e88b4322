package relay_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/edge/replica"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/origin/relay"
	"github.com/linkpop/linkpop/origin/store"
	"github.com/linkpop/linkpop/replication"
)

// clusterEnv is an origin store and relay publishing into an R3 stream on
// a three-server cluster, and two edges (replica + consumer) applying it.
type clusterEnv struct {
	*env
	t     *testing.T // the test that owns the env (subtests share it)
	c     *natstest.Cluster
	edges []*replica.Replica

	// corrupt holds revisions whose first publish expects a wrong last
	// sequence, so the stream refuses it; attempts counts publishes per
	// revision.
	mu       sync.Mutex
	corrupt  map[uint64]bool
	attempts map[uint64]int

	// relay lifecycle; relayErrors counts the publish failures of every
	// relay started
	stopRelay   func()
	relaySet    *metrics.Set
	relayErrors atomic.Int64

	// headers seen on the stream's subjects by a plain subscriber
	seen, seenMsgID, missingSeq, missingID atomic.Int64
}

func startCluster(t *testing.T, c *natstest.Cluster) *clusterEnv {
	t.Helper()
	ce := &clusterEnv{t: t, c: c, corrupt: map[uint64]bool{}, attempts: map[uint64]int{}}
	ce.env = &env{scfg: replication.StreamConfig{Name: "LINKS_R3", Replicas: 3, DuplicateWindow: time.Minute}, set: metrics.NewSet()}
	e := ce.env
	dial := func(name string) *nats.Conn {
		nc, err := replication.Dial(context.Background(), replication.ConnConfig{URLs: ce.c.URLs(), Name: name, ReconnectWait: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	e.nc = dial("origin")
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	if e.pub, err = replication.NewPublisher(e.nc, e.scfg); err != nil {
		t.Fatal(err)
	}
	wait.For(t, natstest.ClusterReadyTimeout, "stream created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return e.pub.EnsureStream(ctx) == nil
	})
	ce.c.WaitStreamLeader(t, e.scfg.Name)

	// Every message published on the stream's subjects, as sent.
	sniff := dial("sniffer")
	sub, err := sniff.Subscribe(e.scfg.Subject("*"), func(m *nats.Msg) {
		ce.seen.Add(1)
		if m.Header.Get(jetstream.ExpectedLastMsgIDHeader) != "" {
			ce.seenMsgID.Add(1)
		}
		if m.Header.Get(jetstream.ExpectedLastSeqHeader) == "" {
			ce.missingSeq.Add(1)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == "" {
			ce.missingID.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sniff.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })

	if e.st, err = store.Open(store.Options{FS: vfs.NewMem(), Metrics: e.set}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.st.Close(); err != nil {
			t.Error(err)
		}
	})
	for i := range 2 {
		rep, err := replica.Open(replica.Options{Dir: t.TempDir(), HotCacheEntries: 1000, NegativeCacheEntries: 1000, BlockCacheBytes: 1 << 20, MemTableBytes: 1 << 20, BloomMinCapacity: 1 << 10})
		if err != nil {
			t.Fatal(err)
		}
		con, err := replication.NewConsumer(dial(fmt.Sprintf("edge-%d", i)), replication.ConsumerConfig{
			Stream: e.scfg, Applier: rep, StallTimeout: time.Second, PollInterval: 200 * time.Millisecond, Heartbeat: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- con.Run(ctx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("edge %d consumer: %v", i, err)
			}
			if err := rep.Close(); err != nil {
				t.Error(err)
			}
		})
		ce.edges = append(ce.edges, rep)
	}
	ce.startRelay(t)
	t.Cleanup(func() { ce.stopRelay() })
	return ce
}

// startRelay starts a new relay on the store, as a restarted origin
// would.
func (ce *clusterEnv) startRelay(t *testing.T) {
	t.Helper()
	set := metrics.NewSet()
	r, err := relay.New(relay.Config{Store: ce.st, Publisher: ce.pub, Metrics: set, BatchSize: 64,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	relay.SetPublishAt(r, func(orig replication.SendFunc, code string, rev uint64, data []byte, last uint64) (*replication.PendingAck, error) {
		ce.mu.Lock()
		ce.attempts[rev]++
		if ce.corrupt[rev] {
			delete(ce.corrupt, rev)
			last += 1000
		}
		ce.mu.Unlock()
		return orig(code, rev, data, last)
	})
	ce.relay, ce.relaySet = r, set
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	ce.stopRelay = func() {
		stop()
		if err := <-done; err != nil {
			ce.t.Errorf("relay run: %v", err)
		}
		ce.relayErrors.Add(int64(counter(set, "linkpop_relay_errors_total")))
		ce.relaySet = metrics.NewSet()
		ce.stopRelay = func() {}
	}
}

// failures is how many passes of every relay started have failed.
func (ce *clusterEnv) failures() int64 {
	return ce.relayErrors.Load() + int64(counter(ce.relaySet, "linkpop_relay_errors_total"))
}

// creating creates links from four goroutines, each about one every 5ms
// and at most 2,000, until the returned stop is called, which waits for
// them and returns how many they created. Every create must succeed: the
// store does not depend on NATS.
func (ce *clusterEnv) creating(t *testing.T) (stop func() int) {
	var (
		wg   sync.WaitGroup
		n    atomic.Int64
		quit = make(chan struct{})
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				select {
				case <-quit:
					return
				default:
				}
				if _, _, err := ce.st.Create(context.Background(), store.CreateRequest{URL: fmt.Sprintf("https://example.com/%d/%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
				if i%4 == 3 {
					time.Sleep(20 * time.Millisecond) // bursts of four: windows of varied sizes
				}
			}
		})
	}
	return func() int {
		close(quit)
		wg.Wait()
		return int(n.Load())
	}
}

// waitStreamAt waits until the stream's last sequence is at least seq:
// the relay is publishing. (Only creates, each stored once: sequence n
// holds revision n.)
func (ce *clusterEnv) waitStreamAt(t *testing.T, seq uint64) {
	t.Helper()
	wait.For(t, 30*time.Second, fmt.Sprintf("stream at sequence %d", seq), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		last, err := ce.pub.LastSequence(ctx)
		return err == nil && last >= seq
	})
}

// check is what must hold after every fault: the stream accepts writes,
// holds every change of the store exactly once in revision order (only
// creates: no event is compacted away), both edges converge on the
// origin's digest, and nothing was published with the msg-id chain.
func (ce *clusterEnv) check(t *testing.T) {
	t.Helper()
	// Writes made after the fault get through.
	ce.createSeq(t, 5)
	ce.waitDrained(t, 60*time.Second)
	ce.c.WaitStreamLeader(t, ce.scfg.Name) // every replica current: reads below see the whole stream
	wantRevisions(t, ce.wholeStream(t), int(ce.st.Revision()))
	want, rev, err := ce.st.BucketDigest()
	if err != nil {
		t.Fatal(err)
	}
	for i, rep := range ce.edges {
		wait.For(t, 60*time.Second, fmt.Sprintf("edge %d converged on the origin's digest at revision %d", i, rev), func() bool {
			d, _, err := rep.BucketDigest()
			return err == nil && d.Equal(&want)
		})
	}
	t.Logf("revision %d: stream exact and in order, edges converged; relay publish failures so far: %d",
		ce.st.Revision(), ce.failures())
	if n := ce.seenMsgID.Load(); n != 0 {
		t.Fatalf("%d of %d publishes carried Nats-Expected-Last-Msg-Id", n, ce.seen.Load())
	}
	if n := ce.missingSeq.Load(); n != 0 {
		t.Fatalf("%d of %d publishes carried no Nats-Expected-Last-Sequence", n, ce.seen.Load())
	}
	if n := ce.missingID.Load(); n != 0 {
		t.Fatalf("%d of %d publishes carried no Nats-Msg-Id", n, ce.seen.Load())
	}
	if ce.seen.Load() == 0 {
		t.Fatal("the sniffer saw no publish")
	}
}

// The relay on an R3 stream with creates running while things fail. The
// phases share one cluster, store, stream and pair of edges, and each
// ends with check.
func TestRelayOnR3Cluster(t *testing.T) {
	leaktest.Check(t)
	ce := startCluster(t, natstest.StartCluster(t, 3))
	ce.createSeq(t, 20)
	ce.check(t)

	t.Run("publish fails mid-window", func(t *testing.T) {
		// A backlog, so the relay's first windows are full (64), with
		// refusals in the middle of them.
		ce.stopRelay()
		ce.createSeq(t, 150)
		base := ce.st.Revision() - 150
		ce.mu.Lock()
		for _, off := range []uint64{30, 100, 101, 140} {
			ce.corrupt[base+off] = true
		}
		ce.mu.Unlock()
		ce.startRelay(t)
		stop := ce.creating(t)
		ce.waitStreamAt(t, base+200)
		stop()
		ce.check(t)
		ce.mu.Lock()
		defer ce.mu.Unlock()
		if len(ce.corrupt) != 0 || ce.attempts[base+30] < 2 || ce.attempts[base+31] < 2 || ce.attempts[base+64] < 2 {
			t.Fatalf("left corrupt %v, attempts at +30 +31 +64: %d %d %d; the events sent after a refused one must be refused and sent again",
				ce.corrupt, ce.attempts[base+30], ce.attempts[base+31], ce.attempts[base+64])
		}
	})

	t.Run("stream leader killed", func(t *testing.T) {
		stop := ce.creating(t)
		ce.waitStreamAt(t, ce.st.Revision()+50)
		old := ce.c.KillStreamLeader(t, ce.scfg.Name)
		ce.waitStreamAt(t, ce.st.Revision()+50) // the new leader takes writes
		stop()
		ce.check(t)
		ce.c.Restart(t, old)
		ce.c.WaitStreamLeader(t, ce.scfg.Name)
		ce.check(t)
	})

	t.Run("relay restarts with a non-empty outbox", func(t *testing.T) {
		stop := ce.creating(t)
		ce.waitStreamAt(t, ce.st.Revision()+50)
		ce.stopRelay() // in the middle of a window, most likely
		n := stop()
		ce.createSeq(t, 100)
		if depth, _ := ce.st.OutboxStats(); depth < 100 {
			t.Fatalf("outbox depth %d after %d creates with the relay stopped", depth, n)
		}
		ce.startRelay(t)
		stop = ce.creating(t)
		ce.waitStreamAt(t, ce.st.Revision()+20)
		stop()
		ce.check(t)
	})

	t.Run("one server restarts", func(t *testing.T) {
		// A follower, the leader (which hands its leadership over first)
		// and the server the relay is connected to (the client reconnects
		// and flushes what it buffered), each stopped and started again.
		for _, pick := range []string{"a follower", "the leader", "the relay's own"} {
			stop := ce.creating(t)
			ce.waitStreamAt(t, ce.st.Revision()+30)
			i := ce.c.WaitStreamLeader(t, ce.scfg.Name)
			switch pick {
			case "a follower":
				i = (i + 1) % ce.c.Size()
			case "the relay's own":
				i = ce.relayServer()
			}
			t.Logf("restarting n%d, %s server", i, pick)
			ce.c.Restart(t, i)
			ce.waitStreamAt(t, ce.st.Revision()+30)
			stop()
			ce.check(t)
		}
	})
}

// relayServer is the index of the server the relay's connection is on.
func (ce *clusterEnv) relayServer() int {
	for j := range ce.c.Size() {
		if ce.nc.ConnectedUrl() == ce.c.URL(j) {
			return j
		}
	}
	return 0
}

// The same on servers that are child processes, crashed with SIGKILL: a
// leader that dies without handing over (its in-flight proposals lost or
// committed by the next leader after an election timeout), and the
// server the relay is connected to dying under its pipelined window.
func TestRelayOnR3ClusterCrash(t *testing.T) {
	leaktest.Check(t)
	ce := startCluster(t, natstest.StartClusterProcesses(t, 3))
	ce.createSeq(t, 20)
	ce.check(t)
	for _, victim := range []string{"stream leader", "relay's server"} {
		t.Run("SIGKILL "+victim, func(t *testing.T) {
			stop := ce.creating(t)
			ce.waitStreamAt(t, ce.st.Revision()+50)
			var i int
			if victim == "stream leader" {
				i = ce.c.KillStreamLeader(t, ce.scfg.Name)
			} else {
				i = ce.relayServer()
				ce.c.Kill(i)
			}
			t.Logf("killed n%d", i)
			ce.waitStreamAt(t, ce.st.Revision()+50) // two servers take writes
			stop()
			ce.check(t)
			ce.c.Restart(t, i)
			ce.c.WaitStreamLeader(t, ce.scfg.Name)
			ce.check(t)
		})
	}
}
