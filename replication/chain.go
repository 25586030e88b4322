package replication

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Event is one encoded change event for a Chain to publish.
type Event struct {
	Code     string
	Revision uint64
	Data     []byte
}

// SendFunc sends one event expecting the stream's last sequence to be
// lastSeq; Publisher.PublishRawAsyncAt is the real one.
type SendFunc func(code string, revision uint64, data []byte, lastSeq uint64) (*PendingAck, error)

// Chain appends events to the change stream in exactly the order it is
// given them, pipelined, and safely on a replicated stream. Each event
// carries Nats-Msg-Id (see MsgID) and Nats-Expected-Last-Sequence: the
// i-th event of a window sent after the stream's tail T expects T+i-1,
// so the stream leader refuses (10071) an event whose predecessors did
// not all land, and with it everything sent after it.
//
// The check is by position, so every window must agree on which event
// goes where, including windows still in flight from before a failure or
// from a previous relay: a window anchors on the stream's last message.
// After any failure (a refusal, a timeout, a lost connection, a leader
// change, 10158 "duplicate in process") the chain reads the stream's last
// message and its sequence T from the stream leader; if it is one of the
// window's events, that event and those before it are in the stream, and
// the next one expects T. While the stream holds only the chain's events,
// each exactly once and in order, event k of the sequence sits at T0+k
// for a fixed T0, every anchor agrees, and so does every window ever sent:
// an event can only land right after its predecessor. Events sent again
// carry the same Nats-Msg-Id, so one that is still in flight, or landed
// within the dedup window, is absorbed.
//
// A code never has two events in flight: the chain waits for a code's
// ack before sending its next event. That keeps a code's events in
// revision order even if something other than the chain appended to the
// stream (which breaks the fixed offset above: events after a refused one
// could then land in its place).
//
// With a lease (Publisher.SetEpoch), every event carries the leader's
// epoch and the anchor is also the fence: a new leader appends an epoch
// barrier (Publisher.AppendBarrier), so the old leader's event in flight
// that expected the barrier's place is refused, and its next anchor finds
// the higher epoch and fails with ErrFenced instead of anchoring on the
// new leader's messages; nothing it sent after the barrier is ever counted
// as stored, so nothing it sent after the barrier is acknowledged. The
// old leader's events already in flight behind the refused one can still
// land after the barrier, each at the place after its predecessor's (the
// barrier took one place); no JetStream header can refuse them without
// refusing a pipelined window too. The new leader's store does not hold
// them: its chain counts them (StaleTails) when it anchors on one, so the
// operator can repair the replicas (origin verify, the edges' POST
// /repair).
//
// A Chain is not safe for concurrent use; one writer owns it.
type Chain struct {
	pub  *Publisher
	send SendFunc
	// tail is the stream's last sequence, as far as the chain knows;
	// known says whether it may trust it.
	tail  uint64
	known atomic.Bool
	// staleTails counts the anchors that found a message of an older
	// epoch last (see StaleTails).
	staleTails atomic.Uint64
}

// StaleTails is how many times the chain, with a lease, anchored on a
// message of an older epoch than its own: an event a deposed leader had in
// flight when this leader's barrier landed, stored after the barrier
// although never acknowledged (see Chain). The store of the leader that
// owns this chain does not hold it; replicas that applied it differ from
// the origin until repaired.
func (c *Chain) StaleTails() uint64 { return c.staleTails.Load() }

// NewChain returns a chain publishing through p. send replaces
// p.PublishRawAsyncAt if not nil: tests use it to make single publishes
// fail. The first Publish reads the stream's tail.
func NewChain(p *Publisher, send SendFunc) *Chain {
	if send == nil {
		send = p.PublishRawAsyncAt
	}
	return &Chain{pub: p, send: send}
}

// Reset makes the chain re-read the stream's tail, and look up which
// events are already stored, before its next window: for a caller that
// knows the stream changed under it.
func (c *Chain) Reset() { c.known.Store(false) }

// Publish publishes events as one pipelined window, in order. It returns
// how many events, from the first, are now in the stream (stored by this
// call, found already stored, or superseded by a newer revision of their
// code), calling done(i) for each of them in order if done is not nil,
// and the first error. The caller publishes the rest again later; if the
// error is ErrWrongLastSequence and n > 0 it may do so at once.
func (c *Chain) Publish(ctx context.Context, events []Event, done func(i int)) (n int, err error) {
	if len(events) == 0 {
		return 0, nil
	}
	skip := 0
	if !c.known.Load() {
		if skip, err = c.resync(ctx, events); err != nil {
			return 0, err
		}
	}
	pending := make([]*PendingAck, len(events))
	inflight := make(map[string]int, len(events)) // code → index of its unacked event
	// await takes the results in order up to and including index i.
	await := func(i int) error {
		for ; n <= i; n++ {
			if p := pending[n]; p != nil {
				seq, dup, err := p.Wait(ctx)
				if err != nil {
					// Events still in flight may land after this one
					// failed: the tail has to be read again.
					c.known.Store(false)
					return err
				}
				if dup {
					// Stored before: the tail did not move, and the
					// events sent after this one expected it to.
					c.known.Store(false)
				} else if c.known.Load() {
					c.tail = seq
				}
			}
			if inflight[events[n].Code] == n {
				delete(inflight, events[n].Code)
			}
			if done != nil {
				done(n)
			}
		}
		return nil
	}
	expect := c.tail
	for i, e := range events {
		if i < skip {
			continue
		}
		if j, ok := inflight[e.Code]; ok {
			if err := await(j); err != nil {
				return n, err
			}
		}
		p, err := c.send(e.Code, e.Revision, e.Data, expect)
		if err != nil {
			c.known.Store(false)
			return n, errors.Join(err, await(i-1))
		}
		pending[i] = p
		inflight[e.Code] = i
		expect++
	}
	return n, await(len(events) - 1)
}

// resync anchors the chain on the stream's last message: it returns how
// many events, from the first, are in the stream (0 unless the last
// message is one of events, then up to the first not stored).
//
// The events before the last message are not all stored just because it
// is: if another writer's message landed while a window was in flight, the
// window's event in its place was refused and the ones after it landed
// one place further on (each expects the position after its
// predecessor's). An event of the window can only land at its own
// position (the anchor's tail + its index + 1), so resync reads the
// messages at those positions and counts only the events found there; the
// first one missing is sent again, and the duplicates after it absorbed.
//
// It is also the fence of an origin with a lease: if the stream holds a
// barrier of a higher epoch than the publisher's, a newer leader has taken
// over, and anchoring would land this deposed leader's events after the
// new leader's. resync returns ErrFenced instead, and keeps returning it.
// The last message alone does not tell: a window in flight when the
// barrier landed has its first event refused and the rest landed after
// the barrier, so the last message may be the deposed leader's own.
// Those events are never counted as stored (they are not answered as
// acknowledged); the new leader's store does not hold them.
func (c *Chain) resync(ctx context.Context, events []Event) (int, error) {
	t, err := c.pub.Tail(ctx)
	if err != nil {
		return 0, fmt.Errorf("resync: %w", err)
	}
	// A publisher without an epoch (an origin without a lease, the sole
	// writer by configuration) is never fenced.
	if epoch := c.pub.Epoch(); epoch > 0 {
		top := t.Epoch
		if b, found, err := c.pub.lastMsg(ctx, c.pub.cfg.BarrierSubject()); err != nil {
			return 0, fmt.Errorf("resync: stream %s's barrier: %w", c.pub.cfg.Name, err)
		} else if found {
			top = max(top, b.epoch)
		}
		if top > epoch {
			return 0, fmt.Errorf("resync: stream %s holds epoch %d, ours is %d: %w", c.pub.cfg.Name, top, epoch, ErrFenced)
		}
		if t.MsgID != "" && t.Epoch > 0 && t.Epoch < epoch {
			// Our barrier precedes every message this chain anchors on.
			c.staleTails.Add(1)
		}
	}
	skip := 0
	if t.MsgID != "" {
		for i := len(events) - 1; i >= 0; i-- {
			if c.pub.msgID(events[i].Code, events[i].Revision) == t.MsgID {
				skip, err = c.stored(ctx, events[:i+1], t.Seq-uint64(i))
				break
			}
		}
	}
	if err != nil {
		return 0, fmt.Errorf("resync: %w", err)
	}
	c.tail = t.Seq
	c.known.Store(true)
	return skip, nil
}

// stored counts how many of events, from the first, are in the stream at
// their positions from first on. The last of events is the stream's last
// message. An event whose position no longer holds a message was
// superseded by a later event of its code, if one follows it in events: a
// code's event is sent only once its predecessor is acknowledged, so that
// one was stored.
func (c *Chain) stored(ctx context.Context, events []Event, first uint64) (int, error) {
	last := make(map[string]int, len(events))
	for i, e := range events {
		last[e.Code] = i
	}
	for i, e := range events[:len(events)-1] {
		m, found, err := c.pub.msgAt(ctx, first+uint64(i))
		switch {
		case err != nil:
			return i, fmt.Errorf("stream %s message %d: %w", c.pub.cfg.Name, first+uint64(i), err)
		case found && m.msgID == c.pub.msgID(e.Code, e.Revision):
		case !found && last[e.Code] > i:
		default:
			return i, nil
		}
	}
	return len(events), nil
}

// The pipelined form of Publish, for a writer that keeps sending while
// earlier events are still unacknowledged (the origin's relay): Anchor
// once, then Send each event in order, each expecting the position right
// after the previous one (the tail as anchored + the number sent since),
// and Wait for the answers in the same order, possibly in another
// goroutine. The reasoning of Publish holds unchanged: positions are fixed
// by the anchor, however many events are in flight. After a failure or a
// duplicate the chain no longer trusts its tail (Known is false): stop
// sending, take the answers of what is in flight up to the first failure,
// and Anchor again from the first event not in the stream. The caller
// keeps a code's events from being in flight together (Publish's rule).

// Anchor reads the stream's tail if the chain does not trust it and
// returns how many of events, from the first, are already in the stream
// (0 if it trusts its tail). With a lease, ErrFenced as for Publish.
func (c *Chain) Anchor(ctx context.Context, events []Event) (skip int, err error) {
	if c.known.Load() {
		return 0, nil
	}
	return c.resync(ctx, events)
}

// Known reports whether the chain trusts its tail: false before the
// first Anchor and after a failure or a duplicate.
func (c *Chain) Known() bool { return c.known.Load() }

// Sent is an event Send sent, its answer still to be taken.
type Sent struct {
	c      *Chain
	ack    *PendingAck
	expect uint64
}

// Send sends e expecting the stream's last sequence to be where the
// previously sent event lands, and returns without waiting. Calls of
// Send (and Anchor, Publish) come from one goroutine.
func (c *Chain) Send(e Event) (*Sent, error) {
	p, err := c.send(e.Code, e.Revision, e.Data, c.tail)
	if err != nil {
		c.known.Store(false)
		return nil, err
	}
	s := &Sent{c: c, ack: p, expect: c.tail}
	c.tail++
	return s, nil
}

// Ready reports, without blocking, whether the answer has come.
func (s *Sent) Ready() bool { return s.ack.Ready() }

// Done is closed once the answer has come (Wait then returns at once).
func (s *Sent) Done() <-chan struct{} { return s.ack.done }

// Wait takes the answer: nil if the event is in the stream, stored now or
// before (a duplicate, after which the chain no longer trusts its tail:
// the events sent after it expected the tail to move).
func (s *Sent) Wait(ctx context.Context) error {
	seq, dup, err := s.ack.Wait(ctx)
	if err != nil {
		s.c.known.Store(false)
		return err
	}
	if dup || seq != s.expect+1 {
		s.c.known.Store(false)
	}
	return nil
}
