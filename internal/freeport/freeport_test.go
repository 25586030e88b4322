package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddrBelowEphemeral: the ports handed out are never ones the
// kernel gives to port-0 listeners or outgoing connections, never the same
// twice, and free to bind.
func TestAddrBelowEphemeral(t *testing.T) {
	lo := EphemeralLow()
	seen := map[string]bool{}
	for range 50 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("Addr handed out %s twice", addr)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port <= 0 || port >= lo {
			t.Fatalf("Addr gave port %d, inside the ephemeral range starting at %d", port, lo)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("Addr gave %s, which cannot be bound: %v", addr, err)
		}
		l.Close()
	}
}
