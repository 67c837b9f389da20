package billing

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	lru "github.com/hashicorp/golang-lru/v2"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// cacheMin is the shortest text whose count is cached: shorter ones are
// cheaper to count than to hash.
const cacheMin = 256

// Tokenizer counts tokens with OpenAI's BPE encodings, exactly as tiktoken
// does, from the ranks compiled into the binary: it never touches the
// network. The ranks come from tiktoken-go's offline loader; the split and
// the merge are ours (pretokenize.go, bpe.go, backtrack.go), linear in the
// text, and checked against tiktoken-go in tests.
//
// Chat clients send the whole conversation on every turn, so most message
// texts were counted before: counts of longer texts are kept in a bounded
// LRU cache keyed by the text's SHA-256 and the encoding.
type Tokenizer struct {
	o200k, cl100k *bpeCounter
	cache         *lru.Cache[cacheKey, int]
}

type cacheKey struct {
	enc  byte
	hash [32]byte
}

// NewTokenizer loads both encodings (side by side; about a second, once).
func NewTokenizer() (*Tokenizer, error) {
	cache, err := lru.New[cacheKey, int](8192)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{cache: cache}
	var wg sync.WaitGroup
	var errs [2]error
	for i, enc := range []struct {
		name string
		dst  **bpeCounter
	}{{"o200k_base", &t.o200k}, {"cl100k_base", &t.cl100k}} {
		wg.Go(func() {
			ranks, err := tiktokenloader.NewOfflineLoader().LoadTiktokenBpe(enc.name + ".tiktoken")
			if err != nil {
				errs[i] = fmt.Errorf("load %s: %w", enc.name, err)
				return
			}
			*enc.dst = newCounter(ranks, enc.name == "o200k_base")
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return t, nil
}

// EncodingFor names the encoding used for model. Models of the gpt-4 and
// gpt-3.5 families use cl100k_base; everything newer, and anything unknown,
// o200k_base. OpenRouter ids are matched on the part after the vendor.
func EncodingFor(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	switch {
	case strings.HasPrefix(m, "gpt-4o"), strings.HasPrefix(m, "gpt-4.1"), strings.HasPrefix(m, "gpt-4.5"):
		return "o200k_base"
	case strings.HasPrefix(m, "gpt-4"), strings.HasPrefix(m, "gpt-3.5"), strings.HasPrefix(m, "gpt-35"),
		strings.HasPrefix(m, "text-embedding-ada"), strings.HasPrefix(m, "text-embedding-3"):
		return "cl100k_base"
	default:
		return "o200k_base"
	}
}

func (t *Tokenizer) encoding(model string) (*bpeCounter, byte) {
	if EncodingFor(model) == "cl100k_base" {
		return t.cl100k, 1
	}
	return t.o200k, 0
}

// Count returns the number of tokens of text for model. Special-token
// strings in user text ("<|endoftext|>") are counted as ordinary text, the
// way the providers treat them in content.
func (t *Tokenizer) Count(model, text string) int {
	if text == "" {
		return 0
	}
	enc, id := t.encoding(model)
	if len(text) < cacheMin {
		return enc.count(validUTF8(text))
	}
	key := cacheKey{enc: id, hash: sha256.Sum256([]byte(text))}
	if n, ok := t.cache.Get(key); ok {
		return n
	}
	n := enc.count(validUTF8(text))
	t.cache.Add(key, n)
	return n
}

// validUTF8 replaces each byte that is not part of valid UTF-8 by U+FFFD,
// as tiktoken-go's conversion to runes does.
func validUTF8(text string) string {
	if utf8.ValidString(text) {
		return text
	}
	return string([]rune(text))
}

// Message is one chat message as far as counting is concerned.
type Message struct {
	Role, Name, Content string
}

// CountChat applies OpenAI's published formula for chat prompts: three
// tokens of framing per message, one more for a name, and three that prime
// the reply.
func (t *Tokenizer) CountChat(model string, msgs []Message) int {
	n := 3
	for _, m := range msgs {
		n += 3 + t.Count(model, m.Role) + t.Count(model, m.Content)
		if m.Name != "" {
			n += 1 + t.Count(model, m.Name)
		}
	}
	return n
}
