package provider

import (
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// runMeter meters a response (SSE when it starts with "event:" or
// "data:", else a JSON body) to a request on kind's path.
func runMeter(t *testing.T, kind Kind, path, request, response string) Meter {
	t.Helper()
	tk, _ := fixtures(t)
	route, _ := kind.Route("POST", path)
	req, err := route.Endpoint.ParseRequest([]byte(request), tk)
	if err != nil {
		t.Fatal(err)
	}
	m := route.Endpoint.NewMeter(req, tk)
	if strings.HasPrefix(response, "data:") || strings.HasPrefix(response, "event:") {
		var p sse.Parser
		emit := func(ev sse.Event) { m.Event(ev) }
		p.Feed([]byte(response), emit)
		p.Flush(emit)
	} else {
		m.Body([]byte(response))
	}
	return m
}

const chatReq = `{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello!"}]}`

func chatStream(model, usage string) string {
	return `data: {"model":"` + model + `","choices":[{"index":0,"delta":{"content":"Hi there"}}]}` + "\n\n" +
		`data: {"model":"` + model + `","choices":[],"usage":` + usage + "}\n\n" + "data: [DONE]\n\n"
}

// Hostile or broken usage numbers never reach the bill: the report is set
// aside for the local count (said through Distrusted), never wrapped
// negative, never a credit.
func TestHostileUsageNumbersAreSetAside(t *testing.T) {
	tk, prices := fixtures(t)
	local := billing.Usage{Input: 3 + 3 + int64(tk.Count("gpt-4o-mini", "user")+tk.Count("gpt-4o-mini", "Hello!")),
		Output: int64(tk.Count("gpt-4o-mini", "Hi there"))}
	cases := []struct {
		name, usage string
	}{
		{"completion_tokens that overflow the price arithmetic", `{"prompt_tokens":1000,"completion_tokens":1.55e16}`},
		{"completion_tokens beyond the bound", `{"prompt_tokens":1000,"completion_tokens":4294967297}`},
		{"negative prompt_tokens", `{"prompt_tokens":-1000000,"completion_tokens":500}`},
		{"fractional count", `{"prompt_tokens":10.5,"completion_tokens":500}`},
		{"count as a string", `{"prompt_tokens":"1000","completion_tokens":500}`},
		{"negative cached_tokens", `{"prompt_tokens":1000,"completion_tokens":500,"prompt_tokens_details":{"cached_tokens":-5000}}`},
		{"huge reasoning_tokens", `{"prompt_tokens":1000,"completion_tokens":500,"completion_tokens_details":{"reasoning_tokens":9.2e18}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := runMeter(t, OpenAI, "/v1/chat/completions", chatReq, chatStream("gpt-4o-mini", c.usage))
			if m.Distrusted() == "" {
				t.Fatal("hostile usage not reported as set aside")
			}
			if got := m.Usage(); got != local {
				t.Fatalf("usage %+v, want the local count %+v", got, local)
			}
			if cost := prices.For("gpt-4o-mini").Cost(m.Usage()); cost <= 0 || cost > billing.NanosPerUSD {
				t.Fatalf("cost %d", cost)
			}
		})
	}
}

func TestOpenRouterCostIsBounded(t *testing.T) {
	const usage = `{"prompt_tokens":1000,"completion_tokens":500,"cost":%s}`
	cases := []struct {
		name, model, cost string
		want              *billing.Nanos // nil: the price table decides
		distrusted        bool
	}{
		{"ordinary", "openai/gpt-4o-mini", "0.00045", ptr(450_000), false},
		{"1e10 dollars", "openai/gpt-4o-mini", "1e10", nil, true},
		{"negative", "openai/gpt-4o-mini", "-0.5", nil, true},
		{"zero for a paid model", "openai/gpt-4o-mini", "0", nil, true},
		{"zero for a free variant", "meta-llama/llama-3.3-70b-instruct:free", "0", ptr(0), false},
		{"a string", "openai/gpt-4o-mini", `"0.00045"`, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := strings.Replace(chatReq, "openai/gpt-4o-mini", c.model, 1)
			m := runMeter(t, OpenRouter, "/v1/chat/completions", req,
				chatStream(c.model, strings.Replace(usage, "%s", c.cost, 1)))
			u := m.Usage()
			if (u.ReportedCost == nil) != (c.want == nil) || c.want != nil && *u.ReportedCost != *c.want {
				t.Fatalf("reported cost %v, want %v", u.ReportedCost, c.want)
			}
			if (m.Distrusted() != "") != c.distrusted {
				t.Fatalf("distrusted %q", m.Distrusted())
			}
			if u.Input != 1000 || u.Output != 500 {
				t.Fatalf("token counts %+v lost with the cost", u)
			}
		})
	}
}

func ptr(n billing.Nanos) *billing.Nanos { return &n }

func TestAnthropicNegativeCountsAreSetAside(t *testing.T) {
	const req = `{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hi"}]}`
	stream := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":-100000,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n"
	m := runMeter(t, Anthropic, "/v1/messages", req, stream)
	u := m.Usage()
	if m.Distrusted() == "" || u.Input <= 0 || u.Output != 7 {
		t.Fatalf("usage %+v, distrusted %q: want the local prompt count and the valid output count", u, m.Distrusted())
	}
}

// Each format's meter reports the model the provider says it ran.
func TestMetersReportTheAnsweredModel(t *testing.T) {
	cases := []struct {
		name       string
		kind       Kind
		path, req  string
		resp, want string
	}{
		{"chat stream", OpenAI, "/v1/chat/completions", chatReq,
			chatStream("gpt-4o-mini-2024-07-18", `{"prompt_tokens":1,"completion_tokens":1}`), "gpt-4o-mini-2024-07-18"},
		{"chat json", OpenAI, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`,
			`{"model":"o1-pro","choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, "o1-pro"},
		{"responses stream", OpenAI, "/v1/responses", `{"model":"gpt-5","stream":true,"input":"x"}`,
			"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-5-2025-08-07\"}}\n\n", "gpt-5-2025-08-07"},
		{"responses json", OpenAI, "/v1/responses", `{"model":"gpt-5","input":"x"}`, `{"model":"gpt-5-mini","output":[]}`, "gpt-5-mini"},
		{"anthropic stream", Anthropic, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"messages":[]}`,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-1\",\"usage\":{\"input_tokens\":3}}}\n\n", "claude-opus-4-1"},
		{"anthropic json", Anthropic, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`,
			`{"model":"claude-haiku-4-5","content":[],"usage":{"input_tokens":3,"output_tokens":1}}`, "claude-haiku-4-5"},
		{"no model named", OpenAI, "/v1/chat/completions", chatReq, "data: {\"choices\":[]}\n\n", ""},
		{"absurdly long name ignored", OpenAI, "/v1/chat/completions", chatReq,
			chatStream(strings.Repeat("m", 300), `{"prompt_tokens":1,"completion_tokens":1}`), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := runMeter(t, c.kind, c.path, c.req, c.resp).Model(); got != c.want {
				t.Fatalf("model %q, want %q", got, c.want)
			}
		})
	}
}

// FuzzHostileUsage: whatever numbers an upstream puts in a usage report,
// the meter reports non-negative, bounded counts, and pricing them never
// panics or goes negative.
func FuzzHostileUsage(f *testing.F) {
	for _, s := range []string{"1000", "1.55e16", "-5", "1e10", "0", "NaN", "9223372036854775807", "4294967296", "\"7\"", "null"} {
		f.Add(s, s, s)
	}
	tk, prices := fixtures(f)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		streams := []struct {
			kind      Kind
			path, req string
			resp      string
		}{
			{OpenRouter, "/v1/chat/completions", chatReq, chatStream("openai/gpt-4o-mini",
				`{"prompt_tokens":`+a+`,"completion_tokens":`+b+`,"cost":`+c+`,"prompt_tokens_details":{"cached_tokens":`+c+`}}`)},
			{Anthropic, "/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true,"messages":[]}`,
				"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":" + a +
					",\"cache_read_input_tokens\":" + c + "}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":" + b + "}}\n\n"},
			{OpenAI, "/v1/responses", `{"model":"gpt-5","stream":true,"input":"x"}`,
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":" + a +
					",\"output_tokens\":" + b + ",\"output_tokens_details\":{\"reasoning_tokens\":" + c + "}}}}\n\n"},
		}
		for _, s := range streams {
			route, _ := s.kind.Route("POST", s.path)
			req, err := route.Endpoint.ParseRequest([]byte(s.req), tk)
			if err != nil {
				t.Fatal(err)
			}
			m := route.Endpoint.NewMeter(req, tk)
			var p sse.Parser
			p.Feed([]byte(s.resp), func(ev sse.Event) { m.Event(ev) })
			p.Flush(func(ev sse.Event) { m.Event(ev) })
			u := m.Usage()
			for _, n := range []int64{u.Input, u.CacheRead, u.CacheWrite, u.Output, u.Reasoning} {
				if n < 0 || n > 2*MaxUsageTokens {
					t.Fatalf("%s: usage %+v out of range", s.path, u)
				}
			}
			if u.ReportedCost != nil && (*u.ReportedCost < 0 || *u.ReportedCost > billing.MaxReportedUSD*billing.NanosPerUSD) {
				t.Fatalf("%s: reported cost %d", s.path, *u.ReportedCost)
			}
			// Bounded counts cannot reach saturation: any figure there is a bug.
			if cost := prices.For(req.Model).Cost(u); cost < 0 || cost == billing.MaxNanos {
				t.Fatalf("%s: cost %d for %+v", s.path, cost, u)
			}
		}
	})
}
