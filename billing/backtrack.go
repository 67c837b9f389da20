package billing

import "bytes"

// The backtracking encoder (the scheme of GitHub's Rust `bpe` crate) gives
// tiktoken's merge result without replaying the merges: it walks the piece
// left to right taking the longest token that fits, and keeps it only if
// the merge could have left it next to the token before it (validPair);
// otherwise it tries the next shorter token, and backs up a token when none
// fits. The encoding in which every adjacent pair is valid is unique, and
// it is BPE's. Each position is given up on at most once, so the work is
// linear in the piece, with a constant bounded by the longest token.
//
// Only tokens that BPE reaches from their own bytes can appear inside a
// merged piece; the few others can only be whole pieces, which
// pieceUncached answers (tokenInfo.whole) before any merge.

// trie holds the tokens for longest-prefix lookups. Nodes are numbered
// breadth first, so the children of node n are the nodes first[n] to
// first[n+1]-1, with the bytes label[first[n]:first[n+1]].
type trie struct {
	first []int32
	label []byte
	token []int32 // the token ending at node n, or -1
	node  []int32 // the node of each token, by rank
	// The nodes of the first two bytes, directly (-1: none): the widest
	// nodes, and the first steps of every walk.
	one []int32 // by byte
	two []int32 // by the two bytes, first high
}

// tokenInfo is what the encoder needs of each reachable token, by rank.
type tokenInfo struct {
	size        []uint8 // its length in bytes
	shorter     []int32 // the longest reachable token that is its proper prefix, or -1
	left, right []int32 // the two tokens whose merge made it; itself for a byte
	trie        trie    // of the reachable tokens
	// The tokens BPE does not reach from their bytes (none in o200k_base
	// or cl100k_base): a piece that is one of them is one token.
	whole map[string]struct{}
}

// buildBacktrack prepares c for backtrack from the vocabulary and its trie:
// which tokens BPE reaches, each one's last merge, and each one's longest
// reachable prefix; the others leave the trie.
func (c *bpeCounter) buildBacktrack(vocab []token, tr trie) {
	top := len(c.first) - 1
	info := tokenInfo{
		size: make([]uint8, top), shorter: make([]int32, top),
		left: make([]int32, top), right: make([]int32, top),
		whole: map[string]struct{}{},
	}
	for i := range top {
		info.left[i], info.right[i], info.shorter[i] = -1, -1, -1
	}
	s := &scratch{}
	for _, v := range vocab {
		a, b, ok := v.r, v.r, len(v.s) <= 255
		if ok && len(v.s) > 1 {
			// tiktoken's merge of the token alone: does it end as the
			// token, and from which two?
			ok = c.mergeSmall(s, v.s) == 1 && s.tok[0] == v.r
			a, b = s.lastA, s.lastB
		}
		if ok {
			info.size[v.r], info.left[v.r], info.right[v.r] = uint8(len(v.s)), a, b
		} else {
			info.whole[v.s] = struct{}{}
			tr.token[tr.node[v.r]] = -1
		}
	}
	// Parents come before their children in breadth-first order.
	above := make([]int32, len(tr.token))
	above[0] = -1
	for n := range int32(len(tr.token)) {
		if t := tr.token[n]; t >= 0 {
			info.shorter[t] = above[n]
		}
		for ch := tr.first[n]; ch < tr.first[n+1]; ch++ {
			above[ch] = above[n]
			if t := tr.token[n]; t >= 0 {
				above[ch] = t
			}
		}
	}
	tr.node = nil
	info.trie = tr
	c.bt = &info
}

// buildTrie numbers the nodes of the sorted vocabulary's trie breadth
// first.
func buildTrie(sorted []token) trie {
	// A node is the range of sorted sharing its first depth bytes.
	type node struct{ lo, hi, depth int32 }
	t := trie{first: []int32{1}, label: []byte{0}, token: []int32{-1}}
	top := int32(0)
	for _, v := range sorted {
		top = max(top, v.r)
	}
	t.node = make([]int32, top+1)
	queue := []node{{0, int32(len(sorted)), 0}}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		id := int32(len(t.first) - 1)
		if n.lo < n.hi && int32(len(sorted[n.lo].s)) == n.depth {
			t.token[id] = sorted[n.lo].r
			t.node[sorted[n.lo].r] = id
			n.lo++
		}
		children := int32(0)
		for lo := n.lo; lo < n.hi; {
			b := sorted[lo].s[n.depth]
			hi := lo + 1
			for hi < n.hi && sorted[hi].s[n.depth] == b {
				hi++
			}
			queue = append(queue, node{lo, hi, n.depth + 1})
			t.label = append(t.label, b)
			t.token = append(t.token, -1)
			children++
			lo = hi
		}
		t.first = append(t.first, t.first[id]+children)
	}
	t.one, t.two = make([]int32, 1<<8), make([]int32, 1<<16)
	for b := range 1 << 8 {
		t.one[b] = t.child(0, byte(b))
		for c := range 1 << 8 {
			t.two[b<<8|c] = -1
			if t.one[b] >= 0 {
				t.two[b<<8|c] = t.child(t.one[b], byte(c))
			}
		}
	}
	return t
}

// child is node n's child by byte b, or -1.
func (t *trie) child(n int32, b byte) int32 {
	lo, hi := t.first[n], t.first[n+1]
	if hi-lo > 16 {
		if k := bytes.IndexByte(t.label[lo:hi], b); k >= 0 {
			return lo + int32(k)
		}
		return -1
	}
	for ; lo < hi && t.label[lo] <= b; lo++ {
		if t.label[lo] == b {
			return lo
		}
	}
	return -1
}

// longest is the longest token of the trie at the start of p, or -1.
func (t *trie) longest(p string) int32 {
	if len(p) == 0 || t.one[p[0]] < 0 {
		return -1
	}
	best := t.token[t.one[p[0]]]
	if len(p) == 1 {
		return best
	}
	n := t.two[int(p[0])<<8|int(p[1])]
	if n < 0 {
		return best
	}
	if tok := t.token[n]; tok >= 0 {
		best = tok
	}
	for i := 2; i < len(p); i++ {
		if n = t.child(n, p[i]); n < 0 {
			break
		}
		if tok := t.token[n]; tok >= 0 {
			best = tok
		}
	}
	return best
}

// validPair says whether tiktoken's merge can leave token a right before
// token b: no pair across their boundary may become a token before the
// merges that made a and b. It undoes those merges latest first (a token's
// rank is when it was made; on a tie the left one is made first), and at
// each step checks the pair across the boundary against that time.
func (c *bpeCounter) validPair(s *scratch, a, b int32) bool {
	// Text repeats its pairs of words; a hit here saves the walk.
	e := &s.valid[(uint32(a)*0x9e3779b1^uint32(b)*0x85ebca77)>>(32-validBits)]
	if e.a == a && e.b == b && e.v != 0 {
		return e.v == 2
	}
	v := c.walkPair(s, a, b)
	*e = validEntry{a: a, b: b, v: 1}
	if v {
		e.v = 2
	}
	return v
}

const validBits = 12

// validEntry caches validPair: v is 0 when empty, 1 for false, 2 for true.
type validEntry struct {
	a, b int32
	v    uint8
}

func (c *bpeCounter) walkPair(s *scratch, a, b int32) bool {
	bt := c.bt
	limit := int32(noRank)
	for {
		if m := c.merge(s, a, b); m != noRank && m < limit {
			return false
		}
		if a > b {
			limit = a
			if a = bt.right[a]; a == limit {
				limit = b + 1
				if b = bt.left[b]; b+1 == limit {
					return true
				}
			}
		} else {
			limit = b + 1
			if b = bt.left[b]; b+1 == limit {
				limit = a
				if a = bt.right[a]; a == limit {
					return true
				}
			}
		}
	}
}

// backtrack counts the tokens tiktoken's merge leaves of p, or -1 if it
// finds no encoding (which the argument above rules out; the caller then
// merges the slow way).
func (c *bpeCounter) backtrack(s *scratch, p string) int {
	bt := c.bt
	if cap(s.dead) <= len(p) {
		s.dead = make([]bool, len(p)+1)
	}
	dead := s.dead[:len(p)+1]
	clear(dead)
	toks := s.tok[:0]
	pos := 0
	next := bt.trie.longest(p)
	for next >= 0 {
		t := next
		last := int32(-1)
		if len(toks) > 0 {
			last = toks[len(toks)-1]
		}
		for {
			end := pos + int(bt.size[t])
			if !dead[end] && (last < 0 || c.validPair(s, last, t)) {
				toks = append(toks, t)
				pos = end
				next = -1
				if pos < len(p) {
					next = bt.trie.longest(p[pos:])
				}
				break
			}
			if t = bt.shorter[t]; t >= 0 {
				continue
			}
			if last < 0 {
				s.dead, s.tok = dead, toks
				return -1
			}
			dead[pos] = true
			toks = toks[:len(toks)-1]
			pos -= int(bt.size[last])
			next = last
			break
		}
	}
	s.dead, s.tok = dead, toks
	if pos != len(p) {
		return -1 // no token at pos: not with a vocabulary holding every byte
	}
	return len(toks)
}
