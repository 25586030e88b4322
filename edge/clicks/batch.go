package clicks

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// lmKey identifies one LinkMinute of a batch.
type lmKey struct {
	code   string
	minute int64
}

// lmBuilder merges the shards' aggregates of one (code, minute).
type lmBuilder struct {
	clicks, bots                           uint64
	visitors                               map[uint64]struct{}
	refs, countries, devices, browsers, os map[string]uint64
}

// sealStats are the counts of one seal.
type sealStats struct {
	recorded, dropped, degraded uint64
}

// builder turns shard aggregates into LinkMinutes. It owns what the
// shipper knows of User-Agents and referrers, keyed by the recorder's
// hashes.
type builder struct {
	cls     *Classifier
	uaClass map[uint64]Class
	refStr  map[uint64]string
}

func newBuilder() *builder {
	return &builder{cls: NewClassifier(), uaClass: make(map[uint64]Class), refStr: make(map[uint64]string)}
}

var unknownClass = Class{Device: DeviceOther, Browser: otherKey, OS: otherKey}

// learn classifies the User-Agents and keeps the referrers first seen in
// the aggregates.
func (b *builder) learn(aggs []*agg) {
	for _, a := range aggs {
		for h, s := range a.uaNew {
			if _, ok := b.uaClass[h]; !ok {
				b.uaClass[h] = b.cls.Classify(s)
			}
		}
		for h, s := range a.refNew {
			b.refStr[h] = s
		}
	}
}

func (b *builder) class(h uint64) Class {
	if c, ok := b.uaClass[h]; ok {
		return c
	}
	return unknownClass
}

func (b *builder) referrer(h uint64) string {
	switch h {
	case refDirect:
		return ""
	case refOther:
		return otherKey
	}
	if s, ok := b.refStr[h]; ok {
		return s
	}
	return otherKey
}

// build merges the aggregates into LinkMinutes ordered by code and minute.
func (b *builder) build(aggs []*agg) ([]*linkpb.LinkMinute, sealStats) {
	var st sealStats
	lms := make(map[lmKey]*lmBuilder)
	for _, a := range aggs {
		st.recorded += a.recorded
		st.dropped += a.dropped
		st.degraded += a.degraded
		for code, m := range a.codes {
			for ; m != nil; m = m.next {
				k := lmKey{code, m.minute}
				lb := lms[k]
				if lb == nil {
					lb = &lmBuilder{visitors: map[uint64]struct{}{}, refs: map[string]uint64{}, countries: map[string]uint64{},
						devices: map[string]uint64{}, browsers: map[string]uint64{}, os: map[string]uint64{}}
					lms[k] = lb
				}
				for t, n := range m.tuples {
					c := b.class(t.ua)
					lb.devices[c.Device] += n
					if c.Bot {
						lb.bots += n
						continue
					}
					lb.clicks += n
					lb.refs[b.referrer(t.ref)] += n
					lb.countries[string(t.country[:])] += n
					lb.browsers[c.Browser] += n
					lb.os[c.OS] += n
				}
				lb.clicks += m.plain
				for v, ua := range m.visitors {
					if !b.class(ua).Bot {
						lb.visitors[v] = struct{}{}
					}
				}
			}
		}
	}
	out := make([]*linkpb.LinkMinute, 0, len(lms))
	for k, lb := range lms {
		lm := &linkpb.LinkMinute{Code: k.code, MinuteUnix: k.minute, Clicks: lb.clicks, Bots: lb.bots,
			Referrers: keyCounts(lb.refs), Countries: keyCounts(lb.countries), Devices: keyCounts(lb.devices),
			Browsers: keyCounts(lb.browsers), Os: keyCounts(lb.os)}
		if len(lb.visitors) > 0 {
			lm.Visitors = make([]uint64, 0, len(lb.visitors))
			for v := range lb.visitors {
				lm.Visitors = append(lm.Visitors, v)
			}
			slices.Sort(lm.Visitors)
		}
		out = append(out, lm)
	}
	slices.SortFunc(out, func(x, y *linkpb.LinkMinute) int {
		return cmp.Or(cmp.Compare(x.Code, y.Code), cmp.Compare(x.MinuteUnix, y.MinuteUnix))
	})
	return out, st
}

// keyCounts lists m by count descending, then key.
func keyCounts(m map[string]uint64) []*linkpb.KeyCount {
	if len(m) == 0 {
		return nil
	}
	out := make([]*linkpb.KeyCount, 0, len(m))
	for k, n := range m {
		if n > 0 {
			out = append(out, &linkpb.KeyCount{Key: k, Count: n})
		}
	}
	slices.SortFunc(out, func(x, y *linkpb.KeyCount) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Key, y.Key))
	})
	return out
}

// batchOverhead is room left in every batch for its header fields.
const batchOverhead = 256

// split divides links into groups whose batches each encode within
// limit bytes. A LinkMinute too large on its own (a very popular code
// with many visitors in one minute) is cut into parts that each carry a
// share of its visitors and as many of its clicks (the first part carries
// the rest of the clicks, the bots and the breakdowns), so every part
// stays valid (visitors <= clicks) and the parts sum to the whole. The
// parts of one (code, minute) go to different groups: a batch holds at
// most one entry per (code, minute).
func split(links []*linkpb.LinkMinute, limit int) [][]*linkpb.LinkMinute {
	room := limit - batchOverhead
	var groups [][]*linkpb.LinkMinute
	var cur []*linkpb.LinkMinute
	size := 0
	flush := func() {
		if len(cur) > 0 {
			groups = append(groups, cur)
			cur, size = nil, 0
		}
	}
	add := func(lm *linkpb.LinkMinute) {
		n := proto.Size(lm) + 8 // tag and length prefix
		if size+n > room {
			flush()
		}
		cur = append(cur, lm)
		size += n
	}
	for _, lm := range links {
		if proto.Size(lm)+8 <= room {
			add(lm)
			continue
		}
		for _, part := range cutLinkMinute(lm, room) {
			flush()
			add(part)
		}
		flush()
	}
	flush()
	return groups
}

// cutLinkMinute cuts lm into parts of at most room bytes each.
func cutLinkMinute(lm *linkpb.LinkMinute, room int) []*linkpb.LinkMinute {
	head := &linkpb.LinkMinute{Code: lm.Code, MinuteUnix: lm.MinuteUnix, Bots: lm.Bots,
		Referrers: lm.Referrers, Countries: lm.Countries, Devices: lm.Devices, Browsers: lm.Browsers, Os: lm.Os}
	headRoom := room - proto.Size(head) - 64
	perPart := (room - len(lm.Code) - 64) / 8
	if headRoom/8 < 1 || perPart < 1 {
		// Breakdowns alone do not fit (cannot happen with the recorder's
		// bounds and MaxClickBatchLen); keep the counts.
		head.Referrers, head.Countries, head.Devices, head.Browsers, head.Os = nil, nil, nil, nil, nil
		headRoom = room - proto.Size(head) - 64
	}
	vis := lm.Visitors
	take := min(len(vis), max(headRoom/8, 0))
	head.Visitors = vis[:take]
	vis = vis[take:]
	parts := []*linkpb.LinkMinute{head}
	var inParts uint64
	for len(vis) > 0 {
		n := min(len(vis), perPart)
		parts = append(parts, &linkpb.LinkMinute{Code: lm.Code, MinuteUnix: lm.MinuteUnix, Clicks: uint64(n), Visitors: vis[:n]})
		inParts += uint64(n)
		vis = vis[n:]
	}
	head.Clicks = lm.Clicks - inParts
	return parts
}
