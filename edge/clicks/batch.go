package clicks

import (
	"cmp"
	"slices"

	"github.com/linkpop/linkpop/proto/linkpb"
)

// lmKey identifies one LinkMinute of a batch.
type lmKey struct {
	code   string
	minute int64
}

// lmBuilder merges the shards' aggregates of one (code, minute).
type lmBuilder struct {
	key                                    lmKey
	clicks, bots                           uint64
	visitors                               []uint64
	refs, countries, devices, browsers, os counter
}

// kv is one breakdown key and its count.
type kv struct {
	key string
	n   uint64
}

// counter counts breakdown keys: the first inline (most code-minutes of
// an interval have one key per breakdown), then a slice searched linearly
// while short, indexed by a map past that.
type counter struct {
	first kv
	kvs   []kv // every key once there is more than one
	idx   map[string]int
}

func (c *counter) len() int {
	switch {
	case len(c.kvs) > 0:
		return len(c.kvs)
	case c.first.n > 0:
		return 1
	}
	return 0
}

func (c *counter) add(k string, n uint64) {
	if n == 0 {
		return
	}
	if len(c.kvs) == 0 {
		switch {
		case c.first.n == 0:
			c.first = kv{k, n}
			return
		case c.first.key == k:
			c.first.n += n
			return
		}
		c.kvs = append(make([]kv, 0, 4), c.first, kv{k, n})
		return
	}
	if c.idx != nil {
		if i, ok := c.idx[k]; ok {
			c.kvs[i].n += n
			return
		}
		c.idx[k] = len(c.kvs)
		c.kvs = append(c.kvs, kv{k, n})
		return
	}
	for i := range c.kvs {
		if c.kvs[i].key == k {
			c.kvs[i].n += n
			return
		}
	}
	c.kvs = append(c.kvs, kv{k, n})
	if len(c.kvs) > 16 {
		c.idx = make(map[string]int, 2*len(c.kvs))
		for i, e := range c.kvs {
			c.idx[e.key] = i
		}
	}
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
	idx     map[lmKey]int
	lbs     []lmBuilder
}

func newBuilder() *builder {
	return &builder{cls: NewClassifier(), uaClass: make(map[uint64]Class), refStr: make(map[uint64]string), idx: make(map[lmKey]int)}
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
	// The index and the builders are kept between seals (cleared), so a
	// steady flow of code-minutes reuses their memory.
	idx := b.idx
	clear(idx)
	lbs := b.lbs[:0]
	defer func() { b.lbs = lbs[:0] }()
	for _, a := range aggs {
		st.recorded += a.recorded
		st.dropped += a.dropped
		st.degraded += a.degraded
		for code, m := range a.codes {
			for ; m != nil; m = m.next {
				k := lmKey{code, m.minute}
				i, ok := idx[k]
				if !ok {
					i = len(lbs)
					idx[k] = i
					lbs = append(lbs, lmBuilder{key: k})
				}
				lb := &lbs[i]
				if m.t0n > 0 {
					b.addTuple(lb, m.t0, m.t0n)
				}
				for t, n := range m.tuples {
					b.addTuple(lb, t, n)
				}
				lb.clicks += m.plain
				if m.hasV0 && !b.class(m.v0ua).Bot {
					lb.visitors = append(lb.visitors, m.v0)
				}
				for v, ua := range m.visitors {
					if !b.class(ua).Bot {
						lb.visitors = append(lb.visitors, v)
					}
				}
			}
		}
	}
	// One allocation for every LinkMinute and one for every KeyCount.
	nkc := 0
	for i := range lbs {
		lb := &lbs[i]
		nkc += lb.refs.len() + lb.countries.len() + lb.devices.len() + lb.browsers.len() + lb.os.len()
	}
	lmSlab := make([]linkpb.LinkMinute, len(lbs))
	kcSlab := make([]linkpb.KeyCount, nkc)
	kcPtrs := make([]*linkpb.KeyCount, nkc)
	for i := range kcSlab {
		kcPtrs[i] = &kcSlab[i]
	}
	take := func(c *counter) []*linkpb.KeyCount {
		switch c.len() {
		case 0:
			return nil
		case 1:
			out := kcPtrs[:1:1]
			kcPtrs = kcPtrs[1:]
			out[0].Key, out[0].Count = c.first.key, c.first.n
			return out
		}
		slices.SortFunc(c.kvs, func(x, y kv) int { return cmp.Or(cmp.Compare(y.n, x.n), cmp.Compare(x.key, y.key)) })
		out := kcPtrs[:len(c.kvs):len(c.kvs)]
		kcPtrs = kcPtrs[len(c.kvs):]
		for i, e := range c.kvs {
			out[i].Key, out[i].Count = e.key, e.n
		}
		return out
	}
	out := make([]*linkpb.LinkMinute, len(lbs))
	for i := range lbs {
		lb := &lbs[i]
		lm := &lmSlab[i]
		lm.Code, lm.MinuteUnix, lm.Clicks, lm.Bots = lb.key.code, lb.key.minute, lb.clicks, lb.bots
		lm.Referrers, lm.Countries, lm.Devices = take(&lb.refs), take(&lb.countries), take(&lb.devices)
		lm.Browsers, lm.Os = take(&lb.browsers), take(&lb.os)
		if len(lb.visitors) > 1 {
			slices.Sort(lb.visitors)
			lb.visitors = slices.Compact(lb.visitors)
		}
		lm.Visitors = lb.visitors
		out[i] = lm
	}
	slices.SortFunc(out, func(x, y *linkpb.LinkMinute) int {
		return cmp.Or(cmp.Compare(x.Code, y.Code), cmp.Compare(x.MinuteUnix, y.MinuteUnix))
	})
	return out, st
}

// addTuple counts n clicks of one dimension combination.
func (b *builder) addTuple(lb *lmBuilder, t tuple, n uint64) {
	c := b.class(t.ua)
	lb.devices.add(c.Device, n)
	if c.Bot {
		lb.bots += n
		return
	}
	lb.clicks += n
	lb.refs.add(b.referrer(t.ref), n)
	lb.countries.add(countryKey(t.country), n)
	lb.browsers.add(c.Browser, n)
	lb.os.add(c.OS, n)
}

// countryKey is the breakdown key of a country code, without allocating
// for the common ones.
func countryKey(c [2]byte) string {
	if c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' {
		return countryNames[int(c[0]-'A')*26+int(c[1]-'A')]
	}
	return CountryUnknown
}

var countryNames = func() (n [26 * 26]string) {
	for i := range n {
		n[i] = string([]byte{byte('A' + i/26), byte('A' + i%26)})
	}
	return
}()

// sizeOf is an upper bound of lm's encoded size (as an element of a
// batch: tag and length prefix included), cheaper than proto.Size.
func sizeOf(lm *linkpb.LinkMinute) int {
	n := 8 + 3 + len(lm.Code) + 3*11
	if len(lm.Visitors) > 0 {
		n += 6 + 8*len(lm.Visitors)
	}
	for _, kcs := range [][]*linkpb.KeyCount{lm.Referrers, lm.Countries, lm.Devices, lm.Browsers, lm.Os} {
		for _, kc := range kcs {
			n += 16 + len(kc.Key)
		}
	}
	return n
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
		n := sizeOf(lm)
		if size+n > room {
			flush()
		}
		cur = append(cur, lm)
		size += n
	}
	for _, lm := range links {
		if sizeOf(lm) <= room {
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
	headRoom := room - sizeOf(head) - 64
	perPart := (room - len(lm.Code) - 64) / 8
	if headRoom/8 < 1 || perPart < 1 {
		// Breakdowns alone do not fit (cannot happen with the recorder's
		// bounds and MaxClickBatchLen); keep the counts.
		head.Referrers, head.Countries, head.Devices, head.Browsers, head.Os = nil, nil, nil, nil, nil
		headRoom = room - sizeOf(head) - 64
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
