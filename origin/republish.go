package origin

import (
	"context"
	"fmt"
	"time"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin/relay"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// Republish publishes every link in the store to the change stream (the
// stream is not the system of record; this rebuilds it) and returns how
// many it published. It opens the store itself, so the origin must be
// stopped: Pebble's directory lock refuses a second opener. It waits for
// NATS and the stream until ctx ends. The listeners, admin key and rate
// limits of cfg are not used.
func Republish(ctx context.Context, cfg Config) (int, error) {
	if err := cfg.Validate(); err != nil {
		return 0, fmt.Errorf("origin config: %w", err)
	}
	cfg = cfg.withDefaults()
	st, err := openStore(&cfg, link.NewReserved(cfg.Reserved))
	if err != nil {
		return 0, err
	}
	defer st.Close()

	natsCfg := cfg.NATS
	if cfg.Dev {
		dev, err := startDevNATS(&cfg)
		if err != nil {
			return 0, err
		}
		defer dev.srv.Shutdown()
		natsCfg = dev.origin
	}
	natsCfg = natsCfg.ForRole(natsauth.Origin)
	if natsCfg.Logger == nil {
		natsCfg.Logger = cfg.Logger.With("component", "nats")
	}
	if natsCfg.Name == "" {
		natsCfg.Name = "linkpop-origin-republish"
	}
	nc, err := replication.Dial(ctx, natsCfg)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, cfg.Stream)
	if err != nil {
		return 0, err
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = pub.OpenStream(actx)
		cancel()
		if err == nil {
			break
		}
		cfg.Logger.Warn("change stream not ready; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("ensure stream: %w", err)
		case <-time.After(backoff):
		}
	}
	r, err := relay.New(relay.Config{Store: st, Publisher: pub, Logger: cfg.Logger.With("component", "relay"), Metrics: cfg.Metrics})
	if err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	n, err := r.Republish(ctx)
	if err != nil {
		return n, err
	}
	return n, nil
}
