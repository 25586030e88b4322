// Package freeport picks loopback ports for child processes whose flags
// need a fixed address (tests and the benchmark harness).
//
// A port is drawn at random from below the kernel's ephemeral range
// (ip_local_port_range), not asked of the kernel with port 0: a port the
// kernel handed out and the caller released at once is the kind it hands
// out next, to another listener on port 0 or to any outgoing connection's
// local end, so the child could find it taken before it binds. Below the
// range only another picker can take it, and this process never hands out
// the same port twice.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu        sync.Mutex
	handedOut = map[int]bool{}
)

// Port returns a loopback port that had no listener a moment ago.
func Port() (int, error) {
	lo := EphemeralLow()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		port := lo/2 + rand.IntN(lo-lo/2)
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		handedOut[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("free port: 200 random ports below %d were all taken", lo)
}

// Addr is Port as a 127.0.0.1:port address.
func Addr() (string, error) {
	port, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// EphemeralLow is the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) where it cannot be read.
func EphemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo >= 2048 {
				return lo
			}
		}
	}
	return 32768
}
