package store

import (
	"errors"
	"hash/maphash"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A create must know that its code is free: a random code is checked so
// that a collision draws again, a custom code so that a taken one is
// refused. Reading Pebble for that was half of the writer's CPU per
// create (a point lookup through every memtable and level). The writer
// keeps instead a Bloom filter of every code in the store: a code the
// filter has never seen is free without a read, and only a code it may
// have seen (a taken code, or about one draw in a hundred) is read.
//
// The filter has no false negatives because every code reaches it before
// it is asked about: the codes on disk when a filter is built are added by
// a scan of a Pebble iterator the writer opens between two group commits,
// and every code the writer writes from then on (creates, a standby's
// applied links) is added by the writer itself. Until the scan is done the
// writer keeps reading Pebble; when the links outgrow the filter, a
// bigger one is built the same way while the old one, still exact about
// what it has not seen, goes on answering.

// Code filter sizing: codeFilterBits bits and codeFilterHashes probes per
// code (about 2% false positives at capacity, far fewer below it), sized
// for the links at build time plus half again, at least minFilterCodes.
const (
	codeFilterBits   = 8
	codeFilterHashes = 6
	minFilterCodes   = 1 << 20
)

// filterRetry is how long the writer waits before building again after a
// scan failed.
const filterRetry = time.Minute

// codeFilter is a Bloom filter of link codes. add and mayContain may run
// concurrently (the scan adds while the writer adds and asks).
type codeFilter struct {
	seed     maphash.Seed
	words    []atomic.Uint64
	nbits    uint64
	capacity uint64 // codes it is sized for
	// state is filterBuilding until the scan has added every code on
	// disk, then filterReady (or filterFailed).
	state atomic.Int32
}

const (
	filterBuilding int32 = iota
	filterReady
	filterFailed
)

func newCodeFilter(links uint64) *codeFilter {
	capacity := max(links+links/2, minFilterCodes)
	nbits := capacity * codeFilterBits
	return &codeFilter{
		seed:     maphash.MakeSeed(),
		words:    make([]atomic.Uint64, (nbits+63)/64),
		nbits:    nbits,
		capacity: capacity,
	}
}

// bit is the i-th probe of hash h (double hashing over one 64-bit hash;
// Lemire's reduction maps each 32-bit probe onto [0, nbits)).
func (f *codeFilter) bit(h uint64, i uint32) uint64 {
	h1, h2 := uint32(h), uint32(h>>32)|1
	return uint64(h1+i*h2) * f.nbits >> 32
}

func (f *codeFilter) addHash(h uint64) {
	for i := range uint32(codeFilterHashes) {
		b := f.bit(h, i)
		f.words[b/64].Or(1 << (b % 64))
	}
}

func (f *codeFilter) add(code string) { f.addHash(maphash.String(f.seed, code)) }

// addBytes is add of a code read from a key (maphash hashes a string and
// the same bytes alike).
func (f *codeFilter) addBytes(code []byte) { f.addHash(maphash.Bytes(f.seed, code)) }

// mayContain is false when code was certainly never added.
func (f *codeFilter) mayContain(code string) bool {
	h := maphash.String(f.seed, code)
	for i := range uint32(codeFilterHashes) {
		b := f.bit(h, i)
		if f.words[b/64].Load()&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// codeFilters is the writer's state of the filter; only the writer
// goroutine touches it (the scan has only its *codeFilter).
type codeFilters struct {
	cur      *codeFilter // ready: answers mayContain
	building *codeFilter // being filled by a scan
	retryAt  time.Time
}

// note records that code is in the store (or about to be: a write of this
// group), in every filter the writer keeps.
func (s *Store) noteCode(code string) {
	if f := s.filters.cur; f != nil {
		f.add(code)
	}
	if f := s.filters.building; f != nil {
		f.add(code)
	}
}

// codeFree reports, without reading Pebble, that no link has code. False
// means it may have one: read it.
func (s *Store) codeFree(code string) bool {
	fs := &s.filters
	if b := fs.building; b != nil {
		switch b.state.Load() {
		case filterReady:
			fs.cur, fs.building = b, nil
		case filterFailed:
			fs.building, fs.retryAt = nil, s.o.Now().Add(filterRetry)
		}
	}
	free := fs.cur != nil && !fs.cur.mayContain(code)
	if free {
		s.mCodeFilter.Inc()
	} else {
		s.mCodeRead.Inc()
	}
	return free
}

// maybeBuildFilter starts building a filter when there is none or the
// links have outgrown it. The writer calls it between group commits, so
// the scan's iterator sees every commit made so far and every later write
// goes through noteCode.
func (s *Store) maybeBuildFilter() {
	fs := &s.filters
	if fs.building != nil || (fs.cur != nil && s.links.Load() <= fs.cur.capacity) || s.o.Now().Before(fs.retryAt) {
		return
	}
	if !s.enter() {
		return
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: linkPrefix, UpperBound: linkUpper})
	if err != nil {
		s.exit()
		s.log.Error("code filter: open iterator", "err", err)
		fs.retryAt = s.o.Now().Add(filterRetry)
		return
	}
	f := newCodeFilter(s.links.Load())
	fs.building = f
	s.filterBytes.Store(uint64(len(f.words) * 8))
	go s.scanCodes(it, f)
}

// errFilterClosing stops a scan when the store closes.
var errFilterClosing = errors.New("store closing")

// scanCodes adds every link code of it to f and marks f ready; it runs on
// its own goroutine, a reader of the store until it returns.
func (s *Store) scanCodes(it *pebble.Iterator, f *codeFilter) {
	defer s.exit()
	start := time.Now()
	n := 0
	var err error
	for valid := it.First(); valid; valid = it.Next() {
		f.addBytes(it.Key()[len(linkPrefix):])
		n++
		if s.o.hookFilterScan != nil {
			s.o.hookFilterScan(n)
		}
		if n%4096 == 0 && s.closing.Load() {
			err = errFilterClosing
			break
		}
	}
	err = errors.Join(err, it.Error(), it.Close())
	if err != nil {
		if !errors.Is(err, errFilterClosing) {
			s.log.Error("code filter: scan", "err", err)
		}
		f.state.Store(filterFailed)
		return
	}
	if s.o.hookFilterScan != nil {
		s.o.hookFilterScan(-1)
	}
	f.state.Store(filterReady)
	s.log.Info("code filter ready", "codes", n, "capacity", f.capacity, "bytes", len(f.words)*8, "took", time.Since(start))
}
