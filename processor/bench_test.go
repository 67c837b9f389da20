package processor

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// reportQuantiles adds p50 and p99 of samples to the benchmark output.
func reportQuantiles(b *testing.B, samples []time.Duration) {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	q := func(p float64) float64 { return float64(samples[int(p*float64(len(samples)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkRequestPhases is the sidecar's service time for the request
// headers and body of a 1 KB chat prompt, Redis round trip included, over
// the gRPC stream Envoy would use (in-memory transport): for a prompt seen
// before (a chat history re-sent, counted from the cache) and a new one.
func BenchmarkRequestPhases(b *testing.B) {
	r := testinfra.StartRedis(b)
	store, err := billing.NewRedisStore(r.URL())
	if err != nil {
		b.Fatal(err)
	}
	h := newHarness(b, store)
	prompt := strings.Repeat("Summarise the quarterly report for the board. ", 30)[:1000]
	agent, err := os.ReadFile(filepath.Join("provider", "testdata", "agent_request.json"))
	if err != nil {
		b.Fatal(err)
	}
	// The agent turn (36 KB, the seed client's shape) with a new system
	// prompt each time: the first turn of a conversation.
	agentBody := func(i int) string {
		return strings.Replace(string(agent), `"content": "You are`, fmt.Sprintf(`"content": "%08d You are`, i), 1)
	}
	for _, mix := range []string{"repeated-prompt", "new-prompt", "agent-36KB-new"} {
		b.Run(mix, func(b *testing.B) {
			var samples []time.Duration
			for i := 0; b.Loop(); i++ {
				p := prompt
				if mix == "new-prompt" {
					p = fmt.Sprintf("%08d", i) + prompt[8:]
				}
				body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"` + p + `"}]}`
				if mix == "agent-36KB-new" {
					body = agentBody(i)
				}
				x := h.open(b)
				start := time.Now()
				x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", fmt.Sprint(mix, i))
				if ir := x.requestBody(body).GetImmediateResponse(); ir != nil {
					b.Fatalf("refused: %s", ir.GetBody())
				}
				samples = append(samples, time.Since(start))
				x.cancel()
			}
			reportQuantiles(b, samples)
		})
	}
}

// BenchmarkResponseChunk is the service time of one streamed SSE chunk
// (one chat delta event): passed on unchanged, with usage stripping, and
// with the cut-off (metered before it is answered, the running cost
// checked against the stream's room).
func BenchmarkResponseChunk(b *testing.B) {
	for _, mode := range []string{"plain", "strip", "cutoff"} {
		b.Run(mode, func(b *testing.B) {
			cfg := Config{Auth: identity.NewSharedKey("k"), Upstream: provider.OpenAI, UpstreamKey: "up",
				DailyLimit: 1000 * billing.NanosPerUSD, Cutoff: mode == "cutoff"}
			h := newHarnessWith(b, nil, cfg)
			x := h.open(b)
			x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", "bench")
			body := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
			if mode == "strip" {
				body = `{"model":"gpt-4o-mini","stream":true,"messages":[]}`
			}
			x.requestBody(body)
			x.responseHeaders(":status", "200", "content-type", "text/event-stream")
			chunk := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}` + "\n\n"
			var samples []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				x.responseChunk(chunk, false)
				samples = append(samples, time.Since(start))
			}
			reportQuantiles(b, samples)
		})
	}
}

// BenchmarkStreamedRequest is the CPU of one whole streamed request (a
// 600-byte prompt, 22 chunks and a usage chunk), both ends of the
// in-memory gRPC stream and the memory store included, with and without
// the cut-off: what it adds to a request, away from the noise of a load
// test. Run the two alone, one after the other, to compare.
func BenchmarkStreamedRequest(b *testing.B) {
	evs := []string{`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"}
	for i := range 20 {
		evs = append(evs, fmt.Sprintf(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word%d"},"finish_reason":null}]}`+"\n\n", i%7))
	}
	evs = append(evs, `data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":20,"total_tokens":29}}`+"\n\n", "data: [DONE]\n\n")
	body := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"` + strings.Repeat("hello ", 100) + `"}]}`
	for _, cut := range []bool{false, true} {
		b.Run(fmt.Sprint("cutoff=", cut), func(b *testing.B) {
			h := newHarnessWith(b, nil, Config{Auth: identity.NewSharedKey("k"), Upstream: provider.OpenAI, UpstreamKey: "up",
				DailyLimit: 1_000_000 * billing.NanosPerUSD, Cutoff: cut})
			for i := 0; b.Loop(); i++ {
				x := h.open(b)
				x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json",
					"x-request-id", fmt.Sprint("r", i), "x-user-id", "u")
				x.requestBody(body)
				x.responseHeaders(":status", "200", "content-type", "text/event-stream")
				for j, e := range evs {
					x.responseChunk(e, j == len(evs)-1)
				}
				x.cancel()
			}
		})
	}
}

// BenchmarkHeapPerStream holds streams open mid-response and reports the
// heap they take, per stream. The figure includes both ends of each
// in-memory gRPC stream (Envoy's side too), so it overstates the sidecar's.
func BenchmarkHeapPerStream(b *testing.B) {
	const open = 200
	h := newHarness(b, nil)
	chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"}}]}` + "\n\n"
	var perStream float64
	time.Sleep(200 * time.Millisecond)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var xs []*exchange
		for i := range open {
			x := h.open(b)
			x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json",
				"x-request-id", fmt.Sprint("heap", i), "x-user-id", "heap")
			x.requestBody(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			x.responseHeaders(":status", "200", "content-type", "text/event-stream")
			for range 20 {
				x.responseChunk(chunk, false)
			}
			xs = append(xs, x)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perStream = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / open
		for _, x := range xs {
			x.cancel()
		}
		// Let the cancelled streams unwind before the next measurement.
		time.Sleep(200 * time.Millisecond)
	}
	b.ReportMetric(perStream/1024, "KiB/stream")
}
