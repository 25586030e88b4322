package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/linkpop/linkpop/replication/natsauth"
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
	// User and Password authenticate with user/password auth (the users
	// of deploy/nats/ are named for their role: operator, origin, edge,
	// collector). The default is none.
	User, Password string
	// InboxPrefix is the prefix of this client's reply subjects. A role's
	// NATS permissions allow it to subscribe only to its own
	// (natsauth.Role.InboxPrefix); each component sets its role's when
	// this is empty. The default is nats.go's "_INBOX".
	InboxPrefix string
	// CAFile is a PEM file of the certificate authorities the client
	// verifies the servers against; setting it requires TLS. The default
	// is none: the system roots when a URL is tls://, else plain TCP.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that verify clients (tls { verify: true }). The default is
	// none.
	CertFile, KeyFile string
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
	if n := btoi(c.CredsFile != "") + btoi(c.Token != "") + btoi(c.User != ""); n > 1 {
		errs = append(errs, errors.New("nats: give one of CredsFile, Token or User/Password"))
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("nats: Password needs User"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("nats: CertFile and KeyFile go together"))
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
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ForRole is c for a client of role r: its inbox prefix is r's unless c
// names one. Credentials stay as c gives them.
func (c ConnConfig) ForRole(r natsauth.Role) ConnConfig {
	if c.InboxPrefix == "" {
		c.InboxPrefix = r.InboxPrefix()
	}
	return c
}
