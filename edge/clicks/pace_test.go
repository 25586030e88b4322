package clicks

import (
	"testing"
	"time"
)

// TestPacerPastEstimate: a seal with more work than estimated, past its
// deadline, still pauses every slice, for no less than the slice ran.
func TestPacerPastEstimate(t *testing.T) {
	var pauses []time.Duration
	p := newPacer(sealSlice, time.Now().Add(-time.Second), func(d time.Duration) { pauses = append(pauses, d) }, nil)
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

// TestPacerDone: once done is closed (the shipper stops), a seal pauses
// no more.
func TestPacerDone(t *testing.T) {
	done := make(chan struct{})
	p := newPacer(10*sealSlice, time.Now().Add(time.Hour), nil, done)
	for range 2 * sealSlice {
		p.step(1)
	}
	if p.pauses != 2 {
		t.Fatalf("%d pauses before done, want 2", p.pauses)
	}
	close(done)
	for range 8 * sealSlice {
		p.step(1)
	}
	if p.pauses != 2 {
		t.Fatalf("%d pauses, want none after done", p.pauses-2)
	}
}
