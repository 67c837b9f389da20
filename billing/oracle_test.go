package billing

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// tiktoken-go is the oracle: our split and merge must count what its
// regexp2 split and merge count, token for token.
var (
	oracleOnce sync.Once
	oracles    map[string]*tiktoken.Tiktoken
)

func oracle(t testing.TB, enc string) *tiktoken.Tiktoken {
	oracleOnce.Do(func() {
		tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader())
		oracles = map[string]*tiktoken.Tiktoken{}
		for _, name := range []string{"o200k_base", "cl100k_base"} {
			e, err := tiktoken.GetEncoding(name)
			if err != nil {
				t.Fatal(err)
			}
			oracles[name] = e
		}
	})
	return oracles[enc]
}

// vocabulary is the rank map of c's encoding, as the loader gives it.
func vocabulary(t testing.TB, c *bpeCounter) map[string]int {
	name := "cl100k_base"
	if c.o200k {
		name = "o200k_base"
	}
	ranks, err := tiktokenloader.NewOfflineLoader().LoadTiktokenBpe(name + ".tiktoken")
	if err != nil {
		t.Fatal(err)
	}
	return ranks
}

var encodings = []struct{ name, model string }{{"o200k_base", "gpt-4o"}, {"cl100k_base", "gpt-4"}}

func counter(tk *Tokenizer, enc string) *bpeCounter {
	if enc == "cl100k_base" {
		return tk.cl100k
	}
	return tk.o200k
}

// checkExact fails unless both encodings count text as tiktoken-go does.
func checkExact(t *testing.T, tk *Tokenizer, text string) {
	t.Helper()
	for _, e := range encodings {
		want := len(oracle(t, e.name).EncodeOrdinary(text))
		if got := counter(tk, e.name).count(validUTF8(text)); got != want {
			t.Errorf("%s: %d tokens, tiktoken %d, for %q", e.name, got, want, clipText(text))
		}
	}
}

func clipText(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func TestCountEqualsTiktokenOnTrickyText(t *testing.T) {
	tk := newTokenizer(t)
	for _, text := range []string{
		"Hello!", "hello world", " hello", "  hello", "\n\nHello", " \nHello", "  \n  x", "a  b", "x   ", "   ",
		"don't", "DON'T", "I'm", "they're", "we've", "you'll", "he'd", "'s", "'sup", "x'S", "x'Re", "x'LL", "'", "''s",
		"HELLO world", "HELLOworld", "HeLLo", "日本ABC", "東京は日本の首都です。", "naïve café", "e\u0301", "!\u0301a", "\u0301",
		" \u0301", "\u0301 x", "ǅemal", "ǅ", "ʰello", "123456789", " 123", "1,234.56", "12a34", "٣٤٥٦", "½¾",
		"foo/bar//baz", "!!\n\n", "a/\n", "path/to/file.go\r\n", " !!!", " ?", "?? x", "\t\tindent", "\r\n\r\n",
		"line\u2028sep", "nbsp\u00a0here", "\u3000全角", "emoji 😀👍🏽 family 👨‍👩‍👧", "<|endoftext|>", "<|endofprompt|>",
		"ſtreet", "Kelvin \u212a", "x'ſ", "x'\u212a", "İstanbul", "ΣΊΣΥΦΟΣ", "Ǆ", "\u0085next", "zero\u200bwidth",
		"mixed\tspaces \t x", "end with space ", "end with newline\n", "{\"a\": [1, 2, {\"b\": null}]}",
	} {
		checkExact(t, tk, text)
	}
}

// Long runs of one class are exact too: no cut, a linear merge.
func TestCountEqualsTiktokenOnLongRuns(t *testing.T) {
	tk := newTokenizer(t)
	for _, unit := range []string{"a", "ab", "1", " ", "\n", "!", "😀", "東", "e\u0301", "A", "Ab", "\t "} {
		checkExact(t, tk, strings.Repeat(unit, 3000))
	}
}

// On long pieces, where the oracle itself would take too long, the three
// merges agree: tiktoken's quadratic loop (up to 2 KiB), the queued merge
// (a heap up to bucketMin bytes, rank buckets beyond) and the backtracking
// encoder, which finds an encoding every time.
func TestLongPieceMergesAgree(t *testing.T) {
	tk := newTokenizer(t)
	s := &scratch{}
	rnd := rand.New(rand.NewPCG(1, 2))
	var pieces []string
	for _, size := range []int{2 << 10, 32 << 10} {
		for _, unit := range []string{"a", "ab", "abc", "😀", "東京", "xyzzy", "\x00\xff", "the cat ", "数据"} {
			pieces = append(pieces, strings.Repeat(unit, size/len(unit)))
		}
		// Random runs over small alphabets: many ties, many near misses.
		for _, alphabet := range []string{"ab", "aab", "lo", "東京都", "の日本語", "ьъы", "eé"} {
			units := []rune(alphabet)
			var sb strings.Builder
			for sb.Len() < size {
				sb.WriteRune(units[rnd.IntN(len(units))])
			}
			pieces = append(pieces, sb.String())
		}
	}
	for _, p := range pieces {
		for _, c := range []*bpeCounter{tk.o200k, tk.cl100k} {
			q := c.mergeQueued(s, p)
			if len(p) <= 2<<10 {
				if want := c.mergeSmall(s, p); q != want {
					t.Errorf("%q (%d bytes): queued %d, quadratic %d", clipText(p), len(p), q, want)
				}
			}
			if b := c.backtrack(s, p); b != q {
				t.Errorf("%q (%d bytes): backtrack %d, queued %d", clipText(p), len(p), b, q)
			}
		}
	}
}

// Every token of both encodings is one token to the backtracking encoder:
// the trie, the prefix links and the pair check agree with the ranks.
func TestBacktrackEveryTokenIsOne(t *testing.T) {
	tk := newTokenizer(t)
	s := &scratch{}
	for _, c := range []*bpeCounter{tk.o200k, tk.cl100k} {
		for tok := range vocabulary(t, c) {
			if _, whole := c.bt.whole[tok]; whole {
				continue
			}
			if n := c.backtrack(s, tok); n != 1 {
				t.Errorf("token %q: %d tokens", tok, n)
			}
		}
	}
}

// Every file of the token corpus counts exactly as tiktoken-go counts it.
func TestCountEqualsTiktokenOnCorpus(t *testing.T) {
	tk := newTokenizer(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "tokens", "*"))
	if len(files) == 0 {
		t.Fatal("no token corpus in testdata/tokens")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			// Counted in chunks at line ends, as the oracle is slow on long
			// pieces; the chunk ends are where both split anyway.
			text := string(raw)
			for len(text) > 0 {
				cut := min(len(text), 64<<10)
				if i := strings.LastIndexByte(text[:cut], '\n'); i > 0 && cut < len(text) {
					cut = i + 1
				}
				checkExact(t, tk, text[:cut])
				text = text[cut:]
			}
		})
	}
}

// FuzzCountEqualsTiktoken: for any string, both encodings count exactly
// what tiktoken-go counts.
func FuzzCountEqualsTiktoken(f *testing.F) {
	for _, s := range []string{"Hello, world!", "don't STOP", " 12345 ", "東京\n\n  x", "e\u0301'S", "a/b\r\n", "😀 !"} {
		f.Add(s)
	}
	tk := newTokenizer(f)
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 4096 {
			return // the oracle is quadratic in a piece
		}
		checkExact(t, tk, text)
		if !utf8.ValidString(text) && tk.Count("gpt-4o", text) != len(oracle(t, "o200k_base").EncodeOrdinary(text)) {
			t.Fatal("invalid UTF-8 counted differently through Count")
		}
	})
}
