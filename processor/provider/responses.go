package provider

import (
	"github.com/tidwall/gjson"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// Responses is OpenAI's POST /v1/responses. Usage arrives in the final
// response.completed (or .incomplete / .failed) event as response.usage,
// whether the client asked for anything or not: nothing is injected.
type Responses struct{}

func (Responses) ParseRequest(body []byte, tk *billing.Tokenizer) (*Request, error) {
	root, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	req, err := commonFields(root, "max_output_tokens")
	if err != nil {
		return nil, err
	}
	var msgs []billing.Message
	if ins := root.Get("instructions"); ins.Type == gjson.String {
		msgs = append(msgs, billing.Message{Role: "system", Content: ins.String()})
	}
	switch in := root.Get("input"); {
	case in.Type == gjson.String:
		msgs = append(msgs, billing.Message{Role: "user", Content: in.String()})
	case in.IsArray():
		for _, raw := range in.Array() {
			item := newObject(raw)
			msgs = append(msgs, billing.Message{
				Role: item.Get("role").String(),
				Content: contentText(item.Get("content")) + item.Get("output").String() +
					item.Get("arguments").String() + item.Get("text").String(),
			})
		}
	case in.Exists() && in.Type != gjson.Null:
		return nil, badRequest("input", "'input' must be a string or an array of input items")
	}
	req.PromptTokens = int64(tk.CountChat(req.Model, msgs))
	if tools := root.Get("tools"); tools.IsArray() {
		req.PromptTokens += int64(tk.Count(req.Model, tools.Raw))
	}
	return req, nil
}

func (Responses) NewMeter(req *Request, tk *billing.Tokenizer) Meter {
	return &responsesMeter{req: req, out: newTally(tk, req)}
}

type responsesMeter struct {
	answered
	distrust
	req   *Request
	out   tally
	usage *billing.Usage
}

func (m *responsesMeter) Event(ev sse.Event) bool {
	if !gjson.ValidBytes(ev.Data) {
		return false
	}
	data := gjson.ParseBytes(ev.Data)
	m.take(data.Get("response.model"))
	switch data.Get("type").String() {
	case "response.output_text.delta", "response.reasoning_summary_text.delta",
		"response.reasoning_text.delta", "response.function_call_arguments.delta", "response.refusal.delta":
		m.out.add(data.Get("delta").String())
	case "response.completed", "response.incomplete", "response.failed":
		if u := data.Get("response.usage"); u.IsObject() {
			m.setUsage(u)
		}
	}
	return false
}

func (m *responsesMeter) Body(body []byte) {
	root := gjson.ParseBytes(body)
	m.take(root.Get("model"))
	for _, item := range root.Get("output").Array() {
		for _, c := range item.Get("content").Array() {
			m.out.add(c.Get("text").String())
		}
		m.out.add(item.Get("arguments").String())
		for _, s := range item.Get("summary").Array() {
			m.out.add(s.Get("text").String())
		}
	}
	if u := root.Get("usage"); u.IsObject() {
		m.setUsage(u)
	}
}

// setUsage reads the Responses usage object: input_tokens includes cached
// tokens and output_tokens includes reasoning tokens.
func (m *responsesMeter) setUsage(u gjson.Result) {
	rd := usageReader{u: u}
	input, output := rd.count("input_tokens"), rd.count("output_tokens")
	cached := rd.count("input_tokens_details.cached_tokens")
	reasoning := rd.count("output_tokens_details.reasoning_tokens")
	if rd.bad != "" {
		m.reject(rd.bad)
		return
	}
	m.usage = &billing.Usage{
		Input:     max(input-cached, 0),
		CacheRead: cached,
		Output:    max(output-reasoning, 0),
		Reasoning: reasoning,
	}
}

func (m *responsesMeter) Usage() billing.Usage {
	if m.usage != nil {
		return *m.usage
	}
	return billing.Usage{Input: m.req.PromptTokens, Output: m.out.total()}
}

func (m *responsesMeter) Counted() billing.Usage { return counted(m.req, &m.out) }
func (m *responsesMeter) Bound() billing.Usage   { return bounded(m.req, &m.out) }

// StreamError is the Responses API's error event; it also carries an
// error object, which is what OpenAI's SDKs raise from any stream event.
func (Responses) StreamError(message string) []byte {
	return sseEvent("error", map[string]any{"type": "error", "code": "budget_exceeded", "message": message, "param": nil,
		"error": budgetError(message)})
}
