package origin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/devserver"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// devAuthSubdir holds the embedded server's passwords, one file per role
// (DevPasswordFile).
const devAuthSubdir = "nats-auth"

// DevPasswordFile is where `origin -dev` keeps the password of role's NATS
// user for its embedded server: DataDir/nats-auth/<role>.password, mode
// 0600, generated on the first start. `make run` hands the edge's to the
// edges with -nats-password-file.
func DevPasswordFile(dataDir string, role natsauth.Role) string {
	return filepath.Join(dataDir, devAuthSubdir, string(role)+".password")
}

// devNATS is the embedded JetStream server of Dev and how the origin's
// own clients reach it.
type devNATS struct {
	srv *devserver.Server
	// origin and collector are the relay's and the in-process
	// collector's connection settings: the embedded server's URL and
	// their roles' users, unless the Config names others.
	origin, collector replication.ConnConfig
}

// startDevNATS starts the embedded server with authentication on (every
// role of natsauth, with the passwords of DevPasswordFile) and, as its
// operator, creates or updates the change and click streams: in dev the
// origin runs the operator's step itself (in production `origin streams`
// does, with the operator's credentials).
func startDevNATS(cfg *Config) (*devNATS, error) {
	var users []natsauth.User
	pass := map[natsauth.Role]string{}
	for _, r := range natsauth.Roles {
		p, err := loadOrCreateSecret(DevPasswordFile(cfg.DataDir, r))
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		pass[r] = p
		users = append(users, natsauth.User{Role: r, Password: p})
	}
	srv, err := devserver.Start(devserver.Config{
		Addr:     cfg.DevNATSAddr,
		StoreDir: filepath.Join(cfg.DataDir, devNATSSubdir),
		Users:    users,
		Subjects: natsauth.Subjects{LinkStream: cfg.Stream.Name, ClickStream: cfg.Collector.Stream.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	d := &devNATS{srv: srv}
	as := func(c replication.ConnConfig, r natsauth.Role) replication.ConnConfig {
		if len(c.URLs) == 0 {
			c.URLs = []string{srv.ClientURL()}
		}
		if !hasCredentials(c) {
			c.User, c.Password = string(r), pass[r]
		}
		return c
	}
	d.origin = as(cfg.NATS, natsauth.Origin)
	d.collector = as(cfg.NATS, natsauth.Collector)
	if hasCredentials(cfg.Collector.NATS) {
		d.collector = as(withCredentials(cfg.NATS, cfg.Collector.NATS), natsauth.Collector)
	}
	op := as(replication.ConnConfig{Name: "linkpop-origin-operator"}, natsauth.Operator)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, op)
	if err == nil {
		err = replication.EnsureStreams(ctx, nc, cfg.Stream, replication.OriginStream(cfg.Stream, idemStreamTTL(cfg.IdempotencyTTL)), cfg.Collector.Stream)
		nc.Close()
	}
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: create streams: %w", err)
	}
	return d, nil
}

// hasCredentials reports whether c names a user, token or creds file.
func hasCredentials(c replication.ConnConfig) bool {
	return c.User != "" || c.Token != "" || c.CredsFile != ""
}

// withCredentials is base with the credentials (and client certificate)
// of cred: the in-process collector reaches the origin's servers as its
// own user, with its own inbox prefix.
func withCredentials(base, cred replication.ConnConfig) replication.ConnConfig {
	base.User, base.Password, base.Token, base.CredsFile = cred.User, cred.Password, cred.Token, cred.CredsFile
	base.InboxPrefix = cred.InboxPrefix // its own role's, not the origin's
	if cred.CertFile != "" {
		base.CertFile, base.KeyFile = cred.CertFile, cred.KeyFile
	}
	return base
}

// loadOrCreateSecret returns the secret in path, or writes a fresh random
// one there (mode 0600, its directory 0700) if the file does not exist.
func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	s := rand.Text() + rand.Text() // 256 bits
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return s, nil
}
