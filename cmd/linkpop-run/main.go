// Command linkpop-run starts the complete local linkpop system, the one
// `make run` starts: an origin with embedded JetStream and two edges, each
// as its own child process, so that killing one of them (the origin, say)
// leaves the others serving; that is the point of the demo.
//
//	linkpop-run [-data .data] [-bin DIR] [-ha]
//
// Layout (fixed, as DESIGN.md states): NATS on 127.0.0.1:4222, origin API
// on 127.0.0.1:8081 (admin 9081), edge A on 127.0.0.1:8080 (admin 9080,
// gossip 7946), edge B on 127.0.0.1:8082 (admin 9082, gossip 7947, joining
// A). Every component keeps its data under -data between runs. The admin
// API key comes from LINKPOP_ADMIN_KEY when set; otherwise one is generated
// on the first run, stored in DATA/admin.key (mode 0600) and reused.
//
// It waits for every component's /readyz, prints the admin key and curl
// examples, and prefixes each child's output with its name. It runs in the
// foreground until SIGINT or SIGTERM, then stops the edges and then the
// origin (SIGTERM, and SIGKILL after a timeout; a second Ctrl-C does not
// wait). A child that dies is reported and not restarted; the others keep
// running, so an edge with its origin gone shows stale-on-error serving.
//
// With -ha (`make run-ha`, HALayout) it runs the highly available system
// instead: a three-node JetStream cluster inside this process (clients on
// 127.0.0.1:4222-4224, routes 6222-6224, a user per role, passwords in
// DATA/nats-auth), the operator's `origin streams` (R3 streams and lease
// bucket), two origins with -ha -ack replicated (API 8081 admin 9081,
// API 8083 admin 9084; the lease decides which leads), a collector (admin
// 9083, partition API 9085, which both origins' stats API asks) and the
// two edges, whose -origin lists both
// origins. Killing the leader shows the standby take over.
//
// The orchestration lives in this package (system.go): it is a development
// tool, and its own test drives it end to end on free ports.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	dataDir := flag.String("data", ".data", "directory holding every component's data, kept between runs")
	binDir := flag.String("bin", "", "directory holding the origin and edge binaries (default: the directory of this program)")
	ha := flag.Bool("ha", false, "run the highly available system: a three-node JetStream cluster, a leader and a standby origin, a collector, two edges")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "linkpop-run: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if *binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "linkpop-run: locate own executable:", err)
			os.Exit(1)
		}
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		*binDir = filepath.Dir(exe)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default handling: a second
	// Ctrl-C ends linkpop-run at once, and Pdeathsig stops the children.
	go func() {
		<-ctx.Done()
		stop()
	}()
	layout := DefaultLayout()
	if *ha {
		layout = HALayout()
	}
	err := run(ctx, Config{
		DataDir: *dataDir,
		BinDir:  *binDir,
		Layout:  layout,
		Out:     os.Stdout,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "linkpop-run:", err)
		os.Exit(1)
	}
}
