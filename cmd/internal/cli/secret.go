package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Secret is a secret option (a key, token or password) that never has to
// be on a command line, where every local user sees it in ps and
// /proc/PID/cmdline: it is read from the file -NAME-file names or from
// the environment variable Env. Where the binaries had an inline -NAME
// flag before, Inline keeps it working, with a warning.
type Secret struct {
	// Name is the flag name without its -file suffix.
	Name string
	// Env is the environment variable holding the secret.
	Env string

	file   string
	inline *string // nil: no inline flag
}

// SecretVar registers -NAME-file on fs (and -NAME if inline, for
// compatibility) and returns the secret they and env configure.
func SecretVar(fs *flag.FlagSet, name, env, what string, inline bool) *Secret {
	s := &Secret{Name: name, Env: env}
	fs.StringVar(&s.file, name+"-file", "", "`file` holding the "+what+" (surrounding white space ignored; or $"+env+")")
	if inline {
		s.inline = fs.String(name, "", "the "+what+" itself; visible to every local user in ps, use -"+name+"-file or $"+env)
	}
	return s
}

// Value returns the secret from the one place it was given: the file,
// the environment variable or (discouraged) the inline flag; "" when none
// was given. Giving two is an error, and so is an empty file.
// inlineUsed reports that it came from the command line.
func (s *Secret) Value() (v string, inlineUsed bool, err error) {
	env := strings.TrimSpace(os.Getenv(s.Env))
	inl := ""
	if s.inline != nil {
		inl = *s.inline
	}
	n := 0
	for _, x := range []string{s.file, env, inl} {
		if x != "" {
			n++
		}
	}
	if n > 1 {
		return "", false, fmt.Errorf("give the %s in one of -%s-file, $%s or -%s, not several", s.Name, s.Name, s.Env, s.Name)
	}
	switch {
	case s.file != "":
		v, err := ReadSecretFile(s.file)
		if err != nil {
			return "", false, fmt.Errorf("-%s-file: %w", s.Name, err)
		}
		return v, false, nil
	case env != "":
		return env, false, nil
	}
	return inl, inl != "", nil
}

// ReadSecretFile reads a secret from path, trimming surrounding white
// space; an empty file is an error.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", errors.New(path + " is empty")
	}
	return v, nil
}
