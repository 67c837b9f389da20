package provider

import (
	"strings"

	"github.com/aifirewall/aifirewall/billing"
)

// tallyFlush is how much streamed text is held before it is counted.
const tallyFlush = 4 << 10

// tally counts the tokens of text that arrives in pieces, holding at most
// a few KiB: text is counted up to the last space that starts a word, a
// boundary where tiktoken's pre-tokenizer splits too, so the total matches
// counting the whole text at once.
//
// A stream that may be cut off asks for the count as it goes (running),
// which counts up to the last word boundary then; between two such
// questions it needs only a bound (bound: a token a byte for what is not
// counted yet), so a stream far from its room costs no more counting
// than one that is not cut off.
type tally struct {
	tk     *billing.Tokenizer
	model  string
	buf    strings.Builder
	tokens int64
	any    bool
	// held caches running()'s count of buf (heldLen: buf's length then,
	// -1: none), which the next flush reuses when it counts just that.
	heldLen, heldCount int
}

func newTally(tk *billing.Tokenizer, req *Request) tally {
	return tally{tk: tk, model: req.Model, heldLen: -1}
}

func (t *tally) add(s string) {
	if s == "" {
		return
	}
	t.any = true
	t.buf.WriteString(s)
	if t.buf.Len() >= tallyFlush {
		t.flush()
	}
}

// flush counts what is held up to its last word boundary (all of it when
// it is one long run of tallyFlush bytes or more).
func (t *tally) flush() {
	text := t.buf.String()
	cut := strings.LastIndexByte(text, ' ')
	for cut > 0 && text[cut-1] == ' ' {
		cut--
	}
	if cut <= 0 {
		if t.buf.Len() < tallyFlush {
			return // one word so far: running() counts it as it stands
		}
		cut = len(text) // one long run: counted in bounded pieces anyway
	}
	if cut == t.heldLen {
		// The word running() counted: text only grows after it.
		t.tokens += int64(t.heldCount)
	} else {
		t.tokens += int64(t.tk.Count(t.model, text[:cut]))
	}
	t.heldLen = -1
	rest := text[cut:]
	t.buf.Reset()
	t.buf.WriteString(rest)
}

// running is every token seen so far, the word still held counted as it
// stands.
func (t *tally) running() int64 {
	if t.buf.Len() == 0 {
		return t.tokens
	}
	if t.heldLen != t.buf.Len() {
		t.flush()
		if t.buf.Len() == 0 {
			return t.tokens
		}
		t.heldLen, t.heldCount = t.buf.Len(), t.tk.Count(t.model, t.buf.String())
	}
	return t.tokens + int64(t.heldCount)
}

// bound is at least running(), without counting: each byte not counted
// yet taken as a token (a token is at least one byte, and text is counted
// in pieces that split where the whole text would).
func (t *tally) bound() int64 {
	return t.tokens + int64(t.buf.Len())
}

// counted is a meter's local count: the prompt as counted before it was
// forwarded, and the output seen so far.
func counted(req *Request, t *tally) billing.Usage {
	return billing.Usage{Input: req.PromptTokens, Output: t.running()}
}

// bounded is at least counted, without counting.
func bounded(req *Request, t *tally) billing.Usage {
	return billing.Usage{Input: req.PromptTokens, Output: t.bound()}
}

// total counts what is held and returns every token seen.
func (t *tally) total() int64 {
	if t.buf.Len() > 0 {
		t.tokens += int64(t.tk.Count(t.model, t.buf.String()))
		t.buf.Reset()
		t.heldLen = -1
	}
	return t.tokens
}
