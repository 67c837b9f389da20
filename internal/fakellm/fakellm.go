// Package fakellm is a stand-in LLM provider for tests and `make demo`. It
// answers OpenAI-style chat completions, streamed or not, and is steered by
// request headers:
//
//	x-fake-words: 12             words in the answer (one SSE chunk each)
//	x-fake-delay-ms: 0           pause between chunks
//	x-fake-split: 0              write the SSE bytes in pieces of this size
//	                             (0: one write per event), so events and lines
//	                             are cut across network writes
//	x-fake-usage: on|off         report usage (when asked for, or always in JSON)
//	x-fake-prompt-tokens: 11     prompt_tokens to report
//	x-fake-cached-tokens: 0      prompt_tokens_details.cached_tokens
//	x-fake-reasoning-tokens: 0   completion_tokens_details.reasoning_tokens
//	x-fake-status: 200           answer with this status and an error body
//	x-fake-gate: NAME            after x-fake-gate-after words (default 1), wait
//	                             until the test calls Release(NAME)
//
// completion_tokens is reported as the number of words. Every request it
// receives is recorded; GET /_fake/requests returns them.
package fakellm

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Received is a request as the upstream saw it.
type Received struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
}

// Server is the fake provider.
type Server struct {
	mu       sync.Mutex
	received []Received
	gates    map[string]chan struct{}
}

func (s *Server) gate(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gates == nil {
		s.gates = map[string]chan struct{}{}
	}
	g, ok := s.gates[name]
	if !ok {
		g = make(chan struct{})
		s.gates[name] = g
	}
	return g
}

// Release lets streams waiting at gate name go on. Tests use gates to know
// for certain that a stream is still open upstream while they look at it.
func (s *Server) Release(name string) { close(s.gate(name)) }

// Words are the answer's words, cycled.
var Words = strings.Fields("Hello! I am a fake model streaming a deterministic answer so that tests know every token in advance.")

// Answer is the text of an answer of n words.
func Answer(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = Words[i%len(Words)]
	}
	return strings.Join(parts, " ")
}

// Requests returns what was received so far.
func (s *Server) Requests() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/_fake/requests" {
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Requests())
		return
	}
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.received = append(s.received, Received{r.Method, r.URL.Path, r.Header.Clone(), string(body)})
	s.mu.Unlock()

	if st := intHeader(r, "x-fake-status", 200); st != 200 {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(st)
		fmt.Fprintf(w, `{"error":{"message":"fake upstream error %d","type":"upstream_error","code":null,"param":null}}`, st)
		return
	}
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/chat/completions"):
		s.chat(w, r, body)
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v1/models"):
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"fake"}]}`)
	default:
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
	}
}

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	n := intHeader(r, "x-fake-words", 12)
	usageOn := r.Header.Get("x-fake-usage") != "off"
	usage := map[string]any{
		"prompt_tokens":     intHeader(r, "x-fake-prompt-tokens", 11),
		"completion_tokens": n,
		"total_tokens":      intHeader(r, "x-fake-prompt-tokens", 11) + n,
		"prompt_tokens_details": map[string]any{
			"cached_tokens": intHeader(r, "x-fake-cached-tokens", 0)},
		"completion_tokens_details": map[string]any{
			"reasoning_tokens": intHeader(r, "x-fake-reasoning-tokens", 0)},
	}
	// A fixed creation time keeps answers byte-for-byte reproducible.
	id, created := "chatcmpl-fake", 1700000000
	if !req.Stream {
		resp := map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": Answer(n)}}},
		}
		if usageOn {
			resp["usage"] = usage
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
		return
	}
	w.Header().Set("content-type", "text/event-stream")
	w.Header().Set("cache-control", "no-cache")
	w.WriteHeader(http.StatusOK)
	out := &splitWriter{w: w, size: intHeader(r, "x-fake-split", 0)}
	delay := time.Duration(intHeader(r, "x-fake-delay-ms", 0)) * time.Millisecond
	chunk := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{"id": id, "object": "chat.completion.chunk", "created": created,
			"model": req.Model, "choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
		out.event(b)
	}
	chunk(map[string]any{"role": "assistant", "content": ""}, nil)
	for i := range n {
		if delay > 0 {
			time.Sleep(delay)
		}
		word := Words[i%len(Words)]
		if i > 0 {
			word = " " + word
		}
		chunk(map[string]any{"content": word}, nil)
		if name := r.Header.Get("x-fake-gate"); name != "" && i+1 == intHeader(r, "x-fake-gate-after", 1) {
			select {
			case <-s.gate(name):
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}
		if r.Context().Err() != nil {
			return // the client went away
		}
	}
	chunk(map[string]any{}, "stop")
	if usageOn && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		b, _ := json.Marshal(map[string]any{"id": id, "object": "chat.completion.chunk", "created": created,
			"model": req.Model, "choices": []any{}, "usage": usage})
		out.event(b)
	}
	out.write([]byte("data: [DONE]\n\n"))
}

// splitWriter writes SSE bytes in pieces of a fixed size, flushing each, so
// the reader sees events cut at arbitrary bytes.
type splitWriter struct {
	w    http.ResponseWriter
	size int
}

func (s *splitWriter) event(data []byte) {
	s.write(append(append([]byte("data: "), data...), '\n', '\n'))
}

func (s *splitWriter) write(b []byte) {
	f, _ := s.w.(http.Flusher)
	for len(b) > 0 {
		n := len(b)
		if s.size > 0 && s.size < n {
			n = s.size
		}
		_, _ = s.w.Write(b[:n])
		if f != nil {
			f.Flush()
		}
		b = b[n:]
	}
}

func intHeader(r *http.Request, name string, dflt int) int {
	if v, err := strconv.Atoi(r.Header.Get(name)); err == nil {
		return v
	}
	return dflt
}
