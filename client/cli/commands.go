package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkpop/linkpop/client"
)

// linkFlags are the flags create and update share.
type linkFlags struct {
	url, code, expires string
	redirect           int
	tags               []string
	maxVisits          uint64
	noExpiry           bool
	noMaxVisits        bool
}

func (f *linkFlags) add(cmd *cobra.Command, update bool) {
	fl := cmd.Flags()
	fl.IntVar(&f.redirect, "redirect", 0, "redirect status: 301, 302, 307 or 308 (default 302)")
	fl.StringVar(&f.expires, "expires", "", "expiry: an RFC 3339 time or a duration from now (72h, 30m)")
	fl.StringArrayVar(&f.tags, "tag", nil, "a tag (repeat for several)")
	fl.Uint64Var(&f.maxVisits, "max-visits", 0, "clicks after which the link is disabled")
	_ = cmd.RegisterFlagCompletionFunc("redirect", cobra.FixedCompletions([]string{"301", "302", "307", "308"}, cobra.ShellCompDirectiveNoFileComp))
	if update {
		fl.StringVar(&f.url, "url", "", "new target URL")
		fl.BoolVar(&f.noExpiry, "no-expiry", false, "remove the expiry")
		fl.BoolVar(&f.noMaxVisits, "no-max-visits", false, "remove the visit limit")
	} else {
		fl.StringVar(&f.code, "code", "", "custom code: 3-64 of A-Z a-z 0-9 _ - (default: random)")
	}
}

func (f *linkFlags) checkRedirect() error {
	if f.redirect != 0 && f.redirect != 301 && f.redirect != 302 && f.redirect != 307 && f.redirect != 308 {
		return usagef("--redirect %d: want 301, 302, 307 or 308", f.redirect)
	}
	return nil
}

// parseExpiry reads --expires: RFC 3339, or a positive duration from now.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, usagef("--expires %q: want an RFC 3339 time (2027-01-02T15:04:05Z) or a positive duration (72h)", s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}

func (a *app) createCmd() *cobra.Command {
	var f linkFlags
	var o output
	var idem string
	cmd := &cobra.Command{
		Use:   "create URL",
		Short: "Create a short link",
		Example: `  linkpop create https://example.com/
  linkpop create https://example.com/launch --code launch --redirect 301 --expires 720h --tag q4 --tag web
  linkpop create https://example.com/x --idempotency-key order-1234 -o json`,
		Args: exactArgs(1, "URL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if err := f.checkRedirect(); err != nil {
				return err
			}
			in := client.CreateLink{URL: args[0], Code: f.code, Redirect: f.redirect, Tags: f.tags}
			if f.expires != "" {
				t, err := parseExpiry(f.expires, time.Now())
				if err != nil {
					return err
				}
				in.ExpiresAt = &t
			}
			if cmd.Flags().Changed("max-visits") {
				if f.maxVisits == 0 {
					return usagef("--max-visits must be at least 1")
				}
				in.MaxVisits = &f.maxVisits
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			l, err := c.CreateLink(ctx, in, client.CreateOptions{IdempotencyKey: idem})
			if err != nil {
				return err
			}
			return printLink(a.io.Stdout, &o, &l)
		},
	}
	f.add(cmd, false)
	o.add(cmd)
	cmd.Flags().StringVar(&idem, "idempotency-key", "", "makes a retried create return the first link (and lets the client retry it)")
	return cmd
}

// exactArgs is cobra.ExactArgs with a usage error that names them.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments)", cmd.CommandPath(), names, len(args))
		}
		return nil
	}
}

func (a *app) getCmd() *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "get CODE",
		Short:   "Show a link",
		Example: "  linkpop get launch\n  linkpop get launch -o json",
		Args:    exactArgs(1, "CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			l, err := c.GetLink(ctx, args[0])
			if err != nil {
				return err
			}
			return printLink(a.io.Stdout, &o, &l)
		},
	}
	o.add(cmd)
	return cmd
}

func (a *app) listCmd() *cobra.Command {
	var o output
	var tag string
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List links in code order",
		Long:  "List links in code order: the first --limit (default 50), or every link with --all.\n--tag keeps the links carrying that tag. -o json prints a JSON array of link objects.",
		Example: `  linkpop list
  linkpop list --tag q4 --all -o json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if limit < 1 {
				return usagef("--limit %d: want at least 1", limit)
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			prog := a.progress("listed", -1)
			defer prog.done()
			w := bufio.NewWriter(a.io.Stdout)
			defer w.Flush()
			var tw io.Writer
			var table interface{ Flush() error }
			if o.json() {
				fmt.Fprint(w, "[")
			} else {
				t := newTable(w)
				linkHeader(t)
				tw, table = t, t
			}
			n, seen := 0, 0
			page := min(limit, 1000)
			if all {
				page = 1000
			}
			for l, err := range c.AllLinks(cmd.Context(), page) {
				if err != nil {
					return err
				}
				seen++
				prog.set(int64(seen))
				if tag != "" && !contains(l.Tags, tag) {
					continue
				}
				if o.json() {
					if n > 0 {
						fmt.Fprint(w, ",")
					}
					b, err := client.Encode(l)
					if err != nil {
						return err
					}
					_, _ = w.Write(b[:len(b)-1])
				} else {
					linkRow(tw, &l)
				}
				n++
				if !all && n >= limit {
					break
				}
			}
			if o.json() {
				fmt.Fprintln(w, "]")
				return nil
			}
			return table.Flush()
		},
	}
	o.add(cmd)
	cmd.Flags().StringVar(&tag, "tag", "", "only links with this tag")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many links to show")
	cmd.Flags().BoolVar(&all, "all", false, "every link (pages through the whole table)")
	return cmd
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func (a *app) updateCmd() *cobra.Command {
	var f linkFlags
	var o output
	var ifRev uint64
	cmd := &cobra.Command{
		Use:   "update CODE",
		Short: "Change a link's target, redirect, expiry, tags or visit limit",
		Example: `  linkpop update launch --url https://example.com/launch-v2
  linkpop update launch --no-expiry --tag q1 --if-revision 7`,
		Args: exactArgs(1, "CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if err := f.checkRedirect(); err != nil {
				return err
			}
			var in client.UpdateLink
			fl := cmd.Flags()
			if fl.Changed("url") {
				in.URL = &f.url
			}
			if fl.Changed("redirect") {
				in.Redirect = &f.redirect
			}
			if f.noExpiry && f.expires != "" {
				return usagef("--expires and --no-expiry exclude each other")
			}
			in.ClearExpiry = f.noExpiry
			if f.expires != "" {
				t, err := parseExpiry(f.expires, time.Now())
				if err != nil {
					return err
				}
				in.ExpiresAt = &t
			}
			if fl.Changed("tag") {
				in.Tags = &f.tags
			}
			if fl.Changed("max-visits") {
				if f.maxVisits == 0 {
					return usagef("--max-visits must be at least 1 (use --no-max-visits to remove the limit)")
				}
				in.MaxVisits = &f.maxVisits
			}
			in.ClearMaxVisits = f.noMaxVisits
			if in == (client.UpdateLink{}) {
				return usagef("update needs at least one of --url, --redirect, --expires, --no-expiry, --tag, --max-visits, --no-max-visits")
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			l, err := c.UpdateLink(ctx, args[0], in, ifRev)
			if err != nil {
				return err
			}
			return printLink(a.io.Stdout, &o, &l)
		},
	}
	f.add(cmd, true)
	o.add(cmd)
	cmd.Flags().Uint64Var(&ifRev, "if-revision", 0, "apply only if the link is at this revision (412 revision_mismatch otherwise)")
	return cmd
}

func (a *app) disableCmd() *cobra.Command {
	var o output
	var ifRev uint64
	cmd := &cobra.Command{
		Use:     "disable CODE",
		Short:   "Deactivate a link: edges answer 410 from then on",
		Example: "  linkpop disable launch",
		Args:    exactArgs(1, "CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			l, err := c.DisableLink(ctx, args[0], ifRev)
			if err != nil {
				return err
			}
			return printLink(a.io.Stdout, &o, &l)
		},
	}
	o.add(cmd)
	cmd.Flags().Uint64Var(&ifRev, "if-revision", 0, "disable only if the link is at this revision")
	return cmd
}

// statsRange reads --from and --to (RFC 3339 or a duration before now).
func statsRange(from, to string, now time.Time) (time.Time, time.Time, error) {
	parse := func(name, s string) (time.Time, error) {
		if s == "" {
			return time.Time{}, nil
		}
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return time.Time{}, usagef("--%s %q: want an RFC 3339 time or a duration before now (24h)", name, s)
		}
		return now.Add(-d).UTC().Truncate(time.Second), nil
	}
	f, err := parse("from", from)
	if err != nil {
		return f, f, err
	}
	t, err := parse("to", to)
	return f, t, err
}

func (a *app) statsCmd() *cobra.Command {
	var o output
	var from, to, interval string
	cmd := &cobra.Command{
		Use:   "stats CODE",
		Short: "Clicks, uniques and bots of a link over time",
		Example: `  linkpop stats launch
  linkpop stats launch --from 24h --interval hour -o json`,
		Args: exactArgs(1, "CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if interval != "" && interval != client.IntervalMinute && interval != client.IntervalHour && interval != client.IntervalDay {
				return usagef("--interval %q: want minute, hour or day", interval)
			}
			f, t, err := statsRange(from, to, time.Now())
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			s, err := c.Stats(ctx, args[0], client.StatsQuery{From: f, To: t, Interval: interval})
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(a.io.Stdout, s)
			}
			tw := newTable(a.io.Stdout)
			fmt.Fprintf(tw, "code\t%s\nrange\t%s .. %s (%s)\nclicks\t%d\nuniques\t%d\nbots\t%d\ncomplete through\t%s\n",
				s.Code, s.From.Format(time.RFC3339), s.To.Format(time.RFC3339), s.Interval, s.Clicks, s.Uniques, s.Bots, completeThrough(s.CompleteThrough))
			if len(s.IncompleteEdges) > 0 {
				fmt.Fprintf(tw, "incomplete edges\t%s\n", strings.Join(s.IncompleteEdges, ", "))
			}
			fmt.Fprintln(tw, "\nTIME\tCLICKS\tUNIQUES\tBOTS")
			for _, p := range s.Series {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", p.T.Format(time.RFC3339), p.Clicks, p.Uniques, p.Bots)
			}
			for _, b := range []struct {
				name string
				rows []client.StatsCount
			}{{"REFERRER", s.Referrers}, {"COUNTRY", s.Countries}, {"DEVICE", s.Devices}, {"BROWSER", s.Browsers}, {"OS", s.OS}, {"EDGE", s.Edges}} {
				if len(b.rows) == 0 {
					continue
				}
				fmt.Fprintf(tw, "\n%s\tCLICKS\n", b.name)
				for _, r := range b.rows {
					k := r.Key
					if k == "" {
						k = "(direct)"
					}
					fmt.Fprintf(tw, "%s\t%d\n", k, r.Clicks)
				}
			}
			return tw.Flush()
		},
	}
	o.add(cmd)
	cmd.Flags().StringVar(&from, "from", "", "start: RFC 3339 or a duration before now (default: 7 days ago)")
	cmd.Flags().StringVar(&to, "to", "", "end: RFC 3339 or a duration before now (default: now)")
	cmd.Flags().StringVar(&interval, "interval", "", "minute, hour or day (default: by range)")
	return cmd
}

func (a *app) topCmd() *cobra.Command {
	var o output
	var from, to string
	var limit int
	cmd := &cobra.Command{
		Use:     "top",
		Short:   "The links with the most clicks",
		Example: "  linkpop top --limit 10 --from 24h",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if limit < 1 || limit > 1000 {
				return usagef("--limit %d: want 1 to 1000", limit)
			}
			f, t, err := statsRange(from, to, time.Now())
			if err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			top, err := c.Top(ctx, client.StatsQuery{From: f, To: t, Limit: limit})
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(a.io.Stdout, top)
			}
			tw := newTable(a.io.Stdout)
			fmt.Fprintln(tw, "CODE\tCLICKS\tUNIQUES\tBOTS")
			for _, l := range top.Links {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", l.Code, l.Clicks, l.Uniques, l.Bots)
			}
			fmt.Fprintf(tw, "\n%d clicks, %d bots, %s .. %s, complete through %s\n", top.Clicks, top.Bots,
				top.From.Format(time.RFC3339), top.To.Format(time.RFC3339), completeThrough(top.CompleteThrough))
			return tw.Flush()
		},
	}
	o.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 20, "how many links (1-1000)")
	cmd.Flags().StringVar(&from, "from", "", "start: RFC 3339 or a duration before now (default: 7 days ago)")
	cmd.Flags().StringVar(&to, "to", "", "end: RFC 3339 or a duration before now (default: now)")
	return cmd
}

func (a *app) qrCmd() *cobra.Command {
	var file, format string
	var size int
	cmd := &cobra.Command{
		Use:   "qr CODE",
		Short: "Save a link's QR code as PNG or SVG",
		Long:  "Save the QR code of a link's short URL (error correction M, 4-module quiet zone).\nWithout -o the image goes to standard output, which must then not be a terminal.",
		Example: `  linkpop qr launch -o launch.png
  linkpop qr launch --format svg --size 512 > launch.svg`,
		Args: exactArgs(1, "CODE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != client.QRPNG && format != client.QRSVG {
				return usagef("--format %q: want png or svg", format)
			}
			if file == "" && a.io.Terminal(a.io.Stdout) {
				return usagef("qr writes an image: give -o FILE or redirect standard output")
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			img, _, err := c.QR(ctx, args[0], format, size)
			if err != nil {
				return err
			}
			if file == "" {
				_, err = a.io.Stdout.Write(img)
				return err
			}
			return writeFileAtomic(file, img, 0o644)
		},
	}
	cmd.Flags().StringVarP(&file, "output", "o", "", "write the image to `FILE`")
	cmd.Flags().StringVar(&format, "format", "png", "png or svg")
	cmd.Flags().IntVar(&size, "size", 0, "width in pixels, 64-2048 (default 256)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"png", "svg"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// writeFileAtomic writes b to path through a temporary file and a rename.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func (a *app) keysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Mint, list and revoke API keys (needs an admin key)",
		Args:  exactArgs(0, "a subcommand: create, list or revoke"),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var o output
	var name string
	var scopes []string
	var rate float64
	var burst int
	create := &cobra.Command{
		Use:     "create --name NAME --scope SCOPE...",
		Short:   "Mint a key; its secret is printed this once",
		Example: "  linkpop keys create --name ci --scope links:read --scope links:write",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if name == "" || len(scopes) == 0 {
				return usagef("keys create needs --name and at least one --scope (links:read, links:write, admin)")
			}
			in := client.CreateKey{Name: name, Scopes: scopes}
			if cmd.Flags().Changed("rate-limit") {
				in.RateLimit = &rate
			}
			if cmd.Flags().Changed("burst") {
				in.Burst = &burst
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			k, err := c.CreateKey(ctx, in)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(a.io.Stdout, k)
			}
			tw := newTable(a.io.Stdout)
			fmt.Fprintf(tw, "id\t%s\nname\t%s\nscopes\t%s\nkey\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), k.Key)
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(a.io.Stderr, "Store the key now: it is not shown again.")
			return nil
		},
	}
	o.add(create)
	create.Flags().StringVar(&name, "name", "", "a name for the key")
	create.Flags().StringArrayVar(&scopes, "scope", nil, "links:read, links:write or admin (repeat for several)")
	create.Flags().Float64Var(&rate, "rate-limit", 0, "requests per second (negative: unlimited; default: the server's)")
	create.Flags().IntVar(&burst, "burst", 0, "burst size (default: the server's)")
	_ = create.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions([]string{client.ScopeLinksRead, client.ScopeLinksWrite, client.ScopeAdmin}, cobra.ShellCompDirectiveNoFileComp))

	var lo output
	list := &cobra.Command{
		Use:     "list",
		Short:   "List keys (without secrets)",
		Example: "  linkpop keys list -o json",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lo.check(); err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			keys, err := c.ListKeys(ctx)
			if err != nil {
				return err
			}
			if lo.json() {
				return writeJSON(a.io.Stdout, client.KeyList{Keys: keys})
			}
			tw := newTable(a.io.Stdout)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tRATE\tCREATED\tREVOKED")
			for _, k := range keys {
				rev := "-"
				if k.RevokedAt != nil {
					rev = k.RevokedAt.Format(time.RFC3339)
				}
				rate := "unlimited"
				if k.RateLimit >= 0 {
					rate = strconv.FormatFloat(k.RateLimit, 'g', -1, 64) + "/s"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), rate, k.CreatedAt.Format(time.RFC3339), rev)
			}
			return tw.Flush()
		},
	}
	lo.add(list)

	var ro output
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a key: it stops authenticating at once",
		Example: "  linkpop keys revoke key_0123456789abcdef",
		Args:    exactArgs(1, "a key ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ro.check(); err != nil {
				return err
			}
			c, err := a.connect()
			if err != nil {
				return err
			}
			ctx, cancel := a.call(cmd)
			defer cancel()
			k, err := c.RevokeKey(ctx, args[0])
			if err != nil {
				return err
			}
			if ro.json() {
				return writeJSON(a.io.Stdout, k)
			}
			fmt.Fprintf(a.io.Stdout, "revoked %s (%s)\n", k.ID, k.Name)
			return nil
		},
	}
	ro.add(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (a *app) configureCmd() *cobra.Command {
	var keyStdin bool
	cmd := &cobra.Command{
		Use:   "configure",
		Short: "Save --api and --key in the config file (mode 0600)",
		Long:  "Save the connection in the config file (<user config dir>/linkpop/config.json, mode 0600)\nso later commands need neither flags nor environment. --key-stdin reads the key from\nstandard input, which keeps it out of the shell history.",
		Example: `  linkpop configure --api http://127.0.0.1:8081 --key "$LINKPOP_ADMIN_KEY"
  printf %s "$KEY" | linkpop configure --key-stdin`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, path, err := a.readConfig()
			if err != nil {
				return err
			}
			if a.apiFlag != "" {
				if _, err := client.New(client.Config{BaseURL: a.apiFlag}); err != nil {
					return usagef("--api %q: want an http or https URL such as %s", a.apiFlag, DefaultAPI)
				}
				fc.API = a.apiFlag
			}
			if a.keyFlag != "" {
				fc.Key = a.keyFlag
			}
			if keyStdin {
				b, err := io.ReadAll(io.LimitReader(a.io.Stdin, 4096))
				if err != nil {
					return err
				}
				fc.Key = strings.TrimSpace(string(b))
			}
			if a.apiFlag == "" && a.keyFlag == "" && !keyStdin {
				return usagef("configure needs --api, --key or --key-stdin")
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			b, err := client.Encode(fc)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(path, b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Stdout, "saved %s\n", path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&keyStdin, "key-stdin", false, "read the API key from standard input")
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if o.json() {
				return writeJSON(a.io.Stdout, map[string]string{"version": Version})
			}
			fmt.Fprintf(a.io.Stdout, "linkpop %s\n", Version)
			return nil
		},
	}
	o.add(cmd)
	return cmd
}

// completeThrough prints a stats answer's complete_through: "-" before
// any edge has reported.
func completeThrough(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
