package processor

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/budgets"
	"github.com/aifirewall/aifirewall/identity"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// teamCaller is a per-user key of alice, in group payments.
type teamCaller struct{}

func (teamCaller) Authenticate(identity.Request) (identity.Caller, error) {
	return identity.Caller{User: "alice", Groups: []string{"payments"}}, nil
}

func budgetsHarness(t *testing.T, file string) (*harness, *atomic.Pointer[budgets.File]) {
	t.Helper()
	f, err := budgets.Parse("budgets.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	cur := &atomic.Pointer[budgets.File]{}
	cur.Store(f)
	h := newHarnessWith(t, billing.NewMemStore(), Config{Auth: teamCaller{}, Upstream: provider.OpenAI,
		DailyLimit: billing.NanosPerUSD, Location: time.UTC, Budgets: cur})
	return h, cur
}

// spend puts amount on a budget's counter for the current window.
func (h *harness) spend(t *testing.T, b budgets.Budget, user string, amount billing.Nanos) {
	t.Helper()
	period, _ := b.Window.Period(time.Now(), time.UTC)
	if _, err := h.store.Settle(context.Background(), billing.Settlement{User: b.Counter(user), Day: period,
		RequestID: "earlier-" + b.Name, Amount: amount}); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) standing(b budgets.Budget, user string) billing.Budget {
	period, _ := b.Window.Period(time.Now(), time.UTC)
	s, _ := h.store.Budget(context.Background(), b.Counter(user), period, b.Limit)
	return s
}

func headerOf(resp *extprocv3.ProcessingResponse, key string) string {
	for _, o := range resp.GetImmediateResponse().GetHeaders().GetSetHeaders() {
		if o.GetHeader().GetKey() == key {
			return string(o.GetHeader().GetRawValue())
		}
	}
	for _, o := range resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetKey() == key {
			return string(o.GetHeader().GetRawValue())
		}
	}
	return ""
}

const teamBudgets = `budgets:
  - {name: payments-month, groups: [payments], window: month, limit_usd: "0.01", warn: [50, 80]}
  - {name: claude-day, models: ["claude-*"], window: day, per: user, limit_usd: "0.001"}
  - {name: org-audit, window: week, limit_usd: "0.0001", action: audit}
`

// The team's monthly budget refuses when it has no room, though the
// user's own daily budget has plenty: the 402 names it, its window and
// reset, and the daily reservation made before it is released.
func TestTeamBudgetRefusesAndNamesItself(t *testing.T) {
	h, cur := budgetsHarness(t, teamBudgets)
	team := cur.Load().Budgets[0]
	h.spend(t, team, "alice", team.Limit)
	x := h.open(t)
	x.requestHeaders(authed()...)
	resp := x.requestBody(`{"model":"gpt-4o","messages":[]}`)
	st, body := immediateStatus(resp)
	if st != 402 || !strings.Contains(body, `budget \"payments-month\" exceeded`) || !strings.Contains(body, "month "+time.Now().UTC().Format("2006-01")) {
		t.Fatalf("got %d %s", st, body)
	}
	if n := headerOf(resp, "x-aifirewall-budget-name"); n != "payments-month" {
		t.Fatalf("budget name header %q", n)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := h.store.Budget(context.Background(), "alice", billing.Day(time.Now(), time.UTC), 0)
		if b.Reserved == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daily reservation was not released: %+v", b)
		}
	}
}

// A model-scoped budget refuses only its models; every budget a request
// counts against is billed what it cost, and an audit budget past its
// limit never refuses but says so.
func TestBudgetsScopeAndSettle(t *testing.T) {
	h, cur := budgetsHarness(t, teamBudgets)
	claude, audit := cur.Load().Budgets[1], cur.Load().Budgets[2]
	h.spend(t, claude, "alice", claude.Limit)
	h.spend(t, audit, "alice", audit.Limit)

	x := h.open(t)
	x.requestHeaders(authed()...)
	if st, body := immediateStatus(x.requestBody(`{"model":"claude-haiku-4-5","messages":[]}`)); st != 402 || !strings.Contains(body, "claude-day") {
		t.Fatalf("claude: %d %s", st, body)
	}

	x = h.open(t)
	x.requestHeaders(":method", "POST", ":path", chatPath, "authorization", "Bearer k", "x-request-id", "r2", "content-type", "application/json")
	if ir := x.requestBody(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`).GetImmediateResponse(); ir != nil {
		t.Fatalf("gpt-4o refused: %s", ir.GetBody())
	}
	resp := x.responseHeaders(":status", "200", "content-type", "application/json")
	if w := headerOf(resp, "x-aifirewall-budget-warning"); !strings.Contains(w, "org-audit: over its") {
		t.Fatalf("warning header %q", w)
	}
	if n := headerOf(resp, "x-aifirewall-budget-name"); n != "payments-month" {
		t.Fatalf("the tightest budget is %q, want payments-month ($0.01 against the $1 day)", n)
	}
	x.responseChunk(`{"model":"gpt-4o","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`, true)
	x.stream.CloseSend()

	team := cur.Load().Budgets[0]
	const cost = 2500 + 10000 // gpt-4o: $2.50 and $10 per million tokens, one token each way
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		tb, ab := h.standing(team, "alice"), h.standing(audit, "alice")
		if tb.Spent == cost && tb.Reserved == 0 && ab.Spent == audit.Limit+cost && h.spent("alice") == cost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("team %+v, audit %+v, daily %d: want %d on each", tb, ab, h.spent("alice"), cost)
		}
	}
}

// A budget's warning thresholds show in the answer's headers once reached.
func TestBudgetWarningThreshold(t *testing.T) {
	h, cur := budgetsHarness(t, teamBudgets)
	m := NewMetrics(prometheus.NewRegistry(), false)
	h.srv.WithMetrics(m)
	cur.Store(&budgets.File{Budgets: cur.Load().Budgets[:1]})
	team := cur.Load().Budgets[0]
	h.spend(t, team, "alice", team.Limit*8/10)
	x := h.open(t)
	x.requestHeaders(authed()...)
	x.requestBody(`{"model":"gpt-4o","max_tokens":1,"messages":[]}`)
	resp := x.responseHeaders(":status", "200", "content-type", "application/json")
	if w := headerOf(resp, "x-aifirewall-budget-warning"); !strings.HasPrefix(w, "payments-month: 80% of $0.01 used") {
		t.Fatalf("warning %q", w)
	}
	// 80% spent plus this request's reservation, as the admission found it.
	if u := testutil.ToFloat64(m.budgetUse.WithLabelValues("payments-month")); u <= 0.8 || u >= 1 {
		t.Fatalf("utilisation gauge %v", u)
	}
}

// An identity may not name itself like a budget's counter.
func TestUserCannotNameABudgetCounter(t *testing.T) {
	h := newHarness(t, nil)
	x := h.open(t)
	x.requestHeaders(authed("x-user-id", "budget=payments-month")...)
	if st, body := immediateStatus(x.requestBody(`{"model":"gpt-4o","messages":[]}`)); st != 400 || !strings.Contains(body, "budget=") {
		t.Fatalf("got %d %s", st, body)
	}
}
