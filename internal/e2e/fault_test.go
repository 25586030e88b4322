package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
	"github.com/linkpop/linkpop/replication"
)

// createMany creates n links through the origin and records them in m.
func (s *system) createMany(m model, n int, tag string) {
	s.t.Helper()
	for i := range n {
		in := client.CreateLink{URL: fmt.Sprintf("https://example.com/%s/%d", tag, i)}
		if i%5 == 1 {
			in.Redirect = 301
		}
		o := s.api.create(s.t, in)
		m[o.Code] = wantOf(s.t, o)
	}
}

// TestFaultNATSRestart stops NATS while the origin's relay is still
// publishing, keeps writing through the outage (the origin must keep
// answering 201), restarts NATS and requires both edges to converge.
func TestFaultNATSRestart(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	m := model{}
	unknown := unknownCodes(rand.New(rand.NewPCG(1, 2)), 20)

	s.createMany(m, 40, "before")
	s.ns.Stop() // events of the last creates are still in the outbox or in flight
	s.createMany(m, 40, "during")
	var some string
	for code := range m {
		some = code
		break
	}
	o := s.api.update(t, some, client.UpdateLink{URL: ptr("https://example.net/updated-in-outage")})
	m[some] = wantOf(t, o)
	s.ns.Restart()
	s.createMany(m, 20, "after")
	s.converge(m, unknown)
}

// TestFaultOriginAndNATSDown stops the origin and NATS: both edges keep
// serving every link they hold and say they are stale; an edge restarted
// during the outage serves from its disk at once. When NATS and the origin
// come back, new writes reach both edges again.
func TestFaultOriginAndNATSDown(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	m := model{}
	unknown := unknownCodes(rand.New(rand.NewPCG(3, 4)), 20)

	s.createMany(m, 30, "held")
	var codes []string
	for code := range m {
		codes = append(codes, code)
	}
	o := s.api.disable(t, codes[0])
	m[o.Code] = wantOf(t, o)
	o = s.api.update(t, codes[1], client.UpdateLink{URL: ptr("https://example.org/moved"), Redirect: ptr(307)})
	m[o.Code] = wantOf(t, o)
	s.converge(m, unknown)

	s.stopOrigin(s.origin)
	s.ns.Stop()
	if err := s.check(m, unknown); err != nil {
		t.Fatalf("with origin and NATS down: %v", err)
	}
	for _, e := range s.edges {
		s.waitStaleReady(e)
	}

	b := s.edges[1]
	s.stopEdge(b)
	s.runEdge(b)
	if err := checkEdge(b.name, b.base, m, unknown); err != nil {
		t.Fatalf("edge restarted during the outage: %v", err)
	}
	s.waitStaleReady(b)
	if err := s.check(m, unknown); err != nil {
		t.Fatalf("after the edge restart: %v", err)
	}

	s.ns.Restart()
	s.startOrigin(s.origin.dir)
	o = s.api.create(t, client.CreateLink{URL: "https://example.com/after-the-outage", Redirect: 308})
	m[o.Code] = wantOf(t, o)
	o = s.api.update(t, codes[2], client.UpdateLink{URL: ptr("https://example.org/moved-after")})
	m[o.Code] = wantOf(t, o)
	s.converge(m, unknown)
}

// waitStaleReady waits until e says the stream is unreachable and checks
// that /readyz still answers 200, saying it is stale.
func (s *system) waitStaleReady(e *edgeNode) {
	s.t.Helper()
	wait.For(s.t, convergeTimeout, e.name+" reports stale", func() bool { return e.srv.Status().Stale })
	code, body := httpGet("http://" + e.srv.AdminAddr() + "/readyz")
	if code != http.StatusOK || !strings.Contains(body, "stale") {
		s.t.Fatalf("%s /readyz while stale: %d %q, want 200 saying stale", e.name, code, body)
	}
}

// TestPoisonRecord publishes, between valid creates, a message that is not
// a change event, an event of a future schema version and an event whose
// URL would split the Location header. Both edges quarantine all three,
// apply what follows, never serve the poison, and keep serving.
func TestPoisonRecord(t *testing.T) {
	leaktest.Check(t)
	s := newSystem(t)
	m := model{}
	s.createMany(m, 10, "pre")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{s.ns.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := replication.NewPublisher(nc, s.stream)
	if err != nil {
		t.Fatal(err)
	}

	future, err := proto.Marshal(&linkpb.Change{
		SchemaVersion: link.SchemaVersion + 1,
		Op:            linkpb.Op_OP_CREATE,
		Record: &linkpb.Record{
			SchemaVersion: link.SchemaVersion + 1, Code: "poison-future", Url: "https://example.com/future",
			Redirect: 302, Status: linkpb.Status_STATUS_ACTIVE, Revision: 1,
		},
		CommittedAtUnixNano: time.Now().UnixNano(),
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	split, err := link.MarshalChange(&link.Change{Op: link.OpCreate, CommittedAt: now, Record: link.Record{
		Code: "poison-split", URL: "https://example.com/\r\nSet-Cookie: owned=1", Redirect: 302,
		Status: link.StatusActive, CreatedAt: now, UpdatedAt: now, Revision: 1,
	}})
	if err != nil {
		t.Fatal(err)
	}
	poison := map[string][]byte{
		"poison-garbage": []byte("\x00\xff this is not a change event \xfe"),
		"poison-future":  future,
		"poison-split":   split,
	}
	for code, data := range poison {
		if _, _, err := pub.PublishRaw(ctx, code, 1, data); err != nil {
			t.Fatalf("publish poison %s: %v", code, err)
		}
		s.createMany(m, 5, code) // valid events between the poison ones
	}

	unknown := []string{"poison-garbage", "poison-future", "poison-split"}
	s.converge(m, unknown)
	for _, e := range s.edges {
		if q := e.srv.Status().Quarantined; q < uint64(len(poison)) {
			t.Errorf("%s quarantined %d records, want at least %d", e.name, q, len(poison))
		}
	}
}
