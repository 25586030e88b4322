package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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

// loadStream starts the embedded JetStream server and fills the change
// stream with one create event per link, as the origin's relay would
// have. The filled store is kept in CacheDir, keyed by the link count and
// the seed (the stream holds exactly the dataset's events, so those two
// decide its content), and copied into WorkDir by the next run instead of
// publishing again: 10M events take minutes to publish, a copy seconds.
func (h *harness) loadStream() error {
	storeDir := filepath.Join(h.cfg.WorkDir, "nats")
	cached := h.streamCache()
	begin := time.Now()
	fromCache := false
	if cached != "" {
		if _, err := os.Stat(filepath.Join(cached, streamCacheDone)); err == nil {
			if err := copyTree(cached, storeDir); err != nil {
				return fmt.Errorf("stream cache: %w", err)
			}
			fromCache = true
		}
	}
	if err := h.startStream(storeDir); err != nil {
		return err
	}
	n := len(h.data.codes)
	if fromCache {
		last, err := h.lastSeq()
		if err != nil {
			return err
		}
		if last != uint64(n) {
			// Not what this dataset publishes: rebuild it (and the cache).
			h.log.Warn("cached stream does not hold the dataset, publishing again", "cache", cached, "last_seq", last, "links", n)
			h.stopStream()
			if err := errors.Join(os.RemoveAll(storeDir), os.RemoveAll(cached)); err != nil {
				return fmt.Errorf("stream cache: %w", err)
			}
			if err := h.startStream(storeDir); err != nil {
				return err
			}
			fromCache = false
		}
	}
	if !fromCache {
		h.log.Info("publishing links into the change stream", "links", n)
		if err := h.loadCreates(n, begin); err != nil {
			return err
		}
	}
	took := time.Since(begin)
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	h.rep.Bootstrap = &BootstrapReport{
		Links:              n,
		PublishSeconds:     took.Seconds(),
		PublishPerSecond:   float64(n) / took.Seconds(),
		PublishConcurrency: replication.FillUnacked,
		StreamLastSeq:      last,
		StreamFromCache:    fromCache,
	}
	h.log.Info("stream loaded", "links", n, "seconds", took.Seconds(), "from_cache", fromCache, "stream_last_seq", last)
	if cached != "" && !fromCache {
		// The server's files are consistent only once it stopped: stop,
		// copy, start again on the same directory.
		h.stopStream()
		copyBegin := time.Now()
		if err := saveStreamCache(storeDir, cached); err != nil {
			h.log.Warn("stream cache not saved", "err", err)
		} else {
			h.log.Info("stream cached", "dir", cached, "seconds", time.Since(copyBegin).Seconds())
		}
		if err := h.startStream(storeDir); err != nil {
			return err
		}
	}
	return nil
}

// streamCacheDone marks a complete cached stream.
const streamCacheDone = "linkpop-stream-complete"

// streamCacheVersion changes when the loaded events change (their
// encoding or fields), so an old cache is never used for a new format.
const streamCacheVersion = 1

// streamCache is the cached store of this dataset's stream, "" without a
// CacheDir.
func (h *harness) streamCache() string {
	if h.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(h.cfg.CacheDir, fmt.Sprintf("stream-v%d-n%d-seed%d", streamCacheVersion, len(h.data.codes), h.cfg.Seed))
}

// saveStreamCache copies the stopped server's store into dst, through a
// temporary directory renamed when complete.
func saveStreamCache(store, dst string) error {
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := copyTree(store, tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, streamCacheDone), nil, 0o644); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// copyTree copies the regular files and directories under src into dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case !d.Type().IsRegular() || rel == streamCacheDone:
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// startStream starts the embedded server on storeDir and opens the
// change stream through a publisher.
func (h *harness) startStream(storeDir string) error {
	srv, err := devserver.Start(devserver.Config{Addr: "127.0.0.1:0", StoreDir: storeDir})
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
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Minute)
	defer cancel()
	if err := pub.EnsureStream(ctx); err != nil {
		return err
	}
	h.pub = pub
	return nil
}

// stopStream closes the publisher's connection and shuts the server down.
func (h *harness) stopStream() {
	if h.natsStop != nil {
		h.natsStop()
		h.natsStop = nil
	}
	if h.nats != nil {
		h.nats.Shutdown()
		h.nats = nil
	}
	h.pub = nil
}

// loadCreates publishes the create event of links 0..n-1 with
// Publisher.Fill: every code has one event, so their order does not
// matter, and a load that fails is failed whole.
func (h *harness) loadCreates(n int, at time.Time) error {
	lastProg := time.Now()
	_, err := h.pub.Fill(h.ctx, n, func(i int) (string, []byte, error) {
		if i%65536 == 0 && time.Since(lastProg) > 10*time.Second {
			lastProg = time.Now()
			h.log.Info("publishing", "done", i, "of", n)
		}
		c := h.change(link.OpCreate, i, 1, h.data.targets[i], at)
		data, err := link.MarshalChange(&c)
		return h.data.codes[i], data, err
	})
	if err != nil {
		return fmt.Errorf("load stream: %w", err)
	}
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
