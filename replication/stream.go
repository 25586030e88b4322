package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig describes the change stream.
type StreamConfig struct {
	// Name of the JetStream stream. The default is "LINKPOP_LINKS".
	Name string
	// SubjectPrefix: each link's events go to "<prefix>.<code>". Codes are
	// valid single subject tokens ([A-Za-z0-9_-]). The default is
	// "linkpop.links".
	SubjectPrefix string
	// Replicas is the stream's replication factor. Production clusters
	// should use 3. The default is 1.
	Replicas int
	// Memory keeps the stream in memory instead of on disk. The default
	// (false) is file storage.
	Memory bool
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values to
	// drop re-published events. The default is 2 minutes.
	DuplicateWindow time.Duration
	// IdemTTL, on the origin stream only (OriginStream), is the age at
	// which the server drops an idempotency record (Nats-TTL). The
	// default is 49h.
	IdemTTL time.Duration

	// origin marks the origin's own stream (OriginStream): API keys and
	// idempotency records under "<prefix>.key.<id>" and
	// "<prefix>.idem.<hash>", never read by edges.
	origin bool
}

// OriginStream is the configuration of the origin's own stream, which
// carries what a standby origin needs besides the links: API keys (their
// hashes, never a secret) and idempotency records. It is replicated and
// stored like links (its Replicas and Memory) and, like it, keeps the
// newest message per subject. Edges never read it.
func OriginStream(links StreamConfig, idemTTL time.Duration) StreamConfig {
	return StreamConfig{
		Name:          "LINKPOP_ORIGIN",
		SubjectPrefix: "linkpop.origin",
		Replicas:      links.Replicas,
		Memory:        links.Memory,
		IdemTTL:       idemTTL,
		origin:        true,
	}
}

// Tokens of the origin stream's subjects.
const (
	originKeyToken  = "key."
	originIdemToken = "idem."
)

// OriginKeyCode is the "code" (subject tail) of an API key's event on the
// origin stream.
func OriginKeyCode(id string) string { return originKeyToken + id }

// OriginIdemCode is the "code" (subject tail) of an idempotency record's
// event on the origin stream; hash is a hex digest of the record's id.
func OriginIdemCode(hash string) string { return originIdemToken + hash }

// barrierToken is the subject token of the epoch barrier. '~' is never
// part of a link code, so the barrier cannot collide with a link.
const barrierToken = "~epoch"

// BarrierSubject is the subject of the epoch barrier a new origin leader
// appends when it takes over (see Publisher.AppendBarrier). Consumers skip
// it.
func (c StreamConfig) BarrierSubject() string {
	return c.withDefaults().SubjectPrefix + "." + barrierToken
}

// tailSubject is the filter that matches every message of the stream.
func (c StreamConfig) tailSubject() string {
	c = c.withDefaults()
	if c.origin {
		return c.SubjectPrefix + ".>"
	}
	return c.SubjectPrefix + ".*"
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.Name == "" {
		c.Name = "LINKPOP_LINKS"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "linkpop.links"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.origin && c.IdemTTL == 0 {
		c.IdemTTL = 49 * time.Hour
	}
	return c
}

// Validate reports every bad field at once.
func (c StreamConfig) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("stream: Replicas %d outside [1, 5]", c.Replicas))
	}
	if c.DuplicateWindow < 0 {
		errs = append(errs, errors.New("stream: DuplicateWindow must not be negative"))
	}
	if c.IdemTTL != 0 && c.IdemTTL < time.Second {
		errs = append(errs, errors.New("stream: IdemTTL must be at least 1s"))
	}
	return errors.Join(errs...)
}

// Subject is the subject that carries the events of one code.
func (c StreamConfig) Subject(code string) string {
	return c.withDefaults().SubjectPrefix + "." + code
}

// MsgID is the Nats-Msg-Id of the event that carries a link's revision: a
// re-publish of the same event is dropped by the stream's dedup window.
func MsgID(code string, revision uint64) string {
	return code + ":" + strconv.FormatUint(revision, 10)
}

// jsConfig is the JetStream configuration of the change stream. It keeps
// one message per subject, the newest, so the stream is a compacted
// snapshot of the link table: a fresh edge replays only live state. A
// disabled link's last event is its tombstone and is never dropped.
func (c StreamConfig) jsConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	if c.origin {
		return jetstream.StreamConfig{
			Name:              c.Name,
			Description:       "linkpop origin state: API key hashes and idempotency records, for standby origins",
			Subjects:          []string{c.SubjectPrefix + ".>"},
			Retention:         jetstream.LimitsPolicy,
			MaxMsgsPerSubject: 1,
			Discard:           jetstream.DiscardOld,
			Storage:           storageOf(c.Memory),
			Replicas:          c.Replicas,
			Duplicates:        c.DuplicateWindow,
			MaxMsgSize:        64 << 10,
			DenyDelete:        true,
			// Idempotency records expire by Nats-TTL. No
			// SubjectDeleteMarkerTTL: a server-written marker would
			// move the last sequence under the relay's chain.
			AllowMsgTTL: true,
			// The epoch barrier is an atomic batch (AppendBarrier).
			AllowAtomicPublish: true,
		}
	}
	return jetstream.StreamConfig{
		Name:              c.Name,
		Description:       "linkpop change stream: latest event per short code",
		Subjects:          []string{c.SubjectPrefix + ".*"},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		Storage:           storageOf(c.Memory),
		Replicas:          c.Replicas,
		Duplicates:        c.DuplicateWindow,
		MaxMsgSize:        64 << 10,
		DenyDelete:        true,
		AllowDirect:       true,
		// The epoch barrier is an atomic batch (AppendBarrier).
		AllowAtomicPublish: true,
	}
}

// EnsureStream creates the change stream, or updates it to this
// configuration if it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return ensureStream(ctx, js, cfg.jsConfig())
}

// ensureStream creates the stream sc describes, or updates it to sc.
func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", sc.Name, err)
	}
	return s, nil
}

// ErrStreamMissing means a stream does not exist and this client may not
// create it: streams belong to the operator role (natsauth.Operator),
// whose step `origin streams` creates and updates them. A component with
// its own role's credentials retries until the operator has run it.
var ErrStreamMissing = errors.New("stream missing: only the operator role creates streams (run `origin streams` with operator credentials)")

// createTimeout bounds the create attempt on a missing stream: a client
// without the operator's permission gets no answer (the server drops the
// request as a permissions violation) and waits this long.
const createTimeout = 2 * time.Second

// openStream returns the stream sc names. If it does not exist it tries
// to create it with sc, which only a client with the operator's
// permissions can (the embedded dev server's origin, tests); any other
// gets ErrStreamMissing. It never changes an existing stream: that is the
// operator's step (EnsureStream, `origin streams`).
func openStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, sc.Name)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	s, err = js.CreateStream(cctx, sc)
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
		return js.Stream(ctx, sc.Name)
	}
	return nil, fmt.Errorf("stream %s: %w (create: %v)", sc.Name, ErrStreamMissing, err)
}

// EnsureStreams is the operator's step: it creates the change stream, the
// origin's stream (OriginStream) and the click stream, or updates them to
// these configurations. It needs the operator role's permissions
// (natsauth.Operator).
func EnsureStreams(ctx context.Context, nc *nats.Conn, links, origin StreamConfig, clicks ClickStreamConfig) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := EnsureStream(ctx, js, links); err != nil {
		return err
	}
	if _, err := EnsureStream(ctx, js, origin); err != nil {
		return err
	}
	_, err = EnsureClickStream(ctx, js, clicks)
	return err
}

// storageOf is the JetStream storage for a stream kept in memory or not.
func storageOf(memory bool) jetstream.StorageType {
	if memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}
