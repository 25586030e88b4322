package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkpop/linkpop/edge"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// stream is a running embedded JetStream with a publisher on it.
type stream struct {
	ns  *natstest.Server
	pub *replication.Publisher
}

func startStream(t testing.TB) *stream {
	t.Helper()
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, err := replication.NewPublisher(nc, replication.StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	return &stream{ns: ns, pub: pub}
}

// publish appends a change and returns its stream sequence.
func (s *stream) publish(t testing.TB, op link.Op, r link.Record) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seq, _, err := s.pub.Publish(ctx, &link.Change{Op: op, Record: r, CommittedAt: time.Now()})
	if err != nil {
		t.Fatalf("publish %s: %v", r.Code, err)
	}
	return seq
}

func record(code, url string, redirect int, rev uint64) link.Record {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return link.Record{Code: code, URL: url, Redirect: redirect, Status: link.StatusActive,
		CreatedAt: now, UpdatedAt: now, Revision: rev}
}

// edgeConfig is a Config on loopback with random ports.
func edgeConfig(t testing.TB, natsURL string) edge.Config {
	return edge.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     t.TempDir(),
		NATS:        replication.ConnConfig{URLs: []string{natsURL}, ReconnectWait: 50 * time.Millisecond},
	}
}

// runningEdge is a Server whose Run is in progress.
type runningEdge struct {
	*edge.Server
	stop func()
}

// startEdge runs a Server until the test ends (or stop is called) and
// fails the test if Run returns an error.
func startEdge(t testing.TB, cfg edge.Config) *runningEdge {
	t.Helper()
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Started():
	case err := <-done:
		cancel()
		t.Fatalf("edge Run: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("edge did not start")
	}
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return &runningEdge{Server: srv, stop: stop}
}

// response is a parsed HTTP response plus what came on the wire.
type response struct {
	*http.Response
	body string
	raw  string
}

// do sends one request with the request-target exactly as given (no
// client-side cleaning or encoding) and reads the response to EOF.
func do(t testing.TB, addr, method, target string) response {
	t.Helper()
	r, err := roundTrip(addr, method, target)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// roundTrip is do for goroutines other than the test's.
func roundTrip(addr, method, target string) (response, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return response{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: sho.rt\r\nConnection: close\r\n\r\n", method, target); err != nil {
		return response{}, err
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read: %w", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		return response{}, fmt.Errorf("%s %s: parse response: %w\n%s", method, target, err, raw)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Response: resp, body: string(body), raw: string(raw)}, nil
}

func get(t testing.TB, addr, target string) response { t.Helper(); return do(t, addr, "GET", target) }

// metric returns the value of one series from the admin /metrics, or 0.
func metric(t testing.TB, adminAddr, series string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(get(t, adminAddr, "/metrics").body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || (name != series && !strings.HasPrefix(name, series+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// unreachableNATS returns a NATS URL on a loopback port nothing listens on.
func unreachableNATS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "nats://" + addr
}
