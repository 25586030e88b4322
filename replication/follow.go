package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RawMsg is one message a Follow hands over: its stream sequence, the
// code its subject names (the subject after the stream's prefix) and its
// payload.
type RawMsg struct {
	Seq  uint64
	Code string
	Data []byte
}

// FollowConfig configures Follow.
type FollowConfig struct {
	// Stream is the stream to follow. Its SubjectPrefix is cut from each
	// subject to give RawMsg.Code.
	Stream StreamConfig
	// After returns the stream sequence to resume after (0: from the
	// first message). It is called at every (re)start. Required.
	After func() uint64
	// Apply stores msgs (in stream order, barriers left out) and the
	// position through, the sequence of the last message received,
	// barriers included. An error stops Follow. Required.
	Apply func(ctx context.Context, msgs []RawMsg, through uint64) error
	// BatchSize is the most messages one Apply gets. The default is 4096.
	BatchSize int
	// Logger receives restarts. The default (nil) discards them.
	Logger *slog.Logger
}

// Follow tails a stream into Apply until ctx ends (then it returns nil)
// or Apply fails: a standby origin's copy of the streams. It reads through
// an ordered consumer (flow controlled, no acks, recreated by the client
// on a gap or missed heartbeats), resuming after After(); if the consumer
// cannot be made or stops, Follow makes a new one after a pause.
// Messages that arrive while Apply runs form the next batch.
func Follow(ctx context.Context, nc *nats.Conn, cfg FollowConfig) error {
	if cfg.After == nil || cfg.Apply == nil {
		return errors.New("follow: After and Apply are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sc := cfg.Stream.withDefaults()
	prefix := sc.SubjectPrefix + "."
	barrier := sc.BarrierSubject()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 2*time.Second)
		after := cfg.After()
		occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
		if after > 0 {
			occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := js.OrderedConsumer(cctx, sc.Name, occ)
		cancel()
		if err != nil {
			cfg.Logger.Debug("follow: consumer", "stream", sc.Name, "err", err)
			continue
		}
		ch := make(chan jetstream.Msg, cfg.BatchSize)
		done := make(chan struct{})
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case ch <- m:
			case <-done:
			}
		})
		if err != nil {
			close(done)
			cfg.Logger.Debug("follow: consume", "stream", sc.Name, "err", err)
			continue
		}
		err = followLoop(ctx, cc.Closed(), ch, cfg, prefix, barrier, &backoff)
		cc.Stop()
		close(done)
		if err != nil {
			return err
		}
	}
	return nil
}

// followLoop applies what ch delivers in batches until ctx ends, the
// consume stops (closed) or Apply fails.
func followLoop(ctx context.Context, closed <-chan struct{}, ch <-chan jetstream.Msg, cfg FollowConfig, prefix, barrier string, backoff *time.Duration) error {
	batch := make([]RawMsg, 0, cfg.BatchSize)
	for {
		var first jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			return nil
		case first = <-ch:
		}
		*backoff = 0
		batch = batch[:0]
		through := uint64(0)
		take := func(m jetstream.Msg) error {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("follow: metadata: %w", err)
			}
			through = md.Sequence.Stream
			if m.Subject() == barrier {
				return nil
			}
			code, _ := strings.CutPrefix(m.Subject(), prefix)
			batch = append(batch, RawMsg{Seq: through, Code: code, Data: m.Data()})
			return nil
		}
		if err := take(first); err != nil {
			return err
		}
	drain:
		for len(batch) < cfg.BatchSize {
			select {
			case m := <-ch:
				if err := take(m); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		if err := cfg.Apply(ctx, batch, through); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("follow %s: apply through %d: %w", cfg.Stream.withDefaults().Name, through, err)
		}
	}
}
