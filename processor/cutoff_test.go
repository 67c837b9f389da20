package processor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// gpt-4o-mini's output price, nano-dollars per token.
const miniOut = 600

// longChat is a chat stream of n events of one token each (" the").
func longChat(n int) []string {
	evs := []string{`data: {"id":"c","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"}
	for range n {
		evs = append(evs, `data: {"id":"c","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" the"}}]}`+"\n\n")
	}
	return append(evs, `data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n", "data: [DONE]\n\n")
}

func cutHarness(t *testing.T, limit billing.Nanos) *harness {
	return newHarnessWith(t, nil, Config{Auth: identity.NewSharedKey("k"), Upstream: provider.OpenAI, UpstreamKey: "up",
		DailyLimit: limit, Cutoff: true})
}

// streamOut opens a streamed request of user and returns its exchange.
func streamOut(t *testing.T, h *harness, id, user string) *exchange {
	t.Helper()
	x := h.open(t)
	x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json",
		"x-request-id", id, "x-user-id", user)
	if ir := x.requestBody(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`).GetImmediateResponse(); ir != nil {
		t.Fatalf("refused: %s", ir.GetBody())
	}
	x.responseHeaders(":status", "200", "content-type", "text/event-stream")
	return x
}

// A lone stream is ended at the first event past the whole budget (its
// room grows from half of it), with the error event after it; the bill
// is what passed, and the next chunk resets the stream.
func TestStreamEndsAtItsBudget(t *testing.T) {
	const limit = 100_000 // $0.0001: about 165 tokens of gpt-4o-mini
	h := cutHarness(t, limit)
	x := streamOut(t, h, "cut-1", "u")
	evs := longChat(10_000)
	var got strings.Builder
	var i int
	for i = 0; i < len(evs); i += 5 {
		out := x.responseChunk(strings.Join(evs[i:i+5], ""), false)
		got.WriteString(out)
		if strings.Contains(out, "budget_exceeded") {
			break
		}
	}
	text := got.String()
	if !strings.HasSuffix(text, "\n\n") || !strings.Contains(text, `data: {"error":{"code":"budget_exceeded"`) {
		t.Fatalf("no error event at the end:\n%s", text[max(0, len(text)-400):])
	}
	passed := strings.Count(text, `"content":" the"`)
	spent := h.spent("u")
	prompt := spent - billing.Nanos(passed)*miniOut
	if prompt <= 0 || prompt%150 != 0 || prompt > 30*150 {
		t.Fatalf("billed %d for %d tokens passed: not the prompt plus what passed", spent, passed)
	}
	if spent <= limit || spent > limit+miniOut {
		t.Fatalf("billed %d: want past the %d limit by at most one event (%d)", spent, limit, miniOut)
	}
	if resp := x.send(responseChunkRequest(strings.Join(evs[i+5:i+10], ""), false)); resp.GetImmediateResponse() == nil {
		t.Fatalf("the chunk after the cut: %v", resp)
	}
}

// With room to spare, every chunk passes as Envoy sent it.
func TestStreamWithRoomIsUntouched(t *testing.T) {
	h := cutHarness(t, billing.NanosPerUSD)
	x := streamOut(t, h, "room-1", "u")
	evs := longChat(300)
	for i := 0; i < len(evs); i += 7 {
		chunk := strings.Join(evs[i:min(i+7, len(evs))], "")
		resp := x.send(responseChunkRequest(chunk, i+7 >= len(evs)))
		if m := resp.GetResponseBody().GetResponse().GetBodyMutation(); m != nil && string(m.GetBody()) != chunk {
			t.Fatalf("chunk %d changed:\n%q\nto\n%q", i, chunk, m.GetBody())
		}
	}
}

// Streams of one budget, interleaved event by event, share it: the bill
// passes the limit by at most one event each.
func TestConcurrentStreamsShareTheBudget(t *testing.T) {
	const limit, n = 300_000, 8
	h := cutHarness(t, limit)
	var xs []*exchange
	for i := range n {
		xs = append(xs, streamOut(t, h, fmt.Sprint("share-", i), "team"))
	}
	evs := longChat(5000)
	open := map[int]bool{}
	for i := range n {
		open[i] = true
	}
	for e := 0; len(open) > 0 && e < len(evs); e++ {
		for i := range n {
			if !open[i] {
				continue
			}
			if resp := xs[i].send(responseChunkRequest(evs[e], false)); strings.Contains(string(resp.GetResponseBody().GetResponse().GetBodyMutation().GetBody()), "budget_exceeded") {
				delete(open, i)
			}
		}
	}
	if len(open) > 0 {
		t.Fatalf("%d streams never cut", len(open))
	}
	if spent := h.spent("team"); spent > limit+n*miniOut {
		t.Fatalf("spent %d: past %d by more than one event per stream", spent, limit)
	}
}

// A request that is not streamed reserves its whole bound: here no
// max_tokens, so gpt-4o-mini's 16,384-token output limit.
func TestUnstreamedReservesItsBound(t *testing.T) {
	h := cutHarness(t, billing.NanosPerUSD)
	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "v")...)
	if ir := x.requestBody(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`).GetImmediateResponse(); ir != nil {
		t.Fatalf("refused: %s", ir.GetBody())
	}
	b, _ := h.store.Budget(context.Background(), "v", billing.Day(time.Now(), time.UTC), billing.NanosPerUSD)
	if prompt := b.Reserved - 16_384*miniOut; prompt <= 0 || prompt > 30*150 {
		t.Fatalf("reserved %d, want 16,384 output tokens (%d) and the prompt", b.Reserved, 16_384*miniOut)
	}
}
