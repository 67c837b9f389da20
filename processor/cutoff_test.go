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

const (
	streamBody = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	// The firewall asks for the usage report and strips it.
	streamBodyNoUsage = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
)

// streamOut opens a streamed request of user and returns its exchange.
func streamOut(t *testing.T, h *harness, id, user string) *exchange {
	t.Helper()
	return streamOutWith(t, h, id, user, streamBody)
}

func streamOutWith(t *testing.T, h *harness, id, user, body string) *exchange {
	t.Helper()
	x := h.open(t)
	hdr := []string{":method", "POST", ":path", chatPath, "authorization", "Bearer k", "content-type", "application/json", "x-request-id", id}
	if user != "" {
		hdr = append(hdr, "x-user-id", user)
	}
	x.requestHeaders(hdr...)
	if ir := x.requestBody(body).GetImmediateResponse(); ir != nil {
		t.Fatalf("refused: %s", ir.GetBody())
	}
	x.responseHeaders(":status", "200", "content-type", "text/event-stream")
	return x
}

// A lone stream is ended at the first event past the whole budget (its
// room grows from half of it), with the error event after it; the bill
// is what passed, and the next chunk resets the stream. Its first chunks
// are far from the room (bounded, not counted) and its last near, whether
// or not the firewall strips a usage report it asked for.
func TestStreamEndsAtItsBudget(t *testing.T) {
	for _, body := range []string{streamBody, streamBodyNoUsage} {
		t.Run(fmt.Sprint("usage asked by the client: ", body == streamBody), func(t *testing.T) { streamEndsAtItsBudget(t, body) })
	}
}

func streamEndsAtItsBudget(t *testing.T, body string) {
	const limit = 2_000_000 // $0.002: about 3,300 tokens of gpt-4o-mini
	h := cutHarness(t, limit)
	x := streamOutWith(t, h, "cut-1", "u", body)
	evs := longChat(10_000)
	text, next := drain(x, evs)
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
	if resp := x.send(responseChunkRequest(strings.Join(evs[next:next+5], ""), false)); resp.GetImmediateResponse() == nil {
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

// drain sends evs in chunks of five and returns what passed, up to and
// including the error event of a cut, and the index of the first event
// not sent.
func drain(x *exchange, evs []string) (string, int) {
	var got strings.Builder
	i := 0
	for i < len(evs) {
		end := min(i+5, len(evs))
		out := x.responseChunk(strings.Join(evs[i:end], ""), end == len(evs))
		got.WriteString(out)
		i = end
		if strings.Contains(out, "budget_exceeded") {
			break
		}
	}
	return got.String(), i
}

// A budget of the file cuts a stream off at itself, and one with
// cutoff: false lets it finish.
func TestBudgetCutoffSetting(t *testing.T) {
	for _, c := range []struct {
		cutoff string
		cut    bool
	}{{"", false}, {", cutoff: true", true}, {", cutoff: false", false}} { // STREAM_CUTOFF off: only cutoff: true cuts
		h, cur := budgetsHarness(t, "budgets:\n  - {name: team, groups: [payments], window: day, limit_usd: \"0.0001\""+c.cutoff+"}\n")
		text, _ := drain(streamOut(t, h, "team-"+c.cutoff, ""), longChat(1000))
		if got := strings.Contains(text, "budget_exceeded") && strings.Contains(text, `budget \"team\"`); got != c.cut {
			t.Errorf("cutoff%q: cut %v, want %v", c.cutoff, got, c.cut)
		}
		h.settled()
		b := cur.Load().Budgets[0]
		period, _ := b.Window.Period(time.Now(), time.UTC)
		st, _ := h.store.Window(context.Background(), b.Counter(""), period, nil, b.Limit)
		if c.cut && (st.Spent <= b.Limit || st.Spent > b.Limit+miniOut) || !c.cut && st.Spent < 1000*miniOut {
			t.Errorf("cutoff%q: the team spent %d of %d", c.cutoff, st.Spent, b.Limit)
		}
	}
}
