package envoy_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// The official Anthropic SDK, streaming, through Envoy to an Anthropic
// upstream: the key swap uses x-api-key, and the bill takes cache reads,
// cache writes and the cumulative output count.
func TestAnthropicStreamingBilledExactly(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"UPSTREAM_PROVIDER=anthropic"}})
	client := anthropic.NewClient(anthropicopt.WithBaseURL(s.Envoy.URL()), anthropicopt.WithAPIKey(testenv.ClientKey),
		anthropicopt.WithHeader("x-user-id", "claude-user"), anthropicopt.WithHeader("x-fake-split", "11"),
		anthropicopt.WithHeader("x-fake-prompt-tokens", "12"), anthropicopt.WithHeader("x-fake-cached-tokens", "5000"),
		anthropicopt.WithHeader("x-fake-cache-write-tokens", "2000"), anthropicopt.WithHeader("x-fake-words", "15"))
	stream := client.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello!"))},
	})
	var text strings.Builder
	for stream.Next() {
		if ev := stream.Current(); ev.Type == "content_block_delta" {
			text.WriteString(ev.Delta.Text)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != fakellm.Answer(15) {
		t.Fatalf("answer = %q", text.String())
	}
	up := s.Upstream.Requests()[0]
	if up.Headers.Get("X-Api-Key") != testenv.UpstreamKey || up.Headers.Get("Authorization") != "" || up.Headers.Get("Anthropic-Version") == "" {
		t.Fatalf("upstream credentials: x-api-key=%q authorization=%q anthropic-version=%q",
			up.Headers.Get("X-Api-Key"), up.Headers.Get("Authorization"), up.Headers.Get("Anthropic-Version"))
	}
	// claude-sonnet-4-5: 12*3000 + 5000*300 (cache read) + 2000*3750 (cache write) + 15*15000.
	s.WaitSpent(t, today("claude-user"), 12*3000+5000*300+2000*3750+15*15000)
}

// The Responses API, streaming, with the openai-go SDK: usage arrives in
// response.completed and nothing is injected into the request.
func TestResponsesStreamingBilledExactly(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	client := openai.NewClient(option.WithBaseURL(s.Envoy.URL()+"/v1"), option.WithAPIKey(testenv.ClientKey),
		option.WithHeader("x-user-id", "responder"), option.WithHeader("x-fake-split", "13"),
		option.WithHeader("x-fake-prompt-tokens", "500"), option.WithHeader("x-fake-cached-tokens", "128"),
		option.WithHeader("x-fake-reasoning-tokens", "640"))
	stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
		Model: "gpt-5",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Think deeply.")},
	})
	var text strings.Builder
	completed := false
	for stream.Next() {
		switch ev := stream.Current(); ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			completed = true
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != fakellm.Answer(12) || !completed {
		t.Fatalf("answer = %q, completed = %v", text.String(), completed)
	}
	if body := s.Upstream.Requests()[0].Body; strings.Contains(body, "include_usage") {
		t.Fatalf("Responses request was rewritten: %s", body)
	}
	// gpt-5: 372 uncached*1250 + 128 cached*125 + 12 output*10000 + 640 reasoning*10000.
	s.WaitSpent(t, today("responder"), 372*1250+128*125+12*10000+640*10000)
}

func TestEmbeddingsAndUpstreamErrors(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	resp := post(t, s, "/v1/embeddings", testenv.ClientKey, `{"model":"text-embedding-3-small","input":"hello"}`,
		map[string]string{"x-user-id": "embedder", "x-fake-prompt-tokens": "8"})
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("embeddings: %d", resp.StatusCode)
	}
	s.WaitSpent(t, today("embedder"), 8*20)

	// A provider error is not billed, streamed or not.
	for _, body := range []string{seedBody, strings.Replace(seedBody, `"stream": true`, `"stream": false`, 1)} {
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, body,
			map[string]string{"x-user-id": "unlucky", "x-fake-status": "500"})
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 500 {
			t.Fatalf("status %d, want the upstream's 500", resp.StatusCode)
		}
	}
	// A request billed after the failed ones proves settlement ran; the
	// failed ones added nothing.
	resp = post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "unlucky"})
	io.Copy(io.Discard, resp.Body)
	s.WaitSpent(t, today("unlucky"), 11*miniIn+12*miniOut)
}
