// Package natsflag registers the NATS connection flags the origin, the
// edge and the collector share and turns them into a
// replication.ConnConfig. Secrets (the password and the token) come from
// a file or the environment (cli.Secret), never from the command line.
package natsflag

import (
	"errors"
	"flag"
	"log/slog"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/replication"
)

// Flags are one NATS client's flags.
type Flags struct {
	prefix               string
	urls                 *string
	creds, user          string
	caFile, cert, keyPEM string
	password, token      *cli.Secret
}

// Register adds the flags -PREFIX (URLs, when defaultURL is not empty),
// -PREFIX-creds, -PREFIX-user, -PREFIX-password-file ($ENV_PASSWORD),
// -PREFIX-token-file ($ENV_TOKEN; -PREFIX-token too, as before),
// -PREFIX-ca, -PREFIX-cert and -PREFIX-key. env is the environment
// variables' prefix, e.g. LINKPOP_NATS.
func Register(fs *flag.FlagSet, prefix, env, defaultURL string) *Flags {
	f := &Flags{prefix: prefix}
	if defaultURL != "" {
		f.urls = fs.String(prefix, defaultURL, "NATS server `URLs`, comma separated")
	}
	fs.StringVar(&f.creds, prefix+"-creds", "", "NATS credentials `file` (JWT and nkey seed)")
	fs.StringVar(&f.user, prefix+"-user", "", "NATS `user` (its password from -"+prefix+"-password-file or $"+env+"_PASSWORD)")
	f.password = cli.SecretVar(fs, prefix+"-password", env+"_PASSWORD", "NATS password", false)
	f.token = cli.SecretVar(fs, prefix+"-token", env+"_TOKEN", "NATS auth token", true)
	fs.StringVar(&f.caFile, prefix+"-ca", "", "PEM `file` of the CAs the NATS servers' certificates are verified against (turns TLS on)")
	fs.StringVar(&f.cert, prefix+"-cert", "", "PEM client certificate `file` for NATS servers that verify clients")
	fs.StringVar(&f.keyPEM, prefix+"-key", "", "PEM `file` of the -"+prefix+"-cert key")
	return f
}

// Config returns the connection settings; log receives a warning when a
// secret was given on the command line.
func (f *Flags) Config(log *slog.Logger) (replication.ConnConfig, error) {
	c := replication.ConnConfig{
		CredsFile: f.creds,
		User:      f.user,
		CAFile:    f.caFile,
		CertFile:  f.cert,
		KeyFile:   f.keyPEM,
		Logger:    log,
	}
	if f.urls != nil {
		c.URLs = cli.SplitList(*f.urls)
	}
	var errs []error
	var inline bool
	var err error
	if c.Password, _, err = f.password.Value(); err != nil {
		errs = append(errs, err)
	}
	if c.Token, inline, err = f.token.Value(); err != nil {
		errs = append(errs, err)
	}
	if inline && log != nil {
		log.Warn("the NATS token was given on the command line, where every local user can read it; use -" + f.prefix + "-token-file or $" + f.token.Env)
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("-"+f.prefix+"-password-file needs -"+f.prefix+"-user"))
	}
	return c, errors.Join(errs...)
}
