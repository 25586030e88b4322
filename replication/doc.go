// Package replication is linkpop's change stream: the JetStream stream that
// holds the latest change event of every link, the Publisher and the Chain
// (ordered, pipelined, safe on a replicated stream) the origin's relay uses
// to append to it, and the Consumer an edge uses to apply it to
// its replica in order, resuming from the position it stored. It is the only
// package that imports nats.go.
package replication
