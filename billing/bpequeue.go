package billing

import "math"

// queue holds (rank, position) pairs and pops the least, rank first.
type queue interface {
	push(rank, pos int32)
	pop() (rank, pos int32, ok bool)
}

// heap is a 4-ary min-heap of rank<<32|pos: shallower than a binary one,
// and its children share cache lines.
type heap []uint64

const arity = 4

func (h *heap) push(rank, pos int32) { h.pushKey(uint64(rank)<<32 | uint64(pos)) }

func (h *heap) pop() (int32, int32, bool) {
	if len(*h) == 0 {
		return 0, 0, false
	}
	k := h.popKey()
	return int32(k >> 32), int32(k & math.MaxUint32), true
}

func (h *heap) pushKey(v uint64) {
	*h = append(*h, v)
	a := *h
	for i := len(a) - 1; i > 0; {
		up := (i - 1) / arity
		if a[up] <= a[i] {
			break
		}
		a[up], a[i] = a[i], a[up]
		i = up
	}
}

func (h *heap) popKey() uint64 {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	a.down(0)
	*h = a
	return top
}

func (h heap) down(i int) {
	for {
		first := arity*i + 1
		if first >= len(h) {
			return
		}
		small := first
		for c := first + 1; c < min(first+arity, len(h)); c++ {
			if h[c] < h[small] {
				small = c
			}
		}
		if h[small] >= h[i] {
			return
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
}

// bucketMin is the piece length from which merges use rank buckets.
const bucketMin = 4096

// buckets is the queue for long pieces (a run of one character, a long
// word): the entries of one rank mostly arrive in position order as a
// sweep merges left to right, so each rank keeps an append-only sorted
// run, with a small heap for the few that arrive out of order, and only
// the distinct ranks sit in a heap. Popping the least rank's least
// position keeps tiktoken's order exactly, with far fewer cache misses
// than one heap of every pair.
type buckets struct {
	ranks heap // distinct ranks with entries, as rank<<32
	by    map[int32]*bucket
	free  []*bucket
}

type bucket struct {
	run   []int32 // positions in increasing order, from head
	head  int
	extra heap // positions that arrived out of order
}

func (b *buckets) reset() {
	for r, bk := range b.by {
		bk.run, bk.head, bk.extra = bk.run[:0], 0, bk.extra[:0]
		b.free = append(b.free, bk)
		delete(b.by, r)
	}
	if b.by == nil {
		b.by = map[int32]*bucket{}
	}
	b.ranks = b.ranks[:0]
}

func (b *buckets) push(rank, pos int32) {
	bk := b.by[rank]
	if bk == nil {
		if n := len(b.free); n > 0 {
			bk, b.free = b.free[n-1], b.free[:n-1]
		} else {
			bk = &bucket{}
		}
		b.by[rank] = bk
		b.ranks.pushKey(uint64(rank) << 32)
	}
	if len(bk.run) == bk.head || pos > bk.run[len(bk.run)-1] {
		bk.run = append(bk.run, pos)
	} else {
		bk.extra.pushKey(uint64(pos))
	}
}

func (b *buckets) pop() (int32, int32, bool) {
	if len(b.ranks) == 0 {
		return 0, 0, false
	}
	rank := int32(b.ranks[0] >> 32)
	bk := b.by[rank]
	var pos int32
	if len(bk.extra) > 0 && (bk.head == len(bk.run) || int32(bk.extra[0]) < bk.run[bk.head]) {
		pos = int32(bk.extra.popKey())
	} else {
		pos = bk.run[bk.head]
		bk.head++
	}
	if bk.head == len(bk.run) && len(bk.extra) == 0 {
		b.ranks.popKey()
		bk.run, bk.head = bk.run[:0], 0
		b.free = append(b.free, bk)
		delete(b.by, rank)
	}
	return rank, pos, true
}
