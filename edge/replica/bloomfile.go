package replica

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// The bloom filter is saved at Close and loaded at Open, so restarting a
// large replica does not rescan every code. The file is only trusted if it
// was written for this store (its random id, "m/id") and for the current
// link count: codes are never deleted, so the same count means the same set
// of codes. Anything else (a file left by an older session that crashed
// later, a damaged file) falls back to the scan.
//
// Format: bloomFileMagic, id (16 bytes), links, capacity, blocks (uint64
// little endian), the filter's words (little endian), then the xxhash of
// everything before it.
const (
	bloomFileName  = "codes.bloom"
	bloomFileMagic = "LPBLOOM1"
	bloomHeaderLen = len(bloomFileMagic) + 16 + 3*8
)

var idKey = []byte("m/id")

// storeID returns the store's random id, creating it on first open.
func (r *Replica) storeID() ([]byte, error) {
	v, closer, err := r.db.Get(idKey)
	if err == nil {
		defer closer.Close()
		if len(v) != 16 {
			return nil, fmt.Errorf("read %s: %w: %d bytes", idKey, errCorruptMeta, len(v))
		}
		return bytes.Clone(v), nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("read %s: %w", idKey, err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	if err := r.db.Set(idKey, id, pebble.Sync); err != nil {
		return nil, fmt.Errorf("write %s: %w", idKey, err)
	}
	return id, nil
}

var errCorruptMeta = errors.New("corrupt replica metadata")

// saveBloom writes the filter next to the store, atomically (temporary
// file, sync, rename, directory sync).
func saveBloom(fs vfs.FS, dir string, id []byte, links uint64, b *bloom) error {
	final := fs.PathJoin(dir, bloomFileName)
	tmp := final + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	h := xxhash.New()
	// The hash goes first: Pebble's MemFS scrambles what it was given to
	// write in invariants (race) builds.
	w := bufio.NewWriterSize(io.MultiWriter(h, f), 1<<20)
	hdr := make([]byte, 0, bloomHeaderLen)
	hdr = append(hdr, bloomFileMagic...)
	hdr = append(hdr, id...)
	hdr = binary.LittleEndian.AppendUint64(hdr, links)
	hdr = binary.LittleEndian.AppendUint64(hdr, b.capacity)
	hdr = binary.LittleEndian.AppendUint64(hdr, b.blocks)
	_, _ = w.Write(hdr)
	var word [8]byte
	for _, v := range b.words {
		binary.LittleEndian.PutUint64(word[:], v)
		_, _ = w.Write(word[:])
	}
	err = w.Flush()
	if err == nil {
		_, err = f.Write(binary.LittleEndian.AppendUint64(nil, h.Sum64()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, final)
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// loadBloom reads a saved filter if it is valid for the store id with
// links codes. It returns nil and the reason when it is not.
func loadBloom(fs vfs.FS, dir string, id []byte, links uint64) (*bloom, string) {
	f, err := fs.Open(fs.PathJoin(dir, bloomFileName))
	if err != nil {
		return nil, "no saved filter"
	}
	defer f.Close()
	h := xxhash.New()
	rd := io.TeeReader(bufio.NewReaderSize(f, 1<<20), h)
	hdr := make([]byte, bloomHeaderLen)
	if _, err := io.ReadFull(rd, hdr); err != nil {
		return nil, "short saved filter"
	}
	if string(hdr[:len(bloomFileMagic)]) != bloomFileMagic {
		return nil, "saved filter has an unknown format"
	}
	rest := hdr[len(bloomFileMagic):]
	if !bytes.Equal(rest[:16], id) {
		return nil, "saved filter belongs to another store"
	}
	rest = rest[16:]
	savedLinks := binary.LittleEndian.Uint64(rest)
	capacity := binary.LittleEndian.Uint64(rest[8:])
	blocks := binary.LittleEndian.Uint64(rest[16:])
	if savedLinks != links {
		return nil, fmt.Sprintf("saved filter is for %d links, the store holds %d", savedLinks, links)
	}
	if links > capacity || capacity < 1024 || blocks != bloomBlocks(capacity) {
		return nil, "saved filter has an inconsistent size"
	}
	b := &bloom{words: make([]uint64, blocks*bloomBlockWords), blocks: blocks, capacity: capacity}
	var word [8]byte
	for i := range b.words {
		if _, err := io.ReadFull(rd, word[:]); err != nil {
			return nil, "short saved filter"
		}
		b.words[i] = binary.LittleEndian.Uint64(word[:])
	}
	sum := h.Sum64()
	if _, err := io.ReadFull(rd, word[:]); err != nil || binary.LittleEndian.Uint64(word[:]) != sum {
		return nil, "saved filter fails its checksum"
	}
	return b, ""
}
