package clicks

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/linkpop/linkpop/link"
	"github.com/linkpop/linkpop/proto/linkpb"
)

// lmBuilder merges the dimension combinations of one entry.
type lmBuilder struct {
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
		c.kvs = append(c.kvs, c.first, kv{k, n})
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

// reset empties the counter, keeping its slice.
func (c *counter) reset() {
	clear(c.kvs)
	c.first, c.kvs, c.idx = kv{}, c.kvs[:0], nil
}

// appendTo appends the counted keys, by count (then key), as KeyCounts in
// field num.
func (c *counter) appendTo(dst []byte, num protowire.Number) []byte {
	if len(c.kvs) == 0 {
		if c.first.n > 0 {
			dst = appendKeyCount(dst, num, c.first.key, c.first.n)
		}
		return dst
	}
	slices.SortFunc(c.kvs, func(x, y kv) int { return cmp.Or(cmp.Compare(y.n, x.n), cmp.Compare(x.key, y.key)) })
	for _, e := range c.kvs {
		dst = appendKeyCount(dst, num, e.key, e.n)
	}
	return dst
}

func (lb *lmBuilder) reset() {
	lb.clicks, lb.bots, lb.visitors = 0, 0, lb.visitors[:0]
	for _, c := range [...]*counter{&lb.refs, &lb.countries, &lb.devices, &lb.browsers, &lb.os} {
		c.reset()
	}
}

// sealStats are the counts of one seal.
type sealStats struct {
	recorded, dropped, degraded uint64
}

// builder turns shard aggregates into the encoded LinkMinutes of a seal.
// It owns what the shipper knows of User-Agents and referrers, keyed by
// the recorder's hashes. Everything it holds is kept between seals
// (cleared), so a steady flow of code-minutes reuses its memory: a seal
// allocates nothing per code-minute.
type builder struct {
	cls     *Classifier
	uaClass map[uint64]*uaInfo
	refStr  map[uint64]*refInfo
	aggs    []*agg    // the aggregates of the seal in progress
	entries int       // their codes
	lb      lmBuilder // the merge of an entry with more than one tuple
	body    []byte    // the encoding of one LinkMinute
}

func newBuilder() *builder {
	return &builder{cls: NewClassifier(), uaClass: make(map[uint64]*uaInfo), refStr: make(map[uint64]*refInfo)}
}

// uaInfo is a User-Agent's class and the encoding of its breakdowns for
// one click: devices, browsers and OS (a bot: devices only).
type uaInfo struct {
	Class
	one []byte
}

func newUAInfo(c Class) *uaInfo {
	u := &uaInfo{Class: c, one: appendKeyCount(nil, 8, c.Device, 1)}
	if !c.Bot {
		u.one = appendKeyCount(u.one, 9, c.Browser, 1)
		u.one = appendKeyCount(u.one, 10, c.OS, 1)
	}
	return u
}

// refInfo is a referrer host and its breakdown's encoding for one click.
type refInfo struct {
	key string
	one []byte
}

func newRefInfo(key string) *refInfo { return &refInfo{key: key, one: appendKeyCount(nil, 6, key, 1)} }

var (
	unknownUA  = newUAInfo(Class{Device: DeviceOther, Browser: otherKey, OS: otherKey})
	directRef  = newRefInfo("")
	otherRef   = newRefInfo(otherKey)
	countryOne = func() (t [26*26 + 1][]byte) {
		for i := range 26 * 26 {
			t[i] = appendKeyCount(nil, 7, countryNames[i], 1)
		}
		t[26*26] = appendKeyCount(nil, 7, CountryUnknown, 1)
		return
	}()
)

// countryOneOf is the countries breakdown of one click from c.
func countryOneOf(c [2]byte) []byte {
	if c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' {
		return countryOne[int(c[0]-'A')*26+int(c[1]-'A')]
	}
	return countryOne[26*26]
}

// learn classifies the User-Agents and keeps the referrers first seen in
// the aggregates; a classification is classifyUnits of p's work.
func (b *builder) learn(aggs []*agg, p *pacer) {
	for _, a := range aggs {
		a.logStrings(func(kind byte, h uint64, s []byte) {
			switch kind {
			case recUAString:
				if _, ok := b.uaClass[h]; !ok {
					b.uaClass[h] = newUAInfo(b.cls.Classify(string(s)))
					p.step(classifyUnits)
				}
			case recRefString:
				if _, ok := b.refStr[h]; !ok {
					b.refStr[h] = newRefInfo(string(s))
					p.step(1)
				}
			}
		})
		for h, s := range a.uaNew {
			if _, ok := b.uaClass[h]; !ok {
				b.uaClass[h] = newUAInfo(b.cls.Classify(s))
				p.step(classifyUnits)
			}
		}
		for h, s := range a.refNew {
			if _, ok := b.refStr[h]; !ok {
				b.refStr[h] = newRefInfo(s)
			}
		}
	}
}

func (b *builder) class(h uint64) *uaInfo {
	if c, ok := b.uaClass[h]; ok {
		return c
	}
	return unknownUA
}

func (b *builder) ref(h uint64) *refInfo {
	switch h {
	case refDirect:
		return directRef
	case refOther:
		return otherRef
	}
	if r, ok := b.refStr[h]; ok {
		return r
	}
	return otherRef
}

func (b *builder) referrer(h uint64) string { return b.ref(h).key }

// gather takes the aggregates of a seal and returns its counts. They
// stay the builder's until the aggregates are reset.
func (b *builder) gather(aggs []*agg) sealStats {
	var st sealStats
	b.aggs = aggs
	b.entries = 0
	for _, a := range aggs {
		st.recorded += a.recorded
		st.dropped += a.dropped
		st.degraded += a.degraded
		b.entries += a.n
	}
	return st
}

// encode appends every gathered (code, minute) entry to e and clears it
// (one pass over the entries, in the order they were made: they are not
// touched again), a unit of p's work each. A code clicked through
// connections of different shards has one entry per shard: the collector
// adds them up, and merging them here would cost a lookup per entry on
// every seal.
func (b *builder) encode(e *batchEnc, p *pacer) {
	for _, a := range b.aggs {
		a.eachEntry(func(m *minuteAgg) {
			if len(m.tuples) == 0 && m.plain == 0 {
				b.encodeSingle(e, m)
			} else {
				b.encodeMerged(e, m)
			}
			clearEntry(m)
			p.step(1)
		})
		a.n = 0
		clear(a.codes)
	}
}

// reduce appends to dst the counts of every LinkMinute in src's sections
// (code, minute, clicks and bots; no visitors, no breakdowns): what a
// seal keeps when the journal has no room for more.
func (b *builder) reduce(src, dst *batchEnc) {
	src.sections(func(links []byte, _ uint64) {
		for len(links) > 0 {
			_, _, n := protowire.ConsumeField(links) // field 7, a LinkMinute
			_, _, tn := protowire.ConsumeTag(links)
			lm, _ := protowire.ConsumeBytes(links[tn:])
			links = links[n:]
			var code []byte
			var minute, clicks, bots uint64
			for len(lm) > 0 {
				num, typ, tn := protowire.ConsumeTag(lm)
				lm = lm[tn:]
				switch {
				case num == 1 && typ == protowire.BytesType:
					v, vn := protowire.ConsumeBytes(lm)
					code, lm = v, lm[vn:]
				case typ == protowire.VarintType:
					v, vn := protowire.ConsumeVarint(lm)
					lm = lm[vn:]
					switch num {
					case 2:
						minute = v
					case 3:
						clicks = v
					case 4:
						bots = v
					}
				default:
					lm = lm[protowire.ConsumeFieldValue(num, typ, lm):]
				}
			}
			body := protowire.AppendTag(b.body[:0], 1, protowire.BytesType)
			body = protowire.AppendBytes(body, code)
			body = link.AppendVarintField(body, 2, minute)
			body = link.AppendVarintField(body, 3, clicks)
			body = link.AppendVarintField(body, 4, bots)
			b.body = body
			dst.add(body, clicks+bots)
		}
	})
}

// encodeSingle encodes an entry of one shard with one dimension
// combination (most code-minutes of an interval): every breakdown has one
// key, and its visitors are distinct already.
func (b *builder) encodeSingle(e *batchEnc, m *minuteAgg) {
	c := b.class(m.t0.ua)
	n := m.t0n
	body := link.AppendStringField(b.body[:0], 1, m.code)
	body = link.AppendVarintField(body, 2, uint64(m.minute))
	if n == 1 {
		// The usual entry of spread traffic: the breakdowns' encodings are
		// kept per User-Agent, referrer and country.
		if c.Bot {
			body = link.AppendVarintField(body, 4, 1)
		} else {
			body = link.AppendVarintField(body, 3, 1)
			body = b.appendVisitors(body, m)
			body = append(body, b.ref(m.t0.ref).one...)
			body = append(body, countryOneOf(m.t0.country)...)
		}
		body = append(body, c.one...)
		b.body = body
		b.emit(e, body, 1)
		return
	}
	if c.Bot {
		body = link.AppendVarintField(body, 4, n)
	} else {
		body = link.AppendVarintField(body, 3, n)
		body = b.appendVisitors(body, m)
		body = appendKeyCount(body, 6, b.referrer(m.t0.ref), n)
		body = appendKeyCount(body, 7, countryKey(m.t0.country), n)
	}
	body = appendKeyCount(body, 8, c.Device, n)
	if !c.Bot {
		body = appendKeyCount(body, 9, c.Browser, n)
		body = appendKeyCount(body, 10, c.OS, n)
	}
	b.body = body
	b.emit(e, body, n)
}

// emit adds one encoded LinkMinute holding n clicks and bots to e, cut
// into parts if it is too large for a batch.
func (b *builder) emit(e *batchEnc, body []byte, n uint64) {
	if len(body) > e.room-16 {
		b.encodeCut(e, body)
		return
	}
	e.add(body, n)
}

// appendVisitors appends the non-bot visitors of one entry as field 5.
func (b *builder) appendVisitors(body []byte, m *minuteAgg) []byte {
	k := 0
	if m.hasV0 && !b.class(m.v0ua).Bot {
		k++
	}
	for _, ua := range m.visitors {
		if !b.class(ua).Bot {
			k++
		}
	}
	if k == 0 {
		return body
	}
	body = protowire.AppendTag(body, 5, protowire.BytesType)
	body = protowire.AppendVarint(body, uint64(8*k))
	if m.hasV0 && !b.class(m.v0ua).Bot {
		body = protowire.AppendFixed64(body, m.v0)
	}
	for v, ua := range m.visitors {
		if !b.class(ua).Bot {
			body = protowire.AppendFixed64(body, v)
		}
	}
	return body
}

// encodeMerged merges the dimension combinations of an entry and encodes
// it, breakdowns by count.
func (b *builder) encodeMerged(e *batchEnc, m *minuteAgg) {
	lb := &b.lb
	lb.reset()
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
	body := link.AppendStringField(b.body[:0], 1, m.code)
	body = link.AppendVarintField(body, 2, uint64(m.minute))
	body = link.AppendVarintField(body, 3, lb.clicks)
	body = link.AppendVarintField(body, 4, lb.bots)
	if len(lb.visitors) > 0 {
		body = protowire.AppendTag(body, 5, protowire.BytesType)
		body = protowire.AppendVarint(body, uint64(8*len(lb.visitors)))
		for _, v := range lb.visitors {
			body = protowire.AppendFixed64(body, v)
		}
	}
	for i, c := range [...]*counter{&lb.refs, &lb.countries, &lb.devices, &lb.browsers, &lb.os} {
		body = c.appendTo(body, protowire.Number(6+i))
	}
	b.body = body
	b.emit(e, body, lb.clicks+lb.bots)
}

// encodeCut adds a LinkMinute too large for one batch (a very popular
// code with many visitors in one minute) as several parts, each in a
// batch of its own (cutLinkMinute). It is rare, so it goes through the
// protobuf structs.
func (b *builder) encodeCut(e *batchEnc, body []byte) {
	var lm linkpb.LinkMinute
	if err := proto.Unmarshal(body, &lm); err != nil {
		panic(fmt.Sprintf("clicks: own LinkMinute encoding does not decode: %v", err)) // a bug in this file
	}
	for _, part := range cutLinkMinute(&lm, e.room-16) {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(part)
		if err != nil {
			panic(fmt.Sprintf("clicks: LinkMinute does not encode: %v", err))
		}
		e.flush()
		e.add(data, part.Clicks+part.Bots)
		e.flush()
	}
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

// batchEnc collects encoded LinkMinutes into the link sections of
// consecutive batches, each within room bytes. Its buffers are kept
// between seals.
type batchEnc struct {
	room   int
	buf    []byte // the link sections, one after the other
	ends   []int  // where each closed section ends in buf
	clicks []uint64
	curN   uint64
	start  int // where the open section starts
}

func (e *batchEnc) reset(room int) {
	e.room, e.buf, e.ends, e.clicks, e.curN, e.start = room, e.buf[:0], e.ends[:0], e.clicks[:0], 0, 0
}

// add appends one LinkMinute (body, holding n clicks and bots) as field 7
// of a batch, closing the open section first if body does not fit in it.
func (e *batchEnc) add(body []byte, n uint64) {
	size := protowire.SizeTag(7) + protowire.SizeBytes(len(body))
	if len(e.buf)-e.start+size > e.room {
		e.flush()
	}
	e.buf = protowire.AppendTag(e.buf, 7, protowire.BytesType)
	e.buf = protowire.AppendBytes(e.buf, body)
	e.curN += n
}

// flush closes the open section, if it holds anything.
func (e *batchEnc) flush() {
	if len(e.buf) == e.start {
		return
	}
	e.ends = append(e.ends, len(e.buf))
	e.clicks = append(e.clicks, e.curN)
	e.start, e.curN = len(e.buf), 0
}

// sections calls f with each closed section and its clicks, in order.
func (e *batchEnc) sections(f func(links []byte, clicks uint64)) {
	from := 0
	for i, end := range e.ends {
		f(e.buf[from:end], e.clicks[i])
		from = end
	}
}

// appendKeyCount appends a KeyCount (key, n) as field num.
func appendKeyCount(dst []byte, num protowire.Number, key string, n uint64) []byte {
	size := protowire.SizeVarint(n) + 1
	if key != "" {
		size += 1 + protowire.SizeBytes(len(key))
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = link.AppendStringField(dst, 1, key)
	return link.AppendVarintField(dst, 2, n)
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
