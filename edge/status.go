package edge

import (
	"time"
)

// Status is the edge's view of its own freshness; /status serves it as
// JSON.
type Status struct {
	// Node is this edge's name.
	Node string `json:"node"`
	// Applied is the stream sequence the replica has applied through.
	Applied uint64 `json:"applied"`
	// StreamLast is the stream's last sequence as last seen.
	StreamLast uint64 `json:"stream_last"`
	// Lag is StreamLast - Applied.
	Lag uint64 `json:"lag"`
	// SecondsSinceApply and SecondsSinceContact are the time since the
	// consumer last applied a batch and last heard from the stream; since
	// the server started if it has not yet.
	SecondsSinceApply   float64 `json:"seconds_since_apply"`
	SecondsSinceContact float64 `json:"seconds_since_contact"`
	// Connected reports a live NATS connection to the stream being read.
	Connected bool `json:"connected"`
	// StreamSource is where the change stream is read: "local" (the
	// servers of -nats) or "hub" (-hub-nats, while the local ones cannot
	// be read).
	StreamSource string `json:"stream_source"`
	// Bootstrapped reports that the replica holds a complete state of the
	// stream (now or in an earlier run), so it may serve.
	Bootstrapped bool `json:"bootstrapped"`
	// Ready is what /readyz answers: bootstrapped, and either within
	// LagThreshold of a reachable stream or stale.
	Ready bool `json:"ready"`
	// ProvenSeq and ProofAgeSeconds are the newest proof of freshness:
	// every message the stream held ProofAgeSeconds ago (its last
	// sequence was ProvenSeq) is applied. Strict links are answered 503
	// while ProofAgeSeconds exceeds MaxStale (or before any proof, when
	// it counts from the start).
	ProvenSeq       uint64  `json:"proven_seq"`
	ProofAgeSeconds float64 `json:"proof_age_seconds"`
	// Stale reports that the stream has not been heard from for MaxStale:
	// the edge serves its last state and its lag is unknown.
	Stale bool `json:"stale"`
	// Reason says why in one word: "ok", "stale", "lagging",
	// "warming" (the hot cache loads, see WarmTimeout),
	// "behind_peers" (a ready peer of the PoP announced a position more
	// than PeerLagThreshold ahead), "bootstrapping", or "starting" before
	// Run has opened the replica.
	Reason string `json:"reason"`
	// Links, Quarantined, HotEntries and NegativeEntries describe the
	// replica.
	Links           uint64 `json:"links"`
	Quarantined     uint64 `json:"quarantined"`
	HotEntries      int    `json:"hot_entries"`
	NegativeEntries int    `json:"negative_entries"`
	// ConsumerRecreations counts the times the replication consumer
	// replaced a delivering server-side consumer: after a NATS reconnect
	// (at once; a restarted server has lost it), missed heartbeats, a
	// deleted consumer, a sequence gap or a stall. See
	// replication.ConsumerStatus.
	ConsumerRecreations uint64 `json:"consumer_recreations"`
	// Stalls counts the times the stall watchdog found the stream ahead
	// and nothing applied for its timeout; a healthy edge shows 0.
	Stalls uint64 `json:"stalls"`
	// Members are the PoP's edges seen through gossip.
	Members []Member `json:"members,omitempty"`
	// Clicks is the click shipper's state; absent with analytics off.
	Clicks *ClickStatus `json:"clicks,omitempty"`
}

// ClickStatus describes the click journal.
type ClickStatus struct {
	// Edge and Instance identify this edge's click batches.
	Edge     string `json:"edge"`
	Instance string `json:"instance"`
	// PendingBatches and PendingBytes are what waits on disk for the
	// stream; LagSeconds is the age of the oldest of it (0 when none).
	PendingBatches int     `json:"pending_batches"`
	PendingBytes   int64   `json:"pending_bytes"`
	LagSeconds     float64 `json:"lag_seconds"`
}

// health is the part of Status that readiness and gossip need, computed
// from the consumer alone (no disk access).
type health struct {
	applied, streamLast, lag uint64
	lastApplied, lastContact time.Time
	connected, bootstrapped  bool
	hub                      bool // reading the hub's stream (ConsumerStatus.Fallback)
	ready, stale             bool
	reason                   string
	recreations, stalls      uint64
}

func (s *Server) health(now time.Time) health {
	var h health
	select {
	case <-s.started:
	default:
		h.reason = "starting"
		return h
	}
	con := s.con.Load()
	if con == nil {
		h.applied = s.startPos
		h.bootstrapped = s.startPos > 0
	} else {
		cs := con.Status()
		// Before the consumer's Run has read the replica's position,
		// Applied is 0: the position the server opened is a floor,
		// until a resync rewinds the replica below it.
		h.applied, h.streamLast, h.lag = max(cs.Applied, s.startPos), cs.StreamLast, cs.Lag
		if s.resynced.Load() {
			h.applied = cs.Applied
		}
		h.lastApplied, h.lastContact = cs.LastApplied, cs.LastContact
		h.connected, h.recreations, h.stalls = cs.Connected, cs.ConsumerRecreations, cs.Stalls
		h.hub = cs.Fallback
		// A replica that held a position when the server started was
		// bootstrapped in an earlier run: it serves that state, stale if
		// need be, rather than drop out of rotation.
		h.bootstrapped = cs.Bootstrapped || s.startPos > 0
	}
	reachable := h.connected && !h.lastContact.IsZero() && now.Sub(h.lastContact) <= s.cfg.MaxStale
	switch {
	case !h.bootstrapped:
		h.reason = "bootstrapping"
	case !s.warmed.Load():
		h.stale, h.reason = !reachable, "warming"
	case s.behindPeers(h.applied, now):
		h.stale, h.reason = !reachable, "behind_peers"
	case !reachable:
		h.ready, h.stale, h.reason = true, true, "stale"
	case h.lag > s.lagThreshold:
		h.reason = "lagging"
	default:
		h.ready, h.reason = true, "ok"
	}
	return h
}

// behindPeers reports whether a ready peer of the PoP announced a position
// more than PeerLagThreshold ahead of applied: the load balancer should
// send this edge's traffic to that peer. Peers lagging the stream do not
// count (they announce themselves not ready), nor peers not heard from
// for peerViewMaxAge.
func (s *Server) behindPeers(applied uint64, now time.Time) bool {
	g := s.gossip.Load()
	if g == nil || s.cfg.PeerLagThreshold < 0 {
		return false
	}
	ahead, _ := g.aheadPeer(now)
	return ahead > applied && ahead-applied > uint64(s.cfg.PeerLagThreshold)
}

// caughtUp reports whether a miss in the replica is authoritative.
func (s *Server) caughtUp() bool {
	con := s.con.Load()
	return con != nil && con.Status().CaughtUp(s.lagThreshold, s.cfg.MaxStale)
}

// since returns the seconds from t (or from the start, if t is zero) to now.
func (s *Server) since(t, now time.Time) float64 {
	if t.IsZero() {
		t = s.startAt
	}
	if t.IsZero() {
		return 0
	}
	return now.Sub(t).Seconds()
}

// Status returns a snapshot of the edge's state.
func (s *Server) Status() Status {
	now := time.Now()
	h := s.health(now)
	st := Status{
		Node:                s.NodeName(),
		Applied:             h.applied,
		StreamLast:          h.streamLast,
		Lag:                 h.lag,
		SecondsSinceApply:   s.since(h.lastApplied, now),
		SecondsSinceContact: s.since(h.lastContact, now),
		Connected:           h.connected,
		StreamSource:        "local",
		Bootstrapped:        h.bootstrapped,
		Ready:               h.ready,
		Stale:               h.stale,
		Reason:              h.reason,
		ConsumerRecreations: h.recreations,
		Stalls:              h.stalls,
		Members:             s.Members(),
	}
	if h.hub {
		st.StreamSource = "hub"
	}
	var provenAt time.Time
	st.ProvenSeq, provenAt = s.proof()
	st.ProofAgeSeconds = s.since(provenAt, now)
	if rep := s.rep.Load(); rep != nil {
		rs := rep.Stats()
		st.Links, st.Quarantined = rs.Links, rs.Quarantined
		st.HotEntries, st.NegativeEntries = rs.HotEntries, rs.NegativeEntries
	}
	if sh := s.shipper.Load(); sh != nil {
		cs := sh.State()
		st.Clicks = &ClickStatus{Edge: cs.Edge, Instance: cs.Instance, PendingBatches: cs.PendingBatches,
			PendingBytes: cs.PendingBytes, LagSeconds: cs.Lag.Seconds()}
	}
	return st
}

// nodeMeta is what this edge announces to its PoP.
func (s *Server) nodeMeta() nodeMeta {
	h := s.health(time.Now())
	return nodeMeta{Applied: h.applied, StreamLast: h.streamLast, Lag: h.lag, Ready: h.ready, Listen: s.Addr(), Admin: s.AdminAddr()}
}
