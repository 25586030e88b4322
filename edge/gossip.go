package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
	// announced about its replica. Each edge sends them to its peers
	// with every gossip message (every positionRefresh), so they follow
	// within a few gossip intervals; see positionMsg.
	Applied    uint64 `json:"applied"`
	StreamLast uint64 `json:"stream_last"`
	Lag        uint64 `json:"lag"`
	Ready      bool   `json:"ready"`
	// Listen is its redirect listener's address (host:port), with an
	// unspecified host ("0.0.0.0") replaced by its gossip host, so a
	// synthetic check (linkpop probe) can reach every edge of the PoP
	// from one edge's /status. Empty from an edge that does not
	// announce it.
	Listen string `json:"listen,omitempty"`
	// SecondsSinceUpdate is how long ago this edge last heard the
	// member's position (0 for itself).
	SecondsSinceUpdate float64 `json:"seconds_since_update"`
	// AdminAddr is the member's admin listener, where a fresh edge
	// fetches its hot set.
	AdminAddr string `json:"admin,omitempty"`

	at    int64     // sender's clock when it computed the position
	heard time.Time // when this edge received it
}

// nodeMeta is an edge's position as it announces it: in its memberlist
// node metadata (so a joining peer has it at once) and, prefixed with
// msgPosition, in a message piggybacked on every gossip packet.
type nodeMeta struct {
	Name       string `json:"n,omitempty"`
	At         int64  `json:"t,omitempty"` // unix nanoseconds; newer wins
	Applied    uint64 `json:"a"`
	StreamLast uint64 `json:"s"`
	Lag        uint64 `json:"l"`
	Ready      bool   `json:"r"`
	Listen     string `json:"h,omitempty"`
	Admin      string `json:"d,omitempty"` // admin listener address
}

// msgPosition marks a gossip user message carrying a nodeMeta.
const msgPosition byte = 'P'

const (
	// positionRefresh is how often an edge recomputes the position it
	// sends. memberlist gossips every 200ms to 3 random peers and asks
	// the delegate for broadcasts each time, so in a PoP of up to 4
	// edges every peer hears every position within positionRefresh +
	// 200ms; in larger PoPs each peer hears a given edge every
	// (n-1)/3 × 200ms on average.
	positionRefresh = 250 * time.Millisecond
	// metaRefresh is how often the node metadata (used by joining peers
	// and push-pull syncs) is re-announced when it changed.
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
	pos  atomic.Pointer[[]byte] // msgPosition + the current nodeMeta
	log  *slog.Logger
	name string
	bind string // the address bound, port resolved

	// peers is this edge's view of the PoP, maintained from memberlist's
	// events. memberlist's Members and LocalNode return pointers into
	// state it keeps mutating, so they are never read directly.
	mu    sync.Mutex
	peers map[string]Member
}

// delegate implements memberlist.Delegate: NodeMeta carries the position
// for joins, and every gossip packet carries the current position as a
// user message (GetBroadcasts, NotifyMsg). Node metadata alone is not
// enough: it travels in one broadcast per change, and a peer that misses
// it (a lost packet, a join racing the update) keeps the old position
// until the next push-pull, 30s later.
type delegate struct{ g *gossip }

func (d delegate) NodeMeta(limit int) []byte {
	if m := d.g.meta.Load(); m != nil && len(*m) <= limit {
		return *m
	}
	return nil
}
func (d delegate) NotifyMsg(b []byte) {
	if len(b) < 2 || b[0] != msgPosition {
		return
	}
	var m nodeMeta
	if json.Unmarshal(b[1:], &m) != nil || m.Name == "" || m.Name == d.g.name {
		return
	}
	d.g.position(m, time.Now())
}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if p := d.g.pos.Load(); p != nil && len(*p)+overhead <= limit {
		return [][]byte{*p}
	}
	return nil
}
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

// observe records a member memberlist announced, with the position in
// its metadata unless a newer one came in a position message.
func (g *gossip) observe(n *memberlist.Node) {
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	var meta nodeMeta
	_ = json.Unmarshal(n.Meta, &meta)
	now := time.Now()
	// The listen address does not change while the member lives, so
	// metadata alone carries it (position messages may omit it).
	var listen string
	if host, port, err := net.SplitHostPort(meta.Listen); err == nil {
		if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
			host = n.Addr.String()
		}
		listen = net.JoinHostPort(host, port)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.peers[n.Name]
	m.Name, m.Addr = n.Name, addr
	if listen != "" {
		m.Listen = listen
	}
	if !ok || meta.At > m.at {
		m.Applied, m.StreamLast, m.Lag, m.Ready, m.AdminAddr = meta.Applied, meta.StreamLast, meta.Lag, meta.Ready, meta.Admin
		m.at, m.heard = meta.At, now
	}
	g.peers[n.Name] = m
}

// position records a member's position from a position message if it is
// newer than the one held. A message from a member memberlist does not
// list (yet, or any more) is dropped: membership is memberlist's.
func (g *gossip) position(meta nodeMeta, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.peers[meta.Name]
	// An older stamp is taken only when the one held has not been
	// refreshed for peerViewMaxAge: the member's clock went back.
	if !ok || (meta.At <= m.at && now.Sub(m.heard) < peerViewMaxAge) {
		return
	}
	m.Applied, m.StreamLast, m.Lag, m.Ready, m.AdminAddr = meta.Applied, meta.StreamLast, meta.Lag, meta.Ready, meta.Admin
	m.at, m.heard = meta.At, now
	g.peers[meta.Name] = m
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
	g.setMeta(g.stamp(meta, time.Now()))
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

// stamp names m as this edge's position at now.
func (g *gossip) stamp(m nodeMeta, now time.Time) nodeMeta {
	m.Name, m.At = g.name, now.UnixNano()
	return m
}

// setPosition makes m the position piggybacked on gossip packets and this
// edge's own entry.
func (g *gossip) setPosition(m nodeMeta, now time.Time) {
	b, _ := json.Marshal(m)
	b = append([]byte{msgPosition}, b...)
	g.pos.Store(&b)
	g.mu.Lock()
	if self, ok := g.peers[g.name]; ok {
		self.Applied, self.StreamLast, self.Lag, self.Ready, self.AdminAddr = m.Applied, m.StreamLast, m.Lag, m.Ready, m.Admin
		self.at, self.heard = m.At, now
		g.peers[g.name] = self
	}
	g.mu.Unlock()
}

// setMeta stores m as the node metadata; it reports whether the position
// in it changed (the time stamp aside), which is when it is re-announced.
func (g *gossip) setMeta(m nodeMeta) bool {
	b, _ := json.Marshal(m)
	if old := g.meta.Load(); old != nil {
		var prev nodeMeta
		if json.Unmarshal(*old, &prev) == nil {
			prev.At = m.At
			if prev == m {
				return false
			}
		}
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

// run refreshes the position this edge gossips every positionRefresh and
// its node metadata every metaRefresh, and, while the edge is alone,
// (re)joins the configured peers with backoff, until ctx is done.
func (g *gossip) run(ctx context.Context, join []string, meta func() nodeMeta) {
	var wg sync.WaitGroup
	if len(join) > 0 {
		wg.Go(func() { g.joinLoop(ctx, join) })
	}
	// UpdateNode waits for its broadcast, so it runs apart from the
	// position ticker.
	update := make(chan struct{}, 1)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-update:
				if err := g.list.UpdateNode(metaRefresh); err != nil {
					g.log.Debug("gossip update node", "err", err)
				}
			}
		}
	})
	t := time.NewTicker(positionRefresh)
	defer t.Stop()
	var lastMeta time.Time
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case now := <-t.C:
			m := g.stamp(meta(), now)
			g.setPosition(m, now)
			if now.Sub(lastMeta) >= metaRefresh && g.setMeta(m) {
				lastMeta = now
				select {
				case update <- struct{}{}:
				default:
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

// peerViewMaxAge is how old a peer's position may be and still count for
// readiness (see aheadPeer).
const peerViewMaxAge = 10 * time.Second

// aheadPeer returns the highest position announced by a ready peer heard
// from within peerViewMaxAge, and its name; 0 and "" if there is none.
func (g *gossip) aheadPeer(now time.Time) (applied uint64, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.peers {
		if m.Name == g.name || !m.Ready || m.heard.IsZero() || now.Sub(m.heard) > peerViewMaxAge {
			continue
		}
		if m.Applied > applied {
			applied, name = m.Applied, m.Name
		}
	}
	return applied, name
}

// members lists the live members with what they last announced, sorted
// by name.
func (g *gossip) members() []Member {
	now := time.Now()
	g.mu.Lock()
	out := make([]Member, 0, len(g.peers))
	for _, m := range g.peers {
		m.Self = m.Name == g.name
		if !m.Self && !m.heard.IsZero() {
			m.SecondsSinceUpdate = now.Sub(m.heard).Seconds()
		}
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
