// Package cli is the linkpop command-line client (bin/linkpop): every
// command calls the v1 API through package client, so scripts see the
// API's own objects with -o json. cmd/linkpop only calls Main.
//
// It uses cobra because it gives every command --help, usage errors and
// shell completion for bash, zsh and fish with no code of ours, and it is
// what gh and kubectl users expect.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/tlsconf"
)

// Exit codes.
const (
	ExitOK    = 0 // success
	ExitError = 1 // the API refused, or the network failed
	ExitUsage = 2 // bad command line
)

// Environment variables and defaults of the connection.
const (
	EnvAPI     = "LINKPOP_API"
	EnvKey     = "LINKPOP_KEY"
	EnvConfig  = "LINKPOP_CONFIG"
	DefaultAPI = "http://127.0.0.1:8081"
)

// EnvCAFile names a PEM file of the CAs an https origin is verified
// against (default: the system's roots).
const EnvCAFile = "LINKPOP_CA_FILE"

// Version is the CLI's version, set by the build (-ldflags -X).
var Version = "dev"

// IO is where a run reads and writes, and what it knows of its
// environment; tests give their own.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment. The default is os.Getenv.
	Getenv func(string) string
	// ConfigDir is the user's config directory. The default is
	// os.UserConfigDir.
	ConfigDir func() (string, error)
	// Terminal says whether w is a terminal (progress is shown only
	// there). The default checks for a character device.
	Terminal func(w io.Writer) bool
}

func (o *IO) defaults() {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.ConfigDir == nil {
		o.ConfigDir = os.UserConfigDir
	}
	if o.Terminal == nil {
		o.Terminal = isTerminal
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// usageError is a bad command line: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

// exitError carries an exit status for a failure already reported.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the CLI with args (without the program name) and returns the
// exit status.
func Main(ctx context.Context, args []string, stdio IO) int {
	stdio.defaults()
	a := &app{io: stdio}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdio.Stdin)
	root.SetOut(stdio.Stdout)
	root.SetErr(stdio.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(stdio.Stderr, "linkpop: %v\nRun 'linkpop --help' for usage.\n", err)
		return ExitUsage
	}
	a.printError(err)
	return ExitError
}

// isCobraUsage recognises cobra's own command-line errors (unknown
// command, wrong number of arguments), which it does not type.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires exactly", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// printError prints an API error as its code and message, anything else
// as it is.
func (a *app) printError(err error) {
	var ae *client.Error
	switch {
	case errors.Is(err, client.ErrNotAvailable):
		fmt.Fprintln(a.io.Stderr, "linkpop: analytics is not available on this server (it does not serve the stats API)")
	case errors.As(err, &ae):
		msg := ae.Message
		if ae.Field != "" {
			msg += " (" + ae.Field + ")"
		}
		fmt.Fprintf(a.io.Stderr, "linkpop: %s: %s\n", ae.Code, msg)
		if ae.Code == client.ErrUnauthorized.Code {
			fmt.Fprintf(a.io.Stderr, "Set the API key with --key, $%s or 'linkpop configure'.\n", EnvKey)
		}
	default:
		fmt.Fprintf(a.io.Stderr, "linkpop: %v\n", err)
	}
}

// app is one run of the CLI.
type app struct {
	io IO

	apiFlag, keyFlag, configFlag string
	timeout                      time.Duration

	c *client.Client
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "linkpop",
		Short: "Create and manage short links on a linkpop origin",
		Long: `linkpop creates and manages short links through a linkpop origin's v1 API.

The connection comes from --api and --key, else $LINKPOP_API and $LINKPOP_KEY,
else the config file written by 'linkpop configure' (in the user's config
directory, mode 0600). The key is never printed.

Output is a table for people; -o json prints the API's own objects for
scripts. Exit status: 0 success, 1 the API refused or the network failed,
2 bad usage.`,
		Example: `  linkpop configure --api http://127.0.0.1:8081 --key "$LINKPOP_ADMIN_KEY"
  linkpop create https://example.com/launch --code launch --tag q4
  linkpop list --tag q4 -o json
  linkpop export -o links.jsonl && linkpop import links.jsonl --on-conflict skip`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Version:           Version,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.apiFlag, "api", "", "origin API base URL (default $"+EnvAPI+", the config file, or "+DefaultAPI+")")
	pf.StringVar(&a.keyFlag, "key", "", "API key (default $"+EnvKey+" or the config file)")
	pf.StringVar(&a.configFlag, "config", "", "config file (default $"+EnvConfig+" or <user config dir>/linkpop/config.json)")
	pf.DurationVar(&a.timeout, "timeout", 60*time.Second, "bound on each API call")
	root.AddCommand(a.createCmd(), a.getCmd(), a.listCmd(), a.updateCmd(), a.disableCmd(),
		a.statsCmd(), a.topCmd(), a.qrCmd(), a.exportCmd(), a.importCmd(), a.keysCmd(),
		a.configureCmd(), a.versionCmd())
	return root
}

// fileConfig is the config file.
type fileConfig struct {
	API string `json:"api,omitempty"`
	Key string `json:"key,omitempty"`
}

func (a *app) configPath() (string, error) {
	if a.configFlag != "" {
		return a.configFlag, nil
	}
	if p := a.io.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	dir, err := a.io.ConfigDir()
	if err != nil {
		return "", fmt.Errorf("config dir: %w", err)
	}
	return filepath.Join(dir, "linkpop", "config.json"), nil
}

func (a *app) readConfig() (fileConfig, string, error) {
	var fc fileConfig
	path, err := a.configPath()
	if err != nil {
		return fc, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fc, path, nil
	}
	if err != nil {
		return fc, path, err
	}
	if err := json.Unmarshal(b, &fc); err != nil {
		return fc, path, fmt.Errorf("config file %s: %w", path, err)
	}
	return fc, path, nil
}

// connect builds the client from flags, environment and config file.
func (a *app) connect() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	fc, path, err := a.readConfig()
	if err != nil {
		return nil, err
	}
	if fc.Key != "" {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(a.io.Stderr, "linkpop: warning: %s holds an API key and is readable by others; chmod 600 it\n", path)
		}
	}
	api := first(a.apiFlag, a.io.Getenv(EnvAPI), fc.API, DefaultAPI)
	key := first(a.keyFlag, a.io.Getenv(EnvKey), fc.Key)
	cc := client.Config{BaseURL: api, Key: key, UserAgent: "linkpop-cli/" + Version}
	if ca := a.io.Getenv(EnvCAFile); ca != "" {
		tc, err := tlsconf.Client(ca)
		if err != nil {
			return nil, &usageError{fmt.Errorf("$%s: %w", EnvCAFile, err)}
		}
		cc.HTTPClient = &http.Client{Timeout: client.DefaultTimeout, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	}
	c, err := client.New(cc)
	if err != nil {
		return nil, &usageError{fmt.Errorf("--api %q: want an http or https URL such as %s", api, DefaultAPI)}
	}
	a.c = c
	return c, nil
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// call gives one API call its timeout.
func (a *app) call(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// output is the -o flag of the commands that print objects.
type output struct{ format string }

func (o *output) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.format, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

func (o *output) check() error {
	if o.format != "table" && o.format != "json" {
		return usagef("-o %q: want table or json", o.format)
	}
	return nil
}

func (o *output) json() bool { return o.format == "json" }

func writeJSON(w io.Writer, v any) error {
	b, err := client.Encode(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func linkHeader(tw io.Writer) {
	fmt.Fprintln(tw, "CODE\tSHORT URL\tSTATUS\tREDIRECT\tEXPIRES\tTAGS\tURL")
}

func linkRow(tw io.Writer, l *client.Link) {
	exp := "-"
	if l.ExpiresAt != nil {
		exp = l.ExpiresAt.UTC().Format(time.RFC3339)
	}
	tags := "-"
	if len(l.Tags) > 0 {
		tags = strings.Join(l.Tags, ",")
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.Code, l.ShortURL, l.Status, l.Redirect, exp, tags, l.URL)
}

// printLink prints one link as a table of fields or as its JSON object.
func printLink(w io.Writer, o *output, l *client.Link) error {
	if o.json() {
		return writeJSON(w, l)
	}
	tw := newTable(w)
	exp := "never"
	if l.ExpiresAt != nil {
		exp = l.ExpiresAt.UTC().Format(time.RFC3339)
	}
	mv := "none"
	if l.MaxVisits != nil {
		mv = fmt.Sprint(*l.MaxVisits)
	}
	fmt.Fprintf(tw, "code\t%s\nshort_url\t%s\nurl\t%s\nstatus\t%s\nredirect\t%d\nexpires_at\t%s\ntags\t%s\nmax_visits\t%s\nrevision\t%d\ncreated_at\t%s\nupdated_at\t%s\n",
		l.Code, l.ShortURL, l.URL, l.Status, l.Redirect, exp, strings.Join(l.Tags, ","), mv, l.Revision,
		l.CreatedAt.UTC().Format(time.RFC3339), l.UpdatedAt.UTC().Format(time.RFC3339))
	return tw.Flush()
}
