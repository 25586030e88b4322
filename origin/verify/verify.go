// Package verify compares edges' replicas with the origin by digest, over
// HTTP only: the origin's GET /v1/digest (an API key with links:read) and
// each edge's admin GET /digest. It is what `origin verify` runs.
//
// A digest (link.Digest) splits the link table into 256 buckets by code.
// Writes in flight make an edge differ from the origin for a moment, so
// verify compares in rounds for up to Config.Wait and calls a bucket
// diverged only if it differed in every round: a bucket that matched once
// was consistent at that moment, and a true divergence (a missed change,
// a record the origin does not hold) never matches until it is repaired.
// That holds under a steady write load too, where no single round may
// match as a whole.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
)

// Defaults for the zero values of Config.
const (
	DefaultOriginURL = "http://127.0.0.1:8081"
	DefaultWait      = 10 * time.Second
	DefaultInterval  = 500 * time.Millisecond
	// MaxDetailBuckets bounds the buckets listed code by code per edge.
	MaxDetailBuckets = 16
	// MaxDetailCodes bounds the differing codes reported per edge.
	MaxDetailCodes = 200
)

// maxBucketBody bounds an answer (a bucket listing is the largest).
const maxBucketBody = 64 << 20

// Config configures Run.
type Config struct {
	// OriginURL is the origin API base, for example
	// "http://127.0.0.1:8081". The default is DefaultOriginURL.
	OriginURL string
	// OriginKey is an origin API key with scope links:read (or admin).
	// Required.
	OriginKey string
	// Edges are the bases of the edges' admin listeners, for example
	// "http://127.0.0.1:9080". At least one is required.
	Edges []string
	// Wait bounds how long Run keeps comparing while an edge differs; an
	// edge compared only once by then gets one more round, within a second
	// Wait, so a diverged verdict always rests on two comparisons. The
	// default is 10s.
	Wait time.Duration
	// Interval is the pause between rounds. The default is 500ms.
	Interval time.Duration
	// Detail makes Run list, for each edge that did not match, the codes
	// whose revision differs in its differing buckets (at most
	// MaxDetailBuckets buckets and MaxDetailCodes codes). The default is
	// off.
	Detail bool
	// Client sends the requests. The default has a 30s timeout.
	Client *http.Client
}

func (c Config) withDefaults() Config {
	if c.OriginURL == "" {
		c.OriginURL = DefaultOriginURL
	}
	c.OriginURL = strings.TrimRight(c.OriginURL, "/")
	for i, e := range c.Edges {
		c.Edges[i] = strings.TrimRight(e, "/")
	}
	if c.Wait == 0 {
		c.Wait = DefaultWait
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return c
}

// Validate reports every bad field at once.
func (c *Config) Validate() error {
	var errs []error
	base := func(field, v string) {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q: want an http or https base URL", field, v))
		}
	}
	if c.OriginURL != "" {
		base("OriginURL", c.OriginURL)
	}
	if c.OriginKey == "" {
		errs = append(errs, errors.New("OriginKey is required (an API key with links:read)"))
	}
	if len(c.Edges) == 0 {
		errs = append(errs, errors.New("Edges: at least one edge admin URL is required"))
	}
	for _, e := range c.Edges {
		base("Edges", e)
	}
	if c.Wait < 0 {
		errs = append(errs, fmt.Errorf("Wait %v must not be negative", c.Wait))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("Interval %v must not be negative", c.Interval))
	}
	return errors.Join(errs...)
}

// State is an edge's verdict.
type State string

const (
	// OK: every bucket matched the origin in at least one round.
	OK State = "ok"
	// Diverged: some buckets differed in every round although the edge
	// had applied the whole stream and the origin had published every
	// change: resync or repair it.
	Diverged State = "diverged"
	// Lagging: some buckets differed in every round, but the edge was
	// behind the stream or the origin had unpublished changes, so they
	// may still converge.
	Lagging State = "lagging"
	// Unreachable: the edge's digest could not be read in any round.
	Unreachable State = "unreachable"
)

// Origin is what the origin's digest said in the last round.
type Origin struct {
	URL         string
	Links       uint64
	Sum         string
	Revision    uint64
	Unpublished int
}

// Edge is one edge's verdict and the state it was last seen in.
type Edge struct {
	URL   string
	Node  string
	State State
	// Links, Applied, StreamLast and Lag are from the edge's last digest.
	Links, Applied, StreamLast, Lag uint64
	// Rounds counts the digests compared.
	Rounds int
	// Buckets are the buckets that differed in every round.
	Buckets []int
	// Codes are the differing codes in Buckets, with Config.Detail.
	Codes []CodeDiff
	// Err is why the edge was unreachable, or why Detail failed.
	Err error
}

// CodeDiff is one code whose revision differs. A revision of 0 means the
// side does not hold the code.
type CodeDiff struct {
	Code         string
	Bucket       int
	Origin, Edge uint64
}

// Report is the outcome of Run.
type Report struct {
	Origin Origin
	Edges  []Edge
}

// OK reports whether every edge matched the origin.
func (r *Report) OK() bool {
	for _, e := range r.Edges {
		if e.State != OK {
			return false
		}
	}
	return true
}

// Run compares every edge with the origin until each matched or Wait has
// passed, and reports. An error means the origin could not be read (an
// unreachable edge is a verdict, not an error) or ctx ended.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v, err := newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	rep := &Report{Origin: Origin{URL: cfg.OriginURL}}
	for _, e := range cfg.Edges {
		rep.Edges = append(rep.Edges, Edge{URL: e, State: Unreachable})
	}
	deadline := time.Now().Add(cfg.Wait)
	read := false // the origin's digest was read at least once
	for {
		od, o, err := v.originDigest(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil {
			read = true
			rep.Origin.Links, rep.Origin.Sum, rep.Origin.Revision, rep.Origin.Unpublished = o.Links, o.Sum, o.Revision, o.Unpublished
			v.round(ctx, rep, &od)
			if rep.OK() {
				break
			}
		}
		// Past Wait, an edge that differs but was compared only once gets
		// a second round (within one more Wait): one differing digest may
		// be a change in flight, and a verdict needs two.
		if now := time.Now(); !now.Before(deadline) && (!read || !needsSecondRound(rep) || !now.Before(deadline.Add(cfg.Wait))) {
			if !read {
				return nil, fmt.Errorf("origin digest: %w", err)
			}
			break
		}
		t := time.NewTimer(cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	for i := range rep.Edges {
		e := &rep.Edges[i]
		if e.State == OK || e.Rounds == 0 {
			continue
		}
		e.State = Diverged
		if e.Lag > 0 || rep.Origin.Unpublished > 0 {
			e.State = Lagging
		}
		if cfg.Detail {
			e.Codes, e.Err = v.detail(ctx, e)
		}
	}
	return rep, nil
}

type verifier struct {
	cfg    Config
	origin *client.Client
	edges  map[string]*client.Client // by admin URL
}

func newVerifier(cfg Config) (*verifier, error) {
	ccfg := client.Config{BaseURL: cfg.OriginURL, Key: cfg.OriginKey, HTTPClient: cfg.Client, MaxAttempts: 1, MaxResponseBody: maxBucketBody, UserAgent: "linkpop-verify"}
	oc, err := client.New(ccfg)
	if err != nil {
		return nil, err
	}
	v := &verifier{cfg: cfg, origin: oc, edges: map[string]*client.Client{}}
	for _, e := range cfg.Edges {
		ccfg.BaseURL, ccfg.Key = e, ""
		if v.edges[e], err = client.New(ccfg); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// round compares each edge that has not matched yet with od.
func (v *verifier) round(ctx context.Context, rep *Report, od *link.Digest) {
	for i := range rep.Edges {
		e := &rep.Edges[i]
		if e.State == OK {
			continue
		}
		j, err := v.edges[e.URL].EdgeDigest(ctx)
		if err != nil {
			if e.Rounds == 0 {
				e.Err = err
			}
			continue
		}
		d, err := j.Digest()
		if err != nil {
			if e.Rounds == 0 {
				e.Err = err
			}
			continue
		}
		e.Err = nil
		e.Node, e.Links, e.Applied, e.StreamLast, e.Lag = j.Node, j.Links, j.Applied, j.StreamLast, j.Lag
		diff := od.Diff(&d)
		if e.Rounds == 0 {
			e.Buckets = diff
		} else {
			e.Buckets = slices.DeleteFunc(e.Buckets, func(b int) bool { return !slices.Contains(diff, b) })
		}
		e.Rounds++
		if len(e.Buckets) == 0 {
			e.State = OK
		}
	}
}

// originDigest reads the origin's digest.
func (v *verifier) originDigest(ctx context.Context) (link.Digest, client.Digest, error) {
	o, err := v.origin.Digest(ctx)
	if err != nil {
		return link.Digest{}, o, err
	}
	d, err := o.Digest()
	return d, o, err
}

// detail lists the codes that differ in e's differing buckets.
func (v *verifier) detail(ctx context.Context, e *Edge) ([]CodeDiff, error) {
	var out []CodeDiff
	for n, b := range e.Buckets {
		if n == MaxDetailBuckets || len(out) >= MaxDetailCodes {
			break
		}
		ob, err := v.origin.DigestBucket(ctx, b)
		if err != nil {
			return out, fmt.Errorf("origin bucket %d: %w", b, err)
		}
		eb, err := v.edges[e.URL].EdgeDigestBucket(ctx, b)
		if err != nil {
			return out, fmt.Errorf("edge bucket %d: %w", b, err)
		}
		out = append(out, diffEntries(b, ob.Links, eb.Links)...)
	}
	if len(out) > MaxDetailCodes {
		out = out[:MaxDetailCodes]
	}
	return out, nil
}

// diffEntries merges two code-ordered listings of bucket b and returns
// the codes whose revisions differ.
func diffEntries(b int, origin, edge []link.DigestEntry) []CodeDiff {
	revs := map[string]*CodeDiff{}
	for _, e := range origin {
		revs[e.Code] = &CodeDiff{Code: e.Code, Bucket: b, Origin: e.Revision}
	}
	for _, e := range edge {
		if d, ok := revs[e.Code]; ok {
			d.Edge = e.Revision
		} else {
			revs[e.Code] = &CodeDiff{Code: e.Code, Bucket: b, Edge: e.Revision}
		}
	}
	var out []CodeDiff
	for _, d := range revs {
		if d.Origin != d.Edge {
			out = append(out, *d)
		}
	}
	slices.SortFunc(out, func(x, y CodeDiff) int { return strings.Compare(x.Code, y.Code) })
	return out
}

// Write prints the report: the origin, then one line per edge with its
// verdict, the buckets and codes that differ, and how to repair them.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	o := r.Origin
	fmt.Fprintf(&b, "origin %s: %d links, revision %d, sum %s", o.URL, o.Links, o.Revision, o.Sum)
	if o.Unpublished > 0 {
		fmt.Fprintf(&b, ", %d changes not yet published", o.Unpublished)
	}
	b.WriteString("\n")
	for _, e := range r.Edges {
		name := e.URL
		if e.Node != "" {
			name = e.Node + " " + e.URL
		}
		fmt.Fprintf(&b, "%-11s %s", e.State, name)
		if e.State == Unreachable {
			fmt.Fprintf(&b, ": %v\n", e.Err)
			continue
		}
		fmt.Fprintf(&b, ": %d links, applied %d, lag %d", e.Links, e.Applied, e.Lag)
		if e.State == OK {
			b.WriteString("\n")
			continue
		}
		fmt.Fprintf(&b, "; %d buckets differ in all %d rounds: %s\n", len(e.Buckets), e.Rounds, bucketList(e.Buckets, 32))
		for _, c := range e.Codes {
			fmt.Fprintf(&b, "            bucket %d: %s: origin %s, edge %s\n", c.Bucket, c.Code, revText(c.Origin), revText(c.Edge))
		}
		if e.Err != nil {
			fmt.Fprintf(&b, "            detail: %v\n", e.Err)
		}
		switch e.State {
		case Lagging:
			b.WriteString("            still catching up; run verify again later\n")
		case Diverged:
			q := make([]string, 0, len(e.Buckets))
			for _, bk := range e.Buckets {
				q = append(q, "bucket="+strconv.Itoa(bk))
			}
			if len(e.Buckets) <= 32 {
				fmt.Fprintf(&b, "            repair: curl -X POST '%s/repair?%s'\n", e.URL, strings.Join(q, "&"))
			}
			fmt.Fprintf(&b, "            or replay the stream: curl -X POST %s/resync\n", e.URL)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func revText(rev uint64) string {
	if rev == 0 {
		return "absent"
	}
	return "revision " + strconv.FormatUint(rev, 10)
}

func bucketList(bs []int, max int) string {
	parts := make([]string, 0, min(len(bs), max))
	for i, b := range bs {
		if i == max {
			parts = append(parts, fmt.Sprintf("... (%d more)", len(bs)-max))
			break
		}
		parts = append(parts, strconv.Itoa(b))
	}
	return strings.Join(parts, " ")
}

// needsSecondRound reports whether an edge that answered differs from the
// origin after a single comparison.
func needsSecondRound(rep *Report) bool {
	for _, e := range rep.Edges {
		if e.State != OK && e.Rounds == 1 {
			return true
		}
	}
	return false
}
