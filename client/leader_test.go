package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/linkpop/linkpop/client"
)

// TestNotLeaderFollowsTheLeader: a standby answers 503 not_leader naming
// the leader; the client sends the same create (without an
// Idempotency-Key: a standby did nothing, so it is safe) to the leader
// and keeps calling the leader afterwards.
func TestNotLeaderFollowsTheLeader(t *testing.T) {
	var leaderCalls, standbyCalls atomic.Int32
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaderCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"code":"abcdefg","url":"https://example.com/","short_url":"http://s/abcdefg","redirect":302,"status":"active","revision":1,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","expires_at":null,"tags":[],"max_visits":null}`))
	}))
	defer leader.Close()
	standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		standbyCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"not_leader","message":"standby","leader":"` + leader.URL + `"}}`))
	}))
	defer standby.Close()
	c, err := client.New(client.Config{BaseURL: standby.URL, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		l, err := c.CreateLink(context.Background(), client.CreateLink{URL: "https://example.com/"}, client.CreateOptions{})
		if err != nil || l.Code != "abcdefg" {
			t.Fatalf("create %d: %+v, %v", i, l, err)
		}
	}
	if standbyCalls.Load() != 1 || leaderCalls.Load() != 2 || c.BaseURL() != leader.URL {
		t.Fatalf("standby called %d times, leader %d, base %s", standbyCalls.Load(), leaderCalls.Load(), c.BaseURL())
	}
}
