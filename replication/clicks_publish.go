package replication

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotConnected is returned by PublishClicks while the connection to
// NATS is down.
var ErrNotConnected = errors.New("not connected to NATS")

// ClickPublisher publishes an edge's click batches to the click stream.
// It is safe for concurrent use; an edge publishes from one goroutine, in
// sequence order.
type ClickPublisher struct {
	cfg     ClickStreamConfig
	js      jetstream.JetStream
	created atomic.Bool // the stream was found or created once
}

// NewClickPublisher returns a publisher on nc. It does not touch the
// server until the first publish.
func NewClickPublisher(nc *nats.Conn, cfg ClickStreamConfig) (*ClickPublisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &ClickPublisher{cfg: cfg.withDefaults(), js: js}, nil
}

// PublishClicks publishes one encoded batch with the Nats-Msg-Id
// ClickMsgID(edge, instance, seq) and waits for the stream's ack. A batch
// the stream already holds within its duplicate window is acknowledged as
// a duplicate, which counts as success. If the stream does not exist, the
// first publish creates it with the configured settings when this client
// has the operator's permissions, and fails with ErrStreamMissing when it
// has the edge role's (it never changes an existing one: the operator
// owns those).
func (p *ClickPublisher) PublishClicks(ctx context.Context, edge, instance string, seq uint64, data []byte) error {
	// While disconnected, fail at once rather than wait out the ack
	// timeout: the batch stays on the edge's disk.
	if st := p.js.Conn().Status(); st != nats.CONNECTED {
		return fmt.Errorf("publish click batch %s: %w (%v)", ClickMsgID(edge, instance, seq), ErrNotConnected, st)
	}
	if !p.created.Load() {
		if _, err := openStream(ctx, p.js, p.cfg.jsConfig()); err != nil {
			return fmt.Errorf("publish click batch: %w", err)
		}
		p.created.Store(true)
	}
	_, err := p.js.Publish(ctx, p.cfg.Subject(edge), data,
		jetstream.WithMsgID(ClickMsgID(edge, instance, seq)),
		jetstream.WithExpectStream(p.cfg.Name))
	if err != nil {
		return fmt.Errorf("publish click batch %s: %w", ClickMsgID(edge, instance, seq), err)
	}
	return nil
}
