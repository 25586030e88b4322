// Package cli holds the flag helpers the linkpop binaries share: logger
// construction from -log-level/-log-format, comma-separated lists and
// secrets read from a file or the environment (Secret). It
// imports only the standard library, so the edge may link it.
package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// SplitList splits a comma-separated flag value, trimming spaces and
// dropping empty elements.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NewLogger builds a stderr logger from -log-level (debug, info, warn,
// error) and -log-format (text, json).
func NewLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: want text or json", format)
}
