package edge

import "testing"

// CorruptShips makes every checkpoint this process ships flip one byte of
// each file after its sum was taken, until the test ends.
func CorruptShips(t testing.TB) {
	corruptShips.Store(true)
	t.Cleanup(func() { corruptShips.Store(false) })
}
