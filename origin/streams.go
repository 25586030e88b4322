package origin

import (
	"context"
	"fmt"

	"github.com/linkpop/linkpop/replication"
)

// CreateStreams is the operator's step (`origin streams`): it connects
// with cfg.NATS, which must carry the operator role's credentials (only
// that role may create or change streams; see deploy/nats/), and creates
// the change stream (cfg.Stream), the origin's stream of keys and
// idempotency records, the click stream (cfg.Collector.Stream) and the
// HA lease bucket (cfg.HA.Lease), or updates them to these settings, for example a
// new replication factor. The origin, the edges and the collector only
// open streams that exist.
func CreateStreams(ctx context.Context, cfg Config) error {
	nc := cfg.NATS
	if nc.Name == "" {
		nc.Name = "linkpop-origin-streams"
	}
	if nc.Logger == nil && cfg.Logger != nil {
		nc.Logger = cfg.Logger.With("component", "nats")
	}
	conn, err := replication.Dial(ctx, nc)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := replication.EnsureStreams(ctx, conn, cfg.Stream, replication.OriginStream(cfg.Stream, idemStreamTTL(cfg.IdempotencyTTL)), cfg.Collector.Stream); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	// The lease bucket of origin HA, made here too so that origins
	// started with -ha need no operator rights.
	if err := replication.EnsureLeaseBucket(ctx, conn, cfg.HA.Lease); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	return nil
}
