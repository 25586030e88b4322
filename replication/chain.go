package replication

import (
	"context"
	"errors"
	"fmt"
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
// not all land, and with it everything sent after it. What lands is
// always a prefix of what was sent, in order.
//
// After any failure (a refusal, a timeout, a lost connection, a leader
// change, 10158 "duplicate in process") the chain no longer trusts its
// tail. Before its next window it re-reads the tail from the stream and
// asks the stream leader which of the window's events are already there:
// an event is done if the stream holds its code at its revision or a
// newer one (it landed although its ack was lost, or it was superseded).
// The others are sent again, in order, with the same Nats-Msg-Id, so an
// event still in flight from before is absorbed by the dedup window.
//
// A code never has two events in flight: the chain waits for a code's
// ack before sending its next event. That keeps a code's events in
// revision order even if something other than the chain appended to the
// stream (which makes the position-based check accept a later event in
// place of a refused one).
//
// A Chain is not safe for concurrent use; one writer owns it.
type Chain struct {
	pub  *Publisher
	send SendFunc
	// tail is the stream's last sequence, as far as the chain knows;
	// known says whether it may trust it.
	tail  uint64
	known bool
}

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
func (c *Chain) Reset() { c.known = false }

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
	var stored []bool
	if !c.known {
		if stored, err = c.resync(ctx, events); err != nil {
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
					c.known = false
					return err
				}
				if dup {
					// Stored before: the tail did not move, and the
					// events sent after this one expected it to.
					c.known = false
				} else if c.known {
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
		if stored != nil && stored[i] {
			continue
		}
		if j, ok := inflight[e.Code]; ok {
			if err := await(j); err != nil {
				return n, err
			}
		}
		p, err := c.send(e.Code, e.Revision, e.Data, expect)
		if err != nil {
			c.known = false
			return n, errors.Join(err, await(i-1))
		}
		pending[i] = p
		inflight[e.Code] = i
		expect++
	}
	return n, await(len(events) - 1)
}

// resync reads the stream's tail, then asks the stream leader which of
// events are already stored or superseded. Reading the tail first is what
// makes it safe: an event that lands between the two reads is seen as
// stored and the first event sent then expects a stale tail, is refused,
// and the chain resyncs again.
func (c *Chain) resync(ctx context.Context, events []Event) ([]bool, error) {
	tail, err := c.pub.LastSequence(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[string]uint64, len(events)) // code → revision stored, 0 for none
	stored := make([]bool, len(events))
	for i, e := range events {
		rev, ok := have[e.Code]
		if !ok {
			r, found, err := c.pub.StoredRevision(ctx, e.Code)
			if err != nil {
				return nil, fmt.Errorf("resync: %w", err)
			}
			if found {
				rev = r
			}
			have[e.Code] = rev
		}
		stored[i] = rev >= e.Revision
	}
	c.tail, c.known = tail, true
	return stored, nil
}
