package billing

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"unicode"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// maxRun bounds the length, in runes, of a run of one character class that
// is handed to the BPE in one piece. tiktoken-go's merge is quadratic in the
// piece length, so one 64 KB word would pin a core for seconds; pieces of
// ordinary text are far shorter than this, so their counts are unchanged.
const maxRun = 128

// cacheMin is the shortest text whose count is cached: shorter ones are
// cheaper to count than to hash.
const cacheMin = 256

// Tokenizer counts tokens with OpenAI's BPE encodings, loaded from the
// ranks compiled into the binary: it never touches the network.
//
// Chat clients send the whole conversation on every turn, so most message
// texts were counted before: counts of longer texts are kept in a bounded
// LRU cache keyed by the text's SHA-256 and the encoding.
type Tokenizer struct {
	o200k, cl100k *tiktoken.Tiktoken
	cache         *lru.Cache[cacheKey, int]
}

type cacheKey struct {
	enc  byte
	hash [32]byte
}

var setLoader sync.Once

// NewTokenizer loads both encodings (a few hundred milliseconds, once).
func NewTokenizer() (*Tokenizer, error) {
	// tiktoken-go keeps its loader in a package variable; set it once to the
	// offline one before anything loads.
	setLoader.Do(func() { tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader()) })
	o, err := tiktoken.GetEncoding("o200k_base")
	if err != nil {
		return nil, fmt.Errorf("load o200k_base: %w", err)
	}
	c, err := tiktoken.GetEncoding("cl100k_base")
	if err != nil {
		return nil, fmt.Errorf("load cl100k_base: %w", err)
	}
	cache, err := lru.New[cacheKey, int](8192)
	if err != nil {
		return nil, err
	}
	return &Tokenizer{o200k: o, cl100k: c, cache: cache}, nil
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

func (t *Tokenizer) encoding(model string) (*tiktoken.Tiktoken, byte) {
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
		return count(enc, text)
	}
	key := cacheKey{enc: id, hash: sha256.Sum256([]byte(text))}
	if n, ok := t.cache.Get(key); ok {
		return n
	}
	n := count(enc, text)
	t.cache.Add(key, n)
	return n
}

func count(enc *tiktoken.Tiktoken, text string) int {
	n, start := 0, 0
	for _, cut := range longRunCuts(text) {
		n += len(enc.EncodeOrdinary(text[start:cut]))
		start = cut
	}
	return n + len(enc.EncodeOrdinary(text[start:]))
}

// longRunCuts returns byte offsets that split every run of maxRun or more
// runes of one class (letters, digits, spaces, other) into runs of at most
// maxRun. Ordinary text has no such run and yields no cut, so its count is
// exactly tiktoken's; adversarial text is counted in linear time.
func longRunCuts(text string) []int {
	var cuts []int
	run, class := 0, -1
	for i, r := range text {
		c := runeClass(r)
		if c != class {
			class, run = c, 0
		}
		if run == maxRun {
			cuts = append(cuts, i)
			run = 0
		}
		run++
	}
	return cuts
}

func runeClass(r rune) int {
	switch {
	case unicode.IsLetter(r):
		return 0
	case unicode.IsNumber(r):
		return 1
	case unicode.IsSpace(r):
		return 2
	default:
		return 3
	}
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
