package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
)

// publishWindow is how many events one pipelined window of the chain
// carries while loading the stream.
const publishWindow = 2048

func runtimeCPUs() int { return runtime.NumCPU() }

// loadStream starts the embedded JetStream server and publishes every
// link into the change stream as the origin's relay would: one create
// event per link, through replication.Publisher.
func (h *harness) loadStream() error {
	srv, err := devserver.Start(devserver.Config{Addr: "127.0.0.1:0", StoreDir: filepath.Join(h.cfg.WorkDir, "nats")})
	if err != nil {
		return err
	}
	h.nats = srv
	h.natsURL = srv.ClientURL()
	nc, err := replication.Dial(h.ctx, replication.ConnConfig{URLs: []string{h.natsURL}, Name: "linkpop-bench"})
	if err != nil {
		return err
	}
	h.natsStop = nc.Close
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	if err := pub.EnsureStream(ctx); err != nil {
		return err
	}
	h.pub = pub

	h.log.Info("publishing links into the change stream", "links", len(h.data.codes))
	begin := time.Now()
	err = h.publish(len(h.data.codes), func(i int) link.Change {
		return h.change(link.OpCreate, i, 1, h.data.targets[i], begin)
	})
	if err != nil {
		return err
	}
	took := time.Since(begin)
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	h.rep.Bootstrap = &BootstrapReport{
		Links:              len(h.data.codes),
		PublishSeconds:     took.Seconds(),
		PublishPerSecond:   float64(len(h.data.codes)) / took.Seconds(),
		PublishConcurrency: publishWindow,
		StreamLastSeq:      last,
	}
	h.log.Info("published", "links", len(h.data.codes), "seconds", took.Seconds(), "stream_last_seq", last)
	return nil
}

func (h *harness) lastSeq() (uint64, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	return h.pub.LastSequence(ctx)
}

// change builds the event for link i at revision rev.
func (h *harness) change(op link.Op, i int, rev uint64, url string, at time.Time) link.Change {
	return link.Change{
		Op: op,
		Record: link.Record{
			Code:      h.data.codes[i],
			URL:       url,
			Redirect:  link.DefaultRedirect,
			Status:    link.StatusActive,
			CreatedAt: at,
			UpdatedAt: at,
			Revision:  rev,
		},
		CommittedAt: at,
	}
}

// publish publishes n changes made by mk the way the origin's relay does:
// through a replication.Chain (expected last sequence, resync after a
// failure), in windows of publishWindow. A window that fails is sent
// again from its first event not in the stream, a few times.
func (h *harness) publish(n int, mk func(i int) link.Change) error {
	chain := replication.NewChain(h.pub, nil)
	window := make([]replication.Event, 0, publishWindow)
	lastProg := time.Now()
	flush := func() error {
		rest := window
		for attempt := 0; len(rest) > 0; attempt++ {
			ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
			done, err := chain.Publish(ctx, rest, nil)
			cancel()
			rest = rest[done:]
			if err == nil {
				break
			}
			if attempt == 5 || h.ctx.Err() != nil {
				return fmt.Errorf("publish: %w", err)
			}
			h.log.Warn("publish window failed, resending the rest", "err", err, "left", len(rest))
		}
		window = window[:0]
		return nil
	}
	for i := 0; i < n && h.ctx.Err() == nil; i++ {
		c := mk(i)
		data, err := link.MarshalChange(&c)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		window = append(window, replication.Event{Code: c.Record.Code, Revision: c.Record.Revision, Data: data})
		if len(window) == cap(window) {
			if err := flush(); err != nil {
				return err
			}
		}
		if time.Since(lastProg) > 10*time.Second {
			lastProg = time.Now()
			h.log.Info("publishing", "done", i, "of", n)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return h.ctx.Err()
}

// bootstrapEdge starts the first edge on an empty replica and times it
// to ready and to having applied the whole stream.
func (h *harness) bootstrapEdge() error {
	h.log.Info("starting a fresh edge (bootstrap)")
	begin := time.Now()
	e, err := h.startEdge("edge-1", filepath.Join(h.cfg.WorkDir, "edge-1"), h.cfg.ServerCPU)
	if err != nil {
		return err
	}
	ready, caught, err := h.waitEdge(h.ctx, e, begin, h.rep.Bootstrap.StreamLastSeq, 30*time.Minute)
	if err != nil {
		return fmt.Errorf("bootstrap edge: %w", err)
	}
	h.edge1 = e
	h.rep.Bootstrap.ReadySeconds = ready.Seconds()
	h.rep.Bootstrap.CaughtUpSeconds = caught.Seconds()
	st, _ := e.status()
	h.rep.Footprint = &FootprintReport{
		Links:             len(h.data.codes),
		MemoryReady:       readMemory(e.pids()),
		ReplicaLinksCount: st.Links,
	}
	h.log.Info("edge bootstrapped", "ready_s", ready.Seconds(), "caught_up_s", caught.Seconds(), "replica_links", st.Links)
	return nil
}

// footprint records the edge's memory and disk after the redirect runs.
func (h *harness) footprint() {
	f := h.rep.Footprint
	if f == nil || h.edge1 == nil {
		return
	}
	f.MemoryAfterLoad = readMemory(h.edge1.pids())
	f.DiskBytes = dirBytes(h.edge1.data)
	f.DiskBytesPerLink = float64(f.DiskBytes) / float64(f.Links)
	f.RSSBytesPerLink = float64(f.MemoryAfterLoad.RSS) / float64(f.Links)
	if st, err := h.edge1.status(); err == nil {
		f.ReplicaLinksCount = st.Links
		f.HotCacheEntries = st.HotEntries
	}
}
