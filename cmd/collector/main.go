// Command collector runs linkpop's click collector on its own: it
// consumes the click stream (LINKPOP_CLICKS) through a durable JetStream
// consumer into its own Pebble rollup store and serves /metrics and
// /healthz on an operator listener.
//
//	collector -data DIR [-nats URLS] [-partition I -partitions N] [-stats-listen ADDR -stats-token-file FILE [-stats-tls-cert FILE -stats-tls-key FILE]] [-admin 127.0.0.1:9083] ...
//
// The origin runs the same collector in-process by default. Several
// collectors split the links by code (-partition i of -partitions n);
// each serves its partition's stats on -stats-listen, and the origin,
// run with -collectors URL0,URL1,... and -collector-token-file, asks
// them. See the README ("Running several collectors").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/linkpop/linkpop/cmd/internal/cli"
	"github.com/linkpop/linkpop/cmd/internal/natsflag"
	"github.com/linkpop/linkpop/collector"
	"github.com/linkpop/linkpop/replication"
)

func main() {
	fs := flag.NewFlagSet("collector", flag.ExitOnError)
	var (
		data, admin                              string
		stream, durable                          string
		statsListen, statsTokenFile              string
		statsTLSCert, statsTLSKey                string
		streamReplicas, partition, partitions    int
		minuteRet, hourRet, retireAfter, ackWait time.Duration
		logLevel, logFormat                      string
	)
	fs.StringVar(&data, "data", "", "data directory: the rollup store is DIR/collector (required)")
	fs.StringVar(&admin, "admin", "127.0.0.1:9083", "admin listen address: /metrics /healthz")
	natsFlags := natsflag.Register(fs, "nats", "LINKPOP_NATS", "nats://127.0.0.1:4222")
	fs.StringVar(&stream, "click-stream", "LINKPOP_CLICKS", "JetStream click stream name")
	fs.IntVar(&streamReplicas, "click-stream-replicas", 1, "click stream replication factor (3 in production)")
	fs.StringVar(&durable, "durable", "", "durable consumer name (default linkpop-collector, or linkpop-collector-I-of-N for a partition)")
	fs.IntVar(&partition, "partition", 0, "this collector's partition of the links, 0 to -partitions minus 1")
	fs.IntVar(&partitions, "partitions", 1, "number of collectors the links are split between (by code)")
	fs.StringVar(&statsListen, "stats-listen", "", "partition API listen address, asked by the origin's -collectors (default off)")
	fs.StringVar(&statsTokenFile, "stats-token-file", "", "file holding the partition API's bearer token (required with -stats-listen)")
	fs.StringVar(&statsTLSCert, "stats-tls-cert", "", "PEM certificate `file` (chain first): the partition API speaks TLS only (the origin's -collectors then name https URLs, verified with -collector-ca)")
	fs.StringVar(&statsTLSKey, "stats-tls-key", "", "PEM `file` of the -stats-tls-cert key")
	fs.DurationVar(&minuteRet, "minute-retention", 7*24*time.Hour, "how long minute rollups are kept")
	fs.DurationVar(&hourRet, "hour-retention", 90*24*time.Hour, "how long hour rollups are kept (day rollups are kept forever)")
	fs.DurationVar(&retireAfter, "edge-retire-after", time.Hour, "an edge this far behind the newest flush-through mark stops holding complete_through back")
	fs.DurationVar(&ackWait, "ack-wait", 30*time.Second, "redelivery delay of unacknowledged batches (after a crash)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "collector: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	logger, err := cli.NewLogger(logLevel, logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "collector:", err)
		os.Exit(2)
	}
	if data == "" {
		fmt.Fprintln(os.Stderr, "collector: -data is required")
		os.Exit(2)
	}
	natsCfg, err := natsFlags.Config(logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "collector:", err)
		os.Exit(2)
	}
	var statsToken string
	if statsTokenFile != "" {
		if statsToken, err = cli.ReadSecretFile(statsTokenFile); err != nil {
			fmt.Fprintln(os.Stderr, "collector: -stats-token-file:", err)
			os.Exit(2)
		}
	}
	cfg := collector.Config{
		Dir:              filepath.Join(data, "collector"),
		NATS:             natsCfg,
		Stream:           replication.ClickStreamConfig{Name: stream, Replicas: streamReplicas},
		Durable:          durable,
		Partition:        partition,
		Partitions:       partitions,
		StatsListen:      statsListen,
		StatsToken:       statsToken,
		StatsTLSCertFile: statsTLSCert,
		StatsTLSKeyFile:  statsTLSKey,
		AckWait:          ackWait,
		MinuteRetention:  minuteRet,
		HourRetention:    hourRet,
		RetireAfter:      retireAfter,
		AdminListen:      admin,
		Logger:           logger,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "collector:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg collector.Config) error {
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o700); err != nil {
		return errors.New("data dir: " + err.Error())
	}
	c, err := collector.New(cfg)
	if err != nil {
		return err
	}
	fmt.Printf("collector partition %d of %d consuming %s, admin on http://%s, stats on %q\n", cfg.Partition, max(1, cfg.Partitions), cfg.Stream.Name, c.AdminAddr(), c.StatsAddr())
	return c.Run(ctx)
}
