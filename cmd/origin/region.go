package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/cmd/internal/natsflag"
	"github.com/linkpop/linkpop/replication"
)

// runRegion is `origin region`: the operator's step for one region, run
// against the region's leaf servers with the operator role's
// credentials. It creates or updates the region's mirror of the change
// stream and its click stream (replication.EnsureRegion), after the
// hub's JetStream answers through the leaf link. It returns the exit
// code: 0 done, 1 failed, 2 bad usage.
func runRegion(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("origin region", flag.ContinueOnError)
	domain := fs.String("domain", "", "the region's JetStream `domain` (its leaf servers' jetstream { domain }; required)")
	hub := fs.String("hub-domain", replication.DefaultHubDomain, "JetStream `domain` of the origin's cluster")
	natsFlags := natsflag.Register(fs, "nats", "LINKPOP_NATS", defaultNATS)
	stream := fs.String("stream", "LINKPOP_LINKS", "change stream `name` (the mirror's too)")
	replicas := fs.Int("replicas", 1, "replication factor of the region's streams (3 for a leaf cluster)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up when the region's servers or the hub are not reachable within this time")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: origin region -domain D -nats URLS -nats-user operator [flags]\n\nCreates or updates a region's mirror of the change stream and its click stream\non the region's leaf servers. Its edges then run with -nats <leaf> and\n-click-subject linkpop.clicks.D, and `origin streams -regions` sources its clicks.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "origin region: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := cli.NewLogger(*logLevel, "text")
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin region:", err)
		return 2
	}
	nc, err := natsFlags.Config(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin region:", err)
		return 2
	}
	cfg := replication.RegionConfig{Domain: *domain, HubDomain: *hub, Links: replication.StreamConfig{Name: *stream}, Replicas: *replicas}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "origin region:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if nc.Name == "" {
		nc.Name = "linkpop-origin-region"
	}
	conn, err := replication.Dial(ctx, nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin region:", err)
		return 1
	}
	defer conn.Close()
	if err := replication.EnsureRegion(ctx, conn, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "origin region:", err)
		return 1
	}
	fmt.Printf("region %s ready: edges use -click-subject %s\n", *domain, cfg.ClickStream().SubjectPrefix)
	return 0
}
