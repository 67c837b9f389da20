package provider

import (
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
)

// Besides "model", a request can name other models the provider may run
// instead: OpenRouter's "models" (tried in order when one fails; "route":
// "fallback" says the same), "fallbacks" (OpenRouter's Messages API takes
// objects with a "model", LiteLLM plain ids), and ids that leave the choice
// to the provider altogether ("openrouter/auto", a "@preset/…" or a
// "preset"). Each is checked against the egress policy and reserved for at
// its dearest, or refused: a forbidden or dearer model must not run behind
// a cheap first choice.

// maxAlternatives bounds the models one request may name.
const maxAlternatives = 64

// Alternative is a model a request lets the provider run instead of Model.
type Alternative struct {
	Field string // where it was named, e.g. "models[1]"
	Model string
}

// modelChoices fills req.Alternatives and req.OpenChoice from root.
func modelChoices(root object, req *Request) error {
	if opens(req.Model) {
		req.OpenChoice = "model"
	}
	if v := root.Get("preset"); v.Exists() && v.Type != gjson.Null {
		req.OpenChoice = "preset"
	}
	add := func(field, model string) error {
		if len(req.Alternatives) == maxAlternatives {
			return badRequest(field, "at most %d models may be named in one request", maxAlternatives)
		}
		req.Alternatives = append(req.Alternatives, Alternative{Field: field, Model: model})
		if opens(model) && req.OpenChoice == "" {
			req.OpenChoice = field
		}
		return nil
	}
	if v := root.Get("models"); v.Exists() && v.Type != gjson.Null {
		if !v.IsArray() {
			return badRequest("models", "'models' must be an array of model ids")
		}
		for i, m := range v.Array() {
			field := fmt.Sprintf("models[%d]", i)
			if m.Type != gjson.String || m.String() == "" {
				return badRequest(field, "'%s' must be a non-empty model id", field)
			}
			if err := add(field, m.String()); err != nil {
				return err
			}
		}
	}
	if v := root.Get("fallbacks"); v.Exists() && v.Type != gjson.Null {
		if !v.IsArray() {
			return badRequest("fallbacks", "'fallbacks' must be an array of models")
		}
		for i, f := range v.Array() {
			field := fmt.Sprintf("fallbacks[%d]", i)
			m := f
			if f.IsObject() {
				m = newObject(f).Get("model")
				field += ".model"
			}
			if m.Type != gjson.String || m.String() == "" {
				return badRequest(field, "'%s' must be a model id, or an object whose 'model' is one", field)
			}
			if err := add(field, m.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// opens says the id lets the provider pick the model.
func opens(model string) bool {
	m := strings.ToLower(model)
	return m == "openrouter/auto" || strings.HasPrefix(m, "openrouter/auto:") || strings.Contains(m, "@preset/")
}
