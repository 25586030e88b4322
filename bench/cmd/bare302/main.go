// Command bare302 is the ceiling of the redirect benchmark: a bare fasthttp
// server that answers every request with the same 302 and does nothing
// else. Whatever linkpop's edge adds on top of fasthttp (code parsing,
// lookups, metrics) shows up as the distance to this server.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to listen on")
	location := flag.String("location", "https://example.com/", "Location of every redirect")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare302:", err)
		os.Exit(1)
	}
	loc := []byte(*location)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusFound)
			ctx.Response.Header.SetBytesV("Location", loc)
		},
		Name:                          "bare302",
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: true,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown()
	}()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bare302:", err)
		os.Exit(1)
	}
}
