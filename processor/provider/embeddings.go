package provider

import (
	"github.com/tidwall/gjson"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/processor/sse"
)

// Embeddings is POST /v1/embeddings: input only, usage.prompt_tokens.
type Embeddings struct{}

func (Embeddings) ParseRequest(body []byte, tk *billing.Tokenizer) (*Request, error) {
	root, err := parseObject(body)
	if err != nil {
		return nil, err
	}
	req, err := commonFields(root)
	if err != nil {
		return nil, err
	}
	in := root.Get("input")
	switch {
	case in.Type == gjson.String:
		req.PromptTokens = int64(tk.Count(req.Model, in.String()))
	case in.IsArray():
		for _, item := range in.Array() {
			switch {
			case item.Type == gjson.String:
				req.PromptTokens += int64(tk.Count(req.Model, item.String()))
			case item.Type == gjson.Number:
				req.PromptTokens++ // one token id
			case item.IsArray():
				req.PromptTokens += int64(len(item.Array()))
			default:
				return nil, badRequest("input", "'input' items must be strings or arrays of token ids")
			}
		}
	default:
		return nil, badRequest("input", "'input' must be a string, an array of strings, or token ids")
	}
	return req, nil
}

func (Embeddings) NewMeter(req *Request, _ *billing.Tokenizer) Meter {
	return &embeddingsMeter{req: req}
}

type embeddingsMeter struct {
	answered
	distrust
	req      *Request
	reported *int64
}

func (m *embeddingsMeter) Event(sse.Event) bool { return false }

func (m *embeddingsMeter) Body(body []byte) {
	root := gjson.ParseBytes(body)
	m.take(root.Get("model"))
	u := root.Get("usage")
	if !u.IsObject() {
		return
	}
	rd := usageReader{u: u}
	if n := rd.count("prompt_tokens"); rd.bad != "" {
		m.reject(rd.bad)
	} else if rd.has("prompt_tokens") {
		m.reported = &n
	}
}

func (m *embeddingsMeter) Usage() billing.Usage {
	if m.reported != nil {
		return billing.Usage{Input: *m.reported}
	}
	return billing.Usage{Input: m.req.PromptTokens}
}

// Counted is the prompt: embeddings generate no tokens.
func (m *embeddingsMeter) Counted() billing.Usage { return m.Usage() }
func (m *embeddingsMeter) Bound() billing.Usage   { return m.Usage() }

// StreamError is nil: embeddings are never streamed.
func (Embeddings) StreamError(string) []byte { return nil }
