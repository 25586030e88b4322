package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ClickStreamConfig describes the click stream: every edge's click batches,
// in the order each edge sealed them.
type ClickStreamConfig struct {
	// Name of the JetStream stream. The default is "LINKPOP_CLICKS".
	Name string
	// SubjectPrefix: an edge's batches go to "<prefix>.<edge>". The default
	// is "linkpop.clicks".
	SubjectPrefix string
	// Replicas is the stream's replication factor. Production clusters
	// should use 3. The default is 1.
	Replicas int
	// Memory keeps the stream in memory instead of on disk. The default
	// (false) is file storage.
	Memory bool
	// MaxAge is how long a batch stays in the stream: the longest a
	// collector may be down and still catch up. The default is 7 days.
	MaxAge time.Duration
	// DuplicateWindow is how long JetStream remembers batch ids to drop
	// re-sent batches (the collector also refuses them by sequence). The
	// default is 10 minutes.
	DuplicateWindow time.Duration
	// Regions are the JetStream domains of the regions whose click
	// streams this one sources (see RegionConfig): their batches arrive
	// here, in each edge's order, once the region's leaf link is up. The
	// default is none.
	Regions []string
}

func (c ClickStreamConfig) withDefaults() ClickStreamConfig {
	if c.Name == "" {
		c.Name = "LINKPOP_CLICKS"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "linkpop.clicks"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	return c
}

// Validate reports every bad field at once.
func (c ClickStreamConfig) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("click stream: Replicas %d outside [1, 5]", c.Replicas))
	}
	if c.MaxAge < 0 {
		errs = append(errs, errors.New("click stream: MaxAge must not be negative"))
	}
	if c.DuplicateWindow < 0 {
		errs = append(errs, errors.New("click stream: DuplicateWindow must not be negative"))
	}
	for _, d := range c.Regions {
		if !domainRE.MatchString(d) {
			errs = append(errs, fmt.Errorf("click stream: region %q must be 1-64 of [A-Za-z0-9_-]", d))
		}
	}
	return errors.Join(errs...)
}

// Subject is the subject that carries the batches of one edge.
func (c ClickStreamConfig) Subject(edge string) string {
	return c.withDefaults().SubjectPrefix + "." + edge
}

// ClickMsgID is the Nats-Msg-Id of a click batch: re-sending the same batch
// (after a lost ack, or from the edge's spill) is dropped by the stream.
func ClickMsgID(edge, instance string, seq uint64) string {
	return edge + ":" + instance + ":" + strconv.FormatUint(seq, 10)
}

func (c ClickStreamConfig) jsConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "linkpop click stream: click batches from every edge",
		Subjects:    []string{c.SubjectPrefix + ".*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		Storage:     storageOf(c.Memory),
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		MaxMsgSize:  1 << 20,
		AllowDirect: true,
		Sources:     c.regionSources(),
	}
}

// EnsureClickStream creates the click stream, or updates it to this
// configuration if it exists. With Regions it first waits, up to 10 s
// each (within ctx), for every region's JetStream to answer, so that the
// sources start at once rather than after nats-server's retry backoff; a
// region that does not answer is sourced anyway, and its batches follow
// when its link comes up.
func EnsureClickStream(ctx context.Context, js jetstream.JetStream, cfg ClickStreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range cfg.Regions {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = WaitDomain(wctx, js.Conn(), d)
		cancel()
	}
	return ensureStream(ctx, js, cfg.jsConfig())
}
