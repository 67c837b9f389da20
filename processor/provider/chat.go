package provider

import (
	"bytes"
	"math"
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
	for i, raw := range msgs.Array() {
		if !raw.IsObject() {
			return nil, badRequest("messages", "messages[%d] must be an object", i)
		}
		m := newObject(raw)
		list = append(list, billing.Message{
			Role:    m.Get("role").String(),
			Name:    m.Get("name").String(),
			Content: contentText(m.Get("content")) + toolCallsText(m.Get("tool_calls")),
		})
	}
	if n, err := intField(root, "n", 1, maxN); err != nil {
		return nil, err
	} else if n > 0 {
		req.N = n
	}
	req.PromptTokens = int64(tk.CountChat(req.Model, list))
	if tools := root.Get("tools"); tools.IsArray() {
		req.PromptTokens += int64(tk.Count(req.Model, tools.Raw))
	}
	clientUsage, err := includeUsage(root)
	if err != nil {
		return nil, err
	}
	if req.Stream && !clientUsage {
		// Ask for the final usage chunk; the meter strips it again so the
		// client sees the stream it asked for.
		out, err := withIncludeUsage(body, root)
		if err != nil {
			return nil, badRequest("stream_options", "'stream_options' must be an object")
		}
		req.Body, req.UsageInjected = out, true
	}
	return req, nil
}

// withIncludeUsage is body with stream_options.include_usage set. Without
// stream_options (the common case) the member is appended at the end of
// the object, which is what sjson does, without its scan of the body.
func withIncludeUsage(body []byte, root object) ([]byte, error) {
	if root.Get("stream_options").Exists() {
		return sjson.SetBytes(body, "stream_options.include_usage", true)
	}
	end := bytes.LastIndexByte(body, '}')
	member := `"stream_options":{"include_usage":true}`
	if len(root.members) > 0 {
		member = "," + member
	}
	out := make([]byte, 0, len(body)+len(member))
	out = append(append(append(out, body[:end]...), member...), body[end:]...)
	return out, nil
}

// includeUsage reads stream_options.include_usage, strictly typed: a
// reader that took "true" or 1 for true would skip the injection that a
// provider then does not honour.
func includeUsage(root object) (bool, error) {
	opts := root.Get("stream_options")
	if !opts.Exists() || opts.Type == gjson.Null {
		return false, nil
	}
	if !opts.IsObject() {
		return false, badRequest("stream_options", "'stream_options' must be an object")
	}
	switch opts.Get("include_usage").Type {
	case gjson.True:
		return true, nil
	case gjson.False, gjson.Null: // Null: absent too
		return false, nil
	}
	return false, badRequest("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")
}

func (c Chat) NewMeter(req *Request, tk *billing.Tokenizer) Meter {
	return &chatMeter{req: req, openRouter: c.OpenRouterCost, out: newTally(tk, req)}
}

type chatMeter struct {
	answered
	distrust
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
	m.take(chunk.Get("model"))
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
	m.take(root.Get("model"))
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
	rd := usageReader{u: u}
	prompt, completion := rd.count("prompt_tokens"), rd.count("completion_tokens")
	cached := rd.count("prompt_tokens_details.cached_tokens")
	written := rd.count("prompt_tokens_details.cache_write_tokens")
	reasoning := rd.count("completion_tokens_details.reasoning_tokens")
	if rd.bad != "" {
		m.reject(rd.bad)
		return // the local count stands in
	}
	got := billing.Usage{
		Input:      max(prompt-cached-written, 0),
		CacheRead:  cached,
		CacheWrite: written,
		Output:     max(completion-reasoning, 0),
		Reasoning:  reasoning,
	}
	if m.openRouter {
		cost, why := reportedCost(u.Get("cost"), m.req.Model, m.model)
		got.ReportedCost = cost
		m.reject(why)
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

// parseObject checks that body is one JSON object with a single reading.
func parseObject(body []byte) (object, error) {
	if !utf8.Valid(body) {
		return object{}, badRequest("", "the request body is not valid UTF-8; send UTF-8 encoded JSON")
	}
	if err := checkStrict(body); err != nil {
		return object{}, err
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return object{}, badRequest("", "the request body must be a JSON object")
	}
	return newObject(root), nil
}

// maxN bounds the completions one request may ask for (OpenAI's own limit).
const maxN = 128

// commonFields reads model, stream, user and the output limit: the largest
// of the limits given, since which one a provider honours when a client
// sends several is the provider's choice, and the reservation must cover it.
func commonFields(root object, limits ...string) (*Request, error) {
	model := root.Get("model")
	if !model.Exists() {
		return nil, badRequest("model", "you must provide a model parameter")
	}
	if model.Type != gjson.String || model.String() == "" {
		return nil, badRequest("model", "'model' must be a non-empty string")
	}
	req := &Request{Model: model.String(), N: 1}
	if s := root.Get("stream"); s.Exists() {
		if s.Type != gjson.True && s.Type != gjson.False {
			return nil, badRequest("stream", "'stream' must be a boolean")
		}
		req.Stream = s.Bool()
	}
	if u := root.Get("user"); u.Exists() && u.Type != gjson.Null {
		if u.Type != gjson.String {
			return nil, badRequest("user", "'user' must be a string")
		}
		req.User = u.String()
	}
	for _, name := range limits {
		n, err := intField(root, name, 0, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		req.MaxOutput = max(req.MaxOutput, n)
	}
	if err := modelChoices(root, req); err != nil {
		return nil, err
	}
	return req, nil
}

// intField reads an optional integer member within [lo, hi]; absent or
// null reads as 0.
func intField(root object, name string, lo, hi int64) (int64, error) {
	v := root.Get(name)
	if !v.Exists() || v.Type == gjson.Null {
		return 0, nil
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if v.Type != gjson.Number || err != nil || n < lo || n > hi {
		if hi == math.MaxInt64 {
			return 0, badRequest(name, "'%s' must be an integer of at least %d", name, lo)
		}
		return 0, badRequest(name, "'%s' must be an integer from %d to %d", name, lo, hi)
	}
	return n, nil
}

func (m *chatMeter) Counted() billing.Usage { return counted(m.req, &m.out) }
func (m *chatMeter) Bound() billing.Usage   { return bounded(m.req, &m.out) }

// StreamError is a data event with an error object, the shape OpenAI's SDKs
// raise from a stream; no [DONE] follows.
func (Chat) StreamError(message string) []byte {
	return sseEvent("", map[string]any{"error": budgetError(message)})
}
