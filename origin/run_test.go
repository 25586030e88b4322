package origin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/replication"
	"github.com/linkpop/linkpop/replication/natsauth"
)

// streamState reads the last event of every code in the change stream.
func streamState(t *testing.T, url string) map[string]link.Change {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "LINKPOP_LINKS")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]link.Change{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // compacted: an older event of a code
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == (replication.StreamConfig{}).BarrierSubject() {
			continue // an HA leader's epoch barrier
		}
		c, err := link.UnmarshalChange(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if m.Subject != "linkpop.links."+c.Record.Code {
			t.Errorf("event for %s on subject %s", c.Record.Code, m.Subject)
		}
		out[c.Record.Code] = c
	}
	return out
}

// TestEventsReachStream: creates, updates and deactivations through the
// API reach the change stream at the revision the API answered.
func TestEventsReachStream(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	want := map[string]float64{} // code → revision
	for i := range 5 {
		r := o.must(201, "POST", "/v1/links", apiAdminKey, fmt.Sprintf(`{"url":"https://example.com/%d","code":"ev%d"}`, i, i))
		want[r.str("code")] = r.body["revision"].(float64)
	}
	want["ev1"] = o.must(200, "PATCH", "/v1/links/ev1", apiAdminKey, `{"url":"https://example.com/new"}`).body["revision"].(float64)
	want["ev2"] = o.must(200, "DELETE", "/v1/links/ev2", apiAdminKey, "").body["revision"].(float64)
	var got map[string]link.Change
	wait.For(t, 20*time.Second, "every event in the stream", func() bool {
		got = streamState(t, o.nats.URL())
		if len(got) != len(want) {
			return false
		}
		for code, rev := range want {
			if got[code].Record.Revision != uint64(rev) {
				return false
			}
		}
		return true
	})
	if got["ev1"].Record.URL != "https://example.com/new" || got["ev1"].Op != link.OpUpdate {
		t.Errorf("ev1 event: %+v", got["ev1"])
	}
	if got["ev2"].Record.Status != link.StatusDisabled || got["ev2"].Op != link.OpDisable {
		t.Errorf("ev2 event: %+v", got["ev2"])
	}
	if got["ev0"].Op != link.OpCreate {
		t.Errorf("ev0 event: %+v", got["ev0"])
	}
}

// TestAckReplicatedAnswersAfterTheStream: with -ack replicated, a create,
// an update and a deactivation are answered only once the stream holds
// their event (at the answered revision or a later one), also with many
// clients whose mutations share group commits and relay marks.
func TestAckReplicatedAnswersAfterTheStream(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, func(c *origin.Config) { c.Ack = origin.AckReplicated })
	nc, err := nats.Connect(o.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := js.Stream(ctx, "LINKPOP_LINKS")
	if err != nil {
		t.Fatal(err)
	}
	// call sends one mutation and checks, as soon as it is answered, that
	// the stream's last event for code is at its revision or later.
	call := func(method, path, body, code string, want int) {
		req, err := http.NewRequest(method, o.base+path, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Authorization", "Bearer "+apiAdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := o.client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		var got struct {
			Revision uint64 `json:"revision"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != want {
			t.Errorf("%s %s: status %d, %v", method, path, resp.StatusCode, err)
			return
		}
		m, err := stream.GetLastMsgForSubject(ctx, "linkpop.links."+code)
		if err != nil {
			t.Errorf("%s %s answered %d, but the stream has no event for %s: %v", method, path, want, code, err)
			return
		}
		c, err := link.UnmarshalChange(m.Data)
		if err != nil || c.Record.Revision < got.Revision {
			t.Errorf("%s %s answered revision %d before the stream held it (stream: %d, %v)", method, path, got.Revision, c.Record.Revision, err)
		}
	}
	const clients, each = 16, 12
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			for i := range each {
				code := fmt.Sprintf("ar%d-%d", g, i)
				call("POST", "/v1/links", fmt.Sprintf(`{"url":"https://example.com/%s","code":%q}`, code, code), code, http.StatusCreated)
				switch i % 3 {
				case 1:
					call("PATCH", "/v1/links/"+code, `{"url":"https://example.com/new"}`, code, http.StatusOK)
				case 2:
					call("DELETE", "/v1/links/"+code, "", code, http.StatusOK)
				}
			}
		})
	}
	wg.Wait()
}

// readyz fetches /readyz.
func (o *apiOrigin) readyz() (int, map[string]any) {
	o.t.Helper()
	resp, err := o.client.Get(o.admin + "/readyz")
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		o.t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestAdminListener: /healthz and /readyz answer; readiness does not
// depend on NATS, which only shows in the body and the outbox depth.
func TestAdminListener(t *testing.T) {
	leaktest.Check(t)
	o := apiStart(t, nil)
	resp, err := o.client.Get(o.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz %d", resp.StatusCode)
	}
	wait.For(t, 10*time.Second, "ready with NATS and stream up", func() bool {
		st, b := o.readyz()
		return st == 200 && b["ready"] == true && b["nats"] == "connected" && b["stream"] == "ready" && b["relay"] == "running"
	})

	o.nats.Stop()
	wait.For(t, 10*time.Second, "readyz to see NATS down", func() bool {
		st, b := o.readyz()
		return st == 200 && b["nats"] == "disconnected"
	})
	o.must(201, "POST", "/v1/links", apiAdminKey, `{"url":"https://example.com/down","code":"whiledown"}`)
	if st, b := o.readyz(); st != 200 || b["outbox_depth"] != float64(1) || b["ready"] != true {
		t.Fatalf("readyz while NATS is down: %d %v", st, b)
	}
	o.nats.Restart()
	wait.For(t, 20*time.Second, "the outbox to drain after NATS returns", func() bool {
		_, b := o.readyz()
		return b["nats"] == "connected" && b["outbox_depth"] == float64(0)
	})
	if got := streamState(t, o.nats.URL()); got["whiledown"].Record.Revision == 0 {
		t.Fatalf("link created while NATS was down is not in the stream: %v", got)
	}
}

// TestDevMode: with Dev the origin embeds JetStream, connects to it
// without NATS URLs and publishes into it.
func TestDevMode(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	srv, err := origin.New(origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir,
		Dev: true, DevNATSAddr: "127.0.0.1:0", AdminKey: apiAdminKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://"+srv.Addr()+"/v1/links", strings.NewReader(`{"url":"https://example.com/dev","code":"devlink"}`))
	req.Header.Set("Authorization", "Bearer "+apiAdminKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	if srv.NATSURL() == "" {
		t.Fatal("no embedded NATS URL")
	}
	// Authentication is on: a client without credentials is refused;
	// the operator's password is in DataDir/nats-auth.
	if nc, err := nats.Connect(srv.NATSURL()); err == nil {
		nc.Close()
		t.Fatal("embedded NATS accepted a client without credentials")
	}
	pass := map[natsauth.Role]string{}
	for _, r := range natsauth.Roles {
		path := origin.DevPasswordFile(dir, r)
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v", path, fi, err)
		}
		b, _ := os.ReadFile(path)
		pass[r] = strings.TrimSpace(string(b))
	}
	opURL := strings.Replace(srv.NATSURL(), "nats://", "nats://"+url.UserPassword("operator", pass[natsauth.Operator]).String()+"@", 1)
	wait.For(t, 20*time.Second, "the event in the embedded stream", func() bool {
		return streamState(t, opURL)["devlink"].Record.Revision == 1
	})
	if _, err := os.Stat(filepath.Join(dir, "nats")); err != nil {
		t.Errorf("JetStream store not under DataDir/nats: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); !errors.Is(err, origin.ErrAlreadyRun) {
		t.Errorf("second Run: %v", err)
	}
}

// TestAdminKeyGenerated: without a configured key one is generated into
// DataDir/admin.key (0600), reused on the next start, and works.
func TestAdminKeyGenerated(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	dir := t.TempDir()
	cfg := origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir,
		NATS: replication.ConnConfig{URLs: []string{ns.URL()}},
	}
	srv, err := origin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := srv.AdminKey()
	if !srv.AdminKeyGenerated() || len(key) < origin.MinAdminKeyLen {
		t.Fatalf("generated %v, key %q", srv.AdminKeyGenerated(), key)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key: %v, mode %v", err, fi.Mode())
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/keys", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("generated key: %d %s", rec.Code, rec.Body)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close the handler refuses with 503 rather than touching the
	// closed store.
	rec = httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"unavailable"`) || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("after Close: %d %s", rec.Code, rec.Body)
	}

	srv2, err := origin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	if srv2.AdminKey() != key || srv2.AdminKeyGenerated() {
		t.Fatalf("second start: key %q generated %v, want the stored %q", srv2.AdminKey(), srv2.AdminKeyGenerated(), key)
	}
}

// TestConfigValidate reports every bad field at once.
func TestConfigValidate(t *testing.T) {
	cfg := origin.Config{
		Listen:         "nope",
		BaseURL:        "ftp://x/",
		CodeLength:     2,
		AdminKey:       "short",
		BlockedDomains: []string{"a/b"},
		MaxBodyBytes:   -1,
		AdminRateLimit: -1,
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"Listen", "DataDir", "nats", "BaseURL", "CodeLength", "AdminKey", "BlockedDomains", "MaxBodyBytes", "AdminRateLimit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s:\n%v", want, err)
		}
	}
	good := origin.Config{DataDir: "x", NATS: replication.ConnConfig{URLs: []string{"nats://127.0.0.1:4222"}}}
	if err := good.Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	dev := origin.Config{DataDir: "x", Dev: true}
	if err := dev.Validate(); err != nil {
		t.Errorf("dev config without NATS URLs: %v", err)
	}
	if _, err := origin.New(cfg); err == nil {
		t.Error("New accepted a bad config")
	}
}

// TestRepublish rebuilds an empty stream from the store after the origin
// has stopped.
func TestRepublish(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	dir := t.TempDir()
	cfg := origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir,
		NATS:     replication.ConnConfig{URLs: []string{"nats://127.0.0.1:1"}}, // unreachable: events stay in the outbox
		AdminKey: apiAdminKey,
	}
	srv, err := origin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		req := httptest.NewRequest("POST", "/v1/links", strings.NewReader(fmt.Sprintf(`{"url":"https://example.com/%d"}`, i)))
		req.Header.Set("Authorization", "Bearer "+apiAdminKey)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != 201 {
			t.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.NATS.URLs = []string{ns.URL()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := origin.Republish(ctx, cfg)
	if err != nil || n != 7 {
		t.Fatalf("Republish = %d, %v; want 7", n, err)
	}
	if got := streamState(t, ns.URL()); len(got) != 7 {
		t.Fatalf("stream holds %d links after republish, want 7", len(got))
	}
}

// TestShutdownDrains: a request in flight when Run's context ends is
// answered before the store closes.
func TestShutdownDrains(t *testing.T) {
	leaktest.Check(t)
	ns := natstest.Start(t)
	srv, err := origin.New(origin.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
		NATS: replication.ConnConfig{URLs: []string{ns.URL()}}, AdminKey: apiAdminKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	wait.For(t, 20*time.Second, "the change stream to exist", func() bool {
		resp, err := http.Get("http://" + srv.AdminAddr() + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"stream":"ready"`)
	})

	// With Expect: 100-continue the server says "100 Continue" when the
	// handler starts reading the body: from then on the request is in
	// flight, and it is made to wait for its body across the shutdown.
	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"url":"https://example.com/inflight"}`
	fmt.Fprintf(conn, "POST /v1/links HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", apiAdminKey, len(body))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue: %v %v", resp, err)
	}
	cancel()
	wait.For(t, 10*time.Second, "the API listener to close", func() bool {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("in-flight create answered %d, want 201", resp.StatusCode)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
