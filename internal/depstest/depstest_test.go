package depstest

import "testing"

func TestForbidden(t *testing.T) {
	deny := []string{"testing", "github.com/linkpop/linkpop/origin", "github.com/nats-io/nats-server"}
	f := func(pkg string, want bool) {
		t.Helper()
		if got := Forbidden(pkg, deny); got != want {
			t.Errorf("Forbidden(%q) = %v, want %v", pkg, got, want)
		}
	}
	f("testing", true)
	f("testing/quick", true)
	f("github.com/linkpop/linkpop/origin", true)
	f("github.com/linkpop/linkpop/origin/store", true)
	f("github.com/linkpop/linkpop/originator", false)
	f("github.com/nats-io/nats-server/v2/server", true)
	f("github.com/nats-io/nats.go", false)
	f("github.com/linkpop/linkpop/edge", false)
}
