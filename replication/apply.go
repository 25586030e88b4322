package replication

import "github.com/linkpop/linkpop/link"

// Applier is the replica a Consumer feeds: the edge's Pebble store. It is
// the contract between replication and the edge.
type Applier interface {
	// Position returns the stream sequence of the last message applied,
	// or 0 for an empty replica. The Consumer resumes after it.
	Position() (uint64, error)
	// Apply stores every change in b whose revision is newer than the
	// revision the replica holds for that code, records every poison
	// message in quarantine, and sets the position to b.Through, all in
	// one atomic, durable batch: after a crash either all of b is applied
	// or none of it. If b.NoSync is set, the batch need not be durable
	// when Apply returns, but a later durable Apply makes it durable too. The position is set unconditionally, even when
	// b.Through is lower than the stored position: after the stream was
	// deleted and recreated the Consumer replays it from the start, and
	// the revision checks make that replay harmless. A Batch with no
	// messages and Through 0 is a rewind (Consumer.Resync): the position
	// becomes 0 and every record is kept, so the replay that follows
	// starts from the first message even after a restart.
	Apply(b Batch) error
}

// Batch is a run of consecutive stream messages, or, with none and
// Through 0, a rewind.
type Batch struct {
	// Changes are the decoded, valid events, in stream order.
	Changes []Entry
	// Poison are the messages that failed to decode or validate. They are
	// skipped (quarantined), never applied, and never stop replication.
	Poison []Poison
	// Through is the stream sequence of the last message in the batch.
	Through uint64
	// NoSync allows the Applier to commit b without waiting for the disk:
	// still atomic (after a crash either all of b and of every batch
	// applied before it is there, or the position is that of an earlier
	// batch), but a power loss may lose it. The Consumer sets it only
	// while it lags behind the stream, where a lost tail is simply read
	// again from the stored position, and never for the batch that
	// catches up: see ConsumerConfig.MaxUnsynced. An Applier may ignore
	// it and always commit durably.
	NoSync bool
	// Pending is how many messages the stream still held after Through
	// when the consumer received the last message of the batch (the
	// server's count): 0 when the batch catches up. An Applier may use it
	// to prepare for a long replay (a bulk load) and end that
	// preparation when caught up.
	Pending uint64
}

// Entry is one valid change event with its stream sequence.
type Entry struct {
	Seq    uint64
	Change link.Change
	// Record is Change.Record as the message encoded it
	// (link.ChangeRecordBytes: link.MarshalRecord's encoding for a change
	// the origin made), or nil: an Applier may store these bytes instead
	// of encoding the record again.
	Record []byte
}

// Poison is a message that could not be applied.
type Poison struct {
	Seq     uint64
	Subject string
	Data    []byte
	Err     error
}
