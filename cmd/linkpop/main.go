// Command linkpop is the command-line client of a linkpop origin: create,
// list, update and disable links, QR codes, stats, import and export, API
// keys. Everything is in package client/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/linkpop/linkpop/client/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{})
	stop()
	os.Exit(code)
}
