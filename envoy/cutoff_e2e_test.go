package envoy_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// Prices, nano-dollars per token.
const (
	gpt4oIn     = 2_500
	gpt4oOut    = 10_000
	sonnet45In  = 3_000
	sonnet45Out = 15_000
)

// cutStack is a stack whose users have $0.01 a day, in front of a provider
// that streams long answers slowly enough to be cut while they stream.
func cutStack(t *testing.T, env ...string) (*testenv.Stack, *fakellm.Server) {
	t.Helper()
	up := &fakellm.Server{NoRecord: true}
	return testenv.StartStack(t, testenv.StackOptions{Limit: "0.01", Upstream: up, Env: env}), up
}

// billedAsPassed checks that user's bill is the prompt plus the output
// that reached the client (text, counted as model's), past the $0.01
// limit by one chunk at most.
func billedAsPassed(t *testing.T, s *testenv.Stack, user, text string, maxChunkTokens int64) {
	t.Helper()
	billedAsPassedAt(t, s, user, text, maxChunkTokens, "gpt-4o", gpt4oIn, gpt4oOut)
}

func billedAsPassedAt(t *testing.T, s *testenv.Stack, user, text string, maxChunkTokens int64, model string, in, outPrice int64) {
	t.Helper()
	tk, err := billing.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	out := int64(tk.Count(model, text))
	key := billing.BudgetKey(user, billing.Day(time.Now(), time.UTC))
	var spent int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if spent = s.Spent(t, key); spent > 0 {
			break
		}
	}
	prompt := spent - out*outPrice
	if prompt <= 0 || prompt%in != 0 || prompt > 40*in {
		t.Fatalf("%s billed %d for %d output tokens that passed: not their cost plus a prompt's", user, spent, out)
	}
	if spent <= 10_000_000 || spent > 10_000_000+maxChunkTokens*outPrice {
		t.Fatalf("%s billed %d: want past the $0.01 limit by one chunk (%d tokens) at most", user, spent, maxChunkTokens)
	}
}

// The official OpenAI SDK streams a 100,000-word answer for a user with
// $0.01 a day: the stream ends in an error the SDK raises, the provider's
// stream is abandoned, and the bill is what passed.
func TestOpenAIStreamCutAtTheBudget(t *testing.T) {
	s, up := cutStack(t)
	client := openai.NewClient(option.WithBaseURL(s.Envoy.URL()+"/v1"), option.WithAPIKey(testenv.ClientKey),
		option.WithHeader("x-user-id", "frugal"), option.WithHeader("x-fake-words", "100000"), option.WithHeader("x-fake-delay-ms", "1"))
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Write a very long essay.")}})
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	err := stream.Err()
	stream.Close()
	if err == nil || !strings.Contains(err.Error(), "budget exceeded while streaming") {
		t.Fatalf("the SDK's error: %v (after %d bytes)", err, text.Len())
	}
	billedAsPassed(t, s, "frugal", text.String(), 3)
	for deadline := time.Now().Add(5 * time.Second); up.Left() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the provider's stream was not ended")
		}
	}
	if log := s.Envoy.AccessLog(); !strings.Contains(log, `"aifirewall_billed_from":"local_count"`) || !strings.Contains(log, `"aifirewall_cutoff":"daily"`) {
		t.Errorf("the access log does not say the bill is the local count:\n%s", log)
	}
}

// The official Anthropic SDK raises the error event of a cut stream, and
// the bill is what passed.
func TestAnthropicStreamCutAtTheBudget(t *testing.T) {
	s, _ := cutStack(t, "UPSTREAM_PROVIDER=anthropic")
	client := anthropic.NewClient(anthropicopt.WithBaseURL(s.Envoy.URL()), anthropicopt.WithAPIKey(testenv.ClientKey),
		anthropicopt.WithHeader("x-user-id", "thrifty"), anthropicopt.WithHeader("x-fake-words", "100000"), anthropicopt.WithHeader("x-fake-delay-ms", "1"))
	stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
		Model: "claude-sonnet-4-5", MaxTokens: 64000,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Write a very long essay."))},
	})
	n := 0
	var text strings.Builder
	for stream.Next() {
		n++
		if ev := stream.Current(); ev.Type == "content_block_delta" {
			text.WriteString(ev.Delta.Text)
		}
	}
	err := stream.Err()
	stream.Close()
	if err == nil || !strings.Contains(err.Error(), "budget exceeded while streaming") || !strings.Contains(err.Error(), "billing_error") {
		t.Fatalf("the SDK's error after %d events: %v", n, err)
	}
	billedAsPassedAt(t, s, "thrifty", text.String(), 3, "claude-sonnet-4-5", sonnet45In, sonnet45Out)
}

// Twenty long streams of one team at once share its budget: together they
// pass it by one chunk each at most.
func TestConcurrentStreamsStayWithinTheTeamBudget(t *testing.T) {
	file := filepath.Join(t.TempDir(), "budgets.yaml")
	os.WriteFile(file, []byte("budgets:\n  - {name: payments-day, groups: [payments], window: day, limit_usd: \"0.05\"}\n"), 0o600)
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "10", Upstream: &fakellm.Server{NoRecord: true},
		Env: []string{"IDENTITY_MODE=keys", "KEYS_FILE=" + teamKeys(t), "BUDGETS_FILE=" + file}})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		key := []string{"alice-key", "bob-key"}[i%2]
		wg.Go(func() {
			client := openai.NewClient(option.WithBaseURL(s.Envoy.URL()+"/v1"), option.WithAPIKey(key),
				option.WithHeader("x-fake-words", "100000"), option.WithHeader("x-fake-delay-ms", "1"))
			stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
				Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Go on and on.")}})
			for stream.Next() {
			}
			errs <- stream.Err()
			stream.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a stream was not cut")
		}
	}
	day := billing.Day(time.Now(), time.UTC)
	var team int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		team = s.Spent(t, billing.BudgetKey("budget=payments-day", day))
		if open := budgetsOf(t, s, "alice-key")["payments-day"]; open[2] == 0 && team > 0 {
			break
		}
	}
	if team <= 0 || team > 50_000_000+20*3*gpt4oOut {
		t.Fatalf("the team spent %d of its $0.05: past it by more than a chunk per stream", team)
	}
	t.Logf("20 streams, one $0.05 budget: spent %d nano-dollars (%.2f%% of the limit)", team, float64(team)/500_000)
}

// A stream with room to spare reaches the client byte for byte as the
// provider sent it, though each event was metered before it passed.
func TestStreamWithRoomIsUntouched(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "10"})
	body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Long, please."}]}`
	get := func(url string, auth bool) string {
		req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-fake-words", "3000")
		req.Header.Set("x-fake-split", "7") // chunks that end inside events and lines
		if auth {
			req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
			req.Header.Set("x-user-id", "roomy")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", url, resp.StatusCode, err)
		}
		return string(b)
	}
	direct, through := get(s.UpstreamURL, false), get(s.Envoy.URL(), true)
	if direct != through || !strings.Contains(through, `"usage"`) {
		t.Fatalf("the stream changed on its way (%d bytes from the provider, %d to the client)", len(direct), len(through))
	}
}

// The Responses API's stream ends in its error event, which the official
// OpenAI SDK raises; the bill is what passed.
func TestResponsesStreamCutAtTheBudget(t *testing.T) {
	s, _ := cutStack(t)
	client := openai.NewClient(option.WithBaseURL(s.Envoy.URL()+"/v1"), option.WithAPIKey(testenv.ClientKey),
		option.WithHeader("x-user-id", "sparing"), option.WithHeader("x-fake-words", "100000"), option.WithHeader("x-fake-delay-ms", "1"))
	stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
		Model: "gpt-4o", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Write a very long essay.")}})
	var text strings.Builder
	for stream.Next() {
		if ev := stream.Current(); ev.Type == "response.output_text.delta" {
			text.WriteString(ev.Delta)
		}
	}
	err := stream.Err()
	stream.Close()
	if err == nil || !strings.Contains(err.Error(), "budget exceeded while streaming") {
		t.Fatalf("the SDK's error: %v (after %d bytes)", err, text.Len())
	}
	billedAsPassed(t, s, "sparing", text.String(), 3)
}
