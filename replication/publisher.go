package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
)

// Publisher appends change events to the stream. It is safe for concurrent
// use.
type Publisher struct {
	cfg StreamConfig
	js  jetstream.JetStream

	// ajs is the JetStream context for PublishRawAsync, made on first
	// use with a bounded ack timeout.
	asyncOnce sync.Once
	ajs       jetstream.JetStream
	ajsErr    error
}

// NewPublisher returns a publisher on nc. It does not touch the server:
// call EnsureStream (Publisher.EnsureStream) before the first Publish, and
// again after it fails with jetstream.ErrNoStreamResponse or similar.
func NewPublisher(nc *nats.Conn, cfg StreamConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Publisher{cfg: cfg.withDefaults(), js: js}, nil
}

// EnsureStream creates or updates the change stream.
func (p *Publisher) EnsureStream(ctx context.Context) error {
	_, err := EnsureStream(ctx, p.js, p.cfg)
	return err
}

// Publish appends c to the stream and waits for the stream's ack. It
// returns the stream sequence; a duplicate (same code and revision within
// the dedup window) returns the sequence of the original and dup = true.
func (p *Publisher) Publish(ctx context.Context, c *link.Change) (seq uint64, dup bool, err error) {
	data, err := link.MarshalChange(c)
	if err != nil {
		return 0, false, fmt.Errorf("marshal change: %w", err)
	}
	return p.PublishRaw(ctx, c.Record.Code, c.Record.Revision, data)
}

// PublishRaw publishes an already encoded change event for code at
// revision: the origin's outbox stores encoded events and hands them over
// unchanged.
func (p *Publisher) PublishRaw(ctx context.Context, code string, revision uint64, data []byte) (seq uint64, dup bool, err error) {
	ack, err := p.js.Publish(ctx, p.cfg.Subject(code), data,
		jetstream.WithMsgID(MsgID(code, revision)),
		jetstream.WithExpectStream(p.cfg.Name))
	if err != nil {
		return 0, false, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// LastSequence returns the stream's last sequence number.
func (p *Publisher) LastSequence(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, p.cfg.Name)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", p.cfg.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", p.cfg.Name, err)
	}
	return info.State.LastSeq, nil
}

// LastMsgID returns the Nats-Msg-Id of the stream's last message, the one
// JetStream compares Nats-Expected-Last-Msg-Id with, or "" if the stream
// holds no message.
func (p *Publisher) LastMsgID(ctx context.Context) (string, error) {
	s, err := p.js.Stream(ctx, p.cfg.Name)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", p.cfg.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s info: %w", p.cfg.Name, err)
	}
	if info.State.Msgs == 0 {
		return "", nil
	}
	m, err := s.GetMsg(ctx, info.State.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("stream %s last message: %w", p.cfg.Name, err)
	}
	return m.Header.Get(jetstream.MsgIDHeader), nil
}

// asyncAckTimeout bounds how long an asynchronous publish waits for the
// stream's ack before the client fails it, so futures abandoned during an
// outage do not pile up against the client's pending limit.
const asyncAckTimeout = 10 * time.Second

// PendingAck is the stream's answer to an asynchronous publish.
type PendingAck struct {
	f        jetstream.PubAckFuture
	code     string
	revision uint64
}

// Wait waits for the ack, ctx's end, or the client's ack timeout. It
// returns what PublishRaw would have.
func (a *PendingAck) Wait(ctx context.Context) (seq uint64, dup bool, err error) {
	select {
	case ack := <-a.f.Ok():
		return ack.Sequence, ack.Duplicate, nil
	case err := <-a.f.Err():
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeWrongLastMsgID {
			return 0, false, fmt.Errorf("publish %s rev %d: %w: %w", a.code, a.revision, ErrWrongLastMsgID, err)
		}
		return 0, false, fmt.Errorf("publish %s rev %d: %w", a.code, a.revision, err)
	case <-ctx.Done():
		return 0, false, fmt.Errorf("publish %s rev %d: %w", a.code, a.revision, ctx.Err())
	}
}

// PublishRawAsync sends an encoded change event like PublishRaw but
// returns without waiting for the ack. Events sent from one goroutine
// reach the stream in the order they were sent, unless one of them fails:
// a caller that must keep a code's events in order waits for the earlier
// event's ack before sending the next for the same code.
func (p *Publisher) PublishRawAsync(code string, revision uint64, data []byte) (*PendingAck, error) {
	return p.PublishRawAsyncAfter(code, revision, data, "")
}

// ErrWrongLastMsgID is what PendingAck.Wait reports when the stream
// refused an event published with PublishRawAsyncAfter because its last
// message is not the expected one.
var ErrWrongLastMsgID = errors.New("stream's last message is not the expected one")

// jsErrCodeWrongLastMsgID is JetStream's error code for a publish whose
// Nats-Expected-Last-Msg-Id does not match the stream's last message.
const jsErrCodeWrongLastMsgID jetstream.ErrorCode = 10070

// PublishRawAsyncAfter is PublishRawAsync with an expectation: the stream
// stores the event only if its last message has the Nats-Msg-Id lastMsgID
// (see MsgID), and otherwise fails it with ErrWrongLastMsgID. A caller
// that chains each event to the one before it gets the stream in exactly
// the order it sends, even when an event in the middle of a window fails:
// everything after it is refused instead of overtaking it. The stream
// checks duplicates first, so re-publishing an event already stored
// returns its duplicate ack whatever lastMsgID says. An empty lastMsgID
// expects nothing.
func (p *Publisher) PublishRawAsyncAfter(code string, revision uint64, data []byte, lastMsgID string) (*PendingAck, error) {
	p.asyncOnce.Do(func() {
		p.ajs, p.ajsErr = jetstream.New(p.js.Conn(),
			jetstream.WithPublishAsyncTimeout(asyncAckTimeout),
			jetstream.WithPublishAsyncMaxPending(4096))
	})
	if p.ajsErr != nil {
		return nil, fmt.Errorf("jetstream: %w", p.ajsErr)
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(MsgID(code, revision)), jetstream.WithExpectStream(p.cfg.Name)}
	if lastMsgID != "" {
		opts = append(opts, jetstream.WithExpectLastMsgID(lastMsgID))
	}
	f, err := p.ajs.PublishMsgAsync(&nats.Msg{Subject: p.cfg.Subject(code), Data: data}, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	return &PendingAck{f: f, code: code, revision: revision}, nil
}
