package edge

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/internal/wait"
)

func gossipNode(t *testing.T, name string, keys ...[]byte) *gossip {
	t.Helper()
	g, err := startGossip(name, "127.0.0.1:0", keys, nodeMeta{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.list.Shutdown() })
	return g
}

// TestGossipEncryption: edges holding the fleet key form a PoP; a peer
// without the key, or with another key, cannot join in either direction
// (plaintext is refused when a key is set) and never shows up as a
// member; and the rotation steps the README documents work, because an
// edge accepts every key of its file and encrypts with the first.
func TestGossipEncryption(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 16)

	a := gossipNode(t, "a", k1)
	b := gossipNode(t, "b", k1)
	if n, err := b.list.Join([]string{a.addr()}); err != nil || n != 1 {
		t.Fatalf("b with the fleet key joins a: %d, %v", n, err)
	}
	wait.For(t, 20*time.Second, "a and b see each other", func() bool { return a.size() == 2 && b.size() == 2 })

	plain := gossipNode(t, "plain")
	wrong := gossipNode(t, "wrong", k2)
	for _, g := range []*gossip{plain, wrong} {
		if n, err := g.list.Join([]string{a.addr()}); err == nil && n > 0 {
			t.Errorf("%s joined the encrypted PoP (%d)", g.name, n)
		}
		if n, err := a.list.Join([]string{g.addr()}); err == nil && n > 0 {
			t.Errorf("a joined %s (%d)", g.name, n)
		}
	}
	for _, g := range []*gossip{a, b} {
		for _, m := range g.members() {
			if m.Name != "a" && m.Name != "b" {
				t.Errorf("%s lists member %s", g.name, m.Name)
			}
		}
	}
	if plain.size() != 1 || wrong.size() != 1 {
		t.Errorf("outsiders see %d and %d members, want 1 each", plain.size(), wrong.size())
	}

	// Rotation: c has added k2 after k1 (step 1), d has made k2 its
	// primary (step 2); both still talk to each other and to a (k1 only
	// is what a holds before step 1: a only decrypts k1, so only c,
	// which still encrypts with k1, may join it).
	c := gossipNode(t, "c", k1, k2)
	d := gossipNode(t, "d", k2, k1)
	if n, err := c.list.Join([]string{a.addr()}); err != nil || n != 1 {
		t.Fatalf("c (k1, k2) joins a (k1): %d, %v", n, err)
	}
	if n, err := d.list.Join([]string{c.addr()}); err != nil || n != 1 {
		t.Fatalf("d (k2, k1) joins c (k1, k2): %d, %v", n, err)
	}
}

func TestParseGossipKeys(t *testing.T) {
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	k16 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{8}, 16))
	keys, err := ParseGossipKeys([]byte("# fleet gossip keys\n" + k32 + "\n\n  " + k16 + "  \n"))
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 || len(keys[1]) != 16 {
		t.Fatalf("ParseGossipKeys = %d keys, %v", len(keys), err)
	}
	bad := func(in string) {
		t.Helper()
		_, err := ParseGossipKeys([]byte(in))
		if err == nil {
			t.Errorf("ParseGossipKeys(%q) accepted", in)
		} else if strings.Contains(err.Error(), in) && in != "" {
			t.Errorf("error %q shows the key", err)
		}
	}
	bad("")
	bad("# only a comment\n")
	bad("not-base64!")
	bad(base64.StdEncoding.EncodeToString([]byte("short")))
}
