package provider

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// Chat is OpenAI's POST /v1/chat/completions, which OpenRouter speaks too.
type Chat struct {
	// OpenRouterCost trusts usage.cost, the dollar amount OpenRouter bills.
	OpenRouterCost bool
}

func (Chat) ParseRequest(body []byte, tk *billing.Tokenizer) (*Request, error) {
	root, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	req, err := commonFields(root, "max_completion_tokens", "max_tokens")
	if err != nil {
		return nil, err
	}
	msgs := root.Get("messages")
	if !msgs.IsArray() {
		return nil, badRequest("messages", "'messages' must be an array of messages")
	}
	var list []billing.Message
	for i, m := range msgs.Array() {
		if !m.IsObject() {
			return nil, badRequest("messages", "messages[%d] must be an object", i)
		}
		list = append(list, billing.Message{
			Role:    m.Get("role").String(),
			Name:    m.Get("name").String(),
			Content: contentText(m.Get("content")) + toolCallsText(m.Get("tool_calls")),
		})
	}
	req.PromptTokens = int64(tk.CountChat(req.Model, list))
	if tools := root.Get("tools"); tools.IsArray() {
		req.PromptTokens += int64(tk.Count(req.Model, tools.Raw))
	}
	if req.Stream && !root.Get("stream_options.include_usage").Bool() {
		// Ask for the final usage chunk; the meter strips it again so the
		// client sees the stream it asked for.
		out, err := sjson.SetBytes(body, "stream_options.include_usage", true)
		if err != nil {
			return nil, badRequest("stream_options", "'stream_options' must be an object")
		}
		req.Body, req.UsageInjected = out, true
	}
	return req, nil
}

func (c Chat) NewMeter(req *Request, tk *billing.Tokenizer) Meter {
	return &chatMeter{req: req, openRouter: c.OpenRouterCost, out: tally{tk: tk, model: req.Model}}
}

type chatMeter struct {
	req        *Request
	openRouter bool
	out        tally
	usage      *billing.Usage
}

var done = []byte("[DONE]")

func (m *chatMeter) Event(ev sse.Event) bool {
	if bytes.Equal(ev.Data, done) || !gjson.ValidBytes(ev.Data) {
		return false
	}
	chunk := gjson.ParseBytes(ev.Data)
	m.addChoices(chunk, "delta")
	u := chunk.Get("usage")
	if !u.IsObject() {
		return false
	}
	m.setUsage(u)
	choices := chunk.Get("choices")
	return m.req.UsageInjected && (!choices.Exists() || (choices.IsArray() && len(choices.Array()) == 0))
}

func (m *chatMeter) Body(body []byte) {
	root := gjson.ParseBytes(body)
	m.addChoices(root, "message")
	if u := root.Get("usage"); u.IsObject() {
		m.setUsage(u)
	}
}

// addChoices keeps the generated text of each choice's delta (streamed)
// or message (JSON), for counting when no usage comes.
func (m *chatMeter) addChoices(root gjson.Result, field string) {
	for _, ch := range root.Get("choices").Array() {
		msg := ch.Get(field)
		m.out.add(msg.Get("content").String())
		m.out.add(msg.Get("reasoning").String())
		m.out.add(msg.Get("reasoning_content").String())
		m.out.add(toolCallsText(msg.Get("tool_calls")))
	}
}

// setUsage reads OpenAI's usage object. prompt_tokens includes cached and
// cache-write tokens and completion_tokens includes reasoning tokens, so
// they are split out to be priced once each.
func (m *chatMeter) setUsage(u gjson.Result) {
	cached := u.Get("prompt_tokens_details.cached_tokens").Int()
	written := u.Get("prompt_tokens_details.cache_write_tokens").Int()
	reasoning := u.Get("completion_tokens_details.reasoning_tokens").Int()
	got := billing.Usage{
		Input:      max(u.Get("prompt_tokens").Int()-cached-written, 0),
		CacheRead:  cached,
		CacheWrite: written,
		Output:     max(u.Get("completion_tokens").Int()-reasoning, 0),
		Reasoning:  reasoning,
	}
	if cost := u.Get("cost"); m.openRouter && cost.Type == gjson.Number {
		n := billing.FromUSDFloat(cost.Float())
		got.ReportedCost = &n
	}
	m.usage = &got
}

func (m *chatMeter) Usage() billing.Usage {
	if m.usage != nil {
		return *m.usage
	}
	return billing.Usage{Input: m.req.PromptTokens, Output: m.out.total()}
}

// contentText is a message's text: a string, or the text parts of an array.
func contentText(c gjson.Result) string {
	if c.Type == gjson.String {
		return c.String()
	}
	var b []byte
	for _, part := range c.Array() {
		if t := part.Get("text"); t.Type == gjson.String {
			b = append(b, t.String()...)
		}
	}
	return string(b)
}

// toolCallsText is the text of tool calls, names and arguments, as the
// model generated it.
func toolCallsText(calls gjson.Result) string {
	if !calls.IsArray() {
		return ""
	}
	var b []byte
	for _, c := range calls.Array() {
		b = append(b, c.Get("function.name").String()...)
		b = append(b, c.Get("function.arguments").String()...)
	}
	return string(b)
}

// parseObject checks that body is one JSON object.
func parseObject(body []byte) (gjson.Result, error) {
	if !utf8.Valid(body) {
		return gjson.Result{}, badRequest("", "the request body is not valid UTF-8; send UTF-8 encoded JSON")
	}
	if !gjson.ValidBytes(body) {
		return gjson.Result{}, badRequest("", "the request body is not valid JSON; send a JSON object")
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return gjson.Result{}, badRequest("", "the request body must be a JSON object")
	}
	return root, nil
}

// commonFields reads model, stream, user and the first output limit found.
func commonFields(root gjson.Result, limits ...string) (*Request, error) {
	model := root.Get("model")
	if !model.Exists() {
		return nil, badRequest("model", "you must provide a model parameter")
	}
	if model.Type != gjson.String || model.String() == "" {
		return nil, badRequest("model", "'model' must be a non-empty string")
	}
	req := &Request{Model: model.String()}
	if s := root.Get("stream"); s.Exists() {
		if s.Type != gjson.True && s.Type != gjson.False {
			return nil, badRequest("stream", "'stream' must be a boolean")
		}
		req.Stream = s.Bool()
	}
	if u := root.Get("user"); u.Type == gjson.String {
		req.User = u.String()
	}
	for _, name := range limits {
		v := root.Get(name)
		if !v.Exists() || v.Type == gjson.Null {
			continue
		}
		n, err := strconv.ParseInt(v.Raw, 10, 64)
		if v.Type != gjson.Number || err != nil || n < 0 {
			return nil, badRequest(name, "'%s' must be a non-negative integer", name)
		}
		req.MaxOutput = n
		break
	}
	return req, nil
}
