package billing

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkCountOrdinary counts texts never seen before (the cache misses).
func BenchmarkCountOrdinary(b *testing.B) {
	tk := newTokenizer(b)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog; it was 42 degrees in Paris. ", 1000)
	tokens := tk.Count("gpt-4o", text)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		tk.Count("gpt-4o", fmt.Sprint(i)+text)
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCountRepeated counts a text counted before, as with the history
// a chat client re-sends on every turn.
func BenchmarkCountRepeated(b *testing.B) {
	tk := newTokenizer(b)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog; it was 42 degrees in Paris. ", 1000)
	tokens := tk.Count("gpt-4o", text)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tk.Count("gpt-4o", text)
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCountAdversarial counts 1 MiB of one letter, new each time.
func BenchmarkCountAdversarial(b *testing.B) {
	tk := newTokenizer(b)
	text := strings.Repeat("a", 1<<20)
	b.SetBytes(int64(len(text)))
	for i := 0; b.Loop(); i++ {
		tk.Count("gpt-4o", fmt.Sprintf("%08d", i)+text[8:])
	}
}
