// Package fakellm is a stand-in LLM provider for tests and `make demo`. It
// answers OpenAI chat completions and Responses, Anthropic Messages and
// embeddings, streamed or not, in each API's documented format, and is
// steered by request headers:
//
//	x-fake-words: 12             words in the answer (one SSE chunk each)
//	x-fake-delay-ms: 0           pause between chunks
//	x-fake-split: 0              write the SSE bytes in pieces of this size
//	                             (0: one write per event), so events and lines
//	                             are cut across network writes
//	x-fake-usage: on|off         report usage (when asked for, or always in JSON)
//	x-fake-prompt-tokens: 11     prompt_tokens to report
//	x-fake-cached-tokens: 0      prompt_tokens_details.cached_tokens
//	x-fake-reasoning-tokens: 0   reasoning tokens (added to the output count)
//	x-fake-cache-write-tokens: 0 Anthropic cache_creation_input_tokens
//	x-fake-status: 200           answer with this status and an error body
//	x-fake-gate: NAME            after x-fake-gate-after words (default 1), wait
//	                             until the test calls Release(NAME)
//	x-fake-model: NAME           answer naming this model as the one that ran
//	                             (default: the requested one, as providers do)
//	x-fake-usage-json: {...}     send this raw usage object instead (chat's usage,
//	                             Anthropic's message_start usage): hostile numbers
//
// Request bodies are decoded with encoding/json, which keeps the last of
// repeated member names, as providers' parsers do.
//
// The output count is the number of words plus reasoning tokens. Every request it
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
	"sync/atomic"
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
	// NoRecord keeps no copy of what is received (load tests send
	// gigabytes).
	NoRecord bool
	// ExpectKey, when set, is the only credential accepted (as a Bearer
	// token or an x-api-key); any other gets 401, as a provider answers.
	ExpectKey string

	mu       sync.Mutex
	received []Received
	gates    map[string]chan struct{}
	left     atomic.Int64
}

// Left is how many streams ended because the client (Envoy) went away
// before the answer was whole.
func (s *Server) Left() int64 { return s.left.Load() }

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
	if !s.NoRecord {
		s.mu.Lock()
		s.received = append(s.received, Received{r.Method, r.URL.Path, r.Header.Clone(), string(body)})
		s.mu.Unlock()
	}

	if s.ExpectKey != "" && r.Header.Get("authorization") != "Bearer "+s.ExpectKey && r.Header.Get("x-api-key") != s.ExpectKey {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"fake upstream: wrong API key","type":"invalid_request_error","code":"invalid_api_key","param":null}}`)
		return
	}
	if st := intHeader(r, "x-fake-status", 200); st != 200 {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(st)
		fmt.Fprintf(w, `{"error":{"message":"fake upstream error %d","type":"upstream_error","code":null,"param":null}}`, st)
		return
	}
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/chat/completions"):
		s.chat(w, r, body)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/responses"):
		s.responses(w, r, body)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/messages"):
		s.messages(w, r, body)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/embeddings"):
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":%d,"total_tokens":%d}}`,
			intHeader(r, "x-fake-prompt-tokens", 11), intHeader(r, "x-fake-prompt-tokens", 11))
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v1/models"):
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"fake"}]}`)
	default:
		http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
	}
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

// named writes an event with an event: line, as Anthropic and Responses do.
func (s *splitWriter) named(name string, v any) {
	data, _ := json.Marshal(v)
	s.write([]byte("event: " + name + "\n"))
	s.event(data)
}

// steer is what the request headers ask of an answer.
type steer struct {
	words, prompt, cached, reasoning, cacheWrite int
	usage                                        bool
	delay                                        time.Duration
	gate                                         string
	gateAfter                                    int
	model, usageJSON                             string
}

// answerModel is the model the answer names.
func (st steer) answerModel(requested string) string {
	if st.model != "" {
		return st.model
	}
	return requested
}

// usageOr is the usage object to send: the scripted raw one, or usage.
func (st steer) usageOr(usage any) any {
	if st.usageJSON != "" {
		return json.RawMessage(st.usageJSON)
	}
	return usage
}

func steering(r *http.Request) steer {
	return steer{
		words: intHeader(r, "x-fake-words", 12), prompt: intHeader(r, "x-fake-prompt-tokens", 11),
		cached: intHeader(r, "x-fake-cached-tokens", 0), reasoning: intHeader(r, "x-fake-reasoning-tokens", 0),
		cacheWrite: intHeader(r, "x-fake-cache-write-tokens", 0), usage: r.Header.Get("x-fake-usage") != "off",
		delay: time.Duration(intHeader(r, "x-fake-delay-ms", 0)) * time.Millisecond,
		gate:  r.Header.Get("x-fake-gate"), gateAfter: intHeader(r, "x-fake-gate-after", 1),
		model: r.Header.Get("x-fake-model"), usageJSON: r.Header.Get("x-fake-usage-json"),
	}
}

// stream sends the answer's words through word (one event each), pausing
// and waiting at the gate as steered; it reports false when the client left.
func (s *Server) stream(r *http.Request, st steer, word func(w string)) bool {
	for i := range st.words {
		if st.delay > 0 {
			time.Sleep(st.delay)
		}
		w := Words[i%len(Words)]
		if i > 0 {
			w = " " + w
		}
		word(w)
		if st.gate != "" && i+1 == st.gateAfter {
			select {
			case <-s.gate(st.gate):
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}
		if r.Context().Err() != nil {
			s.left.Add(1)
			return false
		}
	}
	return true
}

func sseHeaders(w http.ResponseWriter, r *http.Request) *splitWriter {
	w.Header().Set("content-type", "text/event-stream")
	w.Header().Set("cache-control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return &splitWriter{w: w, size: intHeader(r, "x-fake-split", 0)}
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
