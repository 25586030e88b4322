package replication

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
)

// Publisher appends change events to the stream. It is safe for concurrent
// use.
type Publisher struct {
	cfg StreamConfig
	js  jetstream.JetStream
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
