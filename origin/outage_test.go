package origin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
)

// TestNATSOutage stops the embedded JetStream server under an origin:
// creates and updates keep succeeding, the outbox grows, and when the
// server returns every event of the outage arrives in the stream, in
// revision order, matching the store.
func TestNATSOutage(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	o := outageStart(t, ns)

	// Before the outage: links that reach the stream normally.
	var before []string
	for i := range 10 {
		before = append(before, o.create(t, fmt.Sprintf("https://example.com/outage/before/%d", i)).Code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{ns.URL()}, Name: "outage-test", ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the links created before the outage to reach the stream", func() bool {
		return outageStreamMsgs(ctx, js) == uint64(len(before))
	})
	wait.For(t, 30*time.Second, "an empty outbox before the outage", func() bool {
		return o.metricIs(t, "linkpop_outbox_depth", func(v float64) bool { return v == 0 })
	})
	lastBefore := outageLastSeq(t, ctx, js)

	ns.Stop()

	// During the outage every write is still accepted: new links, each
	// written once so compaction keeps them all, and one update of each
	// link created before.
	const during = 100
	written := map[string]uint64{} // code -> revision the store reported
	for i := range during {
		l := o.create(t, fmt.Sprintf("https://example.com/outage/during/%d", i))
		written[l.Code] = l.Revision
	}
	for i, code := range before {
		l := o.update(t, code, fmt.Sprintf("https://example.com/outage/updated/%d", i))
		written[code] = l.Revision
	}
	wait.For(t, 30*time.Second, fmt.Sprintf("outbox depth to reach the %d writes made during the outage", len(written)), func() bool {
		return o.metricIs(t, "linkpop_outbox_depth", func(v float64) bool { return v >= float64(len(written)) })
	})

	ns.Restart()

	wait.For(t, time.Minute, "the outbox to drain after JetStream returned", func() bool {
		return o.metricIs(t, "linkpop_outbox_depth", func(v float64) bool { return v == 0 })
	})
	wait.For(t, 30*time.Second, "the stream to hold every link", func() bool {
		return outageStreamMsgs(ctx, js) == uint64(len(before)+during)
	})

	// Read the stream from just after the last pre-outage event: the
	// outage's events, in sequence order, have strictly increasing
	// revisions and are exactly the writes the store acknowledged.
	var prevRev uint64
	seen := map[string]uint64{}
	crashEachEvent(t, ctx, js, lastBefore, func(seq uint64, c link.Change) {
		if c.Record.Revision <= prevRev {
			t.Errorf("seq %d: %s rev %d after rev %d: not in revision order", seq, c.Record.Code, c.Record.Revision, prevRev)
		}
		prevRev = c.Record.Revision
		if _, dup := seen[c.Record.Code]; dup {
			t.Errorf("seq %d: a second event for %s survived compaction", seq, c.Record.Code)
		}
		seen[c.Record.Code] = c.Record.Revision
	})
	if len(seen) != len(written) {
		t.Errorf("stream has %d events after the outage began, want %d", len(seen), len(written))
	}
	for code, rev := range written {
		if got, ok := seen[code]; !ok || got != rev {
			t.Errorf("%s: stream has rev %d (present %v), store acknowledged rev %d", code, got, ok, rev)
		}
		if l := o.get(t, code); l.Revision != rev {
			t.Errorf("%s: store has rev %d, acknowledged rev %d", code, l.Revision, rev)
		}
	}
}

const outageAdminKey = "outage-test-admin-key-3c5e7a91"

type outageOrigin struct {
	api, admin string
	client     *http.Client
}

// outageStart runs an origin in-process against ns until the test ends.
func outageStart(t *testing.T, ns *natstest.Server) *outageOrigin {
	t.Helper()
	srv, err := origin.New(origin.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		DataDir:     t.TempDir(),
		NATS:        replication.ConnConfig{URLs: []string{ns.URL()}, ReconnectWait: 50 * time.Millisecond},
		AdminKey:    outageAdminKey,
		Logger:      slog.New(outageLog{t: t}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	o := &outageOrigin{
		api:    "http://" + srv.Addr(),
		admin:  "http://" + srv.AdminAddr(),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		o.client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("origin Run: %v", err)
		}
	})
	wait.For(t, 30*time.Second, "origin /readyz", func() bool {
		resp, err := o.client.Get(o.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return o
}

func (o *outageOrigin) do(t *testing.T, method, path string, body any, want int) crashLink {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, o.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+outageAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != want {
		t.Fatalf("%s %s: status %d (want %d), err %v: %s", method, path, resp.StatusCode, want, err, raw)
	}
	var l crashLink
	if err := json.Unmarshal(raw, &l); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, raw)
	}
	return l
}

func (o *outageOrigin) create(t *testing.T, u string) crashLink {
	t.Helper()
	return o.do(t, http.MethodPost, "/v1/links", map[string]string{"url": u}, http.StatusCreated)
}

func (o *outageOrigin) update(t *testing.T, code, u string) crashLink {
	t.Helper()
	return o.do(t, http.MethodPatch, "/v1/links/"+code, map[string]string{"url": u}, http.StatusOK)
}

func (o *outageOrigin) get(t *testing.T, code string) crashLink {
	t.Helper()
	return o.do(t, http.MethodGet, "/v1/links/"+code, nil, http.StatusOK)
}

// metricIs reads one unlabelled gauge from /metrics and
// reports whether want(value) holds. A failed scrape is logged and counts
// as "not yet": the condition is polled again, and a scrape that keeps
// failing ends in the poll's timeout.
func (o *outageOrigin) metricIs(t *testing.T, name string, want func(float64) bool) bool {
	t.Helper()
	v, err := outageScrape(o.client, o.admin, name)
	if err != nil {
		t.Logf("scrape %s: %v", name, err)
		return false
	}
	return want(v)
}

// outageScrape reads the sample called name (without labels) from the
// Prometheus text at base/metrics.
func outageScrape(c *http.Client, base, name string) (float64, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		v, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		return strconv.ParseFloat(strings.TrimSpace(v), 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not exported", name)
}

// outageLog sends the origin's warnings and errors, and any panic the
// HTTP servers recover (logged at debug), to the test log.
type outageLog struct {
	t     *testing.T
	attrs []slog.Attr
}

func (h outageLog) Enabled(context.Context, slog.Level) bool { return true }

func (h outageLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && !strings.Contains(r.Message, "panic") {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "origin %s: %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	h.t.Log(b.String())
	return nil
}

func (h outageLog) WithAttrs(as []slog.Attr) slog.Handler {
	return outageLog{t: h.t, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h outageLog) WithGroup(string) slog.Handler { return h }

func outageStreamMsgs(ctx context.Context, js jetstream.JetStream) uint64 {
	s, err := js.Stream(ctx, crashStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func outageLastSeq(t *testing.T, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, crashStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
