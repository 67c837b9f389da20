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
type tally struct {
	tk     *billing.Tokenizer
	model  string
	buf    strings.Builder
	tokens int64
	any    bool
}

func (t *tally) add(s string) {
	if s == "" {
		return
	}
	t.any = true
	t.buf.WriteString(s)
	if t.buf.Len() < tallyFlush {
		return
	}
	text := t.buf.String()
	cut := strings.LastIndexByte(text, ' ')
	for cut > 0 && text[cut-1] == ' ' {
		cut--
	}
	if cut <= 0 {
		cut = len(text) // one long run: counted in bounded pieces anyway
	}
	t.tokens += int64(t.tk.Count(t.model, text[:cut]))
	rest := text[cut:]
	t.buf.Reset()
	t.buf.WriteString(rest)
}

// total counts what is held and returns every token seen.
func (t *tally) total() int64 {
	if t.buf.Len() > 0 {
		t.tokens += int64(t.tk.Count(t.model, t.buf.String()))
		t.buf.Reset()
	}
	return t.tokens
}
