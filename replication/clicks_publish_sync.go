package replication

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// PublishClickData publishes one encoded click batch on subject with the
// given Nats-Msg-Id and waits for the stream's ack. It is the plain,
// unbuffered way to put a batch on the click stream: tests and tools use
// it (edges ship through their own journal). An empty msgID sends none.
func PublishClickData(ctx context.Context, nc *nats.Conn, subject, msgID string, data []byte) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.Publish(ctx, subject, data, opts...); err != nil {
		return fmt.Errorf("publish click batch: %w", err)
	}
	return nil
}

// PublishClickBatch encodes b and publishes it on its edge's subject with
// its ClickMsgID, waiting for the stream's ack.
func PublishClickBatch(ctx context.Context, nc *nats.Conn, cfg ClickStreamConfig, b *linkpb.ClickBatch) error {
	data, err := link.MarshalClickBatch(b)
	if err != nil {
		return err
	}
	return PublishClickData(ctx, nc, cfg.Subject(b.Edge), ClickMsgID(b.Edge, b.Instance, b.Seq), data)
}

// EnsureClickStreamConn is EnsureClickStream over a connection.
func EnsureClickStreamConn(ctx context.Context, nc *nats.Conn, cfg ClickStreamConfig) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	_, err = EnsureClickStream(ctx, js, cfg)
	return err
}
