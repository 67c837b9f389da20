package billing

import (
	"unicode"
	"unicode/utf8"
)

// tiktoken splits text into pieces with a regular expression before the
// BPE merge, and the regexp engine (regexp2, backtracking) is most of the
// cost of counting. The two splitters below reproduce the o200k_base and
// cl100k_base patterns exactly, alternative by alternative, as the
// backtracking engine resolves them, in one pass over the runes:
//
//	o200k_base:
//	  A1 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	  A2 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//	  A3 \p{N}{1,3}
//	  A4  ?[^\s\p{L}\p{N}]+[\r\n/]*
//	  A5 \s*[\r\n]+
//	  A6 \s+(?!\S)
//	  A7 \s+
//	cl100k_base:
//	  B1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
//	  B2 [^\r\n\p{L}\p{N}]?\p{L}+
//	  B3 \p{N}{1,3}
//	  B4  ?[^\s\p{L}\p{N}]+[\r\n]*
//	  then A5, A6, A7
//
// The engine's classes are Go's: \s is unicode.IsSpace, \p{X} is
// unicode.Categories[X], and (?i) compares unicode.ToLower of the input.
// Every rune starts some alternative, so the pieces tile the text.

// rune classes, as bits
const (
	cLetter  = 1 << iota // \p{L}
	cNumber              // \p{N}
	cSpace               // \s
	cUpper               // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
	cLower               // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
	cNewline             // \r or \n
)

// bmpClass holds the class of every rune of the Basic Multilingual Plane
// (64 KiB, built once at start): CJK and other scripts then cost one load
// per rune instead of several searches of Unicode tables.
var bmpClass = func() []uint8 {
	t := make([]uint8, 1<<16)
	for r := range t {
		t[r] = slowClass(rune(r))
	}
	return t
}()

func slowClass(r rune) uint8 {
	var c uint8
	switch {
	case unicode.IsLetter(r):
		c = cLetter
		upper, lower := unicode.IsUpper(r), unicode.IsLower(r)
		title := !upper && !lower && unicode.IsTitle(r)
		if !lower {
			c |= cUpper // Lu, Lt, Lm, Lo
		}
		if !upper && !title {
			c |= cLower // Ll, Lm, Lo
		}
	case unicode.IsMark(r):
		c = cUpper | cLower
	case unicode.IsNumber(r):
		c = cNumber
	}
	if unicode.IsSpace(r) {
		c |= cSpace
	}
	if r == '\r' || r == '\n' {
		c |= cNewline
	}
	return c
}

func classOf(r rune) uint8 {
	if r < 1<<16 {
		return bmpClass[r]
	}
	return slowClass(r)
}

// runes is text decoded once: each rune, its class and its byte offset.
type runes struct {
	r   []rune
	c   []uint8
	off []int32 // byte offset of rune i; off[len] = len(text)
}

func (rs *runes) load(text string) {
	if cap(rs.off) <= len(text) {
		// At most one rune a byte.
		rs.r, rs.c, rs.off = make([]rune, len(text)), make([]uint8, len(text)), make([]int32, len(text)+1)
	}
	r, c, off := rs.r[:len(text)], rs.c[:len(text)], rs.off[:len(text)+1]
	n := 0
	for i := 0; i < len(text); n++ {
		if b := text[i]; b < utf8.RuneSelf {
			r[n], c[n], off[n] = rune(b), bmpClass[b], int32(i)
			i++
			continue
		}
		u, size := utf8.DecodeRuneInString(text[i:])
		r[n], c[n], off[n] = u, classOf(u), int32(i)
		i += size
	}
	off[n] = int32(len(text))
	rs.r, rs.c, rs.off = r[:n], c[:n], off[:n+1]
}

// isPrefix is [^\r\n\p{L}\p{N}].
func isPrefix(c uint8) bool { return c&(cNewline|cLetter|cNumber) == 0 }

// isSymbol is [^\s\p{L}\p{N}].
func isSymbol(c uint8) bool { return c&(cSpace|cLetter|cNumber) == 0 }

// contraction is the length in runes of (?i:'s|'t|'re|'ve|'m|'ll|'d) at
// i, or 0.
func (rs *runes) contraction(i int) int {
	n := len(rs.r)
	if i+1 >= n || rs.r[i] != '\'' {
		return 0
	}
	second := rune(0)
	switch unicode.ToLower(rs.r[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		second = 'e'
	case 'l':
		second = 'l'
	default:
		return 0
	}
	if i+2 < n && unicode.ToLower(rs.r[i+2]) == second {
		return 3
	}
	return 0
}

// run returns the end of the run of runes from i whose class has a bit of
// mask.
func (rs *runes) run(i int, mask uint8) int {
	for i < len(rs.c) && rs.c[i]&mask != 0 {
		i++
	}
	return i
}

// whitespace matches A5, A6 and A7 at i (a space rune).
func (rs *runes) whitespace(i int) int {
	end := rs.run(i, cSpace)
	for j := end - 1; j >= i; j-- { // A5: up to the last \r or \n of the run
		if rs.c[j]&cNewline != 0 {
			return j + 1
		}
	}
	if end < len(rs.r) && end-i >= 2 { // A6: all but the space before \S
		return end - 1
	}
	return end // A6 at the end of text, or A7
}

// symbols matches A4/B4 at i: an optional space, symbols, then trailing
// runes of tail (\r\n, and for o200k '/'); 0 when it does not match.
func (rs *runes) symbols(i int, slash bool) int {
	j := i
	if rs.r[j] == ' ' && j+1 < len(rs.r) {
		j++ // " ?" is greedy; without the space, \s cannot start the run
	}
	if !isSymbol(rs.c[j]) {
		return 0
	}
	for j < len(rs.r) && isSymbol(rs.c[j]) {
		j++
	}
	for j < len(rs.r) && (rs.c[j]&cNewline != 0 || slash && rs.r[j] == '/') {
		j++
	}
	return j
}

// numbers matches \p{N}{1,3} at i.
func (rs *runes) numbers(i int) int {
	j := i
	for j < len(rs.r) && j-i < 3 && rs.c[j]&cNumber != 0 {
		j++
	}
	return j
}

// o200kA1 tries A1 with its letters starting at q: [U]*[L]+ then a
// contraction; 0 when it does not match.
func (rs *runes) o200kA1(q int) int {
	u := rs.run(q, cUpper)
	end := rs.run(u, cLower)
	if end == u {
		// [L]+ found nothing after the upper run: the engine gives back
		// upper runes until one of them is also lower (Lm, Lo, M).
		end = 0
		for j := u - 1; j >= q; j-- {
			if rs.c[j]&cLower != 0 {
				end = j + 1
				break
			}
		}
		if end == 0 {
			return 0
		}
	}
	return end + rs.contraction(end)
}

// o200kA2 tries A2 with its letters starting at q.
func (rs *runes) o200kA2(q int) int {
	u := rs.run(q, cUpper)
	if u == q {
		return 0
	}
	end := rs.run(u, cLower)
	return end + rs.contraction(end)
}

// withPrefix tries alt with the optional prefix rune at i taken, then
// without it, as a greedy ? does.
func (rs *runes) withPrefix(i int, alt func(int) int) int {
	if isPrefix(rs.c[i]) && i+1 < len(rs.r) {
		if end := alt(i + 1); end > 0 {
			return end
		}
	}
	return alt(i)
}

// o200kPiece returns the end of the piece that starts at rune i.
func (rs *runes) o200kPiece(i int) int {
	if end := rs.withPrefix(i, rs.o200kA1); end > 0 {
		return end
	}
	if end := rs.withPrefix(i, rs.o200kA2); end > 0 {
		return end
	}
	if rs.c[i]&cNumber != 0 {
		return rs.numbers(i)
	}
	if end := rs.symbols(i, true); end > 0 {
		return end
	}
	return rs.whitespace(i)
}

// cl100kLetters is \p{L}+ at q.
func (rs *runes) cl100kLetters(q int) int {
	end := rs.run(q, cLetter)
	if end == q {
		return 0
	}
	return end
}

// cl100kPiece returns the end of the piece that starts at rune i.
func (rs *runes) cl100kPiece(i int) int {
	if n := rs.contraction(i); n > 0 {
		return i + n
	}
	if end := rs.withPrefix(i, rs.cl100kLetters); end > 0 {
		return end
	}
	if rs.c[i]&cNumber != 0 {
		return rs.numbers(i)
	}
	if end := rs.symbols(i, false); end > 0 {
		return end
	}
	return rs.whitespace(i)
}
