package clicks

import (
	"testing"
	"time"
)

// TestPacerPastEstimate: a seal with more work than estimated, past its
// deadline, still pauses every slice, for no less than the slice ran.
func TestPacerPastEstimate(t *testing.T) {
	var pauses []time.Duration
	p := newPacer(sealSlice, time.Now().Add(-time.Second), func(d time.Duration) { pauses = append(pauses, d) })
	for range 10 * sealSlice {
		p.step(1)
	}
	if len(pauses) != 10 || p.pauses != 10 || p.longest != sealSlice {
		t.Fatalf("%d pauses (counted %d), longest run %d units, want 10 and %d", len(pauses), p.pauses, p.longest, sealSlice)
	}
	for i, d := range pauses {
		if d < 0 {
			t.Fatalf("pause %d: %v", i, d)
		}
	}
	var none *pacer
	none.step(sealSlice) // a quick seal's: no pause, no panic
}
