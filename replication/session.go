package replication

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// The skeleton the package's two JetStream consumers share (Consumer for
// the change stream, ClickConsumer for the click stream): Run builds one
// server-side consumer session at a time and rebuilds it with jittered
// backoff when it ends; a watchdog ends the running session with a cause
// (a stall, a reconnect, a stream reset), which nextErr reports.

// sessionSlot holds the running session's abort, for the watchdog.
type sessionSlot struct {
	mu    sync.Mutex
	abort context.CancelCauseFunc
}

// begin derives the session's context from ctx and publishes its abort;
// end withdraws it and cancels the context.
func (s *sessionSlot) begin(ctx context.Context) (sctx context.Context, abort context.CancelCauseFunc, end func()) {
	sctx, abort = context.WithCancelCause(ctx)
	s.mu.Lock()
	s.abort = abort
	s.mu.Unlock()
	return sctx, abort, func() {
		s.mu.Lock()
		s.abort = nil
		s.mu.Unlock()
		abort(nil)
	}
}

// end ends the running session with cause. It reports false if no
// session is running (one is being created, or Run backs off).
func (s *sessionSlot) end(cause error) bool {
	s.mu.Lock()
	abort := s.abort
	s.mu.Unlock()
	if abort == nil {
		return false
	}
	abort(cause)
	return true
}

// Session rebuild backoff: from minSessionBackoff, doubling to
// maxSessionBackoff, each wait jittered.
const minSessionBackoff, maxSessionBackoff = 100 * time.Millisecond, 5 * time.Second

// jitter is a wait of d/2 to d.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// nextErr explains why Next failed: the watchdog's reason if it aborted
// the session, else the iterator's error.
func nextErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return fmt.Errorf("next message: %w", err)
}
