package fakellm

import (
	"encoding/json"
	"net/http"
)

type modelRequest struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
}

// responses answers OpenAI's Responses API: output_text deltas, then the
// usage in response.completed.
func (s *Server) responses(w http.ResponseWriter, r *http.Request, body []byte) {
	var req modelRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	st := steering(r)
	final := func(status string) map[string]any {
		resp := map[string]any{"id": "resp_fake", "object": "response", "created_at": created, "status": status,
			"model": st.answerModel(req.Model), "output": []any{map[string]any{"id": "msg_fake", "type": "message", "role": "assistant",
				"status": "completed", "content": []any{map[string]any{"type": "output_text", "text": Answer(st.words), "annotations": []any{}}}}}}
		if st.usage {
			resp["usage"] = map[string]any{
				"input_tokens": st.prompt, "input_tokens_details": map[string]any{"cached_tokens": st.cached},
				"output_tokens": st.words + st.reasoning, "output_tokens_details": map[string]any{"reasoning_tokens": st.reasoning},
				"total_tokens": st.prompt + st.words + st.reasoning,
			}
		}
		return resp
	}
	if !req.Stream {
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(final("completed"))
		return
	}
	out := sseHeaders(w, r)
	seq := 0
	send := func(typ string, fields map[string]any) {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		out.named(typ, fields)
	}
	send("response.created", map[string]any{"response": map[string]any{"id": "resp_fake", "object": "response",
		"created_at": created, "status": "in_progress", "model": st.answerModel(req.Model), "output": []any{}}})
	if !s.stream(r, st, func(word string) {
		send("response.output_text.delta", map[string]any{"item_id": "msg_fake", "output_index": 0,
			"content_index": 0, "delta": word, "logprobs": []any{}})
	}) {
		return
	}
	send("response.completed", map[string]any{"response": final("completed")})
}
