package link

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// Click analytics wire rules, shared by the edge that records and ships
// click batches and the collector that merges them.
const (
	// HLLPrecision is the HyperLogLog precision of every uniques sketch in
	// the system (2^14 registers, standard error 1.04/sqrt(2^14) ≈ 0.81 %).
	// Sketches of different precisions do not merge: never change it
	// without migrating every stored sketch.
	HLLPrecision = 14
	// MaxClickBatchLen bounds one encoded click batch; an edge with more to
	// ship splits it into consecutive batches. It stays under JetStream's
	// default 1 MiB max payload.
	MaxClickBatchLen = 960 << 10
	// MaxEdgeNameLen bounds an edge name (and a click journal instance).
	MaxEdgeNameLen = 64
	// MaxClickKeyLen bounds a breakdown key (a referrer host is at most
	// 253 bytes).
	MaxClickKeyLen = 253
)

// ValidEdgeName reports whether s can name an edge (or a journal instance):
// 1 to MaxEdgeNameLen bytes of [A-Za-z0-9_-], a single NATS subject token.
func ValidEdgeName(s string) bool {
	if len(s) < 1 || len(s) > MaxEdgeNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !codeByte[s[i]] {
			return false
		}
	}
	return true
}

// EdgeNameFrom turns a node name into a valid edge name: every byte
// outside [A-Za-z0-9_-] becomes '_' ("host:port" becomes "host_port"),
// the result is cut to MaxEdgeNameLen, and an empty name is "edge".
func EdgeNameFrom(node string) string {
	b := []byte(node)
	for i, c := range b {
		if !codeByte[c] {
			b[i] = '_'
		}
	}
	if len(b) > MaxEdgeNameLen {
		b = b[:MaxEdgeNameLen]
	}
	if len(b) == 0 {
		return "edge"
	}
	return string(b)
}

// MarshalClickBatch encodes b, stamping the schema version.
func MarshalClickBatch(b *linkpb.ClickBatch) ([]byte, error) {
	b.SchemaVersion = SchemaVersion
	return proto.MarshalOptions{Deterministic: true}.Marshal(b)
}

// UnmarshalClickBatch decodes and validates a click batch. Every batch from
// the click stream goes through here before it is merged.
func UnmarshalClickBatch(data []byte) (*linkpb.ClickBatch, error) {
	if len(data) > MaxClickBatchLen {
		return nil, fmt.Errorf("%w: click batch of %d bytes", ErrCorrupt, len(data))
	}
	var b linkpb.ClickBatch
	if err := proto.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%w: click batch: %v", ErrCorrupt, err)
	}
	if err := ValidateClickBatch(&b); err != nil {
		return nil, err
	}
	return &b, nil
}

// ValidateClickBatch checks every field of a click batch.
func ValidateClickBatch(b *linkpb.ClickBatch) error {
	if b.SchemaVersion != SchemaVersion {
		return fmt.Errorf("%w: click batch version %d", ErrUnsupportedSchema, b.SchemaVersion)
	}
	if !ValidEdgeName(b.Edge) {
		return fmt.Errorf("%w: click batch edge %q", ErrCorrupt, b.Edge)
	}
	if !ValidEdgeName(b.Instance) {
		return fmt.Errorf("%w: click batch instance %q", ErrCorrupt, b.Instance)
	}
	if b.Seq == 0 {
		return fmt.Errorf("%w: click batch seq 0", ErrCorrupt)
	}
	if b.ThroughUnixMs < 0 {
		return fmt.Errorf("%w: click batch through %d", ErrCorrupt, b.ThroughUnixMs)
	}
	for i, m := range b.Links {
		if !ValidCode(m.Code) {
			return fmt.Errorf("%w: click batch entry %d: code %q", ErrCorrupt, i, m.Code)
		}
		if m.MinuteUnix < 0 || m.MinuteUnix%60 != 0 {
			return fmt.Errorf("%w: click batch entry %d: minute %d", ErrCorrupt, i, m.MinuteUnix)
		}
		if uint64(len(m.Visitors)) > m.Clicks {
			return fmt.Errorf("%w: click batch entry %d: %d visitors for %d clicks", ErrCorrupt, i, len(m.Visitors), m.Clicks)
		}
		for _, kc := range [][]*linkpb.KeyCount{m.Referrers, m.Countries, m.Devices, m.Browsers, m.Os} {
			for _, k := range kc {
				if len(k.Key) > MaxClickKeyLen || k.Count == 0 {
					return fmt.Errorf("%w: click batch entry %d: breakdown key %q count %d", ErrCorrupt, i, k.Key, k.Count)
				}
			}
		}
	}
	return nil
}
