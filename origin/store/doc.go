// Package store is the origin's system of record: a Pebble database holding
// every link, the transactional outbox of change events the relay publishes
// to JetStream, Idempotency-Key records and API keys.
//
// One writer goroutine owns every mutation. Callers hand it requests on a
// channel; it drains up to Options.MaxBatch of them, validates each against
// the store and against the requests before it in the same batch, assigns
// strictly increasing revisions, writes links, outbox entries,
// idempotency records and the revision counter into one Pebble batch and
// commits it with a single fsync (group commit). Commit order is therefore
// revision order, and nothing is acknowledged before it is durable. Reads
// (Get, List, Outbox, API key lookups) go straight to Pebble and see
// committed state only.
//
// # Key layout
//
// Every key starts with a one-byte table prefix and a slash:
//
//	l/<code>                      link: link.MarshalRecord
//	o/<revision:8 BE>             outbox: uvarint(committed unix ns) uvarint(len code) code change
//	                              where change is link.MarshalChange output
//	i/<scope>\x00<key>            idempotency record: request hash (32) |
//	                              created unix ns (8 BE) | link.MarshalRecord snapshot
//	x/<created ns:8 BE><scope>\x00<key>
//	                              idempotency expiry index (empty value), so
//	                              the sweep reads expired records in order
//	k/<id>                        API key: encodeAPIKey
//	h/<sha256:32>                 API key hash index: the key's id
//	p/<seq:8 BE>                  origin outbox (API keys, idempotency records for
//	                              the origin stream): the o/ encoding, code
//	                              "key.<hex id>" or "idem.<hash>", JSON payload
//	m/revision                    last committed revision (8 BE)
//	m/links                       number of links (8 BE)
//	m/oseq                        last origin outbox sequence (8 BE)
//	m/pos/links, m/pos/origin     stream positions a standby applied (8 BE)
//
// Big-endian revisions make the outbox iterate oldest first. The revision
// counter is stored, not derived from the outbox, because the relay empties
// the outbox. Codes are never deleted, so a disabled link keeps its code
// forever and a code is never reused.
package store
