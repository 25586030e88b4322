package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/link"
)

// progress reports counts, rate and ETA on stderr while it is a terminal,
// at most every 200ms, and stays silent otherwise.
type progress struct {
	w       io.Writer
	on      bool
	verb    string
	total   int64 // bytes or items expected, -1 unknown
	start   time.Time
	last    time.Time
	n, pos  int64
	printed bool
}

func (a *app) progress(verb string, total int64) *progress {
	return &progress{w: a.io.Stderr, on: a.io.Terminal(a.io.Stderr), verb: verb, total: total, start: time.Now()}
}

func (p *progress) set(n int64) { p.update(n, -1) }

// update records n items done and pos bytes read (-1: unknown).
func (p *progress) update(n, pos int64) {
	p.n = n
	if pos >= 0 {
		p.pos = pos
	}
	if !p.on {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(n) / max(el, 1e-3)
	msg := fmt.Sprintf("\r%s %d links, %.0f/s", p.verb, n, rate)
	if p.total > 0 && p.pos > 0 {
		frac := float64(p.pos) / float64(p.total)
		eta := time.Duration(el/frac*(1-frac)) * time.Second
		msg += fmt.Sprintf(", %.0f%%, ETA %s", 100*frac, eta.Round(time.Second))
	}
	fmt.Fprintf(p.w, "%s   ", msg)
	p.printed = true
}

func (p *progress) done() {
	if p.on && p.printed {
		fmt.Fprintln(p.w)
	}
}

func (a *app) exportCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write every link as JSON lines (link objects, code order)",
		Long:  "Write every link as one JSON link object a line, in code order, paging through the API\n(constant memory). 'linkpop import' reads the file back.",
		Example: `  linkpop export -o links.jsonl
  linkpop export | jq -r .url`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.connect()
			if err != nil {
				return err
			}
			var out io.Writer = a.io.Stdout
			var f *os.File
			if file != "" {
				if f, err = os.CreateTemp(dirOf(file), ".linkpop-export-*"); err != nil {
					return err
				}
				defer os.Remove(f.Name())
				defer f.Close()
				out = f
			}
			w := bufio.NewWriterSize(out, 256<<10)
			prog := a.progress("exported", -1)
			var n int64
			for l, err := range c.AllLinks(cmd.Context(), 1000) {
				if err != nil {
					prog.done()
					return err
				}
				b, err := client.Encode(l)
				if err != nil {
					return err
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
				n++
				prog.set(n)
			}
			prog.done()
			if err := w.Flush(); err != nil {
				return err
			}
			if f != nil {
				if err := f.Close(); err != nil {
					return err
				}
				if err := os.Rename(f.Name(), file); err != nil {
					return err
				}
			}
			if file != "" || !a.io.Terminal(a.io.Stdout) {
				fmt.Fprintf(a.io.Stderr, "exported %d links\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "output", "o", "", "write to `FILE` instead of standard output")
	return cmd
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i+1]
		}
	}
	return "."
}

// importer sends an import file's creates in batches.
type importer struct {
	a          *app
	c          *client.Client
	dryRun     bool
	onConflict string
	batchSize  int
	unit       string // what a report numbers: "line" of a file, "item" of an API source

	mu                       sync.Mutex
	created, skipped, failed int64
	conflict                 bool
	firstErr                 error
	// replayed counts items answered from the origin's idempotency
	// record of their batch: created by an earlier run of the same import
	// (or by this run, when a retry follows a lost answer).
	replayed int64
}

func (a *app) importCmd() *cobra.Command {
	var format, onConflict string
	var dryRun bool
	var batch, parallel int
	cmd := &cobra.Command{
		Use:   "import FILE|API-URL",
		Short: "Create links from a linkpop export or another shortener's export",
		Long: `Create links from FILE ('-' for standard input), in batches of up to 1,000 through
POST /v1/links/batch, reading the file as it goes (constant memory).

Formats:
  jsonl   linkpop export: one link object (or create body) a line
  csv     code,url[,tags,expires_at,redirect] (header optional; tags split on |)
  shlink  Shlink's short-URL CSV export (shortCode, longUrl, tags)
  yourls  YOURLS: a CSV or SQL dump of the yourls_url table, or the Import-Export plugin's CSV
  bitly   Bitly's CSV export (Bitlink/Custom Link, Long URL/Destination URL, Tags)
  golink  golink's /.export snapshot (Short, Long)

API sources (the argument is the service's API base URL, the token is read from
$LINKPOP_SOURCE_TOKEN and sent only to that host):
  bitly-api  Bitly API v4 (https://api-ssl.bitly.com/v4): every group's bitlinks,
             archived ones included; the code is the custom back-half if any;
             deleted bitlinks are created disabled
  kutt-api   Kutt API v2 (https://kutt.it): address, target, expire_in; banned
             links are created disabled, password-protected ones are refused

Codes are kept as they are; a code that is invalid or taken is reported on its line
with the API's error code, never changed. --on-conflict skip counts taken codes as
skipped; fail stops at the first one. --dry-run checks each line without writing:
the URL, code, redirect, tags and expiry by the API's rules, and whether the code is
taken on the server (the server's blocked domains are only checked by a real import).
Disabled links of a linkpop export are created disabled, in the same commit.

With --parallel above 1, batches commit in the order they reach the origin:
revisions need not follow the file's order (a revision numbers the origin's
changes; an import never carries one over), but a code given on two lines is
still decided by the first, since a batch sharing a code with one in flight
waits for it. --on-conflict fail stops sending at the first taken code; batches
already in flight (at most --parallel) still commit.`,
		Example: `  linkpop import links.jsonl
  linkpop import short_urls.csv --format shlink --on-conflict skip
  linkpop import bitly.csv --format bitly --dry-run
  LINKPOP_SOURCE_TOKEN=... linkpop import https://kutt.it --format kutt-api`,
		Args: exactArgs(1, "FILE (or, for bitly-api and kutt-api, the API URL)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if onConflict != "skip" && onConflict != "fail" {
				return usagef("--on-conflict %q: want skip or fail", onConflict)
			}
			if batch < 1 || batch > client.MaxBatch {
				return usagef("--batch %d: want 1 to %d", batch, client.MaxBatch)
			}
			if parallel < 1 || parallel > 16 {
				return usagef("--parallel %d: want 1 to 16", parallel)
			}
			if format != "" && !slices.Contains(Formats, format) {
				return usagef("--format %q: unknown format (want one of %s)", format, strings.Join(Formats, ", "))
			}
			if format == FormatBitlyAPI || format == FormatKuttAPI {
				rd, err := newAPISource(cmd.Context(), format, args[0], a.io.Getenv(EnvSourceToken))
				if err != nil {
					return err
				}
				c, err := a.connect()
				if err != nil {
					return err
				}
				im := &importer{a: a, c: c, dryRun: dryRun, onConflict: onConflict, batchSize: batch, unit: "item"}
				return im.run(cmd.Context(), rd, &countingReader{}, -1, parallel)
			}
			var in io.Reader = a.io.Stdin
			var size int64 = -1
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil {
					size = st.Size()
				}
				in = f
			}
			if format == "" {
				format = guessFormat(args[0])
			}
			cr := &countingReader{r: in}
			rd, err := newReader(format, cr)
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			im := &importer{a: a, c: c, dryRun: dryRun, onConflict: onConflict, batchSize: batch, unit: "line"}
			return im.run(cmd.Context(), rd, cr, size, parallel)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "jsonl, csv, shlink, yourls, bitly, golink, bitly-api or kutt-api (default: by extension, .csv csv, else jsonl)")
	cmd.Flags().StringVar(&onConflict, "on-conflict", "fail", "when a code is taken: skip it, or fail")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check every line against the API's rules and the server's codes without writing")
	cmd.Flags().IntVar(&batch, "batch", client.MaxBatch, "creates per batch request (1-1000)")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "batch requests in flight (1-16)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(Formats, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("on-conflict", cobra.FixedCompletions([]string{"skip", "fail"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func guessFormat(name string) string {
	if len(name) > 4 && name[len(name)-4:] == ".csv" {
		return FormatCSV
	}
	return FormatJSONL
}

type countingReader struct {
	r  io.Reader
	n  int64
	mu sync.Mutex
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) pos() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// run reads batches and keeps up to parallel of them in flight; memory is
// bounded by parallel batches whatever the file's size.
func (im *importer) run(ctx context.Context, rd reader, cr *countingReader, size int64, parallel int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	verb := "imported"
	if im.dryRun {
		verb = "checked"
	}
	prog := im.a.progress(verb, size)
	batches := make(chan *flight, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for f := range batches {
				im.send(ctx, f.items)
				close(f.done)
				if im.stopped() {
					cancel()
				}
				im.mu.Lock()
				done := im.created + im.replayed + im.skipped + im.failed
				im.mu.Unlock()
				prog.update(done, cr.pos())
			}
		})
	}
	// Batches in flight commit in the order they reach the origin, not
	// the file's. So that a code given on two lines is still decided by
	// the first, a batch sharing a code with one in flight waits for it.
	var inFlight []*flight
	dispatch := func(b []item) bool {
		f := &flight{items: b, done: make(chan struct{}), codes: map[string]bool{}}
		for i := range b {
			if c := b[i].create.Code; c != "" {
				f.codes[c] = true
			}
		}
		live := inFlight[:0]
		for _, g := range inFlight {
			select {
			case <-g.done:
				continue
			default:
			}
			if g.shares(f) {
				select {
				case <-g.done:
					continue
				case <-ctx.Done():
					return false
				}
			}
			live = append(live, g)
		}
		inFlight = append(live, f)
		select {
		case batches <- f:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var readErr error
	cur := make([]item, 0, im.batchSize)
read:
	for {
		it, err := rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		if it.err != nil {
			im.report(it.line, it.create.Code, "invalid_input", it.err.Error())
			continue
		}
		cur = append(cur, it)
		if len(cur) == im.batchSize {
			if !dispatch(cur) {
				break read
			}
			cur = make([]item, 0, im.batchSize)
		}
	}
	if len(cur) > 0 && ctx.Err() == nil {
		dispatch(cur)
	}
	close(batches)
	wg.Wait()
	prog.done()
	im.mu.Lock()
	defer im.mu.Unlock()
	what := "created"
	if im.dryRun {
		what = "would create"
	}
	if im.replayed > 0 {
		fmt.Fprintf(im.a.io.Stderr, "%s %d, already imported %d, skipped %d, failed %d\n", what, im.created, im.replayed, im.skipped, im.failed)
	} else {
		fmt.Fprintf(im.a.io.Stderr, "%s %d, skipped %d, failed %d\n", what, im.created, im.skipped, im.failed)
	}
	switch {
	case readErr != nil:
		return fmt.Errorf("read: %w", readErr)
	case im.firstErr != nil:
		return im.firstErr
	case im.conflict && im.onConflict == "fail":
		fmt.Fprintln(im.a.io.Stderr, "linkpop: stopped at the first taken code (--on-conflict fail)")
		return &exitError{ExitError}
	case im.failed > 0:
		return &exitError{ExitError}
	}
	return nil
}

// flight is a batch handed to the senders; done is closed once its
// answer is booked.
type flight struct {
	items []item
	codes map[string]bool // the custom codes it creates
	done  chan struct{}
}

// shares says whether g and f ask for a common code.
func (g *flight) shares(f *flight) bool {
	a, b := g.codes, f.codes
	if len(a) > len(b) {
		a, b = b, a
	}
	for c := range a {
		if b[c] {
			return true
		}
	}
	return false
}

func (im *importer) stopped() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.firstErr != nil || (im.conflict && im.onConflict == "fail")
}

// report prints a refused line.
func (im *importer) report(line int, code, errCode, msg string) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.failed++
	if code != "" {
		code = " code " + strconv.Quote(code)
	}
	fmt.Fprintf(im.a.io.Stderr, "%s %d%s: %s: %s\n", im.unit, line, code, errCode, msg)
}

// itemResult books one item's outcome.
func (im *importer) itemResult(it *item, err error) {
	var ae *client.Error
	if err == nil {
		im.mu.Lock()
		im.created++
		im.mu.Unlock()
		return
	}
	if errors.Is(err, link.ErrCodeTaken) {
		im.mu.Lock()
		im.conflict = true
		if im.onConflict == "skip" {
			im.skipped++
			im.mu.Unlock()
			return
		}
		im.mu.Unlock()
	}
	if errors.As(err, &ae) {
		msg := ae.Message
		if ae.Field != "" {
			msg += " (" + ae.Field + ")"
		}
		im.report(it.line, it.create.Code, ae.Code, msg)
		return
	}
	im.report(it.line, it.create.Code, "error", err.Error())
}

// send creates (or, dry, checks) one batch.
func (im *importer) send(ctx context.Context, b []item) {
	if im.stopped() {
		return
	}
	if im.dryRun {
		for i := range b {
			im.itemResult(&b[i], im.check(ctx, &b[i]))
		}
		return
	}
	creates := make([]client.CreateLink, len(b))
	for i := range b {
		creates[i] = b[i].create
	}
	var replayed bool
	res, err := im.c.CreateBatch(ctx, creates, client.CreateOptions{IdempotencyKey: batchKey(b), Replayed: &replayed})
	if err != nil {
		im.mu.Lock()
		if im.firstErr == nil && ctx.Err() == nil {
			im.firstErr = err
		}
		im.mu.Unlock()
		return
	}
	for i := range res {
		err := res[i].Err()
		if replayed && err == nil {
			im.mu.Lock()
			im.replayed++
			im.mu.Unlock()
			continue
		}
		im.itemResult(&b[i], err)
	}
}

// batchKey is the Idempotency-Key of a batch: a hash of its items, each
// with its line (or item) number, so the same file imported again sends
// the same batches under the same keys, and the origin answers each from
// its idempotency record instead of creating the links again (lines
// without a code included) for as long as it keeps the records (48 hours
// by default). Another file, an edited line or another --batch size make
// other keys. Two equal batches at different places of a file differ by
// their line numbers.
func batchKey(b []item) string {
	h := sha256.New()
	h.Write([]byte("linkpop import batch v1\n"))
	var buf []byte
	for i := range b {
		buf = strconv.AppendInt(buf[:0], int64(b[i].line), 10)
		buf = append(buf, ' ')
		// A CreateLink always encodes (strings, numbers and valid times).
		buf, _ = b[i].create.AppendJSON(buf)
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return "import-" + hex.EncodeToString(h.Sum(nil))
}

// dryReserved is the origin's default reserved list: an origin
// configured with more reserves refuses those codes only on a real
// import.
var dryReserved = link.NewReserved(link.DefaultReserved)

// check validates one create by the API's rules and asks the server
// whether its code is taken.
func (im *importer) check(ctx context.Context, it *item) error {
	c := &it.create
	bad := func(field string, e *link.Error) error {
		return &client.Error{Code: e.Code, Message: e.Message, Field: field}
	}
	asAPI := func(field string, err error) error {
		var le *link.Error
		if errors.As(err, &le) {
			return bad(field, le)
		}
		return err
	}
	if _, err := (link.URLPolicy{}).NormalizeURL(c.URL); err != nil {
		return asAPI("url", err)
	}
	if c.Redirect != 0 && !link.ValidRedirect(c.Redirect) {
		return bad("redirect", link.ErrInvalidRedirect)
	}
	if err := link.ValidateTags(c.Tags); err != nil {
		return asAPI("tags", err)
	}
	if c.ExpiresAt != nil && !c.ExpiresAt.After(time.Now()) {
		return bad("expires_at", link.ErrInvalidExpiry)
	}
	if c.Code == "" {
		return nil
	}
	if _, err := link.ParseCode(c.Code, dryReserved); err != nil {
		return asAPI("code", err)
	}
	_, err := im.c.GetLink(ctx, c.Code)
	switch {
	case err == nil:
		return &client.Error{Code: link.ErrCodeTaken.Code, Message: link.ErrCodeTaken.Message, Field: "code"}
	case errors.Is(err, link.ErrNotFound):
		return nil
	}
	return err
}
