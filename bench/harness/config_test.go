package harness_test

import (
	"strings"
	"testing"

	"github.com/linkpop/linkpop/bench/harness"
)

// Validate accepts the systems a run can measure and names what is wrong
// with the others: linkpop-base only with the binary it measures.
func TestConfigValidateSystems(t *testing.T) {
	for _, tc := range []struct {
		name    string
		systems []string
		base    string
		wantErr string
	}{
		{"every default system", harness.AllSystems, "", ""},
		{"the reference alone", []string{harness.SysRedisPG}, "", ""},
		{"base edge with its binary", []string{harness.SysLinkpop, harness.SysLinkpopBase}, "/tmp/edge-main", ""},
		{"base edge without a binary", []string{harness.SysLinkpopBase}, "", "needs BaseEdge"},
		{"unknown system", []string{"memcached"}, "", `unknown system "memcached"`},
	} {
		cfg := harness.Config{BinDir: "bin", WorkDir: "work", Systems: tc.systems, BaseEdge: tc.base}
		err := cfg.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}
