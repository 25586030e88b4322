package natsauth_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkpop/linkpop/replication/natsauth"
)

// TestDeployAccounts loads deploy/nats/accounts.conf with nats-server's
// own parser and checks that every role has a user there with exactly
// the permissions natsauth gives it, so the production configuration
// says what the tests run with.
func TestDeployAccounts(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(main, []byte("include ./accounts.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"OPERATOR_PASS", "ORIGIN_PASS", "EDGE_PASS", "COLLECTOR_PASS", "ADMIN_PASS"} {
		t.Setenv(v, "pw-"+v)
	}
	opts, err := server.ProcessConfigFile(main)
	if err != nil {
		t.Fatalf("nats-server cannot load accounts.conf: %v", err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for _, r := range natsauth.Roles {
		u := users[string(r)]
		if u == nil {
			t.Errorf("accounts.conf has no user %s", r)
			continue
		}
		if u.Account == nil || u.Account.Name != "LINKPOP" {
			t.Errorf("user %s is not in account LINKPOP", r)
		}
		want := r.Permissions(natsauth.Subjects{})
		if want.Publish == nil {
			if u.Permissions != nil {
				t.Errorf("user %s has restrictions %+v; the operator has none", r, u.Permissions)
			}
			continue
		}
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
			t.Errorf("user %s has no permissions", r)
			continue
		}
		p := u.Permissions
		if !slices.Equal(p.Publish.Allow, want.Publish) || len(p.Publish.Deny) != 0 {
			t.Errorf("user %s publish allow %q deny %q, want allow %q", r, p.Publish.Allow, p.Publish.Deny, want.Publish)
		}
		if !slices.Equal(p.Subscribe.Allow, want.Subscribe) || len(p.Subscribe.Deny) != 0 {
			t.Errorf("user %s subscribe allow %q, want %q", r, p.Subscribe.Allow, want.Subscribe)
		}
	}
}
