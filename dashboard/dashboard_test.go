package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
	operatorv1 "github.com/aifirewall/aifirewall/proto-gen/aifirewall/operator/v1"
)

const token = "operator-token-0123456789"

var now = time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)

// ops answers as an operator API with one team budget would.
type ops struct{}

func (ops) ListBudgets(context.Context, *operatorv1.ListBudgetsRequest) (*operatorv1.ListBudgetsResponse, error) {
	return &operatorv1.ListBudgetsResponse{Budgets: []*operatorv1.BudgetInfo{{
		Spec:   &operatorv1.BudgetSpec{Name: "payments-monthly", Groups: []string{"payments"}, Window: "month", LimitUsd: "10", Action: "block", Warn: []int32{50, 80}},
		Source: "file", Period: "2026-12", LimitNanos: 10 * int64(billing.NanosPerUSD), SpentNanos: 7_500_000_000, ReservedNanos: 500_000_000,
	}}}, nil
}

func (ops) GetUsage(_ context.Context, req *operatorv1.GetUsageRequest) (*operatorv1.Usage, error) {
	return &operatorv1.Usage{User: req.GetUser(), LimitNanos: 5 * int64(billing.NanosPerUSD), SpentNanos: 1_250_000_000}, nil
}

func seeded(t *testing.T) (*Handler, ledger.Store) {
	t.Helper()
	ctx := context.Background()
	l, err := ledger.OpenSQLite(ctx, filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var rs []ledger.Record
	for i := range 40 {
		rs = append(rs, ledger.Record{Time: now.Add(-time.Duration(i) * 6 * time.Hour), RequestID: fmt.Sprint("r", i),
			User: []string{"alice", "bob", "=cmd|' /C calc'!A0"}[i%3], Groups: []string{"payments"}, Provider: "openai",
			Model: []string{"gpt-4o", "gpt-4o-mini"}[i%2], PromptTokens: 10, CompletionTokens: 5, CostNanos: int64(1_000_000 * (i + 1)), Status: 200})
	}
	if err := l.Append(ctx, rs); err != nil {
		t.Fatal(err)
	}
	return New(token, ops{}, l, func() time.Time { return now }, slog.New(slog.DiscardHandler)), l
}

func do(h http.Handler, method, target string, body io.Reader, hdr map[string]string) *http.Response {
	r := httptest.NewRequest(method, target, body)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestNoAccessWithoutTheToken(t *testing.T) {
	h, _ := seeded(t)
	forged := newSession("another-token-0123456789").cookie(httptest.NewRequest("GET", "/", nil), now)
	expired := h.session.cookie(httptest.NewRequest("GET", "/", nil), now.Add(-13*time.Hour))
	for name, hdr := range map[string]map[string]string{
		"nothing":                  nil,
		"a wrong bearer":           {"Authorization": "Bearer " + token + "x"},
		"the token without Bearer": {"Authorization": token},
		"another token's cookie":   {"Cookie": forged.String()},
		"an expired cookie":        {"Cookie": expired.String()},
		"an unsigned cookie":       {"Cookie": cookieName + "=99999999999.x"},
	} {
		if resp := do(h, "GET", "/dashboard/", nil, hdr); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dashboard/login" {
			t.Errorf("%s: the page answered %d", name, resp.StatusCode)
		}
		for _, path := range []string{"/dashboard/report.csv", "/v1/report"} {
			resp := do(h, "GET", path, nil, hdr)
			var e struct {
				Error struct{ Message, Type, Code string }
			}
			json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != 401 || e.Error.Code != "invalid_admin_token" || !strings.Contains(e.Error.Message, "Bearer") {
				t.Errorf("%s: %s answered %d %+v", name, path, resp.StatusCode, e)
			}
		}
	}
}

func TestSignInAndOut(t *testing.T) {
	h, _ := seeded(t)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	resp := do(h, "POST", "/dashboard/login", strings.NewReader("token=wrong-token-0123456789"), form)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || !strings.Contains(string(body), "not the operator token") || len(resp.Cookies()) != 0 {
		t.Fatalf("a wrong token: %d %s", resp.StatusCode, body)
	}
	resp = do(h, "POST", "/dashboard/login", strings.NewReader(url.Values{"token": {token}}.Encode()), form)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("the token: %d %v", resp.StatusCode, resp.Cookies())
	}
	c := resp.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, token) {
		t.Fatalf("session cookie %s", c)
	}
	resp = do(h, "GET", "/dashboard/", nil, map[string]string{"Cookie": c.Name + "=" + c.Value})
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Top spenders") || bytes.Contains(body, []byte(token)) {
		t.Fatalf("the page with a session: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	resp = do(h, "POST", "/dashboard/logout", nil, map[string]string{"Cookie": c.Name + "=" + c.Value})
	if out := resp.Cookies(); resp.StatusCode != http.StatusSeeOther || len(out) != 1 || out[0].MaxAge >= 0 {
		t.Fatalf("sign out: %d %v", resp.StatusCode, out)
	}
}

// A page on another site cannot post the forms (login CSRF, a forced
// sign-out).
func TestCrossSiteFormsAreRefused(t *testing.T) {
	h, _ := seeded(t)
	for name, hdr := range map[string]map[string]string{
		"Sec-Fetch-Site":         {"Sec-Fetch-Site": "cross-site"},
		"an Origin of elsewhere": {"Origin": "https://evil.example"},
	} {
		hdr["Content-Type"] = "application/x-www-form-urlencoded"
		for _, path := range []string{"/dashboard/login", "/dashboard/logout"} {
			resp := do(h, "POST", path, strings.NewReader(url.Values{"token": {token}}.Encode()), hdr)
			if resp.StatusCode != 403 || len(resp.Cookies()) != 0 {
				t.Errorf("%s: %s answered %d %v", name, path, resp.StatusCode, resp.Cookies())
			}
		}
	}
}

func TestReportsMatchTheLedger(t *testing.T) {
	h, l := seeded(t)
	bearer := map[string]string{"Authorization": "Bearer " + token}
	q, _ := ledger.ParseQuery("2026-11-01", "2026-12-03", "user")
	rows, err := l.Report(context.Background(), q)
	if err != nil || len(rows) != 3 {
		t.Fatal(rows, err)
	}
	var want bytes.Buffer
	ledger.WriteCSV(&want, "user", rows)
	resp := do(h, "GET", "/dashboard/report.csv?since=2026-11-01&until=2026-12-03&by=user", nil, bearer)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(got) != want.String() || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("CSV %d:\n%s\nwant\n%s", resp.StatusCode, got, want.String())
	}
	if !strings.Contains(string(got), "\n'=cmd|") {
		t.Errorf("a formula-like name is not escaped in the CSV:\n%s", got)
	}
	resp = do(h, "GET", "/v1/report?since=2026-11-01&until=2026-12-03&by=user", nil, bearer)
	var j struct{ Rows []jsonRow }
	if json.NewDecoder(resp.Body).Decode(&j) != nil || len(j.Rows) != 3 || j.Rows[0].Row != rows[0] || j.Rows[0].CostUSD != billing.Nanos(rows[0].CostNanos).Decimal() {
		t.Fatalf("JSON %d %+v", resp.StatusCode, j)
	}
	for _, bad := range []string{"since=2026-13-01", "by=color", "since=2026-12-03&until=2026-12-01"} {
		resp := do(h, "GET", "/v1/report?"+bad, nil, bearer)
		var e struct {
			Error struct{ Message, Code string }
		}
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != 400 || e.Error.Code != "invalid_report" || !strings.Contains(e.Error.Message, "want") && !strings.Contains(e.Error.Message, "first day") {
			t.Errorf("%s: %d %+v", bad, resp.StatusCode, e)
		}
	}
}

func TestChartStacksEachDay(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var rows []ledger.Row
	for i := range 10 { // ten models on the first day, one on the third
		rows = append(rows, ledger.Row{Key: "2026-11-01", Split: fmt.Sprint("m", i), CostNanos: int64(i+1) * 10_000_000})
	}
	rows = append(rows, ledger.Row{Key: "2026-11-03", Split: "m9", CostNanos: 300_000_000}, ledger.Row{Key: "2026-10-31", Split: "m1", CostNanos: 1})
	c := newChart(rows, start, 7)
	if len(c.Legend) != maxSeries+1 || c.Legend[0].Name != "m9" || c.Legend[maxSeries].Name != "other" || c.Legend[maxSeries].Cost != 60_000_000 {
		t.Fatalf("legend %+v", c.Legend)
	}
	perDay := map[string]billing.Nanos{}
	height := map[string]float64{}
	for _, b := range c.Bars {
		perDay[b.Day] += b.Cost
		height[b.Day] += b.H
	}
	if perDay["2026-11-01"] != 550_000_000 || perDay["2026-11-03"] != 300_000_000 || len(perDay) != 2 {
		t.Fatalf("per day %v", perDay)
	}
	// $0.55 is the tallest stack: the axis goes to 4 × $0.20.
	if c.Ticks[yTicks].Text != "$0.80" {
		t.Fatalf("axis top %q", c.Ticks[yTicks].Text)
	}
	plotH := chartH - plotTop - plotBottom
	if d := height["2026-11-01"] - plotH*0.55/0.8; d > 0.01 || d < -0.01 {
		t.Errorf("the first day's stack is %.2f high, want %.2f", height["2026-11-01"], plotH*0.55/0.8)
	}
}

func TestAmounts(t *testing.T) {
	for n, want := range map[billing.Nanos]string{0: "$0.00", 499: "$0.00", 17_700: "$0.000018", 4_999_999: "$0.005",
		120_000_000: "$0.12", 999_999_999: "$1.00", 1_005_000_000: "$1.01", 1_234_567_890_000: "$1,234.57", -1_500_000_000: "-$1.50"} {
		if got := usd(n); got != want {
			t.Errorf("usd(%d) = %s, want %s", n, got, want)
		}
	}
	for _, c := range []struct {
		part, whole billing.Nanos
		want        string
	}{{1, 3, "33.3%"}, {7_500_000_000, 10_000_000_000, "75.0%"}, {12, 10, "120.0%"}, {5, 0, "no limit"}, {billing.Nanos(1) << 62, 1, "over 999%"}} {
		if got := pct(c.part, c.whole); got != c.want {
			t.Errorf("pct(%d, %d) = %s, want %s", c.part, c.whole, got, c.want)
		}
	}
}
