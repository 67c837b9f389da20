package processor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
)

func chatStream(eol string, withUsage bool) string {
	ev := func(data string) string { return "data: " + data + eol + eol }
	var b strings.Builder
	b.WriteString(": OPENROUTER PROCESSING" + eol + eol)
	b.WriteString(ev(`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`))
	for _, w := range []string{"Hello", " there", ", friend"} {
		b.WriteString(ev(`{"id":"c","choices":[{"index":0,"delta":{"content":"` + w + `"}}]}`))
	}
	b.WriteString(ev(`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`))
	if withUsage {
		b.WriteString(ev(`{"id":"c","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":4,"total_tokens":54,"prompt_tokens_details":{"cached_tokens":20}}}`))
	}
	b.WriteString(ev("[DONE]"))
	return b.String()
}

// run sends one streamed chat request through the processor, the response
// cut into chunks at cuts, and returns what the client received.
func run(t *testing.T, h *harness, id, body, stream string, cuts []int) string {
	t.Helper()
	x := h.open(t)
	x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", id, "x-user-id", "prop")
	if ir := x.requestBody(body).GetImmediateResponse(); ir != nil {
		t.Fatalf("refused: %s", ir.GetBody())
	}
	x.responseHeaders(":status", "200", "content-type", "text/event-stream")
	var got strings.Builder
	prev := 0
	for i, c := range append(cuts, len(stream)) {
		got.WriteString(x.responseChunk(stream[prev:c], i == len(cuts)))
		prev = c
	}
	x.stream.CloseSend()
	return got.String()
}

// For every way of cutting the stream in two, and for random cuts into
// many pieces, the client sees exactly the stream without the usage chunk
// the firewall asked for, and the request is billed from that usage.
func TestInjectedUsageStrippedAtEverySplit(t *testing.T) {
	const body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	// gpt-4o-mini: 30 uncached + 20 cached prompt tokens, 4 output tokens.
	const want = 30*150 + 20*75 + 4*600
	for _, eol := range []string{"\n", "\r\n"} {
		stream, clean := chatStream(eol, true), chatStream(eol, false)
		h := newHarness(t, nil)
		var splits [][]int
		for i := 0; i <= len(stream); i++ {
			splits = append(splits, []int{i})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			cuts := []int{}
			for c := rng.IntN(8); c < len(stream); c += 1 + rng.IntN(40) {
				cuts = append(cuts, c)
			}
			splits = append(splits, cuts)
		}
		for n, cuts := range splits {
			id := fmt.Sprintf("%q-%d", eol, n)
			if got := run(t, h, id, body, stream, cuts); got != clean {
				t.Fatalf("eol %q cuts %v: client got\n%q\nwant\n%q", eol, cuts, got, clean)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := h.srv.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		spent := h.spent("prop")
		if spent != billing.Nanos(want*len(splits)) {
			t.Fatalf("eol %q: billed %d over %d requests, want %d each", eol, spent, len(splits), want)
		}
	}
}

// A client that asked for usage gets the stream untouched.
func TestClientRequestedUsagePassesThrough(t *testing.T) {
	h := newHarness(t, nil)
	stream := chatStream("\n", true)
	body := `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`
	if got := run(t, h, "asked", body, stream, []int{10, 300}); got != stream {
		t.Fatalf("client got\n%q", got)
	}
}

// A gzip-encoded answer is decoded as it passes: the client gets the plain
// stream (without the injected usage) and the bill is the same, wherever
// the compressed bytes were cut.
func TestGzipStreamDecodedStrippedAndBilled(t *testing.T) {
	const body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	const want = 30*150 + 20*75 + 4*600
	stream, clean := chatStream("\n", true), chatStream("\n", false)
	comp := gz(t, stream)
	h := newHarness(t, nil)
	for i := 0; i <= len(comp); i++ {
		x := h.open(t)
		x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", fmt.Sprint("gz", i), "x-user-id", "gz")
		x.requestBody(body)
		mut := x.responseHeaders(":status", "200", "content-type", "text/event-stream", "content-encoding", "gzip").
			GetResponseHeaders().GetResponse().GetHeaderMutation()
		if !strings.Contains(strings.Join(mut.GetRemoveHeaders(), ","), "content-encoding") {
			t.Fatalf("content-encoding kept: %v", mut.GetRemoveHeaders())
		}
		got := x.responseChunk(string(comp[:i]), false) + x.responseChunk(string(comp[i:]), true)
		if got != clean {
			t.Fatalf("split %d: client got %q", i, got)
		}
		x.stream.CloseSend()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	spent := h.spent("gz")
	if spent != billing.Nanos(want*(len(comp)+1)) {
		t.Fatalf("billed %d, want %d", spent, want*(len(comp)+1))
	}
}

// A chunk of whole events with nothing to cut is left to Envoy, not sent
// back: only the chunk that carries the injected usage is rewritten.
func TestInjectedUsageOnlyUsageChunkRewritten(t *testing.T) {
	const body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	h := newHarness(t, nil)
	x := h.open(t)
	x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", "rewrite", "x-user-id", "prop")
	if ir := x.requestBody(body).GetImmediateResponse(); ir != nil {
		t.Fatalf("refused: %s", ir.GetBody())
	}
	x.responseHeaders(":status", "200", "content-type", "text/event-stream")
	stream, clean := chatStream("\n", true), chatStream("\n", false)
	cut := strings.Index(stream, `data: {"id":"c","choices":[],"usage"`)
	for i, chunk := range []string{stream[:cut], stream[cut:]} {
		resp := x.send(responseChunkRequest(chunk, i == 1))
		m := resp.GetResponseBody().GetResponse().GetBodyMutation()
		switch {
		case i == 0 && m != nil:
			t.Errorf("a chunk without usage was sent back: %q", m.GetBody())
		case i == 1 && (m == nil || string(m.GetBody()) != clean[cut:]):
			t.Errorf("the usage chunk reached the client: mutation %v, want %q", m, clean[cut:])
		}
	}
}
