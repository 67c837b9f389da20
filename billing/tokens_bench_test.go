package billing

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// benchCount counts text for model with a new first line each time, so
// neither the cache nor the piece map of a previous round helps: new text,
// the first turn of a conversation. It reports tokens/s on one core.
func benchCount(b *testing.B, model, text string) {
	tk := newTokenizer(b)
	// The number replaces whole characters: a cut one would make the text
	// invalid UTF-8, and measure its repair.
	cut := 0
	for range 8 {
		_, size := utf8.DecodeRuneInString(text[cut:])
		cut += size
	}
	text = text[cut:]
	tokens := tk.Count(model, "00000000"+text)
	b.SetBytes(int64(len(text) + 8))
	b.ReportAllocs()
	var spent time.Duration
	n := 0
	for i := 0; b.Loop(); i++ {
		in := fmt.Sprintf("%08d", i) + text
		start := time.Now()
		tk.Count(model, in)
		spent += time.Since(start)
		n++
	}
	b.ReportMetric(float64(tokens)*float64(n)/spent.Seconds(), "tokens/s")
}

func corpusText(b *testing.B, names ...string) string {
	var sb strings.Builder
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join("testdata", "tokens", n))
		if err != nil {
			b.Fatal(err)
		}
		sb.Write(raw)
	}
	return sb.String()
}

// BenchmarkCountOrdinary: English prose, new each time.
func BenchmarkCountOrdinary(b *testing.B) {
	benchCount(b, "gpt-4o", corpusText(b, "prose_en_US.txt"))
}

// BenchmarkCountCode: Go and Python source and JSON tool schemas.
func BenchmarkCountCode(b *testing.B) {
	benchCount(b, "gpt-4o", corpusText(b, "code_go.txt", "code_python.txt", "json_tools.txt"))
}

// BenchmarkCountCJK: Chinese and Japanese prose.
func BenchmarkCountCJK(b *testing.B) {
	benchCount(b, "gpt-4o", corpusText(b, "prose_zh_CN.txt", "prose_ja_JP.txt"))
}

// BenchmarkCountRepeated counts a text counted before, as with the history
// a chat client re-sends on every turn.
func BenchmarkCountRepeated(b *testing.B) {
	tk := newTokenizer(b)
	text := corpusText(b, "prose_en_US.txt")
	tokens := tk.Count("gpt-4o", text)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tk.Count("gpt-4o", text)
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCountAdversarial counts 1 MiB of one repeated character, new
// each time: the longest pieces the split can make.
func BenchmarkCountAdversarial(b *testing.B) {
	for _, unit := range []string{"a", "7", " ", "😀"} {
		b.Run(fmt.Sprintf("%q", unit), func(b *testing.B) {
			tk := newTokenizer(b)
			text := strings.Repeat(unit, (1<<20)/len(unit))
			b.SetBytes(int64(len(text)))
			for i := 0; b.Loop(); i++ {
				tk.Count("gpt-4o", fmt.Sprintf("%08d", i)+text[8:])
			}
		})
	}
}
