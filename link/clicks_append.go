package link

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// AppendClickBatch appends the encoding of b to dst, stamping the schema
// version: the same bytes as MarshalClickBatch (TestAppendClickBatch
// checks that against the generated code), without protobuf's reflection,
// for the edge, which encodes a batch entry per code-minute every flush.
func AppendClickBatch(dst []byte, b *linkpb.ClickBatch) []byte {
	b.SchemaVersion = SchemaVersion
	dst = AppendVarintField(dst, 1, uint64(b.SchemaVersion))
	dst = AppendStringField(dst, 2, b.Edge)
	dst = AppendStringField(dst, 3, b.Instance)
	dst = AppendVarintField(dst, 4, b.Seq)
	dst = AppendVarintField(dst, 5, uint64(b.ThroughUnixMs))
	dst = AppendVarintField(dst, 6, b.Dropped)
	for _, lm := range b.Links {
		dst = protowire.AppendTag(dst, 7, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(sizeLinkMinute(lm)))
		dst = appendLinkMinute(dst, lm)
	}
	return dst
}

// AppendVarintField appends varint field num = v, leaving out a zero v
// as proto3 does: the one field encoder of the hand-written click batch
// encoders (this file and edge/clicks).
func AppendVarintField(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.VarintType)
	return protowire.AppendVarint(dst, v)
}

// AppendStringField appends string field num = s, leaving out an empty s
// as proto3 does.
func AppendStringField(dst []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendString(dst, s)
}

func sizeVarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeStringField(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func sizeKeyCount(kc *linkpb.KeyCount) int {
	return sizeStringField(1, kc.Key) + sizeVarintField(2, kc.Count)
}

func sizeLinkMinute(lm *linkpb.LinkMinute) int {
	n := sizeStringField(1, lm.Code) + sizeVarintField(2, uint64(lm.MinuteUnix)) +
		sizeVarintField(3, lm.Clicks) + sizeVarintField(4, lm.Bots)
	if len(lm.Visitors) > 0 {
		n += protowire.SizeTag(5) + protowire.SizeBytes(8*len(lm.Visitors))
	}
	for i, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
		for _, kc := range kcs {
			n += protowire.SizeTag(protowire.Number(6+i)) + protowire.SizeBytes(sizeKeyCount(kc))
		}
	}
	return n
}

func appendLinkMinute(dst []byte, lm *linkpb.LinkMinute) []byte {
	dst = AppendStringField(dst, 1, lm.Code)
	dst = AppendVarintField(dst, 2, uint64(lm.MinuteUnix))
	dst = AppendVarintField(dst, 3, lm.Clicks)
	dst = AppendVarintField(dst, 4, lm.Bots)
	if len(lm.Visitors) > 0 {
		dst = protowire.AppendTag(dst, 5, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(8*len(lm.Visitors)))
		for _, v := range lm.Visitors {
			dst = protowire.AppendFixed64(dst, v)
		}
	}
	for i, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
		for _, kc := range kcs {
			dst = protowire.AppendTag(dst, protowire.Number(6+i), protowire.BytesType)
			dst = protowire.AppendVarint(dst, uint64(sizeKeyCount(kc)))
			dst = AppendStringField(dst, 1, kc.Key)
			dst = AppendVarintField(dst, 2, kc.Count)
		}
	}
	return dst
}
