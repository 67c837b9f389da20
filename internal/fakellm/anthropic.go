package fakellm

import (
	"encoding/json"
	"net/http"
)

// messages answers Anthropic's Messages API: message_start with the input
// usage, text deltas, then message_delta with the cumulative output count.
func (s *Server) messages(w http.ResponseWriter, r *http.Request, body []byte) {
	var req modelRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"type":"error","error":{"type":"invalid_request_error","message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	st := steering(r)
	usage := map[string]any{"input_tokens": st.prompt, "cache_read_input_tokens": st.cached,
		"cache_creation_input_tokens": st.cacheWrite, "output_tokens": st.words + st.reasoning}
	if !req.Stream {
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "msg_fake", "type": "message", "role": "assistant",
			"model": st.answerModel(req.Model), "content": []any{map[string]any{"type": "text", "text": Answer(st.words)}},
			"stop_reason": "end_turn", "stop_sequence": nil, "usage": usage})
		return
	}
	out := sseHeaders(w, r)
	start := st.usageOr(map[string]any{"input_tokens": st.prompt, "cache_read_input_tokens": st.cached,
		"cache_creation_input_tokens": st.cacheWrite, "output_tokens": 1})
	out.named("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_fake", "type": "message", "role": "assistant", "model": st.answerModel(req.Model), "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": start}})
	out.named("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
		"content_block": map[string]any{"type": "text", "text": ""}})
	out.named("ping", map[string]any{"type": "ping"})
	if !s.stream(r, st, func(word string) {
		out.named("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]any{"type": "text_delta", "text": word}})
	}) {
		return
	}
	out.named("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	delta := map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil}}
	if st.usage {
		delta["usage"] = map[string]any{"output_tokens": st.words + st.reasoning}
	}
	out.named("message_delta", delta)
	out.named("message_stop", map[string]any{"type": "message_stop"})
}
