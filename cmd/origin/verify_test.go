package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/linkpop/linkpop/internal/proctest"
	"github.com/linkpop/linkpop/origin"
)

// TestPickOrigin: `origin verify -api` with several URLs uses the leader's
// (an origin answering Linkpop-Role: leader, or without the header: no
// HA), else the first that answers, else the first given; one URL is
// used as given, without asking.
func TestPickOrigin(t *testing.T) {
	var asked atomic.Int64
	serve := func(role string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			if r.URL.Path != "/v1/openapi.json" {
				http.NotFound(w, r)
				return
			}
			if role != "" {
				w.Header().Set(origin.RoleHeader, role)
			}
			w.Write([]byte("{}"))
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	dead := "http://" + proctest.FreeAddr(t) // nothing listens
	leader, standby, standby2, plain := serve("leader"), serve("standby"), serve("standby"), serve("")
	for _, tc := range []struct {
		name string
		urls []string
		want string
	}{
		{"leader after a dead one and a standby", []string{dead, standby, leader}, leader},
		{"leader first", []string{leader, standby}, leader},
		{"an origin without HA", []string{standby, plain}, plain},
		{"only standbys: the first that answers", []string{dead, standby2, standby}, standby2},
		{"none answers: the first", []string{dead, "http://" + proctest.FreeAddr(t)}, dead},
		{"one URL, not asked", []string{dead}, dead},
		{"a trailing slash", []string{standby, leader + "/"}, leader + "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := asked.Load()
			if got := pickOrigin(context.Background(), nil, tc.urls); got != tc.want {
				t.Fatalf("pickOrigin(%v) = %s, want %s", tc.urls, got, tc.want)
			}
			if len(tc.urls) == 1 && asked.Load() != before {
				t.Fatal("a single URL was asked")
			}
		})
	}
	if got := pickOrigin(context.Background(), nil, nil); got != "" {
		t.Fatalf("no URLs: %q", got)
	}
}
