package clicks

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Click is one redirect answered to a GET: what the recorder keeps of the
// request. Slices are only read during Record.
type Click struct {
	// Code is the link's code.
	Code []byte
	// Time is when the request arrived.
	Time time.Time
	// Addr is the client address (Proxies.ClientAddr). It is hashed into
	// the visitor identity and looked up for the country, never kept.
	Addr netip.Addr
	// UserAgent and Referer are the request's headers (empty if absent).
	UserAgent, Referer []byte
	// Stripe spreads concurrent clicks over the recorder's shards: the
	// connection id, so the requests of one connection (served one at a
	// time) share a shard and different connections rarely do.
	Stripe uint64
	// Sender is the connection's, or nil.
	Sender *Sender
}

// Sender holds what Record derived from the last click of a connection:
// the client address, the User-Agent, and their visitor hash,
// User-Agent hash and country. The requests of a keep-alive connection
// mostly come from one address with one User-Agent; when a click's are
// the same, Record takes them from here instead of hashing twice and
// looking the country up. One per connection (its clicks are recorded one
// at a time), used with one Recorder.
type Sender struct {
	addr            netip.Addr
	ua              []byte
	uaHash, visitor uint64
	country         [2]byte
	set             bool
}

// derive returns c's User-Agent hash, visitor hash and country, from its
// Sender when the address and User-Agent are the last click's.
func (r *Recorder) derive(c *Click) (uaHash, visitor uint64, country [2]byte) {
	s := c.Sender
	if s != nil && s.set && s.addr == c.Addr && bytes.Equal(s.ua, c.UserAgent) {
		return s.uaHash, s.visitor, s.country
	}
	uaHash = UAHash(c.UserAgent)
	visitor = r.key.Visitor(c.Addr, uaHash)
	country = Country(c.Addr)
	if s != nil && len(c.UserAgent) <= maxUALen {
		s.addr, s.ua, s.uaHash, s.visitor, s.country, s.set = c.Addr, append(s.ua[:0], c.UserAgent...), uaHash, visitor, country, true
	}
	return uaHash, visitor, country
}

// Hash sentinels: the hashes of real strings are never below reservedHash.
const (
	uaUnknown    = 0 // a User-Agent past the bound on distinct ones per interval
	refDirect    = 0 // no referrer
	refOther     = 1 // a referrer past the bound on distinct ones per interval
	reservedHash = 2
)

// tuple is one combination of a click's dimensions; its User-Agent
// carries device, browser, OS and the bot flag, resolved when the batch
// is built.
type tuple struct {
	ua, ref uint64
	country [2]byte
}

// minuteAgg aggregates the clicks of one shard on one code in one minute.
// The first dimension combination and the first visitor are held inline,
// so the long tail of codes clicked once in an interval costs no map.
type minuteAgg struct {
	code   string
	minute int64
	next   *minuteAgg // another entry whose code has the same hash: another minute, or another code
	t0     tuple
	t0n    uint64 // clicks of t0; 0 while none
	tuples map[tuple]uint64
	// visitors maps a visitor hash to its User-Agent hash, so bots are
	// left out of the uniques once User-Agents are classified; v0 is the
	// first one.
	v0, v0ua uint64
	hasV0    bool
	visitors map[uint64]uint64
	// plain counts clicks kept past the shard's bound: in the totals as
	// non-bot clicks, without breakdowns.
	plain uint64
}

// agg is one shard's aggregate of one flush interval.
type agg struct {
	// log holds the interval's clicks as Record wrote them (clickLog):
	// they are added into the maps below when the interval is sealed, by
	// the shipper, not on the redirect path. Past its capacity Record adds
	// clicks into the maps itself.
	log      []byte
	tag      uint32                // the log's generation, in each of its records (clickLog)
	recorded uint64                // clicks and bots recorded
	reg      *region               // the file region log is in; nil: the heap
	codes    map[uint64]*minuteAgg // by the code's hash; a list of entries each
	// entries counts (code, minute) entries, tuples and visitors, against
	// the shard's bound.
	entries int
	// uaNew and refNew hold the strings first seen in the interval that
	// the log had no room for.
	uaNew    map[uint64]string
	refNew   map[uint64]string
	dropped  uint64 // clicks not kept at all (bound hit on a new entry)
	degraded uint64 // clicks kept without some detail
	// slab holds the interval's entries in the order they were made, in
	// chunks (pointers into them stay valid); the first n are in use, the
	// rest cleared. Made one after the other and encoded in that order,
	// entries are neighbours in memory, where entries from a free list
	// were scattered.
	slab [][]minuteAgg
	n    int
	// codeBuf holds the codes of the interval's entries, which are
	// strings into it: one buffer reused from interval to interval
	// instead of a string allocated per (code, minute), most clicks' own
	// entry under spread traffic. Growing it moves later codes to a new
	// array; the strings already made keep the old one alive until the
	// seal.
	codeBuf []byte
}

func newAgg() *agg {
	return &agg{codes: make(map[uint64]*minuteAgg), uaNew: make(map[uint64]string), refNew: make(map[uint64]string)}
}

// shard is a lock and its aggregate; clicks of different connections
// mostly take different shards.
type shard struct {
	mu  sync.Mutex
	cur *agg
	// ua and ref are the User-Agents and referrer hosts whose strings the
	// interval's aggregate holds (in its log, or uaNew/refNew); cleared
	// at each swap.
	ua, ref knownStrings
	hostBuf [253]byte // a referrer host lower-cased, under mu
	_       [64]byte  // keep shards on separate cache lines
}

// knownStrings is the hashes of one kind of string (User-Agents or
// referrer hosts) that a shard's interval holds the strings of.
type knownStrings struct {
	set  map[uint64]struct{}
	last uint64 // the last hash found in set (0: none)
}

// keep returns h once the interval holds its string s: found in k, or
// kept now, once per shard and interval, in a's log (in overflow when the
// log is full), so a crash loses neither the clicks nor what they refer
// to. Past max distinct strings it returns past instead. last spares the
// map lookup while a shard's clicks keep the same string (one browser's
// connection). Reserved hashes carry no string.
func (k *knownStrings) keep(a *agg, kind byte, h uint64, s []byte, overflow map[uint64]string, max int, past uint64) uint64 {
	if h == k.last || h < reservedHash {
		return h
	}
	if _, ok := k.set[h]; !ok {
		if len(k.set) >= max {
			return past
		}
		if !a.appendString(kind, h, s) {
			overflow[h] = string(s)
		}
		k.set[h] = struct{}{}
	}
	k.last = h
	return h
}

func (k *knownStrings) reset() {
	clear(k.set)
	k.last = 0
}

// Limits bound the recorder's memory.
type Limits struct {
	// Entries bounds, per flush interval, the distinct (code, minute)
	// entries, dimension combinations and visitors held in memory, over
	// all shards. Past it a click on an entry already held still counts
	// (without breakdowns, and without its visitor); a click that needs a
	// new entry is dropped and counted as dropped. The default is
	// 1,048,576 (about 64 MiB at most).
	Entries int
	// Strings bounds, per shard and interval, the distinct User-Agents and
	// referrer hosts seen (each is kept once per shard and interval, in
	// the log); past it they count as unknown ("other"). The default is
	// 16,384.
	Strings int
	// LogBytes is the room, per shard and interval, for clicks written as
	// they come (about 48 bytes each) and added up when the interval is
	// sealed; past it a shard adds its clicks up as they come, which
	// costs the redirect more. The default is 2 MiB (with 4 shards per
	// core, about 170,000 clicks per core and interval).
	LogBytes int
}

// Recorder counts clicks into sharded in-memory aggregates. Record is safe
// for concurrent use; Seal is called by one goroutine (the Shipper).
type Recorder struct {
	key        VisitorKey
	seed       maphash.Seed
	shards     []shard
	mask       uint64
	perShard   int
	maxStrings int
	logBytes   int
	collide    bool // tests: every code hashes alike
}

// NewRecorder returns a recorder hashing visitors with key.
func NewRecorder(key VisitorKey, lim Limits) *Recorder {
	if lim.Entries <= 0 {
		lim.Entries = 1 << 20
	}
	if lim.Strings <= 0 {
		lim.Strings = 16 << 10
	}
	if lim.LogBytes <= 0 {
		lim.LogBytes = 2 << 20
	}
	n := 1
	for n < 4*runtime.GOMAXPROCS(0) {
		n <<= 1
	}
	r := &Recorder{key: key, seed: maphash.MakeSeed(), shards: make([]shard, n), mask: uint64(n - 1),
		perShard: max(lim.Entries/n, 16), maxStrings: lim.Strings, logBytes: lim.LogBytes}
	for i := range r.shards {
		r.shards[i].cur = newAgg()
		r.shards[i].cur.log = make([]byte, 0, r.logBytes)
		r.shards[i].cur.tag = 1
		r.shards[i].ua.set = make(map[uint64]struct{})
		r.shards[i].ref.set = make(map[uint64]struct{})
	}
	return r
}

// Record counts one click. It takes one shard's lock (not shared by all
// connections), does no I/O and does not allocate once the User-Agent and
// referrer have been seen. The click is appended to the shard's log
// (appendClick: a few sequential bytes, where adding it up would touch a
// map and an entry per click, cache misses on every request under spread
// traffic); the shipper adds the log up when it seals the interval.
func (r *Recorder) Record(c *Click) {
	minute := c.Time.Unix()
	minute -= minute % 60
	uaHash, visitor, country := r.derive(c)
	if uaHash < reservedHash {
		uaHash += reservedHash
	}
	ua := c.UserAgent
	if len(ua) > maxUALen {
		ua = ua[:maxUALen]
	}
	host, upper := refererHostIn(c.Referer)

	sh := &r.shards[c.Stripe&r.mask]
	sh.mu.Lock()
	refHash := uint64(refDirect)
	if len(host) > 0 {
		if upper {
			// The shard's buffer, under its lock: no per-call buffer to
			// clear on the common lower-case path.
			host = lowerHost(host, &sh.hostBuf)
		}
		refHash = r.hash(host)
	}
	r.recordLocked(sh, c.Code, minute, visitor, uaHash, ua, refHash, host, country)
	sh.mu.Unlock()
}

// recordLocked records one click, its hashes computed, into sh (whose
// lock is held).
func (r *Recorder) recordLocked(sh *shard, code []byte, minute int64, visitor, uaHash uint64, ua []byte, refHash uint64, host []byte, country [2]byte) {
	a := sh.cur
	a.recorded++
	uaHash = sh.ua.keep(a, recUAString, uaHash, ua, a.uaNew, r.maxStrings, uaUnknown)
	refHash = sh.ref.keep(a, recRefString, refHash, host, a.refNew, r.maxStrings, refOther)
	t := tuple{ua: uaHash, ref: refHash, country: country}
	if !a.appendClick(code, minute, visitor, t) {
		r.add(a, code, minute, visitor, t)
	}
}

// add adds one click into a's entries (the click is already counted in
// a.recorded).
func (r *Recorder) add(a *agg, code []byte, minute int64, visitor uint64, t tuple) {
	codeHash := maphash.Bytes(r.seed, code)
	if r.collide {
		codeHash = 7
	}
	// The entries whose code hashes to codeHash: the code's minutes, and
	// other codes on a collision.
	head := a.codes[codeHash]
	var same *minuteAgg // an entry of this code, for its string
	m := head
	for ; m != nil; m = m.next {
		if m.code == string(code) {
			if m.minute == minute {
				break
			}
			same = m
		}
	}
	if m == nil {
		if a.entries >= r.perShard {
			a.dropped++
			return
		}
		a.entries++
		m = a.newMinute(minute)
		if same != nil {
			m.code = same.code
		} else {
			m.code = a.internCode(code)
		}
		if head != nil {
			m.next = head.next
			head.next = m
		} else {
			a.codes[codeHash] = m
		}
	}
	switch {
	case m.t0n > 0 && m.t0 == t:
		m.t0n++
	case m.t0n == 0:
		// The entry's own slot: counted with the entry.
		m.t0, m.t0n = t, 1
	default:
		if n, ok := m.tuples[t]; ok {
			m.tuples[t] = n + 1
		} else if a.entries < r.perShard {
			a.entries++
			if m.tuples == nil {
				m.tuples = make(map[tuple]uint64)
			}
			m.tuples[t] = 1
		} else {
			m.plain++
			a.degraded++
		}
	}
	switch {
	case m.hasV0 && m.v0 == visitor:
	case !m.hasV0:
		m.v0, m.v0ua, m.hasV0 = visitor, t.ua, true
	default:
		if _, ok := m.visitors[visitor]; !ok {
			if a.entries < r.perShard {
				a.entries++
				if m.visitors == nil {
					m.visitors = make(map[uint64]uint64)
				}
				m.visitors[visitor] = t.ua
			} else {
				a.degraded++
			}
		}
	}
}

// take hands shard i's aggregate to the caller and installs spare (a
// cleared aggregate) in its place. The caller adds its log up (addLog).
func (r *Recorder) take(i int, spare *agg) *agg {
	if spare.reg == nil && cap(spare.log) < r.logBytes {
		spare.log, spare.tag = make([]byte, 0, r.logBytes), 1
	}
	return r.shards[i].swap(spare)
}

func (r *Recorder) hash(b []byte) uint64 {
	h := maphash.Bytes(r.seed, b)
	if h < reservedHash {
		h += reservedHash
	}
	return h
}

func (a *agg) newMinute(minute int64) *minuteAgg {
	c, i := a.n/slabChunk, a.n%slabChunk
	if c == len(a.slab) {
		a.slab = append(a.slab, make([]minuteAgg, slabChunk))
	}
	a.n++
	m := &a.slab[c][i]
	m.minute = minute
	return m
}

// slabChunk is the entries of one slab chunk; maxSlabChunks bounds the
// chunks an aggregate keeps between intervals.
const (
	slabChunk     = 1024
	maxSlabChunks = 16
)

// eachEntry calls f with every entry in use, in the order they were made.
func (a *agg) eachEntry(f func(m *minuteAgg)) {
	for c := 0; c*slabChunk < a.n; c++ {
		chunk := a.slab[c][:min(slabChunk, a.n-c*slabChunk)]
		for i := range chunk {
			f(&chunk[i])
		}
	}
}

// internCode returns code as a string held in a's code buffer.
func (a *agg) internCode(code []byte) string {
	if len(a.codeBuf)+len(code) > cap(a.codeBuf) {
		// A new array: the strings already made point into the old one.
		a.codeBuf = make([]byte, 0, max(2*cap(a.codeBuf), len(code), minCodeBuf))
	}
	start := len(a.codeBuf)
	a.codeBuf = append(a.codeBuf, code...)
	return unsafe.String(&a.codeBuf[start], len(code))
}

// minCodeBuf is the first code buffer's size.
const minCodeBuf = 4 << 10

// swap hands the shard's aggregate to the caller and installs spare (a
// cleared aggregate), under the shard's lock. The shard forgets which
// strings it has kept: the new interval keeps them again, in its own log.
// Each aggregate keeps its own entries: most are made when the log is
// added up, after the swap, in the taken aggregate's slab.
func (sh *shard) swap(spare *agg) *agg {
	sh.mu.Lock()
	old := sh.cur
	sh.cur = spare
	sh.ua.reset()
	sh.ref.reset()
	sh.mu.Unlock()
	return old
}

// clearEntry clears m for reuse, keeping its maps.
func clearEntry(m *minuteAgg) {
	if m.tuples != nil {
		clear(m.tuples)
	}
	if m.visitors != nil {
		clear(m.visitors)
	}
	m.code, m.plain, m.next, m.t0n, m.hasV0 = "", 0, nil, 0, false
}

// reset clears a for reuse, keeping its maps' capacity and up to
// maxSlabChunks chunks of cleared entries.
func (a *agg) reset() {
	a.eachEntry(clearEntry)
	a.n = 0
	if len(a.slab) > maxSlabChunks {
		clear(a.slab[maxSlabChunks:])
		a.slab = a.slab[:maxSlabChunks]
	}
	clear(a.codes)
	clear(a.uaNew)
	clear(a.refNew)
	a.entries, a.recorded, a.dropped, a.degraded = 0, 0, 0, 0
	a.log = a.log[:0]
	// Every entry's code was cleared above: the buffer's bytes are free.
	a.codeBuf = a.codeBuf[:0]
}
