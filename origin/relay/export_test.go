package relay

import "github.com/linkpop/linkpop/replication"

// SetPublishAfter replaces how r publishes a chained event; f gets the
// original to call.
func SetPublishAfter(r *Relay, f func(orig func(code string, rev uint64, data []byte, lastMsgID string) (*replication.PendingAck, error),
	code string, rev uint64, data []byte, lastMsgID string) (*replication.PendingAck, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	orig := r.publishAfter
	r.publishAfter = func(code string, rev uint64, data []byte, lastMsgID string) (*replication.PendingAck, error) {
		return f(orig, code, rev, data, lastMsgID)
	}
}
