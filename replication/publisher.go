package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkpop/linkpop/link"
)

// Publisher appends change events to the stream. It is safe for concurrent
// use.
type Publisher struct {
	cfg StreamConfig
	js  jetstream.JetStream

	// acks takes the answers to PublishRawAsync and PublishRawAsyncAt.
	acks asyncAcks

	// epoch is the origin leader's epoch stamped on every event (see
	// SetEpoch); 0 for an origin without a lease.
	epoch atomic.Uint64
}

// EpochHeader carries the origin leader's epoch on every event it
// publishes and on its epoch barrier. A chain that finds a higher epoch at
// the stream's tail has been deposed (ErrFenced).
const EpochHeader = "Linkpop-Epoch"

// ErrFenced is what a Chain reports when the stream's last message was
// written by a leader of a higher epoch: another origin has taken over,
// and this one must not publish again.
var ErrFenced = errors.New("fenced: another origin leader of a higher epoch appended to the stream")

// SetEpoch sets the epoch stamped on the events published from now on
// (EpochHeader, and in the Nats-Msg-Id, so two leaders' events for one
// code and revision are never taken for duplicates of each other).
func (p *Publisher) SetEpoch(e uint64) { p.epoch.Store(e) }

// Epoch is the epoch SetEpoch set.
func (p *Publisher) Epoch() uint64 { return p.epoch.Load() }

// msgID is the Nats-Msg-Id of an event published at the current epoch.
func (p *Publisher) msgID(code string, revision uint64) string {
	return epochMsgID(code, revision, p.epoch.Load())
}

func epochMsgID(code string, revision, epoch uint64) string {
	id := MsgID(code, revision)
	if epoch > 0 {
		id += "@" + strconv.FormatUint(epoch, 10)
	}
	return id
}

// Config is the stream configuration the publisher appends to.
func (p *Publisher) Config() StreamConfig { return p.cfg }

// NewPublisher returns a publisher on nc. It does not touch the server:
// call EnsureStream (Publisher.EnsureStream) before the first Publish, and
// again after it fails with jetstream.ErrNoStreamResponse or similar.
func NewPublisher(nc *nats.Conn, cfg StreamConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Publisher{cfg: cfg.withDefaults(), js: js}, nil
}

// EnsureStream creates or updates the change stream: the operator's step,
// which needs the operator role's permissions.
func (p *Publisher) EnsureStream(ctx context.Context) error {
	_, err := EnsureStream(ctx, p.js, p.cfg)
	return err
}

// OpenStream checks that the change stream exists, creating it if it does
// not and this client may (the operator's permissions), else returning
// ErrStreamMissing. It never changes an existing stream. The relay calls
// it with the origin role's credentials.
func (p *Publisher) OpenStream(ctx context.Context) error {
	_, err := openStream(ctx, p.js, p.cfg.jsConfig())
	return err
}

// Publish appends c to the stream and waits for the stream's ack. It
// returns the stream sequence; a duplicate (same code and revision within
// the dedup window) returns the sequence of the original and dup = true.
func (p *Publisher) Publish(ctx context.Context, c *link.Change) (seq uint64, dup bool, err error) {
	data, err := link.MarshalChange(c)
	if err != nil {
		return 0, false, fmt.Errorf("marshal change: %w", err)
	}
	return p.PublishRaw(ctx, c.Record.Code, c.Record.Revision, data)
}

// PublishRaw publishes an already encoded change event for code at
// revision: the origin's outbox stores encoded events and hands them over
// unchanged.
func (p *Publisher) PublishRaw(ctx context.Context, code string, revision uint64, data []byte) (seq uint64, dup bool, err error) {
	ack, err := p.js.Publish(ctx, p.cfg.Subject(code), data,
		jetstream.WithMsgID(MsgID(code, revision)),
		jetstream.WithExpectStream(p.cfg.Name))
	if err != nil {
		return 0, false, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// LastSequence returns the stream's last sequence number.
func (p *Publisher) LastSequence(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, p.cfg.Name)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", p.cfg.Name, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// asyncAckTimeout bounds how long an asynchronous publish waits for the
// stream's ack before the publisher fails it, so acks abandoned during an
// outage do not pile up.
const asyncAckTimeout = 10 * time.Second

// maxAsyncPending bounds the asynchronous publishes awaiting their ack
// (nats.go's bound for its own is 4096).
const maxAsyncPending = 4096

// ErrTooManyPending is what an asynchronous publish returns while
// maxAsyncPending publishes are awaiting their ack.
var ErrTooManyPending = errors.New("too many asynchronous publishes awaiting their ack")

// PendingAck is the stream's answer to an asynchronous publish. Wait and
// Ready are for one goroutine at a time.
//
// The publisher takes the answers itself (asyncAcks) rather than through
// jetstream.PublishMsgAsync: that costs 24 allocations, a timer and a
// reflection-based JSON decode per event, and a create with -ack
// replicated pays them on the relay's path. The message and its header
// values are allocated with the answer, in one object.
type PendingAck struct {
	code     string
	revision uint64
	id       uint64
	sent     time.Time
	done     chan struct{} // closed once seq, dup and err are set

	seq uint64
	dup bool
	err error

	msg  nats.Msg
	vals [5]string // the header values, one slice each
}

// Wait waits for the ack, ctx's end, or the publisher's ack timeout. It
// returns what PublishRaw would have.
func (a *PendingAck) Wait(ctx context.Context) (seq uint64, dup bool, err error) {
	select {
	case <-a.done:
		return a.seq, a.dup, a.err
	case <-ctx.Done():
		return 0, false, fmt.Errorf("publish %s rev %d: %w", a.code, a.revision, ctx.Err())
	}
}

// Ready reports, without blocking, whether the answer has come (Wait
// would return at once).
func (a *PendingAck) Ready() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// asyncAcks takes the stream's answers to a publisher's asynchronous
// publishes: each carries a reply subject of its own under one wildcard
// subscription, and the subscription's handler answers the PendingAck
// the subject names. A publish not answered within asyncAckTimeout is
// failed by the next publish that looks (every sweepEvery publishes);
// when the connection is lost, every pending publish is failed at once
// (as nats.go does: their acks may never come).
type asyncAcks struct {
	once sync.Once
	err  error

	prefix string // the reply subjects' prefix, ending in "."

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*PendingAck
}

// start subscribes to the reply subjects once.
func (x *asyncAcks) start(nc *nats.Conn) error {
	x.once.Do(func() {
		x.pending = make(map[uint64]*PendingAck)
		x.prefix = nc.NewInbox() + "."
		if _, err := nc.Subscribe(x.prefix+"*", x.answer); err != nil {
			x.err = fmt.Errorf("subscribe to publish acks: %w", err)
			return
		}
		status := nc.StatusChanged(nats.RECONNECTING, nats.CLOSED)
		go func() {
			tick := time.NewTicker(asyncAckTimeout / 4)
			defer tick.Stop()
			for {
				select {
				case st, ok := <-status:
					x.failAll(nats.ErrDisconnected)
					if !ok || st == nats.CLOSED {
						return
					}
				case now := <-tick.C:
					x.mu.Lock()
					x.sweepLocked(now)
					x.mu.Unlock()
				}
			}
		}()
	})
	return x.err
}

// add registers a and returns its reply subject.
func (x *asyncAcks) add(a *PendingAck) (string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.pending) >= maxAsyncPending {
		x.sweepLocked(a.sent)
		if len(x.pending) >= maxAsyncPending {
			return "", ErrTooManyPending
		}
	}
	x.next++
	a.id = x.next
	x.pending[a.id] = a
	return x.prefix + strconv.FormatUint(a.id, 10), nil
}

// remove forgets a publish that was never sent.
func (x *asyncAcks) remove(a *PendingAck) {
	x.mu.Lock()
	delete(x.pending, a.id)
	x.mu.Unlock()
}

// sweepLocked fails the publishes sent more than asyncAckTimeout before
// now; the caller holds mu.
func (x *asyncAcks) sweepLocked(now time.Time) {
	for id, a := range x.pending {
		if now.Sub(a.sent) > asyncAckTimeout {
			delete(x.pending, id)
			a.resolve(0, false, jetstream.ErrAsyncPublishTimeout)
		}
	}
}

func (x *asyncAcks) failAll(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, a := range x.pending {
		delete(x.pending, id)
		a.resolve(0, false, err)
	}
}

// answer is the reply subscription's handler.
func (x *asyncAcks) answer(m *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, x.prefix), 10, 64)
	if err != nil {
		return
	}
	x.mu.Lock()
	a := x.pending[id]
	delete(x.pending, id)
	x.mu.Unlock()
	if a == nil {
		return // failed already (timed out, disconnected)
	}
	seq, dup, err := parsePubAck(m)
	a.resolve(seq, dup, err)
}

func (a *PendingAck) resolve(seq uint64, dup bool, err error) {
	a.seq, a.dup = seq, dup
	if err != nil {
		a.err = publishErr(a.code, a.revision, err)
	}
	close(a.done)
}

// parsePubAck reads a stream's answer to a publish. The common answer,
// {"stream":"NAME","seq":N} (with "domain" when the stream has one), is
// read without a JSON decoder; anything else (an error, a duplicate) is
// decoded.
func parsePubAck(m *nats.Msg) (seq uint64, dup bool, err error) {
	data := m.Data
	if len(data) == 0 {
		if m.Header.Get("Status") == "503" {
			return 0, false, jetstream.ErrNoStreamResponse
		}
		return 0, false, jetstream.ErrInvalidJSAck
	}
	if seq, ok := quickPubAck(data); ok {
		return seq, false, nil
	}
	var resp struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Seq       uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return 0, false, jetstream.ErrInvalidJSAck
	}
	switch {
	case resp.Error != nil:
		return 0, false, resp.Error
	case resp.Stream == "":
		return 0, false, jetstream.ErrInvalidJSAck
	}
	return resp.Seq, resp.Duplicate, nil
}

var (
	ackStream    = []byte(`{"stream":`)
	ackSeq       = []byte(`"seq":`)
	ackError     = []byte(`"error"`)
	ackDuplicate = []byte(`"duplicate"`)
)

// quickPubAck reads the sequence of a plain ack: one that names a stream,
// has a sequence followed by the end of the object, and holds neither an
// error nor a duplicate flag. ok is false for anything else.
func quickPubAck(data []byte) (seq uint64, ok bool) {
	if !bytes.HasPrefix(data, ackStream) || bytes.Contains(data, ackError) || bytes.Contains(data, ackDuplicate) {
		return 0, false
	}
	i := bytes.LastIndex(data, ackSeq)
	if i < 0 {
		return 0, false
	}
	digits := data[i+len(ackSeq):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	if n == 0 || n >= len(digits) || digits[n] != '}' || n+1 != len(digits) {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	return seq, err == nil
}

// PublishRawAsync sends an encoded change event like PublishRaw but
// returns without waiting for the ack and without any expectation about
// the stream's last message: events that fail can be overtaken by later
// ones. Loaders that fill a stream whose order does not matter use it;
// everything that must keep the stream in order publishes through a
// Chain.
func (p *Publisher) PublishRawAsync(code string, revision uint64, data []byte) (*PendingAck, error) {
	return p.publishAsync(code, revision, data, nil)
}

// ErrWrongLastSequence is what PendingAck.Wait reports when the stream
// refused an event published with PublishRawAsyncAt because its last
// sequence is not the expected one (JetStream error 10071).
var ErrWrongLastSequence = errors.New("stream's last sequence is not the expected one")

// ErrDuplicateInProcess is what PendingAck.Wait reports when an event with
// the same Nats-Msg-Id is still being stored, typically during a stream
// leader change (JetStream error 10158). Send it again a little later: it
// is then either stored (a duplicate ack) or not.
var ErrDuplicateInProcess = errors.New("an event with the same id is still being stored")

// JetStream error codes the publisher tells apart.
const (
	jsErrCodeWrongLastSequence  jetstream.ErrorCode = 10071
	jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158
)

// publishErr wraps a publish error with the event and, for the refusals a
// Chain handles, with its sentinel.
func publishErr(code string, revision uint64, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrCodeWrongLastSequence:
			return fmt.Errorf("publish %s rev %d: %w: %w", code, revision, ErrWrongLastSequence, err)
		case jsErrCodeDuplicateInProcess:
			return fmt.Errorf("publish %s rev %d: %w: %w", code, revision, ErrDuplicateInProcess, err)
		}
	}
	return fmt.Errorf("publish %s rev %d: %w", code, revision, err)
}

// PublishRawAsyncAt is PublishRawAsync with an expectation: the stream
// stores the event only if its last sequence is lastSeq (the header
// Nats-Expected-Last-Sequence), and otherwise fails it with
// ErrWrongLastSequence. The stream leader checks it before proposing the
// event to its replicas, against the stream and the events already in
// flight, so a caller may pipeline: the i-th event after a known tail T
// expects T+i-1. A replicated stream's leader checks duplicates first (an
// event already stored, sent again, gets its duplicate ack whatever
// lastSeq says); a single server checks lastSeq first (ErrWrongLastSequence).
// Chain handles both.
//
// The publisher never sends Nats-Expected-Last-Msg-Id: on nats-server
// 2.14 and later one mismatch of that header leaves a replicated stream
// without a leader (see the regression test in r3_test.go).
func (p *Publisher) PublishRawAsyncAt(code string, revision uint64, data []byte, lastSeq uint64) (*PendingAck, error) {
	return p.publishAsync(code, revision, data, &lastSeq)
}

func (p *Publisher) publishAsync(code string, revision uint64, data []byte, lastSeq *uint64) (*PendingAck, error) {
	nc := p.js.Conn()
	if err := p.acks.start(nc); err != nil {
		return nil, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	a := &PendingAck{code: code, revision: revision, sent: time.Now(), done: make(chan struct{})}
	h := make(nats.Header, 5)
	set := func(i int, k, v string) {
		a.vals[i] = v
		h[k] = a.vals[i : i+1 : i+1]
	}
	set(0, jetstream.MsgIDHeader, p.msgID(code, revision))
	set(1, jetstream.ExpectedStreamHeader, p.cfg.Name)
	if lastSeq != nil {
		set(2, jetstream.ExpectedLastSeqHeader, strconv.FormatUint(*lastSeq, 10))
	}
	if p.cfg.origin && strings.HasPrefix(code, originIdemToken) {
		set(3, jetstream.MsgTTLHeader, p.cfg.IdemTTL.String())
	}
	if e := p.epoch.Load(); e > 0 {
		set(4, EpochHeader, strconv.FormatUint(e, 10))
	}
	reply, err := p.acks.add(a)
	if err != nil {
		return nil, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	a.msg = nats.Msg{Subject: p.cfg.Subject(code), Reply: reply, Header: h, Data: data}
	if err := nc.PublishMsg(&a.msg); err != nil {
		p.acks.remove(a)
		return nil, fmt.Errorf("publish %s rev %d: %w", code, revision, err)
	}
	return a, nil
}

// Tail is the stream's last message as a Chain anchors on it.
type Tail struct {
	// Seq is the stream's last sequence.
	Seq uint64
	// Found says whether the message at Seq exists and is a change event
	// (not for an empty or purged stream); Code and Revision name it.
	Found    bool
	Code     string
	Revision uint64
	// MsgID is the message's Nats-Msg-Id and Epoch its EpochHeader (0
	// without one), for any message found at Seq, change event or not.
	MsgID string
	Epoch uint64
	// LastMsgSeq is the sequence of the last message the stream still
	// holds: Seq, except on the origin stream after the last messages
	// expired (see Publisher.Tail). A follower is caught up at it.
	LastMsgSeq uint64
}

// Tail reads the stream's last message from the stream leader (a direct
// get could be answered by a lagging replica): its sequence and which
// event it is, in one request. On the origin stream, whose idempotency
// records expire, the last message may be gone while the stream's last
// sequence stays: Seq is then the stream's last sequence, LastMsgSeq the
// last message still held, and Epoch that message's (no leader ever
// writes after a higher epoch's barrier, and barriers never expire, so it
// is the highest epoch in the stream).
func (p *Publisher) Tail(ctx context.Context) (Tail, error) {
	var last uint64
	if p.cfg.origin {
		var err error
		if last, err = p.LastSequence(ctx); err != nil {
			return Tail{}, err
		}
	}
	m, found, err := p.lastMsg(ctx, p.cfg.tailSubject())
	if err != nil {
		return Tail{}, fmt.Errorf("stream %s tail: %w", p.cfg.Name, err)
	}
	if !found {
		// Empty or purged: the sequence goes on from the stream's state.
		if !p.cfg.origin {
			if last, err = p.LastSequence(ctx); err != nil {
				return Tail{}, err
			}
		}
		return Tail{Seq: last}, nil
	}
	t := Tail{Seq: m.seq, LastMsgSeq: m.seq, MsgID: m.msgID, Epoch: m.epoch}
	if !p.cfg.origin {
		if c, err := link.UnmarshalChange(m.data); err == nil {
			t.Found, t.Code, t.Revision = true, c.Record.Code, c.Record.Revision
		}
	} else if last > m.seq {
		t.Seq, t.MsgID = last, ""
	} else {
		t.Found = t.MsgID != ""
	}
	return t, nil
}

// LastFor returns the payload of the last message on the subject of code
// (Subject(code)), from the stream leader; found is false if there is
// none.
func (p *Publisher) LastFor(ctx context.Context, code string) (data []byte, found bool, err error) {
	m, found, err := p.lastMsg(ctx, p.cfg.Subject(code))
	if err != nil {
		return nil, false, fmt.Errorf("stream %s last of %s: %w", p.cfg.Name, code, err)
	}
	return m.data, found, nil
}

type storedMsg struct {
	seq   uint64
	msgID string
	epoch uint64
	data  []byte
}

// lastMsg reads the last message matching subject from the stream leader.
func (p *Publisher) lastMsg(ctx context.Context, subject string) (storedMsg, bool, error) {
	return p.getMsg(ctx, struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
}

// msgAt reads the message at seq from the stream leader; found is false
// if the stream does not hold it (never stored, or superseded by a newer
// message on its subject).
func (p *Publisher) msgAt(ctx context.Context, seq uint64) (storedMsg, bool, error) {
	return p.getMsg(ctx, struct {
		Seq uint64 `json:"seq"`
	}{seq})
}

// getMsg asks the stream leader for one message (a STREAM.MSG.GET request).
func (p *Publisher) getMsg(ctx context.Context, request any) (storedMsg, bool, error) {
	req, err := json.Marshal(request)
	if err != nil {
		return storedMsg{}, false, err
	}
	msg, err := p.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+p.cfg.Name, req)
	if err != nil {
		return storedMsg{}, false, err
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return storedMsg{}, false, err
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return storedMsg{}, false, nil
	case resp.Error != nil:
		return storedMsg{}, false, resp.Error
	case resp.Message == nil:
		return storedMsg{}, false, errors.New("empty answer")
	}
	m := storedMsg{seq: resp.Message.Seq, data: resp.Message.Data}
	if len(resp.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
		if err != nil {
			return storedMsg{}, false, fmt.Errorf("headers: %w", err)
		}
		m.msgID = h.Get(jetstream.MsgIDHeader)
		if v := h.Get(EpochHeader); v != "" {
			if m.epoch, err = strconv.ParseUint(v, 10, 64); err != nil {
				return storedMsg{}, false, fmt.Errorf("bad %s %q", EpochHeader, v)
			}
		}
	}
	return m, true, nil
}

// BarrierSpan is how many messages an epoch barrier takes in the stream,
// appended as one atomic batch (nats-server's default largest batch). A
// deposed leader's chain has at most BarrierSpan events in flight (the
// relay's MaxInFlight is bounded by it), each expecting a place before the
// barrier's end, so none of them can land after it: the one expecting the
// barrier's first place is refused, and so is every later one, which
// expects a place the barrier took.
const BarrierSpan = 1000

// ErrBarrierNotAtomic is what AppendBarrier reports (wrapped, with the
// barrier's sequence) when the stream does not take atomic batches and the
// barrier was appended as a single message: events a deposed leader had in
// flight behind the one it displaced can then land after it (see Chain).
var ErrBarrierNotAtomic = errors.New("the stream refuses atomic batches (allow_atomic: run `origin streams`): the barrier is one message")

// AppendBarrier appends the epoch barrier of a new leader (epoch) to the
// stream, expecting its last sequence to be lastSeq, and returns the
// barrier's sequence (its last message). The barrier is BarrierSpan
// messages on the barrier subject, committed as one atomic batch: after
// it, every event sent expecting an older tail is refused, and a chain
// that re-reads the tail finds the higher epoch and stops (ErrFenced).
// ErrWrongLastSequence if something landed after lastSeq: catch up and try
// again. On a stream without atomic batches (created before them, or a
// server older than 2.12) it appends one message and says so with
// ErrBarrierNotAtomic alongside the sequence.
func (p *Publisher) AppendBarrier(ctx context.Context, epoch, lastSeq uint64) (uint64, error) {
	seq, err := p.appendBarrierBatch(ctx, epoch, lastSeq)
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrCodeAtomicPublishDisabled {
		return seq, err
	}
	msg := p.barrierMsg(epoch)
	ack, err := p.js.PublishMsg(ctx, msg,
		jetstream.WithMsgID(epochMsgID(barrierToken, 0, epoch)),
		jetstream.WithExpectStream(p.cfg.Name),
		jetstream.WithExpectLastSequence(lastSeq))
	if err != nil {
		return 0, publishErr(barrierToken, epoch, err)
	}
	return ack.Sequence, fmt.Errorf("stream %s barrier at %d: %w", p.cfg.Name, ack.Sequence, ErrBarrierNotAtomic)
}

// jsErrCodeAtomicPublishDisabled is JetStream's "atomic publish is
// disabled" (the stream lacks allow_atomic).
const jsErrCodeAtomicPublishDisabled jetstream.ErrorCode = 10174

func (p *Publisher) barrierMsg(epoch uint64) *nats.Msg {
	e := strconv.FormatUint(epoch, 10)
	return &nats.Msg{
		Subject: p.cfg.BarrierSubject(),
		Data:    []byte(`{"epoch":` + e + `}`),
		Header:  nats.Header{EpochHeader: []string{e}},
	}
}

// appendBarrierBatch sends the barrier's BarrierSpan messages as one
// atomic batch: the first carries the expectations (the only place a batch
// may), the last the commit and the barrier's Nats-Msg-Id; the server
// checks and stores them together at the commit, or none of them.
func (p *Publisher) appendBarrierBatch(ctx context.Context, epoch, lastSeq uint64) (uint64, error) {
	nc := p.js.Conn()
	nanos := time.Now().UnixNano()
	id := fmt.Sprintf("linkpop-epoch-%d-%d", epoch, nanos)
	for i := 1; i < BarrierSpan; i++ {
		m := p.barrierMsg(epoch)
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i))
		if i == 1 {
			m.Header.Set(jetstream.ExpectedStreamHeader, p.cfg.Name)
			m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(lastSeq, 10))
		}
		if err := nc.PublishMsg(m); err != nil {
			return 0, publishErr(barrierToken, epoch, err)
		}
	}
	m := p.barrierMsg(epoch)
	m.Header.Set("Nats-Batch-Id", id)
	m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(BarrierSpan))
	m.Header.Set("Nats-Batch-Commit", "1")
	// A Nats-Msg-Id of its own: a batch holding one the stream has seen
	// within its dedup window fails whole, so a takeover appending a
	// second barrier of its epoch (after a lost answer: the first is then
	// the tail) must not reuse the first one's. A retry of a batch that
	// landed is refused by its first message's expectation instead.
	m.Header.Set(jetstream.MsgIDHeader, epochMsgID(barrierToken, uint64(nanos), epoch))
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, publishErr(barrierToken, epoch, err)
	}
	return ack.Sequence, nil
}

// fillEvery is how many of Fill's events go out per acknowledged one.
const fillEvery = 1024

// fillInFlight is how many of Fill's acknowledged publishes may be
// awaited at once: at most fillEvery × fillInFlight events are
// unacknowledged, far below the server's queue of 100,000 messages per
// stream, past which it drops what comes in.
const fillInFlight = 4

// FillUnacked is the most events Fill has sent and not yet seen acknowledged.
const FillUnacked = fillEvery * fillInFlight

// Fill appends n events, event(i) giving the i-th, to the stream as fast
// as one connection allows. It is for loaders that fill a stream once
// (the bench harness), whose events are each a distinct code's only
// event: their order does not matter and they carry neither Nats-Msg-Id
// nor an expectation, so nothing is deduplicated and a failure is not
// repaired (the caller loads again). All but one in fillEvery are plain
// core publishes without headers or acks; the last of each group is a
// JetStream publish, and its ack proves that the group was stored too (a
// single server's stream takes one connection's messages in order). It
// returns the stream's last sequence, and an error unless the stream grew
// by exactly n.
func (p *Publisher) Fill(ctx context.Context, n int, event func(i int) (code string, data []byte, err error)) (uint64, error) {
	before, err := p.LastSequence(ctx)
	if err != nil {
		return 0, err
	}
	nc := p.js.Conn()
	var acks []jetstream.PubAckFuture
	settle := func(keep int) error {
		for len(acks) > keep {
			select {
			case <-acks[0].Ok():
			case err := <-acks[0].Err():
				return fmt.Errorf("fill: %w", err)
			case <-ctx.Done():
				return fmt.Errorf("fill: %w", ctx.Err())
			}
			acks = acks[1:]
		}
		return nil
	}
	for i := range n {
		code, data, err := event(i)
		if err != nil {
			return 0, fmt.Errorf("fill: %w", err)
		}
		subj := p.cfg.Subject(code)
		if (i+1)%fillEvery != 0 && i != n-1 {
			if err := nc.Publish(subj, data); err != nil {
				return 0, fmt.Errorf("fill: %w", err)
			}
			continue
		}
		if err := settle(fillInFlight - 1); err != nil {
			return 0, err
		}
		f, err := p.js.PublishAsync(subj, data, jetstream.WithExpectStream(p.cfg.Name))
		if err != nil {
			return 0, fmt.Errorf("fill: %w", err)
		}
		acks = append(acks, f)
	}
	if err := settle(0); err != nil {
		return 0, err
	}
	last, err := p.LastSequence(ctx)
	if err != nil {
		return 0, err
	}
	if last != before+uint64(n) {
		return last, fmt.Errorf("fill: the stream's last sequence went from %d to %d, not by %d: events were dropped", before, last, n)
	}
	return last, nil
}
