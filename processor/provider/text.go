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
// An eager tally (a stream that may be cut off) counts up to the last word
// boundary at every piece, so that running() is current: the cost of a
// few small counts per chunk instead of one per 4 KiB.
type tally struct {
	tk     *billing.Tokenizer
	model  string
	eager  bool
	buf    strings.Builder
	tokens int64
	any    bool
	// held caches running()'s count of buf (heldLen: buf's length then,
	// -1: none), which the next flush reuses when it counts just that.
	heldLen, heldCount int
}

func newTally(tk *billing.Tokenizer, req *Request) tally {
	return tally{tk: tk, model: req.Model, eager: req.Running, heldLen: -1}
}

func (t *tally) add(s string) {
	if s == "" {
		return
	}
	t.any = true
	held := t.heldLen
	if held != t.buf.Len() {
		held = -1
	}
	t.heldLen = -1
	t.buf.WriteString(s)
	if t.buf.Len() < tallyFlush && !t.eager {
		return
	}
	text := t.buf.String()
	cut := strings.LastIndexByte(text, ' ')
	for cut > 0 && text[cut-1] == ' ' {
		cut--
	}
	if cut <= 0 {
		if t.buf.Len() < tallyFlush {
			return // one word so far: running() bounds it
		}
		cut = len(text) // one long run: counted in bounded pieces anyway
	}
	if cut == held {
		t.tokens += int64(t.heldCount) // the word running() counted
	} else {
		t.tokens += int64(t.tk.Count(t.model, text[:cut]))
	}
	rest := text[cut:]
	t.buf.Reset()
	t.buf.WriteString(rest)
}

// running is every token seen so far, the word still held counted as it
// stands (an eager tally holds one word at most).
func (t *tally) running() int64 {
	if t.buf.Len() == 0 {
		return t.tokens
	}
	if t.heldLen != t.buf.Len() {
		t.heldLen, t.heldCount = t.buf.Len(), t.tk.Count(t.model, t.buf.String())
	}
	return t.tokens + int64(t.heldCount)
}

// counted is a meter's local count: the prompt as counted before it was
// forwarded, and the output seen so far.
func counted(req *Request, t *tally) billing.Usage {
	return billing.Usage{Input: req.PromptTokens, Output: t.running()}
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
