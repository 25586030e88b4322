package clicks

import "time"

// pacer cuts a seal's work into slices and pauses between them, so a
// seal never holds the core a redirect needs for more than a slice.
//
// A seal is one goroutine adding up, encoding and clearing every click of
// an interval: at 60,000 distinct clicks a second, 10-20 ms of CPU. With
// GOMAXPROCS=1 (an edge given one core), the Go scheduler runs it until it
// blocks or is preempted (after 10 ms), and every redirect waits behind it:
// the analytics edge's p99 was 3-9 ms above the same edge's without
// analytics. A yield that leaves the goroutine runnable (runtime.Gosched)
// does not help: the scheduler takes the global run queue, where the
// yielder goes, before it polls the network, so the connections whose
// requests came in meanwhile stay unseen until sysmon polls, up to 10 ms
// later. A pause (a timer) parks the seal; with nothing runnable the
// scheduler polls the network and serves the requests that came in.
//
// Work is counted in units, about 100-250 ns each (a log record added up,
// an entry encoded); every slice units the pacer pauses, for pauseFactor
// times as long as the slice ran, so under load a seal takes about a
// twentieth of the core for twenty times its CPU time: the redirects
// served meanwhile lose 5 % of the core, not all of it for 10 ms. Pauses
// shrink when they would end the seal after its deadline, so that the
// work left, as estimated, ends by then (never below the slice's own run:
// a seal never takes more than half of a contended core). An idle
// process sleeps at least a millisecond per pause (the poller's
// resolution); a seal with little work has few slices.
type pacer struct {
	slice    int                 // units between two pauses; 0: no pauses
	deadline time.Time           // when the seal should be done
	left     int                 // units estimated to remain
	units    int                 // units since the last pause
	began    time.Time           // when the current slice began
	sleep    func(time.Duration) // nil: a timer, cut short by done
	done     <-chan struct{}     // closed: pause no more (the shipper stops)
	// pauses counts the pauses and longest the most units run between two
	// (tests).
	pauses, longest int
}

const (
	// sealSlice is the units of one slice: about 50-130 µs.
	sealSlice = 512
	// pauseFactor: a pause lasts this many times its slice's run.
	pauseFactor = 19
	// classifyUnits is the work of classifying a User-Agent (about
	// 150 µs: BenchmarkClassify), a slice of its own.
	classifyUnits = sealSlice
)

// newPacer returns a pacer for a seal of about units units of work, to be
// done by deadline, that pauses with sleep (nil: a timer) until done is
// closed.
func newPacer(units int, deadline time.Time, sleep func(time.Duration), done <-chan struct{}) *pacer {
	return &pacer{slice: sealSlice, deadline: deadline, left: units, began: time.Now(), sleep: sleep, done: done}
}

// step counts n units of work done, and pauses if they end a slice. A nil
// pacer never pauses (a seal that must be quick: the last one, or a
// test's).
func (p *pacer) step(n int) {
	if p == nil || p.slice == 0 {
		return
	}
	p.units += n
	p.left -= n
	if p.units < p.slice {
		return
	}
	p.longest = max(p.longest, p.units)
	p.units = 0
	select {
	case <-p.done:
		p.slice = 0 // stopping: the rest of the seal at full speed
		return
	default:
	}
	now := time.Now()
	ran := now.Sub(p.began)
	pause := pauseFactor * ran
	// The work left, past the estimate, is at least this slice.
	if slices := max(p.left, 0)/p.slice + 1; pause > ran {
		pause = max(min(pause, p.deadline.Sub(now)/time.Duration(slices)), ran)
	}
	p.pauses++
	if p.sleep != nil {
		p.sleep(pause)
	} else {
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-p.done:
			t.Stop()
		}
	}
	p.began = time.Now()
}
