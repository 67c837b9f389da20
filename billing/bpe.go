package billing

import (
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sync"
)

// bpeCounter counts the tokens of one encoding: a splitter for its pieces
// and tables made from its merge ranks (tiktoken's own, from the offline
// loader; the rank map itself is not kept).
type bpeCounter struct {
	o200k bool // which split pattern
	pool  sync.Pool
	seed  maphash.Seed
	// The merge table: merging tokens a and b gives the token ranked
	// merged[k] for the k in [first[a], first[a+1]) with right[k] == b,
	// right sorted. Every part of a piece is a token, so this answers every
	// "is a+b a token, and of what rank?" without hashing strings, and a
	// miss costs a short binary search rather than a probe of a 200,000-
	// entry map.
	first         []int32
	right, merged []int32
	byteRank      [256]int32
	// bytePairs answers merges of two single-byte tokens (ranks below 256
	// in both encodings) from a 256 KiB table: the first merges of every
	// piece, and most of the work in scripts of multi-byte characters.
	bytePairs []int32
	bt        *tokenInfo // for backtrack
	short     shortTable
}

// scratch is a counter's working memory, reused between calls.
type scratch struct {
	rs      runes
	next    []int32 // index of the part after i, or -1
	prev    []int32 // index of the part before i, or -1
	rank    []int32 // rank of the pair (i, next[i]); noRank if none
	tok     []int32 // the token part i is
	heap    heap    // the queue of merges for pieces up to bucketMin
	buckets buckets // and beyond
	dead    []bool  // backtrack's positions given up on
	// mergeSmall's last merge, of lastA and lastB
	lastA, lastB int32
	valid        [1 << validBits]validEntry

	// Recently counted pieces of 9 to 32 bytes: text repeats its words,
	// and a hit here, in cache, saves a backtrack. Entries
	// point into a ring of piece bytes; one whose bytes were overwritten
	// simply no longer matches.
	seen [seenSlots]seenEntry
	// Recently looked-up token pairs: scripts of many-byte characters merge
	// the same pairs over and over, and a hit here saves a search.
	pairs [pairSlots]pairEntry
	ring  [ringSize]byte
	ringN uint32 // bytes ever written to ring
}

const (
	seenSlots = 4096
	ringSize  = 64 << 10
	seenMax   = 32 // longest piece remembered, in bytes
)

const pairSlots = 1 << 14

type pairEntry struct{ a, b, merged int32 }

type seenEntry struct {
	at     uint32 // ringN when the piece was written
	len    uint8
	tokens uint8
}

const noRank = math.MaxInt32

func newCounter(ranks map[string]int, o200k bool) *bpeCounter {
	c := &bpeCounter{o200k: o200k, seed: maphash.MakeSeed()}
	c.pool.New = func() any { return &scratch{} }
	// Sorted as plain strings, then ranked (see buildPairs).
	toks := slices.Sorted(maps.Keys(ranks))
	vocab := make([]token, len(toks))
	for i, tok := range toks {
		vocab[i] = token{tok, int32(ranks[tok])}
		if len(tok) == 1 {
			c.byteRank[tok[0]] = int32(ranks[tok])
		}
	}
	c.short = newShortTable(vocab)
	tr := buildTrie(vocab)
	c.buildPairs(vocab, &tr)
	if slices.Max(c.byteRank[:]) < 256 {
		c.bytePairs = make([]int32, 1<<16)
		for i := range c.bytePairs {
			c.bytePairs[i] = c.search(int32(i>>8), int32(i&0xff))
		}
	}
	c.buildBacktrack(vocab, tr)
	return c
}

// token is one token of the vocabulary and its rank.
type token struct {
	s string
	r int32
}

// buildPairs fills the merge table with every split of every token into
// two tokens, finding the prefixes on the token's path in the trie (the
// rank map would hash every prefix and every suffix: most of the start-up
// time).
func (c *bpeCounter) buildPairs(vocab []token, tr *trie) {
	// A pair is a<<42 | b<<21 | merged, so that a plain sort orders them
	// by a then b (sorting with a comparison function takes three times as
	// long, ten times under the race detector).
	var pairs []uint64
	top := int32(0)
	for _, v := range vocab {
		top = max(top, v.r)
		n := int32(0)
		for k := 1; k < len(v.s); k++ {
			n = tr.child(n, v.s[k-1])
			if a := tr.token[n]; a >= 0 {
				if b := c.rankOf(tr, v.s[k:]); b >= 0 {
					pairs = append(pairs, uint64(a)<<42|uint64(b)<<21|uint64(v.r))
				}
			}
		}
	}
	const mask = 1<<21 - 1
	if top > mask {
		panic("billing: a rank past 2^21 does not fit the pair table") // o200k_base's last is 199,997
	}
	slices.Sort(pairs)
	c.first = make([]int32, top+2)
	c.right, c.merged = make([]int32, len(pairs)), make([]int32, len(pairs))
	for k, p := range pairs {
		c.right[k], c.merged[k] = int32(p>>21&mask), int32(p&mask)
		c.first[p>>42+1]++
	}
	for a := 1; a < len(c.first); a++ {
		c.first[a] += c.first[a-1]
	}
}

// rankOf is the rank of the token p, or -1.
func (c *bpeCounter) rankOf(tr *trie, p string) int32 {
	if len(p) <= shortMax {
		return c.short.rank(p)
	}
	n := int32(0)
	for i := 0; i < len(p) && n >= 0; i++ {
		n = tr.child(n, p[i])
	}
	if n < 0 {
		return -1
	}
	return tr.token[n]
}

// merge is the rank of the token made of tokens a and b, or noRank,
// through s's cache of recent pairs.
func (c *bpeCounter) merge(s *scratch, a, b int32) int32 {
	if a|b < 256 && c.bytePairs != nil {
		return c.bytePairs[a<<8|b]
	}
	e := &s.pairs[(uint32(a)*0x9e3779b1^uint32(b)*0x85ebca77)>>(32-14)]
	if e.a == a && e.b == b && e.merged != 0 {
		return e.merged - 1
	}
	m := c.search(a, b)
	// Stored plus one, so that a zero slot is empty; noRank wraps around
	// and back, which Go defines for int32.
	*e = pairEntry{a: a, b: b, merged: m + 1}
	return m
}

// search finds the merge of a and b in the pair table.
func (c *bpeCounter) search(a, b int32) int32 {
	lo, hi := c.first[a], c.first[a+1]
	for hi-lo > 8 {
		mid := int32(uint32(lo+hi) >> 1)
		if c.right[mid] < b {
			lo = mid + 1
		} else {
			hi = mid + 1 // mid may be b itself
		}
	}
	for ; lo < hi; lo++ {
		if c.right[lo] == b {
			return c.merged[lo]
		}
	}
	return noRank
}

// count is the number of tokens tiktoken's EncodeOrdinary returns for
// text.
func (c *bpeCounter) count(text string) int {
	s := c.pool.Get().(*scratch)
	defer c.pool.Put(s)
	s.rs.load(text)
	rs := &s.rs
	n := 0
	for i := 0; i < len(rs.r); {
		var end int
		if c.o200k {
			end = rs.o200kPiece(i)
		} else {
			end = rs.cl100kPiece(i)
		}
		n += c.piece(s, text[rs.off[i]:rs.off[end]])
		i = end
	}
	return n
}

// piece counts the tokens of one piece: what tiktoken's merge leaves of it
// (merging the lowest-ranked adjacent pair, leftmost first, until no pair
// is a token), one when the piece is a token.
func (c *bpeCounter) piece(s *scratch, p string) int {
	switch {
	case len(p) <= 1:
		return len(p)
	case len(p) <= shortMax:
		// Short pieces are mostly tokens, found faster than in the seen cache.
		if c.short.rank(p) >= 0 {
			return 1
		}
		return c.mergeSmall(s, p)
	case len(p) > seenMax:
		return c.pieceUncached(s, p)
	}
	e := &s.seen[maphash.String(c.seed, p)%seenSlots]
	if int(e.len) == len(p) && s.ringN-e.at <= ringSize-seenMax && s.ringHas(e.at, p) {
		return int(e.tokens)
	}
	n := c.pieceUncached(s, p)
	*e = seenEntry{at: s.ringN, len: uint8(len(p)), tokens: uint8(n)}
	for i := 0; i < len(p); i++ {
		s.ring[(s.ringN+uint32(i))%ringSize] = p[i]
	}
	s.ringN += uint32(len(p))
	return n
}

// ringHas says the ring holds p at at.
func (s *scratch) ringHas(at uint32, p string) bool {
	for i := 0; i < len(p); i++ {
		if s.ring[(at+uint32(i))%ringSize] != p[i] {
			return false
		}
	}
	return true
}

// pieceUncached counts a piece longer than shortMax (a word of Han
// script, an identifier, a run) in time linear in its length.
func (c *bpeCounter) pieceUncached(s *scratch, p string) int {
	if _, ok := c.bt.whole[p]; ok {
		return 1
	}
	if n := c.backtrack(s, p); n >= 0 {
		return n
	}
	return c.mergeQueued(s, p) // not reached: backtrack always finds BPE's encoding
}

// mergeSmall is tiktoken's own merge loop: quadratic, and the fastest for
// the short pieces of ordinary text.
func (c *bpeCounter) mergeSmall(s *scratch, p string) int {
	tok, rank := s.tok[:0], s.rank[:0]
	for i := 0; i < len(p); i++ {
		tok = append(tok, c.byteRank[p[i]])
	}
	for i := 0; i+1 < len(tok); i++ {
		rank = append(rank, c.merge(s, tok[i], tok[i+1]))
	}
	for len(rank) > 0 {
		best, at := int32(noRank), -1
		for i, r := range rank {
			if r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		// part at absorbs part at+1, becoming the token of their pair;
		// its pairs with its neighbours are ranked anew.
		s.lastA, s.lastB = tok[at], tok[at+1]
		tok[at] = best
		tok = append(tok[:at+1], tok[at+2:]...)
		rank = append(rank[:at], rank[at+1:]...)
		if at < len(rank) {
			rank[at] = c.merge(s, tok[at], tok[at+1])
		}
		if at > 0 {
			rank[at-1] = c.merge(s, tok[at-1], tok[at])
		}
	}
	s.tok, s.rank = tok, rank
	return len(tok)
}

// mergeQueued gives the same result as mergeSmall in O(n log n): parts in
// a linked list indexed by their first byte, pairs in a priority queue
// keyed by (rank, first byte), so ties go to the leftmost pair as in
// tiktoken; stale entries are skipped.
func (c *bpeCounter) mergeQueued(s *scratch, p string) int {
	n := len(p)
	tok, next, prev, rank := s.tok[:0], s.next[:0], s.prev[:0], s.rank[:0]
	for i := 0; i < n; i++ {
		tok = append(tok, c.byteRank[p[i]])
		next = append(next, int32(i+1))
		prev = append(prev, int32(i-1))
		rank = append(rank, noRank)
	}
	next[n-1] = -1
	var q queue = &s.heap
	if n > bucketMin {
		s.buckets.reset()
		q = &s.buckets
	}
	s.heap = s.heap[:0]
	for i := 0; i+1 < n; i++ {
		if rank[i] = c.merge(s, tok[i], tok[i+1]); rank[i] != noRank {
			q.push(rank[i], int32(i))
		}
	}
	parts := n
	for {
		r, i, ok := q.pop()
		if !ok {
			break
		}
		if tok[i] < 0 || rank[i] != r {
			continue // merged away or re-ranked since it was pushed
		}
		j := next[i]
		tok[i], tok[j] = r, -1
		next[i] = next[j]
		if next[i] >= 0 {
			prev[next[i]] = i
		}
		parts--
		rank[i] = noRank
		if next[i] >= 0 {
			if rank[i] = c.merge(s, tok[i], tok[next[i]]); rank[i] != noRank {
				q.push(rank[i], i)
			}
		}
		if k := prev[i]; k >= 0 {
			if rank[k] = c.merge(s, tok[k], tok[i]); rank[k] != noRank {
				q.push(rank[k], k)
			}
		}
	}
	s.tok, s.next, s.prev, s.rank = tok, next, prev, rank
	return parts
}
