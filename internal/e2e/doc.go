// Package e2e holds the end-to-end tests of the whole system: a real origin
// writing through JetStream to two real edges, checked against a plain Go
// map model, under faults (NATS restarted, origin and NATS down, an edge
// SIGKILLed during apply, poison records in the stream). The components run
// in-process on 127.0.0.1 with random ports and temporary directories,
// except the edge that must be SIGKILLed, which runs as a child process
// built once by TestMain. It has no non-test code.
package e2e
