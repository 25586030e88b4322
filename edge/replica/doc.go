// Package replica is the edge's local copy of the link table: a Pebble
// store fed in order by the change stream (it implements
// replication.Applier) and read on every redirect through an in-memory hot
// cache, a bloom filter over every code held, and a bounded negative cache.
//
// # Key layout
//
//	"l/" + code           link.MarshalRecord bytes of the link's latest state
//	                      (as the change stream's message carried them)
//	"m/position"          uint64 big endian: stream sequence of the last
//	                      applied message (the Applier position)
//	"m/links"             uint64 big endian: number of "l/" keys
//	"m/quarantined"       uint64 big endian: number of "q/" keys
//	"q/" + seq (8 bytes   quarantined poison message: uvarint length +
//	  big endian)         subject, uvarint length + error text, raw bytes
//	                      truncated to MaxQuarantineData
//	"m/id"                16 random bytes naming the store
//
// Next to Pebble's files, "codes.bloom" holds the bloom filter saved by
// Close; Open loads it instead of scanning every code when it was written
// for this store and for the current link count (see bloomfile.go).
//
// Every Apply writes its changes, its quarantined messages, the counters
// and the position in one Pebble batch committed with pebble.Sync (or
// unsynced, while the consumer lags: Batch.NoSync), so a restart resumes
// exactly after the last applied batch the WAL kept.
//
// # Bulk load
//
// A replay (a fresh edge, a resync, a long outage: a batch after which
// Options.BulkPending messages are still pending) runs the store with
// bulk-load settings (large memtables, L0 compactions deferred), and the
// batch that catches up returns it to the steady-state settings; each
// switch flushes the memtable and reopens the store (Replica.setBulk).
// The WAL stays on in both, so the batches' atomicity and durability are
// the same in both. The stream never
// deletes a code (a disabled link keeps its record); only a repair
// (Overwrite) removes a code the origin does not hold, and its code stays
// in the bloom filter as a harmless false positive.
//
// # Digests
//
// BucketDigest and DigestBucket read every record's code and revision
// (not the rest of it) from one snapshot, with the position it reflects,
// for comparison with the origin's digest (see link.Digest).
//
// # Coherence
//
// Once Apply or Put returns, no Lookup returns an older value for a code it
// changed. Writers are serialized; after a commit a writer adds the codes to
// the bloom filter, bumps a generation counter, then replaces hot-cache
// entries it finds and drops negative-cache entries. A reader that went to
// Pebble notes the generation first and inserts into either cache only from
// inside the cache's per-key compute if the generation is unchanged, so a
// value read before a commit can never be cached after it.
package replica
