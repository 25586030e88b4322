// Package wait polls for a condition with a deadline, so tests never sleep
// and hope.
package wait

import (
	"testing"
	"time"
)

// For polls cond every 10ms until it returns true or timeout passes, then
// fails the test with msg.
func For(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
