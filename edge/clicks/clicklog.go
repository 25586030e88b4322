package clicks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A shard's log (agg.log) holds the clicks of an interval as Record wrote
// them, and the User-Agents and referrer hosts they refer to, one record
// after the other, each 8-byte aligned:
//
//	0  uint32 tag: the log's generation (agg.tag), written last
//	4  uint32 click: minute (Unix seconds / 60); string: its length
//	8  uint64 click: visitor; string: its hash
//	16 uint64 click: User-Agent hash
//	24 uint64 click: referrer hash
//	32 [2]byte click: country
//	34 uint8 kind: recClick, recUAString, recRefString
//	35 uint8 click: code length
//	36 the code or the string
//
// The tag is written after the rest of the record, so a record is whole
// when its tag is the log's: a process killed in the middle of Record
// leaves a record whose tag is still the previous generation's (or zero),
// and the scan stops there. Stores are not reordered by the compiler, and
// a killed process's stores up to the instruction it stopped at all reach
// the page cache, so no barrier is needed for a crash of the process.
const (
	recTag, recMinute, recVisitor, recUA, recRef, recCountry, recKind, recCodeLen, recBody = 0, 4, 8, 16, 24, 32, 34, 35, 36

	recClick     = 0
	recUAString  = 1
	recRefString = 2
)

func recSize(body int) int { return (recBody + body + 7) &^ 7 }

// appendClick writes one click into a's log; false if there is no room.
func (a *agg) appendClick(code []byte, minute int64, visitor uint64, t tuple) bool {
	n := recSize(len(code))
	off := len(a.log)
	if off+n > cap(a.log) || len(code) > 255 {
		return false
	}
	b := a.log[off : off+n]
	binary.LittleEndian.PutUint32(b[recMinute:], uint32(minute/60))
	binary.LittleEndian.PutUint64(b[recVisitor:], visitor)
	binary.LittleEndian.PutUint64(b[recUA:], t.ua)
	binary.LittleEndian.PutUint64(b[recRef:], t.ref)
	b[recCountry], b[recCountry+1], b[recKind], b[recCodeLen] = t.country[0], t.country[1], recClick, byte(len(code))
	copy(b[recBody:], code)
	binary.LittleEndian.PutUint32(b[recTag:], a.tag) // last: the record is whole
	a.log = a.log[:off+n]
	return true
}

// appendString writes a User-Agent or referrer host and its hash into a's
// log; false if there is no room.
func (a *agg) appendString(kind byte, h uint64, s []byte) bool {
	n := recSize(len(s))
	off := len(a.log)
	if off+n > cap(a.log) {
		return false
	}
	b := a.log[off : off+n]
	binary.LittleEndian.PutUint32(b[recMinute:], uint32(len(s)))
	binary.LittleEndian.PutUint64(b[recVisitor:], h)
	b[recKind] = kind
	copy(b[recBody:], s)
	binary.LittleEndian.PutUint32(b[recTag:], a.tag)
	a.log = a.log[:off+n]
	return true
}

// scanLog calls f with each whole record of log tagged tag, in order,
// and returns the bytes they take: it stops at the first record that is
// not whole (another tag, a bad kind or length, the end).
func scanLog(log []byte, tag uint32, f func(rec []byte, kind byte)) int {
	off := 0
	for len(log)-off >= recBody {
		b := log[off:]
		if binary.LittleEndian.Uint32(b[recTag:]) != tag {
			break
		}
		kind := b[recKind]
		var body int
		switch kind {
		case recClick:
			body = int(b[recCodeLen])
		case recUAString, recRefString:
			body = int(binary.LittleEndian.Uint32(b[recMinute:]))
			if body > maxUALen {
				return off
			}
		default:
			return off
		}
		n := recSize(body)
		if n > len(b) {
			break
		}
		f(b[:n], kind)
		off += n
	}
	return off
}

// recTuple decodes a click record's dimensions.
func recTuple(b []byte) tuple {
	return tuple{ua: binary.LittleEndian.Uint64(b[recUA:]), ref: binary.LittleEndian.Uint64(b[recRef:]), country: [2]byte{b[recCountry], b[recCountry+1]}}
}

// addLog adds the clicks of a's log into its entries, a unit of p's work
// each. The shipper calls it on an aggregate it has taken from its shard;
// the log's strings are read by the builder (learn) and the log is
// emptied by reset.
func (r *Recorder) addLog(a *agg, p *pacer) {
	scanLog(a.log, a.tag, func(b []byte, kind byte) {
		if kind != recClick {
			return
		}
		r.add(a, b[recBody:recBody+int(b[recCodeLen])], int64(binary.LittleEndian.Uint32(b[recMinute:]))*60,
			binary.LittleEndian.Uint64(b[recVisitor:]), recTuple(b))
		p.step(1)
	})
}

// logStrings calls f with each string of a's log.
func (a *agg) logStrings(f func(kind byte, h uint64, s []byte)) {
	scanLog(a.log, a.tag, func(b []byte, kind byte) {
		if kind != recClick {
			f(kind, binary.LittleEndian.Uint64(b[recVisitor:]), b[recBody:recBody+int(binary.LittleEndian.Uint32(b[recMinute:]))])
		}
	})
}

// restore records again the clicks of logs found after a crash (their
// strings are in the same logs), spread over the shards, so they ship in
// the next seal and stay in the new logs until then. Referrer hashes are
// the old process's (keyed by its seed): they are hashed again.
func (r *Recorder) restore(logs [][]byte) (clicks int) {
	uas, refs := map[uint64][]byte{}, map[uint64][]byte{}
	for _, log := range logs {
		scanLog(log, binary.LittleEndian.Uint32(log), func(b []byte, kind byte) {
			if kind == recClick {
				return
			}
			s := b[recBody : recBody+int(binary.LittleEndian.Uint32(b[recMinute:]))]
			if kind == recUAString {
				uas[binary.LittleEndian.Uint64(b[recVisitor:])] = s
			} else {
				refs[binary.LittleEndian.Uint64(b[recVisitor:])] = s
			}
		})
	}
	for _, log := range logs {
		scanLog(log, binary.LittleEndian.Uint32(log), func(b []byte, kind byte) {
			if kind != recClick {
				return
			}
			t := recTuple(b)
			ua, ok := uas[t.ua]
			if !ok && t.ua >= reservedHash {
				t.ua = uaUnknown
			}
			var host []byte
			if t.ref >= reservedHash {
				if host = refs[t.ref]; host != nil {
					t.ref = r.hash(host)
				} else {
					t.ref = refOther
				}
			}
			sh := &r.shards[uint64(clicks)&r.mask]
			sh.mu.Lock()
			r.recordLocked(sh, b[recBody:recBody+int(b[recCodeLen])], int64(binary.LittleEndian.Uint32(b[recMinute:]))*60,
				binary.LittleEndian.Uint64(b[recVisitor:]), t.ua, ua, t.ref, host, t.country)
			sh.mu.Unlock()
			clicks++
		})
	}
	return clicks
}

// The log file, DIR/log: the shards' logs in one shared memory mapping,
// so the clicks of the interval not sealed yet are in the kernel's page
// cache as soon as Record returns, before the answer is written: a crash
// of the process (SIGKILL, a panic) loses none of them, and the next
// start adds them back (openClickLog, Recorder.restore). Nothing syncs
// the file: power loss can lose the unsealed interval (the sealed batches
// are synced, see journal).
//
//	0     header page: "LPCLOG1\n", uint32 regions, uint32 room,
//	      the journal's instance (20 bytes)
//	4096  regions, each a header page (uint64 gen, from, to, done) and
//	      room bytes of log
//
// Each shard owns two regions, one recording while the shipper seals the
// other. A region's generation is new each time it starts an interval
// (its records carry it); from and to are the seqs of the batches its
// seal journals, written just before; done is set once they are (or its
// clicks were counted as dropped). After a crash a region whose
// generation is set and that is not done holds clicks no batch has:
// unless the journal holds its seal's last seq (the crash came between
// the journal and done), it is added back; a seal journaled only in part
// (a crash between its batch files) has its batches removed first, since
// none of them was published.
const (
	logMagic    = "LPCLOG1\n"
	logPage     = 4096
	logName     = "log"
	maxLogBytes = 1 << 30
)

// region is one log's place in the file.
type region struct {
	hdr []byte // gen, from, to, done
	buf []byte
}

func (g *region) set(gen, from, to, done uint64) {
	binary.LittleEndian.PutUint64(g.hdr[0:], gen)
	binary.LittleEndian.PutUint64(g.hdr[8:], from)
	binary.LittleEndian.PutUint64(g.hdr[16:], to)
	binary.LittleEndian.PutUint64(g.hdr[24:], done)
}

func (g *region) gen() uint64 { return binary.LittleEndian.Uint64(g.hdr[0:]) }

func (g *region) setRange(from, to uint64) {
	binary.LittleEndian.PutUint64(g.hdr[8:], from)
	binary.LittleEndian.PutUint64(g.hdr[16:], to)
}

func (g *region) setDone() { binary.LittleEndian.PutUint64(g.hdr[24:], 1) }

// clickLog is the mapped log file.
type clickLog struct {
	data    []byte
	regions []region
	gen     uint64 // the last generation handed out
}

// arm makes a's log a new generation of region g.
func (l *clickLog) arm(a *agg, g *region) {
	l.gen++
	if uint32(l.gen) == 0 { // a tag is never 0 (a zeroed page)
		l.gen++
	}
	g.set(l.gen, 0, 0, 0)
	a.reg, a.tag, a.log = g, uint32(l.gen), g.buf[:0]
}

// adopt moves the records of a heap log (src, tagged tag) into a's log,
// newly armed: clicks recorded before the file was mapped.
func adopt(a *agg, src []byte, tag uint32) {
	scanLog(src, tag, func(b []byte, _ byte) {
		n := len(a.log)
		if n+len(b) > cap(a.log) {
			return
		}
		a.log = append(a.log, b...)
		binary.LittleEndian.PutUint32(a.log[n:], a.tag)
	})
}

// openClickLog maps DIR/log with regions regions of room bytes, and
// returns the logs of the previous process that no journaled batch
// holds (see clickLog), copied. j is the journal, opened: its newest seq
// decides, and a seal journaled in part is removed from it.
func openClickLog(dir string, regions, room int, j *journal) (*clickLog, [][]byte, error) {
	room = (room + logPage - 1) &^ (logPage - 1)
	if room <= 0 || room > maxLogBytes {
		return nil, nil, fmt.Errorf("click log: room %d out of range", room)
	}
	path := filepath.Join(dir, logName)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("click log: %w", err)
	}
	lost, maxGen := j.recoverLog(old)
	size := logPage + regions*(logPage+room)
	data, err := mapFile(path, size)
	if err != nil {
		return nil, nil, err
	}
	l := &clickLog{data: data, gen: maxGen}
	copy(data, logMagic)
	binary.LittleEndian.PutUint32(data[8:], uint32(regions))
	binary.LittleEndian.PutUint32(data[12:], uint32(room))
	copy(data[16:36], j.instance)
	for i := range regions {
		off := logPage + i*(logPage+room)
		g := region{hdr: data[off : off+32 : off+32], buf: data[off+logPage : off+logPage+room : off+logPage+room]}
		g.set(0, 0, 0, 0)
		l.regions = append(l.regions, g)
	}
	return l, lost, nil
}

// recoverLog returns the logs of old (a log file's previous content)
// whose clicks no journaled batch holds, and the largest generation in
// it; see clickLog.
func (j *journal) recoverLog(old []byte) (lost [][]byte, maxGen uint64) {
	if len(old) < logPage || string(old[:8]) != logMagic {
		return nil, 0
	}
	n, room := int(binary.LittleEndian.Uint32(old[8:])), int(binary.LittleEndian.Uint32(old[12:]))
	instance := string(old[16:36])
	type hdr struct {
		gen, from, to, done uint64
		buf                 []byte
	}
	var hs []hdr
	for i := range n {
		off := logPage + i*(logPage+room)
		if off+logPage+room > len(old) {
			break
		}
		h := old[off:]
		hs = append(hs, hdr{binary.LittleEndian.Uint64(h[0:]), binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint64(h[16:]),
			binary.LittleEndian.Uint64(h[24:]), old[off+logPage : off+logPage+room]})
		maxGen = max(maxGen, hs[len(hs)-1].gen)
	}
	if instance != j.instance {
		// Another journal's clicks (the edge was renamed): its sealed
		// batches ship under its own instance, the rest cannot be told
		// apart from them.
		return nil, maxGen
	}
	newest := j.nextSeq() - 1
	for _, h := range hs {
		if h.gen != 0 && h.done == 0 && h.to != 0 && h.from <= newest && newest < h.to {
			j.removeFrom(h.from)
			newest = h.from - 1
		}
	}
	for _, h := range hs {
		if h.gen == 0 || h.done != 0 || h.to != 0 && newest >= h.to {
			continue
		}
		if used := scanLog(h.buf, uint32(h.gen), func([]byte, byte) {}); used > 0 {
			lost = append(lost, append([]byte(nil), h.buf[:used]...))
		}
	}
	return lost, maxGen
}
