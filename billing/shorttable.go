package billing

// shortMax is the longest piece shortTable holds, and the longest merged
// by tiktoken's own loop: longer ones backtrack, which is as fast or faster
// from there on (measured with BenchmarkCount*).
const shortMax = 8

// shortTable answers "which token is this piece?" for pieces of up to
// shortMax bytes, most pieces of ordinary text: the bytes packed in a word
// and found in one open-addressed table, without hashing a string or
// comparing bytes as the rank map does.
type shortTable struct {
	slots []shortSlot
	shift uint
}

type shortSlot struct {
	key  uint64
	rank int32
	len  uint8 // 0: empty
}

func newShortTable(vocab []token) shortTable {
	n := 0
	for _, v := range vocab {
		if len(v.s) <= shortMax {
			n++
		}
	}
	bits := uint(1)
	for 1<<bits < 2*n { // at most half full
		bits++
	}
	t := shortTable{slots: make([]shortSlot, 1<<bits), shift: 64 - bits}
	for _, v := range vocab {
		if len(v.s) <= shortMax {
			k := pack(v.s)
			i := t.home(k, len(v.s))
			for t.slots[i].len != 0 {
				i = (i + 1) & (len(t.slots) - 1)
			}
			t.slots[i] = shortSlot{key: k, rank: v.r, len: uint8(len(v.s))}
		}
	}
	return t
}

// pack puts up to eight bytes in a word, the first lowest.
func pack(p string) uint64 {
	var k uint64
	for i := 0; i < len(p); i++ {
		k |= uint64(p[i]) << (8 * i)
	}
	return k
}

func (t *shortTable) home(k uint64, n int) int {
	return int(((k ^ uint64(n)) * 0x9e3779b97f4a7c15) >> t.shift)
}

// rank is the rank of the token p (len(p) <= shortMax), or -1.
func (t *shortTable) rank(p string) int32 {
	k := pack(p)
	for i := t.home(k, len(p)); ; i = (i + 1) & (len(t.slots) - 1) {
		s := &t.slots[i]
		if s.len == 0 {
			return -1
		}
		if s.key == k && int(s.len) == len(p) {
			return s.rank
		}
	}
}
