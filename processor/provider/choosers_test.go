package provider

import (
	"fmt"
	"testing"
)

// Every field with which a request lets the provider run another model is
// read, strictly, in each format that takes a body with a model.
func TestModelChoices(t *testing.T) {
	tk, _ := fixtures(t)
	base := `{"model":%q,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]%s}`
	for _, c := range []struct {
		model, extra string
		alts         string // Field=Model, ...
		open         string
		bad          string // the param of a 400
	}{
		{"gpt-4o-mini", "", "[]", "", ""},
		{"gpt-4o-mini", `,"models":["a/b","c/d"]`, "[{models[0] a/b} {models[1] c/d}]", "", ""},
		{"gpt-4o-mini", `,"route":"fallback","models":["a/b"]`, "[{models[0] a/b}]", "", ""},
		{"gpt-4o-mini", `,"fallbacks":[{"model":"a/b"},"c"]`, "[{fallbacks[0].model a/b} {fallbacks[1] c}]", "", ""},
		{"openrouter/auto", "", "[]", "model", ""},
		{"@preset/mine", "", "[]", "model", ""},
		{"openai/gpt-4o@preset/mine", "", "[]", "model", ""},
		{"gpt-4o-mini", `,"preset":"mine"`, "[]", "preset", ""},
		{"gpt-4o-mini", `,"models":["openrouter/auto"]`, "[{models[0] openrouter/auto}]", "models[0]", ""},
		{"gpt-4o-mini", `,"models":"a/b"`, "", "", "models"},
		{"gpt-4o-mini", `,"models":["a/b",7]`, "", "", "models[1]"},
		{"gpt-4o-mini", `,"models":[""]`, "", "", "models[0]"},
		{"gpt-4o-mini", `,"fallbacks":[{"Model":"a/b"}]`, "", "", "fallbacks[0].model"},
		{"gpt-4o-mini", `,"fallbacks":{"model":"a/b"}`, "", "", "fallbacks"},
		{"gpt-4o-mini", `,"Models":["a/b"]`, "", "", "Models"},
		{"gpt-4o-mini", `,"models":["a"],"models":["b"]`, "", "", "models"},
	} {
		body := fmt.Sprintf(base, c.model, c.extra)
		for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
			route, _ := OpenRouter.Route("POST", path)
			req, err := route.Endpoint.ParseRequest([]byte(body), tk)
			if c.bad != "" {
				bad, ok := err.(*BadRequest)
				if !ok || bad.Param != c.bad {
					t.Errorf("%s %s: err %v, want a 400 naming %s", path, body, err, c.bad)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s %s: %v", path, body, err)
				continue
			}
			if got := fmt.Sprint(req.Alternatives); got != c.alts && !(c.alts == "[]" && req.Alternatives == nil) {
				t.Errorf("%s %s: alternatives %s, want %s", path, body, got, c.alts)
			}
			if req.OpenChoice != c.open {
				t.Errorf("%s %s: open choice %q, want %q", path, body, req.OpenChoice, c.open)
			}
		}
	}
}
