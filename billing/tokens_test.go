package billing

import (
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	sharedOnce sync.Once
	shared     *Tokenizer
)

// newTokenizer is one tokenizer shared by the tests (loading takes about a
// second, several under the race detector); freshTokenizer is a new one.
func newTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	sharedOnce.Do(func() { shared = freshTokenizer(t) })
	return shared
}

func freshTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestCountKnownValues(t *testing.T) {
	tk := newTokenizer(t)
	// Reference counts from OpenAI's tiktoken (Python) for these strings.
	cases := []struct {
		model, text string
		want        int
	}{
		{"gpt-4o-mini", "Hello!", 2},
		{"gpt-4o-mini", "hello world", 2},
		{"gpt-4", "hello world", 2},
		{"gpt-4", "tiktoken is great!", 6},
		{"gpt-4o", "", 0},
	}
	for _, c := range cases {
		if got := tk.Count(c.model, c.text); got != c.want {
			t.Errorf("Count(%q, %q) = %d, want %d", c.model, c.text, got, c.want)
		}
	}
}

func TestEncodingFor(t *testing.T) {
	cases := map[string]string{
		"gpt-4o-mini": "o200k_base", "openai/gpt-4o-mini": "o200k_base", "gpt-4.1": "o200k_base",
		"o1": "o200k_base", "o3-mini": "o200k_base", "o4-mini": "o200k_base", "gpt-5": "o200k_base",
		"gpt-4": "cl100k_base", "gpt-4-turbo": "cl100k_base", "gpt-3.5-turbo": "cl100k_base",
		"anthropic/claude-sonnet-4.5": "o200k_base", "some-unknown-model": "o200k_base",
	}
	for model, want := range cases {
		if got := EncodingFor(model); got != want {
			t.Errorf("EncodingFor(%q) = %s, want %s", model, got, want)
		}
	}
}

// Ordinary text counts as the library counts it.
func TestCountMatchesTiktokenOnOrdinaryText(t *testing.T) {
	tk := newTokenizer(t)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog, 1234567 times; naïve café — 東京. \n\t", 200)
	for _, enc := range []string{"o200k_base", "cl100k_base"} {
		ref := oracle(t, enc)
		model := map[string]string{"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}[enc]
		if got, want := tk.Count(model, text), len(ref.EncodeOrdinary(text)); got != want {
			t.Errorf("%s: Count = %d, tiktoken = %d", enc, got, want)
		}
	}
}

// The adversarial case must finish; its speed is measured in BenchmarkCountAdversarial.
func TestCountAdversarialTerminates(t *testing.T) {
	tk := newTokenizer(t)
	done := make(chan int, 1)
	go func() { done <- tk.Count("gpt-4o", strings.Repeat("a", 1<<20)) }()
	select {
	case n := <-done:
		if n <= 0 {
			t.Fatalf("count = %d", n)
		}
	case <-time.After(time.Minute):
		t.Fatal("counting 1 MiB of one letter did not finish within a minute")
	}
}

func TestCountChat(t *testing.T) {
	tk := newTokenizer(t)
	// OpenAI cookbook: "Hello!" as one user message on gpt-4o costs
	// 3 (reply priming) + 3 (message) + 1 ("user") + 2 ("Hello!") = 9.
	got := tk.CountChat("gpt-4o-mini", []Message{{Role: "user", Content: "Hello!"}})
	if got != 9 {
		t.Fatalf("CountChat = %d, want 9", got)
	}
	named := tk.CountChat("gpt-4o-mini", []Message{{Role: "user", Name: "bob", Content: "Hello!"}})
	if named != got+1+tk.Count("gpt-4o-mini", "bob") {
		t.Fatalf("named message = %d", named)
	}
}

func TestCountCacheKeepsEncodingsApart(t *testing.T) {
	tk := freshTokenizer(t)
	// Japanese takes far fewer tokens in o200k_base than in cl100k_base.
	text := strings.Repeat("東京は日本の首都で、とても大きな都市です。", 20)
	o, c := tk.Count("gpt-4o", text), tk.Count("gpt-4", text)
	if o >= c {
		t.Fatalf("o200k %d tokens, cl100k %d: the encodings are mixed up", o, c)
	}
	if tk.Count("gpt-4o", text) != o || tk.Count("gpt-4", text) != c {
		t.Fatal("cached count crossed encodings")
	}
	if tk.cache.Len() != 2 {
		t.Fatalf("cache holds %d entries", tk.cache.Len())
	}
}
