package replica

import (
	"math/bits"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// bloomBitsPerKey and bloomProbes give about 1% false positives for a
// cache-line-blocked filter filled to capacity.
const (
	bloomBitsPerKey = 10
	bloomProbes     = 7
	bloomBlockWords = 8 // 64-byte blocks: one cache line per query
)

// bloom is a blocked bloom filter over codes: each code sets bloomProbes
// bits inside one 512-bit block, so a query costs one cache miss. It is
// fixed size; the replica replaces it with a larger one when the number of
// codes passes capacity. Readers and the single writer share it through
// atomic word operations, so a query concurrent with add is safe.
type bloom struct {
	words    []uint64
	blocks   uint64
	capacity uint64
}

func newBloom(capacity uint64) *bloom {
	capacity = max(capacity, 1024)
	blocks := bloomBlocks(capacity)
	return &bloom{
		words:    make([]uint64, blocks*bloomBlockWords),
		blocks:   blocks,
		capacity: capacity,
	}
}

// bloomBlocks is the number of blocks of a filter for capacity codes.
func bloomBlocks(capacity uint64) uint64 {
	return (capacity*bloomBitsPerKey + 511) / 512
}

// bits is the size of the filter in bits.
func (b *bloom) bits() uint64 { return b.blocks * 512 }

// locate returns the first word of h's block and the hash used for probes.
func (b *bloom) locate(h uint64) (base uint64, probe uint64) {
	block, _ := bits.Mul64(h, b.blocks)
	// fmix64 from MurmurHash3 decorrelates the probe bits from the block
	// index, which took the high bits of h*blocks.
	p := h ^ 0x9e3779b97f4a7c15
	p ^= p >> 33
	p *= 0xff51afd7ed558ccd
	p ^= p >> 33
	p *= 0xc4ceb9fe1a85ec53
	p ^= p >> 33
	return block * bloomBlockWords, p
}

func (b *bloom) addHash(h uint64) {
	base, p := b.locate(h)
	for i := 0; i < bloomProbes; i++ {
		bit := p & 511
		p >>= 9
		atomic.OrUint64(&b.words[base+bit>>6], 1<<(bit&63))
	}
}

// addHashUnshared is addHash for a filter no other goroutine sees yet.
func (b *bloom) addHashUnshared(h uint64) {
	base, p := b.locate(h)
	for i := 0; i < bloomProbes; i++ {
		bit := p & 511
		p >>= 9
		b.words[base+bit>>6] |= 1 << (bit & 63)
	}
}

func (b *bloom) mayContainHash(h uint64) bool {
	base, p := b.locate(h)
	for i := 0; i < bloomProbes; i++ {
		bit := p & 511
		p >>= 9
		if atomic.LoadUint64(&b.words[base+bit>>6])&(1<<(bit&63)) == 0 {
			return false
		}
	}
	return true
}

func (b *bloom) add(code string) { b.addHash(xxhash.Sum64String(code)) }

func (b *bloom) mayContain(code string) bool {
	return b.mayContainHash(xxhash.Sum64String(code))
}
