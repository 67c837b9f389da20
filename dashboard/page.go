package dashboard

import (
	"context"
	"fmt"
	"math/bits"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

// view is what the page shows.
type view struct {
	Now          string
	Ledger       bool
	Today, Month total
	Budgets      []budgetBar
	Chart        chart
	Splits       []string
	Ranges       []int
	Split        string
	Days         int
	Top          []spender
	Groupings    []string
	Since, Until string // the CSV form's defaults
	Problems     []string
}

type total struct {
	Cost     billing.Nanos
	Requests int64
	Tokens   int64
}

// budgetBar is a budget in force and how much of it is used.
type budgetBar struct {
	*operatorv1.BudgetInfo
	PerUser  bool
	Spent    billing.Nanos
	Reserved billing.Nanos
	Limit    billing.Nanos
	Bar      bar
}

// spender is one of this month's top spenders and today's daily budget.
type spender struct {
	ledger.Row
	Cost  billing.Nanos
	Today *operatorv1.Usage
	Bar   bar
}

// bar is a utilisation bar: widths in percent of the limit, capped at 100.
type bar struct {
	Spent, Reserved float64
	Warn            []float64
	Level           string // ok, warn or over
	Label           string
}

func newBar(spent, reserved, limit billing.Nanos, warn []int32) bar {
	b := bar{Level: "ok"}
	if limit <= 0 {
		b.Label = "no limit"
		return b
	}
	b.Spent = min(100, share(spent, limit))
	b.Reserved = min(100-b.Spent, share(reserved, limit))
	for _, w := range warn {
		b.Warn = append(b.Warn, float64(w))
		if share(spent, limit) >= float64(w) {
			b.Level = "warn"
		}
	}
	if spent >= limit {
		b.Level = "over"
	}
	b.Label = pct(spent, limit)
	return b
}

// share is part/whole in percent, for drawing only.
func share(part, whole billing.Nanos) float64 { return float64(part) * 100 / float64(whole) }

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	now := h.now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	tomorrow, month := today.AddDate(0, 0, 1), time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	v := &view{Now: now.Format("2006-01-02 15:04 UTC"), Ledger: h.ledger != nil, Splits: []string{"model", "group", "provider", "user"},
		Ranges: []int{7, 30, 90}, Split: "model", Days: 30, Groupings: ledger.Groupings,
		Since: month.Format(time.DateOnly), Until: tomorrow.Format(time.DateOnly)}
	if s := r.URL.Query().Get("split"); slices.Contains(v.Splits, s) {
		v.Split = s
	}
	if d, err := strconv.Atoi(r.URL.Query().Get("days")); err == nil && slices.Contains(v.Ranges, d) {
		v.Days = d
	}
	v.Budgets = h.budgets(ctx, v)
	if h.ledger != nil {
		v.Today = h.total(ctx, v, today, tomorrow)
		v.Month = h.total(ctx, v, month, tomorrow)
		rows, err := h.ledger.Report(ctx, ledger.Query{Since: today.AddDate(0, 0, 1-v.Days), Until: tomorrow, By: "day", Split: v.Split})
		if err != nil {
			v.Problems = append(v.Problems, fmt.Sprintf("The ledger cannot be read just now (%v); reload to retry.", err))
		}
		v.Chart = newChart(rows, today.AddDate(0, 0, 1-v.Days), v.Days)
		v.Top = h.top(ctx, v, month, tomorrow)
	}
	h.render(w, http.StatusOK, "dashboard.html", v)
}

func (h *Handler) total(ctx context.Context, v *view, since, until time.Time) total {
	rows, err := h.ledger.Report(ctx, ledger.Query{Since: since, Until: until, By: "provider"})
	if err != nil {
		v.Problems = append(v.Problems, fmt.Sprintf("The ledger cannot be read just now (%v); reload to retry.", err))
	}
	var t total
	for _, r := range rows {
		t.Cost += billing.Nanos(r.CostNanos)
		t.Requests += r.Requests
		t.Tokens += r.PromptTokens + r.CompletionTokens
	}
	return t
}

func (h *Handler) budgets(ctx context.Context, v *view) []budgetBar {
	resp, err := h.ops.ListBudgets(ctx, &operatorv1.ListBudgetsRequest{})
	if status.Code(err) == codes.FailedPrecondition {
		return nil // this budget store keeps no budgets
	}
	if err != nil {
		v.Problems = append(v.Problems, fmt.Sprintf("The budgets cannot be read just now (%v); reload to retry.", status.Convert(err).Message()))
		return nil
	}
	var out []budgetBar
	for _, in := range resp.GetBudgets() {
		b := budgetBar{BudgetInfo: in, PerUser: in.GetSpec().GetPer() == "user", Spent: billing.Nanos(in.GetSpentNanos()),
			Reserved: billing.Nanos(in.GetReservedNanos()), Limit: billing.Nanos(in.GetLimitNanos())}
		b.Bar = newBar(b.Spent, b.Reserved, b.Limit, in.GetSpec().GetWarn())
		out = append(out, b)
	}
	return out
}

// top is this month's ten biggest spenders, each with today's daily budget.
func (h *Handler) top(ctx context.Context, v *view, since, until time.Time) []spender {
	rows, err := h.ledger.Report(ctx, ledger.Query{Since: since, Until: until, By: "user"})
	if err != nil {
		return nil // total has said so
	}
	var out []spender
	for _, r := range rows[:min(10, len(rows))] {
		s := spender{Row: r, Cost: billing.Nanos(r.CostNanos)}
		u, err := h.ops.GetUsage(ctx, &operatorv1.GetUsageRequest{User: r.Key})
		if err == nil {
			s.Today = u
			s.Bar = newBar(billing.Nanos(u.GetSpentNanos()), billing.Nanos(u.GetReservedNanos()), billing.Nanos(u.GetLimitNanos()), nil)
		} else if len(v.Problems) == 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("Today's budgets cannot be read just now (%v); reload to retry.", status.Convert(err).Message()))
		}
		out = append(out, s)
	}
	return out
}

// usd is an amount for reading: to the cent from a dollar up, to the
// micro-dollar below (a request costs fractions of a cent); pages show the
// exact amount beside it on hover.
func usd(n billing.Nanos) string {
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	if n < billing.NanosPerUSD {
		micros := (n + 500) / 1000
		if micros == 1_000_000 {
			return sign + "$1.00"
		}
		f := strings.TrimRight(fmt.Sprintf("%06d", micros), "0")
		return fmt.Sprintf("%s$0.%s", sign, f+"00"[min(2, len(f)):])
	}
	cents := (n + billing.NanosPerUSD/200) / (billing.NanosPerUSD / 100)
	return fmt.Sprintf("%s$%s.%02d", sign, thousands(int64(cents/100)), cents%100)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// pct is part of whole in percent with one decimal, in integers.
func pct(part, whole billing.Nanos) string {
	if whole <= 0 {
		return "no limit"
	}
	hi, lo := bits.Mul64(uint64(max(0, part)), 1000)
	if hi >= uint64(whole) {
		return "over 999%"
	}
	tenths, _ := bits.Div64(hi, lo, uint64(whole))
	return fmt.Sprintf("%d.%d%%", tenths/10, tenths%10)
}
