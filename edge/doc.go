// Package edge is linkpop's read path: a Server that answers GET /{code}
// with the link's redirect from a full local replica (edge/replica), keeps
// that replica current from the change stream (replication.Consumer),
// asks the origin about misses only while it lags (single flight, with a
// budget), keeps serving its last state when the stream or the origin is
// down, exposes health, readiness, status and Prometheus metrics on a
// separate admin listener, and gossips its replication position with the
// other edges of its PoP (memberlist).
package edge
