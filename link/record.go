package link

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// SchemaVersion is the version of the record and change encodings this
// build writes and understands. A reader refuses anything newer.
const SchemaVersion = 1

const (
	// MaxTags and MaxTagLen bound a link's tags.
	MaxTags   = 16
	MaxTagLen = 64
	// MaxReasonLen bounds a record's DisabledReason.
	MaxReasonLen = 512
	// MaxEncodedLen bounds an encoded record or change: the URL, tags and
	// framing with room to spare. Anything larger is refused unread.
	MaxEncodedLen = 16 << 10
	// DefaultRedirect is the redirect status unless the creator asks for
	// another: 302, so browsers come back and clicks are counted.
	DefaultRedirect = 302
)

// Status is whether a link redirects.
type Status uint8

const (
	StatusActive   Status = 1
	StatusDisabled Status = 2
)

func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusDisabled:
		return "disabled"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Freshness is a link's policy for an edge that cannot prove it is within
// its max-stale bound of the change stream: FreshnessRelaxed (the zero
// value) serves the last state held, FreshnessStrict answers 503 with
// Retry-After instead of a possibly stale redirect (for links whose
// deactivation must win, such as links taken down for abuse).
type Freshness uint8

const (
	FreshnessRelaxed Freshness = 0
	FreshnessStrict  Freshness = 1
)

// String is the API name: "relaxed" or "strict".
func (f Freshness) String() string {
	switch f {
	case FreshnessRelaxed:
		return "relaxed"
	case FreshnessStrict:
		return "strict"
	}
	return fmt.Sprintf("freshness(%d)", uint8(f))
}

// ParseFreshness reads an API name; ok is false for anything but
// "relaxed" and "strict".
func ParseFreshness(s string) (f Freshness, ok bool) {
	switch s {
	case "relaxed":
		return FreshnessRelaxed, true
	case "strict":
		return FreshnessStrict, true
	}
	return 0, false
}

// Op says which mutation produced a change.
type Op uint8

const (
	OpCreate  Op = 1
	OpUpdate  Op = 2
	OpDisable Op = 3
)

func (o Op) String() string {
	switch o {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpDisable:
		return "disable"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Record is one link.
type Record struct {
	Code      string
	URL       string // canonical, as returned by URLPolicy.NormalizeURL
	Redirect  int    // 301, 302, 307 or 308
	Status    Status
	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time // zero: never expires
	Revision  uint64    // origin revision of the last mutation
	Tags      []string
	MaxVisits uint64 // clicks after which the origin disables the link; 0: no limit
	// DisabledReason says why the origin disabled the link on its own
	// ("blocklist: evil.example", "max_visits"); empty otherwise.
	DisabledReason string
	Freshness      Freshness
}

// Expired reports whether the link has an expiry at or before now.
func (r *Record) Expired(now time.Time) bool {
	return !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt)
}

// Redirects reports whether a visitor arriving at now is redirected: the
// link is active and not expired.
func (r *Record) Redirects(now time.Time) bool {
	return r.Status == StatusActive && !r.Expired(now)
}

// Validate checks every field of a record that came from outside the
// process (the stream, a disk written by another build).
func (r *Record) Validate() error {
	if !ValidCode(r.Code) {
		return fmt.Errorf("%w: code %q", ErrCorrupt, r.Code)
	}
	if err := ValidStoredURL(r.URL); err != nil {
		return fmt.Errorf("%w: url: %v", ErrCorrupt, err)
	}
	if !ValidRedirect(r.Redirect) {
		return fmt.Errorf("%w: redirect %d", ErrCorrupt, r.Redirect)
	}
	if r.Status != StatusActive && r.Status != StatusDisabled {
		return fmt.Errorf("%w: status %d", ErrCorrupt, r.Status)
	}
	if r.Revision == 0 {
		return fmt.Errorf("%w: revision 0", ErrCorrupt)
	}
	if err := ValidateTags(r.Tags); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(r.DisabledReason) > MaxReasonLen || !utf8.ValidString(r.DisabledReason) {
		return fmt.Errorf("%w: disabled reason", ErrCorrupt)
	}
	if r.Freshness != FreshnessRelaxed && r.Freshness != FreshnessStrict {
		return fmt.Errorf("%w: freshness %d", ErrCorrupt, r.Freshness)
	}
	return nil
}

// ValidRedirect reports whether code is a redirect status links may use.
func ValidRedirect(code int) bool {
	return code == 301 || code == 302 || code == 307 || code == 308
}

// ValidStoredURL checks a URL that should already be canonical: it is what
// an edge will put in a Location header, so it must be non-empty, within
// MaxURLLen and printable ASCII with no space or backslash. It is cheaper
// than NormalizeURL and does not need the origin's policy.
func ValidStoredURL(u string) error {
	if u == "" {
		return ErrInvalidURL
	}
	if len(u) > MaxURLLen {
		return ErrURLTooLong
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= 0x20 || c >= 0x7f || c == '\\' {
			return ErrInvalidURL
		}
	}
	if !(hasPrefixFold(u, "http://") || hasPrefixFold(u, "https://")) {
		return ErrURLSchemeNotAllowed
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// ValidateTags checks a tag list: at most MaxTags tags, each 1..MaxTagLen
// bytes of printable UTF-8, no duplicates.
func ValidateTags(tags []string) error {
	if len(tags) > MaxTags {
		return ErrInvalidTags
	}
	seen := make(map[string]struct{}, len(tags))
	for _, t := range tags {
		if t == "" || len(t) > MaxTagLen || !utf8.ValidString(t) {
			return ErrInvalidTags
		}
		for _, r := range t {
			if !unicode.IsPrint(r) {
				return ErrInvalidTags
			}
		}
		if _, dup := seen[t]; dup {
			return ErrInvalidTags
		}
		seen[t] = struct{}{}
	}
	return nil
}

// Change is one committed mutation, as carried by the change stream.
type Change struct {
	Op          Op
	Record      Record
	CommittedAt time.Time // origin wall clock at commit
}

// MarshalRecord encodes r in the wire schema.
func MarshalRecord(r *Record) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(recordToPB(r))
}

// UnmarshalRecord decodes and validates a record. It refuses oversized
// input, unknown schema versions and invalid fields.
func UnmarshalRecord(b []byte) (Record, error) {
	if len(b) > MaxEncodedLen {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	var pb linkpb.Record
	if err := proto.Unmarshal(b, &pb); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return recordFromPB(&pb)
}

// MarshalChange encodes c in the wire schema.
func MarshalChange(c *Change) ([]byte, error) {
	pb := &linkpb.Change{
		SchemaVersion:       SchemaVersion,
		Op:                  linkpb.Op(c.Op),
		Record:              recordToPB(&c.Record),
		CommittedAtUnixNano: c.CommittedAt.UnixNano(),
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(pb)
}

// Field numbers of the Change message, taken from the generated
// descriptor so that MarshalChangeOf cannot drift from the schema.
var (
	changeFields       = (&linkpb.Change{}).ProtoReflect().Descriptor().Fields()
	changeVersionTag   = changeFields.ByName("schema_version").Number()
	changeOpTag        = changeFields.ByName("op").Number()
	changeRecordTag    = changeFields.ByName("record").Number()
	changeCommittedTag = changeFields.ByName("committed_at_unix_nano").Number()
)

// MarshalChangeOf is MarshalChange of a change whose record MarshalRecord
// encoded as record, without encoding the record again: a deterministic
// protobuf message is its fields in number order, so the change is its
// schema version, op, the record's bytes and the commit time
// (FuzzMarshalChangeOf compares the two).
func MarshalChangeOf(op Op, record []byte, committedAt time.Time) []byte {
	b := make([]byte, 0, len(record)+24)
	b = AppendVarintField(b, changeVersionTag, SchemaVersion)
	b = AppendVarintField(b, changeOpTag, uint64(op))
	b = protowire.AppendTag(b, changeRecordTag, protowire.BytesType)
	b = protowire.AppendBytes(b, record)
	return AppendVarintField(b, changeCommittedTag, uint64(committedAt.UnixNano()))
}

// ChangeRecordBytes returns the record of an encoded change as the change
// carries it: for a change made by MarshalChange or MarshalChangeOf, the
// bytes MarshalRecord makes of its record, so a replica can store them
// without encoding the record again (FuzzChangeRecordBytes compares the
// two). It checks the framing only; call it on a change UnmarshalChange
// accepted. ok is false when b is not well framed or does not carry its
// record as exactly one field (protobuf merges a repeated message field,
// so no single field's bytes would be the record UnmarshalChange decoded).
func ChangeRecordBytes(b []byte) (record []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == changeRecordTag && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || record != nil {
				return nil, false
			}
			record, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return record, record != nil
}

// UnmarshalChange decodes and validates a change event. Every event from
// the stream goes through here before it is applied.
func UnmarshalChange(b []byte) (Change, error) {
	if len(b) > MaxEncodedLen {
		return Change{}, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	var pb linkpb.Change
	if err := proto.Unmarshal(b, &pb); err != nil {
		return Change{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if pb.SchemaVersion != SchemaVersion {
		return Change{}, fmt.Errorf("%w: change version %d", ErrUnsupportedSchema, pb.SchemaVersion)
	}
	op := Op(pb.Op)
	if op != OpCreate && op != OpUpdate && op != OpDisable {
		return Change{}, fmt.Errorf("%w: op %d", ErrCorrupt, pb.Op)
	}
	if pb.Record == nil {
		return Change{}, fmt.Errorf("%w: change without record", ErrCorrupt)
	}
	r, err := recordFromPB(pb.Record)
	if err != nil {
		return Change{}, err
	}
	return Change{Op: op, Record: r, CommittedAt: time.Unix(0, pb.CommittedAtUnixNano)}, nil
}

func recordToPB(r *Record) *linkpb.Record {
	pb := &linkpb.Record{
		SchemaVersion:   SchemaVersion,
		Code:            r.Code,
		Url:             r.URL,
		Redirect:        uint32(r.Redirect),
		Status:          linkpb.Status(r.Status),
		CreatedAtUnixMs: r.CreatedAt.UnixMilli(),
		UpdatedAtUnixMs: r.UpdatedAt.UnixMilli(),
		Revision:        r.Revision,
		Tags:            r.Tags,
		MaxVisits:       r.MaxVisits,
		DisabledReason:  r.DisabledReason,
		Freshness:       linkpb.Freshness(r.Freshness),
	}
	if !r.ExpiresAt.IsZero() {
		pb.ExpiresAtUnixMs = r.ExpiresAt.UnixMilli()
	}
	return pb
}

func recordFromPB(pb *linkpb.Record) (Record, error) {
	if pb.SchemaVersion != SchemaVersion {
		return Record{}, fmt.Errorf("%w: record version %d", ErrUnsupportedSchema, pb.SchemaVersion)
	}
	r := Record{
		Code:      pb.Code,
		URL:       pb.Url,
		Redirect:  int(pb.Redirect),
		Status:    Status(pb.Status),
		CreatedAt: time.UnixMilli(pb.CreatedAtUnixMs).UTC(),
		UpdatedAt: time.UnixMilli(pb.UpdatedAtUnixMs).UTC(),
		Revision:  pb.Revision,
		Tags:      pb.Tags,
		MaxVisits: pb.MaxVisits,

		DisabledReason: pb.DisabledReason,
		Freshness:      Freshness(pb.Freshness),
	}
	if pb.ExpiresAtUnixMs != 0 {
		r.ExpiresAt = time.UnixMilli(pb.ExpiresAtUnixMs).UTC()
	}
	if pb.Freshness != linkpb.Freshness_FRESHNESS_RELAXED && pb.Freshness != linkpb.Freshness_FRESHNESS_STRICT {
		return Record{}, fmt.Errorf("%w: freshness %d", ErrCorrupt, pb.Freshness)
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}
