package provider

import (
	"github.com/tidwall/gjson"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// Messages is Anthropic's POST /v1/messages. A stream reports usage twice:
// message_start carries the input counts (and a first output count), then
// each message_delta carries cumulative counts that replace earlier ones.
// Prompts are counted with o200k_base, an estimate of Claude's tokenizer,
// used only when the stream ends before message_start.
type Messages struct{}

func (Messages) ParseRequest(body []byte, tk *billing.Tokenizer) (*Request, error) {
	root, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	req, err := commonFields(root, "max_tokens")
	if err != nil {
		return nil, err
	}
	if md := root.Get("metadata"); md.Exists() && md.Type != gjson.Null && !md.IsObject() {
		return nil, badRequest("metadata", "'metadata' must be an object")
	}
	if u := root.Get("metadata.user_id"); u.Exists() && u.Type != gjson.Null {
		if u.Type != gjson.String {
			return nil, badRequest("metadata.user_id", "'metadata.user_id' must be a string")
		}
		req.User = u.String()
	}
	var msgs []billing.Message
	if sys := root.Get("system"); sys.Exists() {
		msgs = append(msgs, billing.Message{Role: "system", Content: anthropicText(sys)})
	}
	list := root.Get("messages")
	if !list.IsArray() {
		return nil, badRequest("messages", "'messages' must be an array of messages")
	}
	for i, m := range list.Array() {
		if !m.IsObject() {
			return nil, badRequest("messages", "messages[%d] must be an object", i)
		}
		o := newObject(m)
		msgs = append(msgs, billing.Message{Role: o.Get("role").String(), Content: anthropicText(o.Get("content"))})
	}
	req.PromptTokens = int64(tk.CountChat(req.Model, msgs))
	if tools := root.Get("tools"); tools.IsArray() {
		req.PromptTokens += int64(tk.Count(req.Model, tools.Raw))
	}
	return req, nil
}

// anthropicText is the text of a content value: a string, or blocks of
// text, tool_use input and tool_result content.
func anthropicText(c gjson.Result) string {
	if c.Type == gjson.String {
		return c.String()
	}
	var b []byte
	for _, block := range c.Array() {
		b = append(b, block.Get("text").String()...)
		if in := block.Get("input"); in.Exists() {
			b = append(b, in.Raw...)
		}
		if rc := block.Get("content"); rc.Exists() {
			b = append(b, anthropicText(rc)...)
		}
	}
	return string(b)
}

func (Messages) NewMeter(req *Request, tk *billing.Tokenizer) Meter {
	return &messagesMeter{req: req, out: newTally(tk, req)}
}

type messagesMeter struct {
	answered
	distrust
	req      *Request
	out      tally
	usage    billing.Usage
	hasInput bool // message_start (or a body) reported input counts
	hasFinal bool // a message_delta (or a body) reported the final output
}

func (m *messagesMeter) Event(ev sse.Event) bool {
	if !gjson.ValidBytes(ev.Data) {
		return false
	}
	data := gjson.ParseBytes(ev.Data)
	switch data.Get("type").String() {
	case "message_start":
		m.take(data.Get("message.model"))
		m.apply(data.Get("message.usage"), false)
	case "content_block_start":
		if in := data.Get("content_block.input"); in.IsObject() && len(in.Map()) > 0 {
			m.out.add(in.Raw)
		}
	case "content_block_delta":
		d := data.Get("delta")
		m.out.add(d.Get("text").String())
		m.out.add(d.Get("partial_json").String())
		m.out.add(d.Get("thinking").String())
	case "message_delta":
		m.apply(data.Get("usage"), true)
	}
	return false
}

func (m *messagesMeter) Body(body []byte) {
	root := gjson.ParseBytes(body)
	m.take(root.Get("model"))
	for _, block := range root.Get("content").Array() {
		m.out.add(block.Get("text").String())
		m.out.add(block.Get("thinking").String())
		if in := block.Get("input"); in.Exists() {
			m.out.add(in.Raw)
		}
	}
	m.apply(root.Get("usage"), true)
}

// apply takes the counts present in u; later reports replace earlier ones
// because Anthropic's counts are cumulative, never increments.
func (m *messagesMeter) apply(u gjson.Result, final bool) {
	if !u.IsObject() {
		return
	}
	rd := usageReader{u: u}
	next := m.usage
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"input_tokens", &next.Input}, {"cache_read_input_tokens", &next.CacheRead},
		{"cache_creation_input_tokens", &next.CacheWrite}, {"output_tokens", &next.Output}} {
		if rd.has(f.name) {
			*f.dst = rd.count(f.name)
		}
	}
	if rd.bad != "" {
		m.reject(rd.bad)
		return // earlier reports, or the local count, stand
	}
	m.usage = next
	m.hasInput = m.hasInput || rd.has("input_tokens")
	m.hasFinal = m.hasFinal || (final && rd.has("output_tokens"))
}

func (m *messagesMeter) Usage() billing.Usage {
	u := m.usage
	if !m.hasInput {
		u.Input, u.CacheRead, u.CacheWrite = m.req.PromptTokens, 0, 0
	}
	if !m.hasFinal {
		// Cut off before the final message_delta: count what streamed,
		// never less than message_start's count.
		u.Output = max(u.Output, m.out.total())
	}
	return u
}

func (m *messagesMeter) Counted() billing.Usage { return counted(m.req, &m.out) }
func (m *messagesMeter) Bound() billing.Usage   { return bounded(m.req, &m.out) }

// StreamError is Anthropic's error event, with the type of its 402.
func (Messages) StreamError(message string) []byte {
	return sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "billing_error", "message": message}})
}
