package envoy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
)

// The attack review's bodies, through real Envoy to an upstream that
// decodes with encoding/json (the last repeated member wins): each is
// refused with the member named, and nothing reaches the upstream.
func TestAmbiguousBodiesNeverReachTheUpstream(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	const msgs = `"messages":[{"role":"user","content":"Hello!"}]`
	cases := []struct{ name, body, param string }{
		{"model repeated", `{"model":"openai/gpt-4o-mini","stream":true,` + msgs + `,"model":"openai/o1-pro"}`, "model"},
		{"model repeated, escaped", `{"model":"openai/gpt-4o-mini","stream":true,` + msgs + `,"mod\u0065l":"openai/o1-pro"}`, "model"},
		{"include_usage repeated", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true,"include_usage":false},` + msgs + `}`,
			"stream_options.include_usage"},
		{"stream_options repeated", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},` + msgs + `,"stream_options":{"include_usage":false}}`,
			"stream_options"},
		{"stream repeated", `{"model":"gpt-4o-mini","stream":false,` + msgs + `,"stream":true}`, "stream"},
		{"messages repeated", `{"model":"gpt-4o-mini",` + msgs + `,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 6000) + `"}]}`, "messages"},
		{"model in another case", `{"model":"gpt-4o-mini","MODEL":"o1-pro",` + msgs + `}`, "MODEL"},
		{"byte-order mark", "\xef\xbb\xbf{\"model\":\"gpt-4o-mini\"," + msgs + "}", ""},
		{"max_tokens beyond int64", `{"model":"gpt-4o-mini","max_tokens":18446744073709551616,` + msgs + `}`, "max_tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(s.Upstream.Requests())
			resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, c.body, nil)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			e := decodeError(t, resp)
			if e.Error.Type != "invalid_request_error" || e.Error.Param == nil && c.param != "" ||
				e.Error.Param != nil && *e.Error.Param != c.param {
				t.Fatalf("error %+v, param %v; want param %q", e.Error, e.Error.Param, c.param)
			}
			if after := len(s.Upstream.Requests()); after != before {
				t.Fatal("the refused request reached the upstream")
			}
		})
	}
	// The same request, sent once, runs and is billed.
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "plain"})
	io.Copy(io.Discard, resp.Body)
	s.WaitSpent(t, today("plain"), 11*miniIn+12*miniOut)
}

func prices(t *testing.T) *billing.Prices {
	t.Helper()
	p, err := billing.LoadPrices("", billing.Price{Input: 1, Output: 1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The upstream says it ran another model: the bill prices that one.
func TestBilledAtTheModelThatRan(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "10"})
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "swapped",
		"x-fake-model": "openai/o1-pro", "x-fake-prompt-tokens": "1000", "x-fake-words": "500"})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.Copy(io.Discard, resp.Body)
	pro, _ := prices(t).Lookup("o1-pro")
	want := int64(pro.Cost(billing.Usage{Input: 1000, Output: 500}))
	if want != 450_000_000 {
		t.Fatalf("o1-pro's price changed: 1000 + 500 tokens cost %d", want)
	}
	s.WaitSpent(t, today("swapped"), want)
	if !strings.Contains(s.Sidecar.Log(), "answered with another model") {
		t.Error("no log line says the answered model was billed")
	}
}

// Hostile usage numbers from the upstream neither crash the sidecar nor
// reach the budget: the bill falls back to local counts and the table.
func TestHostileUpstreamNumbers(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Env: []string{"UPSTREAM_PROVIDER=openrouter"}})
	local := seedPromptTokens(t)*miniIn + o200k(t, fakellm.Answer(12))*miniOut
	const table = 1000*miniIn + 500*miniOut // 450,000
	cases := []struct {
		name, usage string
		want        int64
	}{
		{"completion_tokens overflowing int64 arithmetic", `{"prompt_tokens":1000,"completion_tokens":1.55e16}`, local},
		{"negative prompt_tokens", `{"prompt_tokens":-100000000,"completion_tokens":500}`, local},
		{"cost of 1e10 dollars", `{"prompt_tokens":1000,"completion_tokens":500,"cost":1e10}`, table},
		{"negative cost", `{"prompt_tokens":1000,"completion_tokens":500,"cost":-1}`, table},
		{"zero cost for a paid model", `{"prompt_tokens":1000,"completion_tokens":500,"cost":0}`, table},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user := fmt.Sprintf("hostile-%d", i)
			resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody,
				map[string]string{"x-user-id": user, "x-fake-usage-json": c.usage})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			io.Copy(io.Discard, resp.Body)
			s.WaitSpent(t, today(user), c.want)
		})
	}
	if strings.Contains(s.Sidecar.Log(), "panic") {
		t.Fatalf("the sidecar panicked:\n%s", s.Sidecar.Log())
	}
	if got := sidecarGauge(t, s, "aifirewall_upstream_usage_rejected_total"); got != float64(len(cases)) {
		t.Errorf("usage reports set aside: metric says %v, want %d", got, len(cases))
	}
}

// A stream that outlives RESERVATION_TTL keeps its reservation: the budget
// it holds is not handed to another request meanwhile.
func TestLongStreamKeepsItsReservation(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.00001", Env: []string{"RESERVATION_TTL=1s", "STREAM_CUTOFF=false"}})
	hdr := map[string]string{"x-user-id": "long", "x-fake-gate": "long", "x-fake-gate-after": "1"}
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, hdr) // reserves 13350 ≥ the limit
	if resp.StatusCode != 200 {
		t.Fatalf("stream refused: %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	readWords(t, br, 1)
	time.Sleep(3500 * time.Millisecond) // three and a half TTLs, the upstream silent
	if r := post(t, s, "/v1/chat/completions", testenv.ClientKey, cappedBody, map[string]string{"x-user-id": "long"}); r.StatusCode != 402 {
		t.Fatalf("second request while the first still streams: %d, want 402", r.StatusCode)
	}
	s.Upstream.Release("long")
	io.Copy(io.Discard, br)
	s.WaitSpent(t, today("long"), reqCost)
	if _, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "long"}); b.ReservedNanos != 0 {
		t.Fatalf("reservation left after settlement: %+v", b)
	}
}

// n completions reserve n times the output limit.
func TestReservationCoversEveryCompletion(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "10"})
	body := `{"model":"gpt-4o-mini","stream":true,"n":128,"max_tokens":1000,"messages":[{"role":"user","content":"Hello!"}]}`
	resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, body,
		map[string]string{"x-user-id": "many", "x-fake-gate": "many", "x-fake-gate-after": "1"})
	defer s.Upstream.Release("many")
	readWords(t, bufio.NewReader(resp.Body), 1)
	_, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "many"})
	if want := seedPromptTokens(t)*miniIn + 128*1000*miniOut; b.ReservedNanos != want {
		t.Fatalf("reserved %d, want %d (128 completions of up to 1000 tokens)", b.ReservedNanos, want)
	}
}

// 100,000 expired reservations do not break the budget check: a user over
// budget is refused even with FAIL_MODE=open, and /v1/budget answers.
func TestManyExpiredReservationsKeepTheGate(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.001", Env: []string{"FAIL_MODE=open"}})
	ctx := context.Background()
	day := billing.Day(time.Now(), time.UTC)
	for i := 0; i < 100_000; i += 5000 {
		pipe := s.RDB.Pipeline()
		for j := i; j < i+5000; j++ {
			id := fmt.Sprintf("gone-%d", j)
			pipe.HSet(ctx, "reserved:{flood}:"+day, id, 10)
			pipe.ZAdd(ctx, "reservexp:{flood}:"+day, redis.Z{Score: 1, Member: id})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s.RDB.Set(ctx, today("flood"), 2_000_000, time.Hour) // $0.002 spent of $0.001
	for range 3 {
		resp := post(t, s, "/v1/chat/completions", testenv.ClientKey, seedBody, map[string]string{"x-user-id": "flood"})
		if resp.StatusCode != 402 {
			t.Fatalf("over-budget user with 100,000 expired reservations: %d, want 402", resp.StatusCode)
		}
	}
	if code, b := getBudget(t, s, testenv.ClientKey, map[string]string{"x-user-id": "flood"}); code != 200 || b.SpentNanos != 2_000_000 || b.ReservedNanos != 0 {
		t.Fatalf("/v1/budget: %d %+v", code, b)
	}
}
