package fakellm

import (
	"encoding/json"
	"net/http"
)

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// A fixed id and creation time keep answers byte-for-byte reproducible.
const (
	chatID  = "chatcmpl-fake"
	created = 1700000000
)

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	st := steering(r)
	model := st.answerModel(req.Model)
	usage := st.usageOr(map[string]any{
		"prompt_tokens":             st.prompt,
		"completion_tokens":         st.words + st.reasoning,
		"total_tokens":              st.prompt + st.words + st.reasoning,
		"prompt_tokens_details":     map[string]any{"cached_tokens": st.cached},
		"completion_tokens_details": map[string]any{"reasoning_tokens": st.reasoning},
	})
	if !req.Stream {
		resp := map[string]any{
			"id": chatID, "object": "chat.completion", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": Answer(st.words)}}},
		}
		if st.usage {
			resp["usage"] = usage
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
		return
	}
	out := sseHeaders(w, r)
	chunk := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{"id": chatID, "object": "chat.completion.chunk", "created": created,
			"model": model, "choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
		out.event(b)
	}
	chunk(map[string]any{"role": "assistant", "content": ""}, nil)
	if !s.stream(r, st, func(word string) { chunk(map[string]any{"content": word}, nil) }) {
		return // the client went away
	}
	chunk(map[string]any{}, "stop")
	if st.usage && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		b, _ := json.Marshal(map[string]any{"id": chatID, "object": "chat.completion.chunk", "created": created,
			"model": model, "choices": []any{}, "usage": usage})
		out.event(b)
	}
	out.write([]byte("data: [DONE]\n\n"))
}
