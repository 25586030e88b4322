package harness

import (
	"fmt"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/link"
)

// flood sends unknown codes at full speed to the first edge while a
// smaller load asks for known codes, and compares the known codes' p99
// with the same load alone, and the edge's memory before and after.
func (h *harness) flood() error {
	if h.wrk == "" {
		return fmt.Errorf("wrk not found: %w", errSkipped)
	}
	e := h.edge1
	f := &FloodReport{UniqueUnknown: h.cfg.PathsPerFile}
	h.rep.Flood = f
	known := wrkJob{url: e.url(), paths: h.paths[DistUniform], conns: h.cfg.FloodKnownConnections, duration: h.cfg.FloodDuration}
	h.log.Info("flood: known codes alone")
	base, err := h.runWrk(known)
	if err != nil {
		return err
	}
	f.Baseline = base
	f.KnownP99BaselineMs = float64(base.LatencyUS.P99) / 1e3

	f.MemoryBefore = readMemory(e.pids())
	h.log.Info("flood: unknown codes at full speed, known codes alongside")
	unknown, err := h.startWrk(wrkJob{url: e.url(), paths: h.paths["unknown"], conns: h.cfg.FloodConnections, duration: h.cfg.FloodDuration})
	if err != nil {
		return err
	}
	kn, kerr := h.runWrk(known)
	un, uerr := unknown.wait(h.ctx, h.cfg.FloodDuration+time.Minute)
	if kerr != nil {
		return kerr
	}
	if uerr != nil {
		return uerr
	}
	f.MemoryAfter = readMemory(e.pids())
	f.Known, f.Unknown = kn, un
	f.KnownP99FloodMs = float64(kn.LatencyUS.P99) / 1e3
	f.UnknownRPS = un.RPS()
	f.UnknownNot404 = un.Requests - un.Errors.Status
	f.RSSGrowthBytes = f.MemoryAfter.RSS - f.MemoryBefore.RSS
	if kn.Errors.Status > 0 {
		return fmt.Errorf("known codes answered %d errors during the flood", kn.Errors.Status)
	}
	return nil
}

// catchup stops the first edge, restarts it with nothing missed (restart
// time), stops it again, publishes CatchupChanges updates and times the
// restarted edge back to zero lag.
func (h *harness) catchup() error {
	e := h.edge1
	last, err := h.lastSeq()
	if err != nil {
		return err
	}
	e.stop()
	h.log.Info("catch-up: restart with nothing missed")
	begin := time.Now()
	e, err = h.restartEdge(e)
	if err != nil {
		return err
	}
	ready, _, err := h.waitEdge(h.ctx, e, begin, last, 10*time.Minute)
	if err != nil {
		return err
	}
	h.rep.Bootstrap.RestartReadySeconds = ready.Seconds()

	e.stop()
	n := h.cfg.CatchupChanges
	c := &CatchupReport{Changes: n}
	h.rep.Catchup = c
	h.log.Info("catch-up: publishing changes while the edge is down", "changes", n)
	t0 := time.Now()
	links := len(h.data.codes)
	err = h.publish(n, func(i int) link.Change {
		k := i % links
		rev := uint64(2 + i/links)
		return h.change(link.OpUpdate, k, rev, h.data.targets[k]+"?v="+fmt.Sprint(rev), t0)
	})
	if err != nil {
		return err
	}
	c.PublishSeconds = time.Since(t0).Seconds()
	last, err = h.lastSeq()
	if err != nil {
		return err
	}
	begin = time.Now()
	e, err = h.restartEdge(e)
	if err != nil {
		return err
	}
	ready, caught, err := h.waitEdge(h.ctx, e, begin, last, 30*time.Minute)
	if err != nil {
		return err
	}
	c.ReadySeconds, c.CaughtUpSeconds = ready.Seconds(), caught.Seconds()
	c.ChangesPerSecond = float64(n) / caught.Seconds()
	return nil
}

// restartEdge stops an edge (if it runs) and starts it again on its data
// directory with the default flags and extra.
func (h *harness) restartEdge(e *edgeProc, extra ...string) (*edgeProc, error) {
	e.p.stop(stopSignal, 20*time.Second)
	ne, err := h.startEdge(e.name, e.data, h.cfg.ServerCPU, extra...)
	if err != nil {
		return nil, err
	}
	if e == h.edge1 {
		h.edge1 = ne
	}
	return ne, nil
}

// stopSignal stops an edge gracefully: it saves its hot set and bloom
// filter.
const stopSignal = syscall.SIGTERM
