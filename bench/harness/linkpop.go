package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
)

// publishWindow is how many asynchronous publishes may await their ack
// while loading the stream.
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

// publish publishes n changes made by mk with asynchronous publishes,
// at most publishWindow awaiting their ack; one goroutine waits for the
// acks in order.
func (h *harness) publish(n int, mk func(i int) link.Change) error {
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	acks := make(chan *replication.PendingAck, publishWindow)
	var (
		wg       sync.WaitGroup
		ackErr   error
		lastProg = time.Now()
	)
	wg.Go(func() {
		for a := range acks {
			if ackErr != nil {
				continue
			}
			actx, acancel := context.WithTimeout(ctx, time.Minute)
			if _, _, err := a.Wait(actx); err != nil {
				ackErr = err
				cancel()
			}
			acancel()
		}
	})
	var err error
	for i := 0; i < n && ctx.Err() == nil; i++ {
		c := mk(i)
		var data []byte
		if data, err = link.MarshalChange(&c); err != nil {
			break
		}
		var a *replication.PendingAck
		if a, err = h.pub.PublishRawAsync(c.Record.Code, c.Record.Revision, data); err != nil {
			break
		}
		acks <- a
		if time.Since(lastProg) > 10*time.Second {
			lastProg = time.Now()
			h.log.Info("publishing", "done", i, "of", n)
		}
	}
	close(acks)
	wg.Wait()
	switch {
	case err != nil:
		return fmt.Errorf("publish: %w", err)
	case ackErr != nil:
		return fmt.Errorf("publish: %w", ackErr)
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
