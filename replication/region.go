package replication

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A region away from the origin runs its own NATS server (or cluster) as a
// leaf node of the origin's cluster, with its own JetStream domain, and
// keeps there:
//
//   - a mirror of the change stream, with the same name, so that its
//     edges read the stream from nearby and keep reading (what the
//     mirror holds) while the link to the origin's region is down; the
//     mirror catches up by itself when it heals;
//   - a regional click stream, with the click stream's name, on the
//     subjects "<click prefix>.<domain>.<edge>", where the region's edges
//     publish their batches (acknowledged by the region, even cut off);
//     the origin's click stream sources it (ClickStreamConfig.Regions),
//     store-and-forward, renaming the subjects back to
//     "<click prefix>.<edge>".
//
// The subjects differ from the hub's so that no publish is stored twice
// (streams of two domains with the same subjects both capture what is
// published while the leaf link is up).

// DefaultHubDomain is the JetStream domain of the origin's cluster.
const DefaultHubDomain = "hub"

// RegionConfig describes a region's streams.
type RegionConfig struct {
	// Domain is the region's JetStream domain (its leaf servers'
	// jetstream { domain: ... }), one subject token. Required.
	Domain string
	// HubDomain is the JetStream domain of the origin's cluster. The
	// default is DefaultHubDomain ("hub").
	HubDomain string
	// Links is the origin's change stream; the region's mirror has its
	// name. The defaults are StreamConfig's.
	Links StreamConfig
	// Replicas is the replication factor of the region's streams. The
	// default is 1 (one leaf server per region); 3 for a leaf cluster.
	Replicas int
	// Clicks is the origin's click stream; the regional one has its
	// name, MaxAge and duplicate window. The defaults are
	// ClickStreamConfig's.
	Clicks ClickStreamConfig
}

var domainRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c RegionConfig) withDefaults() RegionConfig {
	if c.HubDomain == "" {
		c.HubDomain = DefaultHubDomain
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	c.Links = c.Links.withDefaults()
	c.Clicks = c.Clicks.withDefaults()
	return c
}

// Validate reports every bad field at once.
func (c RegionConfig) Validate() error {
	var errs []error
	if !domainRE.MatchString(c.Domain) {
		errs = append(errs, fmt.Errorf("region: Domain %q must be 1-64 of [A-Za-z0-9_-]", c.Domain))
	}
	if c.HubDomain != "" && !domainRE.MatchString(c.HubDomain) {
		errs = append(errs, fmt.Errorf("region: HubDomain %q must be 1-64 of [A-Za-z0-9_-]", c.HubDomain))
	}
	if c.Domain != "" && c.Domain == c.withDefaults().HubDomain {
		errs = append(errs, errors.New("region: Domain must differ from HubDomain"))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("region: Replicas %d outside [1, 5]", c.Replicas))
	}
	if err := c.Links.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Clicks.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ClickStream is the region's click stream as its edges publish to it
// (edge -click-stream and -click-subject): the click stream's name, the
// subject prefix "<click prefix>.<domain>".
func (c RegionConfig) ClickStream() ClickStreamConfig {
	c = c.withDefaults()
	cs := c.Clicks
	cs.SubjectPrefix = regionClickPrefix(cs.SubjectPrefix, c.Domain)
	cs.Replicas = c.Replicas
	cs.Regions = nil
	return cs
}

func regionClickPrefix(prefix, domain string) string { return prefix + "." + domain }

// mirrorConfig is the region's mirror of the change stream: same name,
// same sequences, one message per subject like the stream, no subjects
// of its own (a mirror takes no publishes).
func (c RegionConfig) mirrorConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	sc := c.Links.jsConfig()
	sc.Description = "linkpop change stream, mirrored from domain " + c.HubDomain
	sc.Subjects = nil
	sc.Duplicates = 0
	sc.AllowAtomicPublish = false // a mirror takes no publishes
	sc.Replicas = c.Replicas
	sc.Mirror = &jetstream.StreamSource{Name: c.Links.Name, Domain: c.HubDomain}
	return sc
}

// EnsureRegion is the operator's step for one region, run against the
// region's own servers (nc connects to a leaf server of the region with
// the operator's permissions): it creates or updates the region's mirror
// of the change stream and its click stream. It first waits until the
// hub's JetStream answers through the leaf link (ctx bounds the wait): a
// mirror created in the moment after the leaf connects can sit for about
// 40 s without copying anything (nats-server's mirror setup timeout and
// retry backoff; research/ha-regions.md §6).
func EnsureRegion(ctx context.Context, nc *nats.Conn, cfg RegionConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if err := WaitDomain(ctx, nc, cfg.HubDomain); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := ensureStream(ctx, js, cfg.mirrorConfig()); err != nil {
		return err
	}
	_, err = EnsureClickStream(ctx, js, cfg.ClickStream())
	return err
}

// WaitDomain waits until the JetStream of domain answers an account info
// request over nc ($JS.<domain>.API.INFO), polling, until ctx is done.
func WaitDomain(ctx context.Context, nc *nats.Conn, domain string) error {
	subj := "$JS." + domain + ".API.INFO"
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := nc.RequestWithContext(rctx, subj, nil)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("jetstream domain %s not reachable: %w (last: %v)", domain, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// regionSources are the sources of the origin's click stream: every
// region's click stream, its subjects renamed back to the hub's.
func (c ClickStreamConfig) regionSources() []*jetstream.StreamSource {
	c = c.withDefaults()
	var out []*jetstream.StreamSource
	for _, d := range c.Regions {
		out = append(out, &jetstream.StreamSource{
			Name:   c.Name,
			Domain: d,
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      regionClickPrefix(c.SubjectPrefix, d) + ".*",
				Destination: c.SubjectPrefix + ".{{wildcard(1)}}",
			}},
		})
	}
	return out
}
