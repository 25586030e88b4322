package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is an edge of this PoP as seen through gossip.
type Member struct {
	// Name is the edge's NodeName.
	Name string `json:"name"`
	// Addr is its gossip address.
	Addr string `json:"addr"`
	// Self marks this edge.
	Self bool `json:"self"`
	// Applied, StreamLast, Lag and Ready are what the edge last
	// announced about its replica (refreshed every second).
	Applied    uint64 `json:"applied"`
	StreamLast uint64 `json:"stream_last"`
	Lag        uint64 `json:"lag"`
	Ready      bool   `json:"ready"`
}

// nodeMeta is what an edge announces in its memberlist node metadata.
type nodeMeta struct {
	Applied    uint64 `json:"a"`
	StreamLast uint64 `json:"s"`
	Lag        uint64 `json:"l"`
	Ready      bool   `json:"r"`
}

const (
	metaRefresh     = time.Second
	joinRetryMin    = time.Second
	joinRetryMax    = 30 * time.Second
	gossipLeaveWait = time.Second
)

// gossip runs memberlist among the edges of a PoP. Each edge announces its
// replication position in its node metadata, so /status on any edge shows
// which of its peers lags.
type gossip struct {
	list *memberlist.Memberlist
	meta atomic.Pointer[[]byte]
	log  *slog.Logger
	name string
	bind string // the address bound, port resolved

	// peers is this edge's view of the PoP, maintained from memberlist's
	// events. memberlist's Members and LocalNode return pointers into
	// state it keeps mutating, so they are never read directly.
	mu    sync.Mutex
	peers map[string]Member
}

// delegate implements memberlist.Delegate: only NodeMeta carries data.
type delegate struct{ g *gossip }

func (d delegate) NodeMeta(limit int) []byte {
	if m := d.g.meta.Load(); m != nil && len(*m) <= limit {
		return *m
	}
	return nil
}
func (delegate) NotifyMsg([]byte)                    {}
func (delegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (delegate) LocalState(bool) []byte              { return nil }
func (delegate) MergeRemoteState(buf []byte, _ bool) {}

// events implements memberlist.EventDelegate. memberlist calls it under
// its node lock, so copying the node here is race free.
type events struct{ g *gossip }

func (e events) NotifyJoin(n *memberlist.Node)   { e.g.observe(n) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.g.observe(n) }
func (e events) NotifyLeave(n *memberlist.Node) {
	e.g.mu.Lock()
	delete(e.g.peers, n.Name)
	e.g.mu.Unlock()
}

func (g *gossip) observe(n *memberlist.Node) {
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	var meta nodeMeta
	if json.Unmarshal(n.Meta, &meta) == nil {
		m.Applied, m.StreamLast, m.Lag, m.Ready = meta.Applied, meta.StreamLast, meta.Lag, meta.Ready
	}
	g.mu.Lock()
	g.peers[n.Name] = m
	g.mu.Unlock()
}

// startGossip binds memberlist on bind and announces meta. With keys it
// encrypts with the first and accepts all, and refuses plaintext.
func startGossip(name, bind string, keys [][]byte, meta nodeMeta, log *slog.Logger) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind %q: %w", bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip bind %q: %w", bind, err)
	}
	g := &gossip{log: log, name: name, peers: map[string]Member{}}
	g.setMeta(meta)
	conf := memberlist.DefaultLANConfig()
	conf.Name = name
	conf.BindAddr = host
	conf.BindPort = port
	conf.AdvertisePort = port
	conf.Delegate = delegate{g}
	conf.Events = events{g}
	conf.LogOutput = &memberlistLog{log: log}
	if len(keys) > 0 {
		ring, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
		conf.Keyring = ring
		conf.GossipVerifyIncoming, conf.GossipVerifyOutgoing = true, true
	}
	list, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	g.list = list
	// Create announced this node (NotifyJoin) with its advertised address
	// and the port the kernel picked for port 0.
	g.mu.Lock()
	g.bind = g.peers[name].Addr
	g.mu.Unlock()
	return g, nil
}

func (g *gossip) setMeta(m nodeMeta) bool {
	b, _ := json.Marshal(m)
	if old := g.meta.Load(); old != nil && bytes.Equal(*old, b) {
		return false
	}
	g.meta.Store(&b)
	return true
}

// addr is the gossip address actually bound.
func (g *gossip) addr() string { return g.bind }

// size is the number of live members, this edge included.
func (g *gossip) size() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.peers)
}

// run refreshes this edge's metadata every second and, while the edge is
// alone, (re)joins the configured peers with backoff, until ctx is done.
func (g *gossip) run(ctx context.Context, join []string, meta func() nodeMeta) {
	var wg sync.WaitGroup
	if len(join) > 0 {
		wg.Go(func() { g.joinLoop(ctx, join) })
	}
	t := time.NewTicker(metaRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			if g.setMeta(meta()) {
				if err := g.list.UpdateNode(metaRefresh); err != nil {
					g.log.Debug("gossip update node", "err", err)
				}
			}
		}
	}
}

func (g *gossip) joinLoop(ctx context.Context, peers []string) {
	wait := joinRetryMin
	for {
		if g.list.NumMembers() < 2 {
			n, err := g.list.Join(peers)
			if err != nil || n == 0 {
				g.log.Info("gossip join", "peers", peers, "joined", n, "err", err, "retry_in", wait)
				wait = min(2*wait, joinRetryMax)
			} else {
				g.log.Info("gossip joined", "peers", n)
				wait = joinRetryMin
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stop leaves the cluster gracefully and shuts memberlist down.
func (g *gossip) stop() {
	if err := g.list.Leave(gossipLeaveWait); err != nil {
		g.log.Debug("gossip leave", "err", err)
	}
	if err := g.list.Shutdown(); err != nil {
		g.log.Warn("gossip shutdown", "err", err)
	}
}

// members lists the live members with what they last announced, sorted
// by name.
func (g *gossip) members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.peers))
	for _, m := range g.peers {
		m.Self = m.Name == g.name
		out = append(out, m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// memberlistLog routes memberlist's "date [LEVEL] memberlist: msg" lines
// to slog: warnings and errors as Warn, the rest as Debug.
type memberlistLog struct{ log *slog.Logger }

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelDebug
	if i := bytes.IndexByte(line, '['); i >= 0 {
		line = line[i:]
		if bytes.HasPrefix(line, []byte("[WARN]")) || bytes.HasPrefix(line, []byte("[ERR]")) {
			level = slog.LevelWarn
		}
		if j := bytes.IndexByte(line, ']'); j >= 0 {
			line = bytes.TrimSpace(line[j+1:])
		}
		line = bytes.TrimPrefix(line, []byte("memberlist: "))
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, "memberlist: "+string(line))
	}
	return len(p), nil
}
