package relay

import "github.com/linkpop/linkpop/replication"

// SetPublishAt replaces how r publishes one event of its chain; f gets the
// original to call.
func SetPublishAt(r *Relay, f func(orig replication.SendFunc, code string, rev uint64, data []byte, lastSeq uint64) (*replication.PendingAck, error)) {
	orig := *r.publishAt.Load()
	send := replication.SendFunc(func(code string, rev uint64, data []byte, lastSeq uint64) (*replication.PendingAck, error) {
		return f(orig, code, rev, data, lastSeq)
	})
	r.publishAt.Store(&send)
}
