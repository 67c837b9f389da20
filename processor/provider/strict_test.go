package provider

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bodies that two parsers could read in two ways are refused, naming the
// member; each attack from the review is here.
func TestStrictReadingRefusesAmbiguousBodies(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		name, path, body, param, says string
	}{
		{"repeated model", "/v1/chat/completions",
			`{"model":"openai/gpt-4o-mini",` + msgs + `,"model":"openai/o1-pro"}`, "model", "more than once"},
		{"repeated model, escaped", "/v1/chat/completions",
			`{"model":"openai/gpt-4o-mini",` + msgs + `,"mod\u0065l":"openai/o1-pro"}`, "model", "more than once"},
		{"repeated include_usage", "/v1/chat/completions",
			`{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false},` + msgs + `}`,
			"stream_options.include_usage", "more than once"},
		{"repeated stream_options", "/v1/chat/completions",
			`{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs + `,"stream_options":{"include_usage":false}}`,
			"stream_options", "more than once"},
		{"repeated stream", "/v1/chat/completions",
			`{"model":"m","stream":false,` + msgs + `,"stream":true}`, "stream", "more than once"},
		{"repeated messages", "/v1/chat/completions",
			`{"model":"m",` + msgs + `,"messages":[{"role":"user","content":"a much longer prompt"}]}`, "messages", "more than once"},
		{"repeated role in a message", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b","content":"c"}]}`,
			"messages[1].content", "more than once"},
		{"repeated text in a content part", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`,
			"messages[0].content[0].text", "more than once"},
		{"repeated metadata.user_id", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":5,"metadata":{"user_id":"a","user_id":"b"},` + msgs + `}`,
			"metadata.user_id", "more than once"},
		{"repeated max_tokens, Anthropic", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":5,` + msgs + `,"max_tokens":64000}`, "max_tokens", "more than once"},
		{"repeated input, Responses", "/v1/responses",
			`{"model":"gpt-5","input":"short","input":"long"}`, "input", "more than once"},
		{"case variant of model", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","Model":"o1-pro",` + msgs + `}`, "Model", "letter case"},
		{"case variant by Unicode folding (long s)", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","ſtream":true,` + msgs + `}`, "ſtream", "letter case"},
		{"case variant of include_usage", "/v1/chat/completions",
			`{"model":"m","stream":true,"stream_options":{"INCLUDE_USAGE":false},` + msgs + `}`,
			"stream_options.INCLUDE_USAGE", "letter case"},
		{"byte-order mark", "/v1/chat/completions", "\xef\xbb\xbf{\"model\":\"m\"," + msgs + "}", "", "byte-order mark"},
		{"unpaired surrogate in a name", "/v1/chat/completions",
			`{"model":"m","\ud800x":1,` + msgs + `}`, "", "surrogate"},
		{"unpaired surrogate in the model", "/v1/chat/completions",
			`{"model":"gpt-4o\udc00",` + msgs + `}`, "model", "surrogate"},
		{"integer beyond int64", "/v1/chat/completions",
			`{"model":"m","max_tokens":9223372036854775808,` + msgs + `}`, "max_tokens", "64-bit"},
		{"integer beyond int64, deep", "/v1/chat/completions",
			`{"model":"m",` + msgs + `,"tools":[{"type":"function","function":{"name":"f","parameters":{"maximum":99999999999999999999}}}]}`,
			"tools[0].function.parameters.maximum", "64-bit"},
		{"number beyond float64", "/v1/chat/completions",
			`{"model":"m","temperature":1e400,` + msgs + `}`, "temperature", "double"},
		{"two JSON values", "/v1/chat/completions", `{"model":"m",` + msgs + `} {"model":"o1-pro"}`, "", "more than one JSON value"},
		{"n above the provider's bound", "/v1/chat/completions", `{"model":"m","n":129,` + msgs + `}`, "n", "from 1 to 128"},
		{"n of zero", "/v1/chat/completions", `{"model":"m","n":0,` + msgs + `}`, "n", "from 1 to 128"},
		{"include_usage as a string", "/v1/chat/completions",
			`{"model":"m","stream":true,"stream_options":{"include_usage":"false"},` + msgs + `}`, "stream_options.include_usage", "boolean"},
		{"user as a number", "/v1/chat/completions", `{"model":"m","user":7,` + msgs + `}`, "user", "string"},
	}
	tk, _ := fixtures(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			route, _ := OpenAI.Route("POST", c.path)
			_, err := route.Endpoint.ParseRequest([]byte(c.body), tk)
			var bad *BadRequest
			if !errors.As(err, &bad) {
				t.Fatalf("accepted (err %v)", err)
			}
			if bad.Param != c.param || !strings.Contains(bad.Msg, c.says) {
				t.Fatalf("param %q, message %q; want param %q and a message saying %q", bad.Param, bad.Msg, c.param, c.says)
			}
		})
	}
}

// What clients really send still parses, and reads the values it holds.
func TestStrictReadingAcceptsClientBodies(t *testing.T) {
	tk, _ := fixtures(t)
	agent := readFile(t, filepath.Join("testdata", "agent_request.json"))
	cases := []struct {
		name, path, body string
		want             Request
	}{
		{"agent-shaped, usage already asked for", "/v1/chat/completions", agent,
			Request{Model: "openai/gpt-4o-mini", Stream: true, N: 1, MaxOutput: 4096}},
		{"escaped names are the names they spell", "/v1/chat/completions",
			`{"mod\u0065l":"gpt-4o-mini","\u006e":3,"messages":[{"role":"user","content":"hi"}]}`,
			Request{Model: "gpt-4o-mini", N: 3}},
		{"both output limits: the larger is reserved", "/v1/chat/completions",
			`{"model":"m","max_tokens":10,"max_completion_tokens":700,"messages":[]}`,
			Request{Model: "m", N: 1, MaxOutput: 700}},
		{"paired surrogates and emoji", "/v1/chat/completions",
			`{"model":"m","user":"\ud83d\ude00 me","messages":[{"role":"user","content":"😀"}]}`,
			Request{Model: "m", N: 1, User: "😀 me"}},
		{"same name in sibling objects", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`,
			Request{Model: "m", N: 1}},
		{"Anthropic metadata", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":5,"metadata":{"user_id":"ann"},"messages":[]}`,
			Request{Model: "claude-sonnet-4-5", N: 1, MaxOutput: 5, User: "ann"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			route, _ := OpenAI.Route("POST", c.path)
			got, err := route.Endpoint.ParseRequest([]byte(c.body), tk)
			if err != nil {
				t.Fatal(err)
			}
			if got.Model != c.want.Model || got.Stream != c.want.Stream || got.N != c.want.N ||
				got.MaxOutput != c.want.MaxOutput || got.User != c.want.User {
				t.Fatalf("read %+v, want %+v", *got, c.want)
			}
			if got.PromptTokens <= 0 && strings.Contains(c.body, "content") {
				t.Fatalf("prompt not counted")
			}
		})
	}
	route, _ := OpenAI.Route("POST", "/v1/chat/completions")
	got, _ := route.Endpoint.ParseRequest([]byte(agent), tk)
	if got.Body != nil || got.UsageInjected {
		t.Fatal("a client that asked for usage must get the body it sent, untouched")
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// decodedRequest is what a provider written with encoding/json decides on.
type decodedRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           int64  `json:"max_tokens"`
	MaxCompletionTokens int64  `json:"max_completion_tokens"`
	MaxOutputTokens     int64  `json:"max_output_tokens"`
	N                   *int64 `json:"n"`
	User                string `json:"user"`
	Metadata            *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
}

// FuzzParseRequestDifferential: for any body the sidecar accepts, the
// values it decides on equal what encoding/json (last member wins, names
// matched without regard to case) decodes from the same bytes, and the
// body it forwards asks for usage whenever it streams.
func FuzzParseRequestDifferential(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"n":2,"user":"u"}`,
		`{"model":"a","model":"b","messages":[]}`,
		`{"model":"a","Model":"b","messages":[]}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[],"max_tokens":5}`,
		`{"model":"m","max_output_tokens":9,"input":"x","stream":true}`,
		`{"model":"claude","max_tokens":7,"metadata":{"user_id":"x"},"messages":[]}`,
	} {
		for _, p := range []string{"/v1/chat/completions", "/v1/responses", "/v1/messages"} {
			f.Add(s, p)
		}
	}
	tk, _ := fixtures(f)
	f.Fuzz(func(t *testing.T, body, path string) {
		route, ok := OpenAI.Route("POST", path)
		if !ok || route.Endpoint == nil {
			return
		}
		req, err := route.Endpoint.ParseRequest([]byte(body), tk)
		if err != nil {
			return
		}
		var d decodedRequest
		if json.Unmarshal([]byte(body), &d) != nil {
			return // a provider would refuse it: nothing runs, nothing to bill
		}
		if req.Model != d.Model || req.Stream != d.Stream {
			t.Fatalf("read model %q stream %v; encoding/json reads %q %v", req.Model, req.Stream, d.Model, d.Stream)
		}
		var limit int64
		switch path {
		case "/v1/chat/completions":
			limit = max(d.MaxTokens, d.MaxCompletionTokens)
			if n := int64(1); d.N == nil && req.N != n || d.N != nil && *d.N != req.N {
				t.Fatalf("read n %d; encoding/json reads %v", req.N, d.N)
			}
			clientUsage := d.StreamOptions != nil && d.StreamOptions.IncludeUsage
			if req.UsageInjected != (d.Stream && !clientUsage) {
				t.Fatalf("usage injected %v for stream %v, client include_usage %v", req.UsageInjected, d.Stream, clientUsage)
			}
			if req.UsageInjected {
				var fwd decodedRequest
				if err := json.Unmarshal(req.Body, &fwd); err != nil || fwd.StreamOptions == nil || !fwd.StreamOptions.IncludeUsage ||
					fwd.Model != d.Model || !fwd.Stream {
					t.Fatalf("forwarded body %q does not ask for usage as read", req.Body)
				}
			}
		case "/v1/responses":
			limit = d.MaxOutputTokens
		case "/v1/messages":
			limit = d.MaxTokens
			if d.Metadata != nil && d.Metadata.UserID != "" {
				d.User = d.Metadata.UserID
			}
		}
		if req.MaxOutput != limit {
			t.Fatalf("read output limit %d; encoding/json reads %d", req.MaxOutput, limit)
		}
		if req.User != d.User {
			t.Fatalf("read user %q; encoding/json reads %q", req.User, d.User)
		}
	})
}

// The strict reading on the request path, on a 36 KB agent-shaped body
// (the whole parse, prompt count included, is BenchmarkParseAgentRequest).
func BenchmarkStrictReading(b *testing.B) {
	body := []byte(readFile(b, filepath.Join("testdata", "agent_request.json")))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := checkStrict(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAgentRequest(b *testing.B) {
	body := []byte(readFile(b, filepath.Join("testdata", "agent_request.json")))
	tk, _ := fixtures(b)
	route, _ := OpenAI.Route("POST", "/v1/chat/completions")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := route.Endpoint.ParseRequest(body, tk); err != nil {
			b.Fatal(err)
		}
	}
}
