package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/origin"
	"github.com/linkpop/linkpop/origin/verify"
	"github.com/linkpop/linkpop/tlsconf"
)

// runVerify is `origin verify`: it compares the edges' replicas with the
// origin by digest and returns the exit code: 0 when every edge matches,
// 1 when one diverged, lags or is unreachable, 2 for bad usage.
func runVerify(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("origin verify", flag.ContinueOnError)
	api := fs.String("api", verify.DefaultOriginURL, "origin API base `URLs`, comma separated: with several (HA), the leader's is used")
	key := fs.String("key", "", "origin API `key` with links:read (default: read from -key-file, else $"+adminKeyEnv+")")
	keyFile := fs.String("key-file", "", "`file` holding the API key, for example DATA/admin.key")
	edges := fs.String("edges", "http://127.0.0.1:9080,http://127.0.0.1:9082", "edge admin listener `URLs`, comma separated")
	wait := fs.Duration("wait", verify.DefaultWait, "how long to keep comparing while replication may be in flight")
	interval := fs.Duration("interval", verify.DefaultInterval, "pause between comparison rounds")
	caFile := fs.String("ca", "", "PEM `file` of the CAs an https origin is verified against (default the system's)")
	detail := fs.Bool("detail", false, "list the codes whose revision differs in the differing buckets")
	metricsFile := fs.String("metrics-file", "", "also write the verdict as Prometheus metrics to this `file` (node_exporter textfile collector; written atomically)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: origin verify [flags]\n\nCompares each edge's replica with the origin by bucketed digest. Exits 0 when\nevery edge matches, 1 otherwise.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "origin verify: unexpected arguments %q\n", fs.Args())
		return 2
	}
	k, err := verifyKey(*key, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin verify:", err)
		return 2
	}
	cfg := verify.Config{
		OriginKey: k,
		Edges:     cli.SplitList(*edges),
		Wait:      max(*wait, time.Nanosecond),
		Interval:  *interval,
		Detail:    *detail,
	}
	if *caFile != "" {
		tc, err := tlsconf.Client(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "origin verify:", err)
			return 2
		}
		cfg.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	// The origins are asked with the client (and CAs) the comparison uses.
	cfg.OriginURL = pickOrigin(ctx, cfg.Client, cli.SplitList(*api))
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "origin verify:", err)
		return 2
	}
	rep, err := verify.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin verify:", err)
		return 1
	}
	if err := rep.Write(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "origin verify:", err)
		return 1
	}
	if *metricsFile != "" {
		if err := writeMetricsFile(*metricsFile, rep); err != nil {
			fmt.Fprintln(os.Stderr, "origin verify:", err)
			return 1
		}
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// verifyKey picks the API key: -key, else -key-file, else the
// environment.
func verifyKey(key, file string) (string, error) {
	if key != "" {
		return key, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("-key-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if k := strings.TrimSpace(os.Getenv(adminKeyEnv)); k != "" {
		return k, nil
	}
	return "", errors.New("an API key with links:read is required: -key, -key-file or $" + adminKeyEnv)
}

// writeMetricsFile writes rep's metrics to name through a temporary file
// and a rename, so the collector never reads half a file.
func writeMetricsFile(name string, rep *verify.Report) error {
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := rep.WriteMetrics(f, time.Now()); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// pickOrigin returns the first of urls whose API answers as the leader
// (origin.RoleHeader, or none: an origin without HA), else the first that
// answers at all, else the first. It asks with client (nil: a plain one),
// each call bounded to 5 s.
func pickOrigin(ctx context.Context, client *http.Client, urls []string) string {
	if len(urls) == 0 {
		return ""
	}
	if len(urls) == 1 {
		return urls[0]
	}
	c := &http.Client{Timeout: 5 * time.Second}
	if client != nil {
		c.Transport = client.Transport
	}
	answered := ""
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/v1/openapi.json", nil)
		if err != nil {
			continue
		}
		resp, err := c.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if role := resp.Header.Get(origin.RoleHeader); role == "" || role == "leader" {
			return u
		}
		if answered == "" {
			answered = u
		}
	}
	if answered != "" {
		return answered
	}
	return urls[0]
}
