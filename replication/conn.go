package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnConfig says how to reach the NATS cluster.
// Conn is the NATS connection Dial returns, named here so that packages
// which hold one need not import nats.go.
type Conn = nats.Conn

type ConnConfig struct {
	// URLs are the NATS servers, comma separated or one per element.
	// Required.
	URLs []string
	// CredsFile is a NATS .creds file (JWT + nkey). The default is none.
	CredsFile string
	// Token is a bearer token for servers that use token auth. The default
	// is none.
	Token string
	// Name identifies this client in the server's monitoring. The default
	// is "linkpop".
	Name string
	// ReconnectWait is the pause between reconnect attempts. The default is
	// 250ms; the client reconnects forever.
	ReconnectWait time.Duration
	// Logger receives connection state changes. nil discards.
	Logger *slog.Logger
}

// Validate reports every bad field at once.
func (c *ConnConfig) Validate() error {
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, errors.New("nats: at least one URL is required"))
	}
	if c.ReconnectWait < 0 {
		errs = append(errs, errors.New("nats: ReconnectWait must not be negative"))
	}
	return errors.Join(errs...)
}

// Dial connects to NATS. If the servers are unreachable it keeps trying in
// the background (RetryOnFailedConnect) and returns a connection that
// becomes usable when they answer, so a process can start while NATS is
// down. It returns an error only for bad configuration.
func Dial(ctx context.Context, cfg ConnConfig) (*nats.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := cfg.Name
	if name == "" {
		name = "linkpop"
	}
	wait := cfg.ReconnectWait
	if wait == 0 {
		wait = 250 * time.Millisecond
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(wait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats async error", "err", err)
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	url := ""
	for i, u := range cfg.URLs {
		if i > 0 {
			url += ","
		}
		url += u
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	return nc, nil
}
