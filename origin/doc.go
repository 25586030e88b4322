// Package origin is linkpop's write path: the HTTP API link creators call
// (JSON under /v1, Bearer API keys, per-key rate limits), the admin
// listener (/metrics, /healthz, /readyz) and the lifecycle that ties them
// to the Pebble store (origin/store) and the outbox relay (origin/relay)
// which feeds the JetStream change stream.
//
// A Server is built with New and served with Run; every error an API
// handler returns is turned into a status and a JSON body in one place
// (errors.go), so the contract in DESIGN.md is enforced by one function.
package origin
