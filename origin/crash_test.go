package origin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/leaktest"
	"github.com/linkpop/linkpop/internal/natstest"
	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/internal/wait"
	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/replication"
)

// TestCrashDurability runs bin/origin as a child process under concurrent
// creates, SIGKILLs it at a random moment, restarts it on the same data
// directory, and repeats. JetStream stays up throughout. It then checks
// the write path's promises:
//
//   - every create answered 201 is readable with the same code and URL;
//   - every link in the store reaches the stream, and nothing is in the
//     stream that is not in the store;
//   - a create retried with the same Idempotency-Key never yields two
//     links, and a replay returns the first link;
//   - of creators racing for one custom code at most one is told 201, and
//     the store holds that one's URL.
//
// LINKPOP_CRASH_TRIALS sets the number of kills (default 20; `make
// crash-soak` runs 1,000). LINKPOP_CRASH_SEED fixes the random choices.
func TestCrashDurability(t *testing.T) {
	leaktest.Check(t)
	trials := crashEnvInt(t, "LINKPOP_CRASH_TRIALS", 20)
	seed := uint64(crashEnvInt(t, "LINKPOP_CRASH_SEED", int(time.Now().UnixNano()&0x7fffffff)))
	t.Logf("%d trials, seed %d (LINKPOP_CRASH_SEED to repeat the choices; kill timing is the machine's)", trials, seed)

	begin := time.Now()
	h := &crashHarness{
		t:       t,
		bin:     proctest.Build(t, "github.com/linkpop/linkpop/cmd/origin"),
		nats:    natstest.Start(t),
		dataDir: t.TempDir(),
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		ledger:  newCrashLedger(),
	}
	t.Logf("built bin/origin in %v", time.Since(begin).Round(time.Millisecond))
	start := time.Now()
	for trial := range trials {
		h.trial(trial)
		if t.Failed() {
			t.Fatalf("stopping after trial %d", trial)
		}
	}
	t.Logf("%d trials in %v", trials, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	o := h.startOrigin("final")
	acks, unknown := h.ledger.takeTrialAcks()
	h.checkTrialAcks(o, acks, unknown)
	h.finishRetries(o)
	h.checkReplays(o)
	links := h.listAll(o)
	h.checkStore(links)
	h.checkStream(o, links)
	t.Logf("final checks in %v", time.Since(start).Round(time.Millisecond))
	l := h.ledger
	t.Logf("totals: %d acked creates (%d random code, %d custom code, %d contested code, %d idempotent), "+
		"%d requests with unknown outcome, %d idempotent retries, %d links in store and stream",
		len(l.acked), l.n[crashRandom], l.n[crashCustom], l.n[crashContested], l.n[crashIdem],
		l.unknown, l.retries, len(links))
	if err := o.proc.Stop(30 * time.Second); err != nil {
		t.Errorf("origin after SIGTERM: %v, want a clean exit", err)
	}
}

const (
	crashAdminKey = "crash-test-admin-key-6f1b2c9e0d4a"
	crashClients  = 16
	crashStream   = "LINKPOP_LINKS"
	crashSubjects = "linkpop.links."
)

// crashKind is the kind of create a client sends.
type crashKind int

const (
	crashRandom    crashKind = iota // random code
	crashCustom                     // a custom code only this request uses
	crashContested                  // a custom code several clients race for
	crashIdem                       // random code, Idempotency-Key, retried until answered
)

type crashHarness struct {
	t       *testing.T
	bin     string
	nats    *natstest.Server
	dataDir string
	rng     *rand.Rand // used by the test goroutine only
	ledger  *crashLedger
}

// crashOrigin is one run of the origin process.
type crashOrigin struct {
	proc   *proctest.Process
	api    string // http://host:port
	admin  string
	client *http.Client
}

func (h *crashHarness) startOrigin(name string) *crashOrigin {
	t := h.t
	t.Helper()
	api, admin := proctest.FreeAddr(t), proctest.FreeAddr(t)
	p := proctest.Start(t, proctest.Spec{
		Name:  "origin " + name,
		Path:  h.bin,
		Quiet: true,
		Args: []string{
			"-listen", api, "-admin", admin, "-data", h.dataDir,
			"-nats", h.nats.URL(), "-log-level", "warn",
		},
		Env: []string{"LINKPOP_ADMIN_KEY=" + crashAdminKey},
	})
	o := &crashOrigin{
		proc:  p,
		api:   "http://" + api,
		admin: "http://" + admin,
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 2 * crashClients, DisableCompression: true},
		},
	}
	t.Cleanup(o.client.CloseIdleConnections)
	wait.For(t, 30*time.Second, "origin "+name+" /readyz", func() bool {
		if done, err := p.Exited(); done {
			t.Fatalf("origin %s exited before it was ready: %v", name, err)
		}
		resp, err := o.client.Get(o.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return o
}

// trial starts the origin, checks the acknowledgements of the trial
// before (the origin was killed right after them), runs the clients and
// kills the origin after a random delay.
func (h *crashHarness) trial(n int) {
	o := h.startOrigin(strconv.Itoa(n))
	acks, unknown := h.ledger.takeTrialAcks()
	h.checkTrialAcks(o, acks, unknown)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for c := range crashClients {
		seed := h.rng.Uint64()
		wg.Go(func() { h.client(ctx, o, n, c, rand.New(rand.NewPCG(seed, uint64(c)))) })
	}
	delay := 20*time.Millisecond + time.Duration(h.rng.Int64N(int64(280*time.Millisecond)))
	time.Sleep(delay) // the experiment: how long the origin lives under load
	o.proc.Kill()
	cancel()
	wg.Wait()
	o.client.CloseIdleConnections()

	nAcked, nUnknown, nPending := h.ledger.trialSummary()
	h.t.Logf("trial %d: killed pid %d after %v: %d creates acked, %d unknown outcome, %d idempotent creates awaiting retry",
		n, o.proc.PID(), delay.Round(time.Millisecond), nAcked, nUnknown, nPending)
}

// client sends creates until ctx ends. Idempotent creates that got no
// answer are retried, by this client or another, in a later request.
func (h *crashHarness) client(ctx context.Context, o *crashOrigin, trial, id int, rng *rand.Rand) {
	for i := 0; ctx.Err() == nil; i++ {
		if key, body, ok := h.ledger.takeRetry(); ok {
			h.createIdem(ctx, o, key, body)
			continue
		}
		name := fmt.Sprintf("t%d-c%d-n%d", trial, id, i)
		switch r := rng.IntN(10); {
		case r < 3:
			h.create(ctx, o, crashRandom, crashBody{URL: crashURL(name)})
		case r < 6:
			h.create(ctx, o, crashCustom, crashBody{URL: crashURL(name), Code: "c" + name})
		case r < 7:
			h.create(ctx, o, crashContested, crashBody{URL: crashURL(name), Code: fmt.Sprintf("x%d-%d", trial, rng.IntN(4))})
		default:
			key := "idem-" + name
			body := crashBody{URL: crashURL(name), Tags: []string{key}}
			h.ledger.newIdem(key, body)
			h.createIdem(ctx, o, key, body)
		}
	}
}

func crashURL(name string) string { return "https://example.com/crash/" + name }

// crashBody is the create body.
type crashBody = client.CreateLink

// crashLink is the link object.
type crashLink = client.Link

// create sends one create without an Idempotency-Key.
func (h *crashHarness) create(ctx context.Context, o *crashOrigin, kind crashKind, body crashBody) {
	h.ledger.sent(body.URL)
	status, l, _, raw, err := o.post(ctx, "", body)
	switch {
	case err != nil:
		h.ledger.unknownOutcome(kind, body)
	case status == http.StatusCreated:
		h.ledger.ack(h.t, kind, body, l)
	case status == http.StatusConflict && kind == crashContested:
		h.ledger.refused(body)
	default:
		h.t.Errorf("create %+v: status %d: %s", body, status, raw)
	}
}

// createIdem sends a create with an Idempotency-Key; without an answer it
// queues the same key and body for a retry.
func (h *crashHarness) createIdem(ctx context.Context, o *crashOrigin, key string, body crashBody) {
	status, l, hdr, raw, err := o.post(ctx, key, body)
	switch {
	case err != nil:
		h.ledger.unknownOutcome(crashIdem, body)
		h.ledger.queueRetry(key)
	case status == http.StatusCreated:
		h.ledger.ackIdem(h.t, key, body, l, hdr)
	default:
		h.t.Errorf("create with Idempotency-Key %s: status %d: %s", key, status, raw)
	}
}

// post creates a link. err is set when no complete answer arrived: the
// create may or may not have happened.
func (o *crashOrigin) post(ctx context.Context, idemKey string, body crashBody) (int, crashLink, http.Header, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, crashLink{}, nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.api+"/v1/links", bytes.NewReader(b))
	if err != nil {
		return 0, crashLink{}, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+crashAdminKey)
	req.Header.Set("Content-Type", "application/json")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, crashLink{}, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, crashLink{}, nil, nil, err
	}
	var l crashLink
	if resp.StatusCode == http.StatusCreated {
		if err := json.Unmarshal(raw, &l); err != nil {
			return resp.StatusCode, l, resp.Header, raw, fmt.Errorf("decode 201 body: %w", err)
		}
	}
	return resp.StatusCode, l, resp.Header, raw, nil
}

// get reads one link; found is false on 404.
func (o *crashOrigin) get(code string) (l crashLink, found bool, err error) {
	req, err := http.NewRequest(http.MethodGet, o.api+"/v1/links/"+url.PathEscape(code), nil)
	if err != nil {
		return l, false, err
	}
	req.Header.Set("Authorization", "Bearer "+crashAdminKey)
	resp, err := o.client.Do(req)
	if err != nil {
		return l, false, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return l, false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return l, true, json.Unmarshal(raw, &l)
	case http.StatusNotFound:
		return l, false, nil
	}
	return l, false, fmt.Errorf("GET %s: status %d: %s", code, resp.StatusCode, raw)
}

// checkTrialAcks reads back, from a freshly restarted origin, every link
// acknowledged in the trial before and every custom code whose create got
// no answer.
func (h *crashHarness) checkTrialAcks(o *crashOrigin, acks map[string]string, unknown map[string][]string) {
	t := h.t
	type job struct {
		code    string
		url     string   // acknowledged URL, or ""
		maybeOf []string // unacknowledged attempts on the code
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range jobs {
				l, found, err := o.get(j.code)
				switch {
				case err != nil:
					t.Errorf("read back %s: %v", j.code, err)
				case j.url != "" && !found:
					t.Errorf("LOST: %s was acknowledged with 201 (url %s) and is gone after the restart", j.code, j.url)
				case j.url != "" && l.URL != j.url:
					t.Errorf("CHANGED: %s was acknowledged with url %s, store has %s", j.code, j.url, l.URL)
				case j.url == "" && found && !crashContains(j.maybeOf, l.URL):
					t.Errorf("%s holds url %s, which no unanswered create on it sent (%q)", j.code, l.URL, j.maybeOf)
				}
			}
		})
	}
	for code, u := range acks {
		jobs <- job{code: code, url: u}
	}
	for code, urls := range unknown {
		if _, ok := acks[code]; !ok {
			jobs <- job{code: code, maybeOf: urls}
		}
	}
	close(jobs)
	wg.Wait()
}

// finishRetries retries every idempotent create still unanswered; the
// origin is up, so each must now be answered 201.
func (h *crashHarness) finishRetries(o *crashOrigin) {
	for {
		key, body, ok := h.ledger.takeRetry()
		if !ok {
			return
		}
		status, l, hdr, raw, err := o.post(context.Background(), key, body)
		if err != nil || status != http.StatusCreated {
			h.t.Fatalf("final retry of Idempotency-Key %s: status %d, err %v: %s", key, status, err, raw)
		}
		h.ledger.ackIdem(h.t, key, body, l, hdr)
	}
}

// checkReplays sends a sample of answered idempotent creates again: each
// must replay the first link.
func (h *crashHarness) checkReplays(o *crashOrigin) {
	keys := h.ledger.idemKeys()
	h.rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	keys = keys[:min(len(keys), 200)]
	for _, key := range keys {
		st := h.ledger.idem[key]
		status, l, hdr, raw, err := o.post(context.Background(), key, st.body)
		if err != nil || status != http.StatusCreated {
			h.t.Errorf("replay of Idempotency-Key %s: status %d, err %v: %s", key, status, err, raw)
			continue
		}
		if l.Code != st.code || hdr.Get("Idempotent-Replayed") != "true" {
			h.t.Errorf("replay of Idempotency-Key %s: code %s, Idempotent-Replayed %q; want code %s, \"true\"",
				key, l.Code, hdr.Get("Idempotent-Replayed"), st.code)
		}
	}
	if len(keys) > 0 {
		other := h.ledger.idem[keys[0]].body
		other.URL += "/other"
		status, _, _, raw, err := o.post(context.Background(), keys[0], other)
		if err != nil || status != http.StatusUnprocessableEntity || !bytes.Contains(raw, []byte("idempotency_key_reused")) {
			h.t.Errorf("Idempotency-Key %s with another body: status %d, err %v: %s; want 422 idempotency_key_reused", keys[0], status, err, raw)
		}
	}
}

// listAll pages through GET /v1/links.
func (h *crashHarness) listAll(o *crashOrigin) map[string]crashLink {
	t := h.t
	all := map[string]crashLink{}
	cursor := ""
	for page := 0; ; page++ {
		q := url.Values{"limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		req, err := http.NewRequest(http.MethodGet, o.api+"/v1/links?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+crashAdminKey)
		resp, err := o.client.Do(req)
		if err != nil {
			t.Fatalf("list page %d: %v", page, err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("list page %d: status %d, err %v: %s", page, resp.StatusCode, err, raw)
		}
		var body client.ListPage
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("list page %d: %v: %s", page, err, raw)
		}
		for _, l := range body.Links {
			if _, dup := all[l.Code]; dup {
				t.Fatalf("list returned %s twice", l.Code)
			}
			all[l.Code] = l
		}
		if body.NextCursor == nil || *body.NextCursor == "" {
			return all
		}
		if len(body.Links) == 0 {
			t.Fatalf("list page %d: no links but a next_cursor %q", page, *body.NextCursor)
		}
		cursor = *body.NextCursor
	}
}

// checkStore compares the whole link table with what the clients sent and
// were told.
func (h *crashHarness) checkStore(links map[string]crashLink) {
	t, l := h.t, h.ledger
	byURL := map[string][]string{}
	for code, lk := range links {
		byURL[lk.URL] = append(byURL[lk.URL], code)
		if _, ok := l.urls[lk.URL]; !ok {
			t.Errorf("store holds %s -> %s, a URL no client sent", code, lk.URL)
		}
	}
	for code, u := range l.acked {
		lk, ok := links[code]
		switch {
		case !ok:
			t.Errorf("LOST: %s was acknowledged with 201 (url %s) and is not in the list", code, u)
		case lk.URL != u:
			t.Errorf("CHANGED: %s was acknowledged with url %s, list has %s", code, u, lk.URL)
		}
	}
	// Every request body carried its own URL; only idempotent retries
	// repeat one. So no URL may be held by two links.
	for u, codes := range byURL {
		if len(codes) > 1 {
			t.Errorf("DUPLICATE: url %s is held by %d links %q", u, len(codes), codes)
		}
	}
	for key, st := range l.idem {
		if codes := byURL[st.body.URL]; len(codes) != 1 || codes[0] != st.code {
			t.Errorf("Idempotency-Key %s (answered with %s): links with its url: %q, want exactly [%s]", key, st.code, codes, st.code)
		}
	}
	for code, urls := range l.maybe {
		if _, ok := l.acked[code]; ok {
			continue
		}
		if lk, ok := links[code]; ok && !crashContains(urls, lk.URL) {
			t.Errorf("%s holds url %s, which no unanswered create on it sent (%q)", code, lk.URL, urls)
		}
	}
}

// checkStream waits for the relay to drain the outbox, then reads the
// whole stream: its latest event per code must match the store exactly.
func (h *crashHarness) checkStream(o *crashOrigin, links map[string]crashLink) {
	t := h.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := replication.Dial(ctx, replication.ConnConfig{URLs: []string{h.nats.URL()}, Name: "crash-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs uint64
	wait.For(t, time.Minute, fmt.Sprintf("the stream to hold an event for each of the %d links", len(links)), func() bool {
		s, err := js.Stream(ctx, crashStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false
		}
		msgs = info.State.Msgs
		return msgs >= uint64(len(links))
	})
	events := crashReadStream(t, ctx, js)
	if uint64(len(events)) != msgs {
		t.Errorf("read %d events, stream info says %d messages", len(events), msgs)
	}
	for code, ev := range events {
		lk, ok := links[code]
		switch {
		case !ok:
			t.Errorf("GHOST: the stream has %s (rev %d, url %s) and the store does not", code, ev.Record.Revision, ev.Record.URL)
		case lk.Revision < ev.Record.Revision:
			t.Errorf("the stream has %s at rev %d, ahead of the store's rev %d", code, ev.Record.Revision, lk.Revision)
		}
	}
	for code, lk := range links {
		ev, ok := events[code]
		switch {
		case !ok:
			t.Errorf("NOT PUBLISHED: %s (rev %d) is in the store and not in the stream", code, lk.Revision)
		case ev.Record.Revision != lk.Revision || ev.Record.URL != lk.URL:
			t.Errorf("%s: stream has rev %d url %s, store rev %d url %s", code, ev.Record.Revision, ev.Record.URL, lk.Revision, lk.URL)
		}
	}
}

// crashReadStream reads every message of the change stream, in sequence
// order, and returns the latest event per code.
func crashReadStream(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]link.Change {
	t.Helper()
	events := map[string]link.Change{}
	crashEachEvent(t, ctx, js, 0, func(seq uint64, c link.Change) { events[c.Record.Code] = c })
	return events
}

// crashEachEvent calls fn for every message of the change stream after
// sequence from, in sequence order, up to the last sequence at the call.
func crashEachEvent(t *testing.T, ctx context.Context, js jetstream.JetStream, from uint64, fn func(seq uint64, c link.Change)) {
	t.Helper()
	s, err := js.Stream(ctx, crashStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last <= from {
		return
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from + 1}
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	defer it.Stop()
	var prev uint64
	for prev < last {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("stream read stopped at seq %d of %d: %v", prev, last, err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatalf("message metadata: %v", err)
		}
		seq := md.Sequence.Stream
		if seq <= prev {
			t.Fatalf("stream sequence %d after %d", seq, prev)
		}
		prev = seq
		c, err := link.UnmarshalChange(m.Data())
		if err != nil {
			t.Errorf("seq %d (%s): %v", seq, m.Subject(), err)
			continue
		}
		if m.Subject() != crashSubjects+c.Record.Code {
			t.Errorf("seq %d: event for %s on subject %s", seq, c.Record.Code, m.Subject())
		}
		fn(seq, c)
	}
}

// crashLedger is what the clients sent and what they were told.
type crashLedger struct {
	mu      sync.Mutex
	urls    map[string]struct{}        // every URL sent
	acked   map[string]string          // code -> URL, from 201 answers
	maybe   map[string][]string        // custom code -> URLs of creates with no answer or a 409
	idem    map[string]*crashIdemState // Idempotency-Key -> state
	retry   []string                   // keys waiting for a retry
	n       [4]int                     // acknowledged creates by kind
	unknown int
	retries int

	// This trial's acknowledgements and unanswered custom codes, checked
	// after the restart.
	trialAcks    map[string]string
	trialUnknown map[string][]string
	trialN       int
	trialUnk     int
}

type crashIdemState struct {
	body   crashBody
	code   string // "" until answered
	queued bool
}

func newCrashLedger() *crashLedger {
	return &crashLedger{
		urls:         map[string]struct{}{},
		acked:        map[string]string{},
		maybe:        map[string][]string{},
		idem:         map[string]*crashIdemState{},
		trialAcks:    map[string]string{},
		trialUnknown: map[string][]string{},
	}
}

func (l *crashLedger) sent(u string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.urls[u] = struct{}{}
}

func (l *crashLedger) newIdem(key string, body crashBody) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.urls[body.URL] = struct{}{}
	l.idem[key] = &crashIdemState{body: body}
}

// ack records a 201. A code acknowledged twice (to different URLs) means
// two creators were both told they own it.
func (l *crashLedger) ack(t *testing.T, kind crashKind, body crashBody, lk crashLink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ackLocked(t, kind, body, lk)
}

func (l *crashLedger) ackLocked(t *testing.T, kind crashKind, body crashBody, lk crashLink) {
	if lk.URL != body.URL {
		t.Errorf("create of %s answered url %s", body.URL, lk.URL)
	}
	if body.Code != "" && lk.Code != body.Code {
		t.Errorf("create with code %s answered code %s", body.Code, lk.Code)
	}
	if prev, ok := l.acked[lk.Code]; ok {
		t.Errorf("DOUBLE ACK: code %s acknowledged for %s and again for %s", lk.Code, prev, lk.URL)
		return
	}
	l.acked[lk.Code] = lk.URL
	l.trialAcks[lk.Code] = lk.URL
	l.n[kind]++
	l.trialN++
}

func (l *crashLedger) ackIdem(t *testing.T, key string, body crashBody, lk crashLink, hdr http.Header) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.idem[key]
	if st.code != "" {
		// A replay: it must name the link of the first answer.
		if lk.Code != st.code || hdr.Get("Idempotent-Replayed") != "true" {
			t.Errorf("Idempotency-Key %s answered %s (Idempotent-Replayed %q) after first answering %s",
				key, lk.Code, hdr.Get("Idempotent-Replayed"), st.code)
		}
		return
	}
	st.code = lk.Code
	l.ackLocked(t, crashIdem, body, lk)
}

func (l *crashLedger) refused(body crashBody) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A 409 leaves nothing; the code's URL must come from another create.
	// Remember the code so the checks look at it.
	if _, ok := l.maybe[body.Code]; !ok {
		l.maybe[body.Code] = nil
	}
}

func (l *crashLedger) unknownOutcome(kind crashKind, body crashBody) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unknown++
	l.trialUnk++
	if body.Code != "" {
		l.maybe[body.Code] = append(l.maybe[body.Code], body.URL)
		l.trialUnknown[body.Code] = append(l.trialUnknown[body.Code], body.URL)
	}
}

func (l *crashLedger) queueRetry(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.idem[key]; !st.queued && st.code == "" {
		st.queued = true
		l.retry = append(l.retry, key)
	}
}

func (l *crashLedger) takeRetry() (string, crashBody, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.retry) == 0 {
		return "", crashBody{}, false
	}
	key := l.retry[0]
	l.retry = l.retry[1:]
	st := l.idem[key]
	st.queued = false
	l.retries++
	return key, st.body, true
}

func (l *crashLedger) idemKeys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.idem))
	for k, st := range l.idem {
		if st.code != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// takeTrialAcks returns and resets the current trial's acknowledged
// links and unanswered custom codes.
func (l *crashLedger) takeTrialAcks() (map[string]string, map[string][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, u := l.trialAcks, l.trialUnknown
	l.trialAcks, l.trialUnknown = map[string]string{}, map[string][]string{}
	return a, u
}

func (l *crashLedger) trialSummary() (acks, unknown, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acks, unknown, pending = l.trialN, l.trialUnk, len(l.retry)
	l.trialN, l.trialUnk = 0, 0
	return acks, unknown, pending
}

func crashContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func crashEnvInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}
