package envoy_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/ledger"
)

// seedLedger writes 30 days of history before today: three users, three
// models, costs that differ by day, so that a chart drawn from the wrong
// rows cannot match.
func seedLedger(t *testing.T, path string, today time.Time) {
	t.Helper()
	ctx := context.Background()
	l, err := ledger.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	models := []string{"gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"}
	users := []string{"alice", "bob", "carol"}
	var rs []ledger.Record
	for d := 1; d <= 30; d++ {
		for i := range d % 7 * 3 {
			rs = append(rs, ledger.Record{Time: today.AddDate(0, 0, -d).Add(time.Duration(i) * 17 * time.Minute),
				RequestID: fmt.Sprintf("seed-%d-%d", d, i), User: users[i%3], Groups: [][]string{{"payments"}, {"payments"}, nil}[i%3],
				Provider: "openai", Model: models[(i+d)%3], BilledModel: models[(i+d)%3], Endpoint: "/v1/chat/completions",
				PromptTokens: 100, CompletionTokens: int64(50 + i), CostNanos: int64(d*1_000_000 + i*77_777), Status: 200})
		}
	}
	if err := l.Append(ctx, rs); err != nil {
		t.Fatal(err)
	}
}

// browser starts Debian's chromium, headless, in a temporary profile.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := testinfra.LookPath("chromium")
	if bin == "" {
		testinfra.Missing(t, "chromium", "apt-get install chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1440, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// reportCLI is `aifirewall report -csv` over the ledger, as rows by key.
func reportCLI(t *testing.T, db string, args ...string) (string, map[string][]string) {
	t.Helper()
	out, err := exec.Command(testenv.SidecarBinary(t), append([]string{"report", "-ledger", "sqlite://" + db, "-csv"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("report %v: %v %s", args, err, out)
	}
	rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string][]string{}
	for _, r := range rows[1:] {
		byKey[r[0]] = r[1:]
	}
	return string(out), byKey
}

// The dashboard in a real browser: the operator token is needed, the chart
// draws the ledger's numbers, the budget bar its thresholds, and the CSV a
// browser downloads is `aifirewall report --csv`'s.
func TestDashboardInABrowser(t *testing.T) {
	ctx := newBrowser(t)
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	db := filepath.Join(t.TempDir(), "ledger.db")
	seedLedger(t, db, today)
	opAddr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	s, _ := governance(t, `budgets:
  - {name: payments-daily, groups: [payments], window: day, limit_usd: "0.0002", warn: [50, 80]}
`, "LEDGER_URL=sqlite://"+db, "ADMIN_TOKEN="+adminToken, "OPERATOR_ADDR="+opAddr)
	for range 2 { // today's spend: in Redis (the budget bars) and the ledger
		resp := post(t, s, "/v1/chat/completions", "alice-key", cappedBody, nil)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("alice: %d", resp.StatusCode)
		}
	}
	s.WaitSpent(t, billing.BudgetKey("alice", billing.Day(now, time.UTC)), 2*reqCost)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, days := reportCLI(t, db, "-by", "day", "-since", today.Format(time.DateOnly)); days[today.Format(time.DateOnly)] != nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("today's requests never reached the ledger")
		}
	}
	base := "http://" + opAddr

	// Without the token: the page sends the browser to sign in, and the
	// reports answer 401, to a browser and to a script alike.
	var loc, body string
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/dashboard/report.csv?by=user"),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) (err error) {
			body, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			return err
		}),
		chromedp.Navigate(base+"/dashboard/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) (err error) {
			loc, err = chromedp.Run(ctx, chromedp.Location())
			return err
		})); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "invalid_admin_token") || loc != base+"/dashboard/login" {
		t.Fatalf("without a session: the CSV gave %q, the page went to %s", body, loc)
	}
	for _, path := range []string{"/dashboard/report.csv", "/v1/report"} {
		resp, err := http.Get(base + path)
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("%s without the token: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}

	// A wrong token is refused; the right one opens the dashboard.
	signIn := func(token, then string) string {
		t.Helper()
		err := chromedp.Do(ctx, chromedp.Navigate(base+"/dashboard/login"), chromedp.SendKeys(chromedp.CSS("#token"), token),
			chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS(then)))
		page, err2 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil || err2 != nil {
			t.Fatal(err, err2)
		}
		return page
	}
	if page := signIn("not-the-operator-token", ".problem"); !strings.Contains(page, "not the operator token") {
		t.Fatalf("a wrong token: %q", page)
	}
	if page := signIn(adminToken, "#budgets"); !strings.Contains(page, "Top spenders this month") {
		t.Fatalf("the right token: %q", page)
	}
	checkChart(t, ctx, db, today)
	checkPanels(t, ctx, db, today)
	checkDownload(t, ctx, db, today)
	if shot := os.Getenv("DASHBOARD_SCREENSHOT"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(shot, png, 0o644)
		}
		t.Logf("screenshot %s: %v", shot, err)
	}
}

// bar is a drawn rect of the chart, as the browser laid it out.
type bar struct {
	Day, Series string
	Nanos       string
	Height      float64 // on the screen, in CSS pixels
}

func checkChart(t *testing.T, ctx context.Context, db string, today time.Time) {
	t.Helper()
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[[]bar](`[...document.querySelectorAll("svg.chart rect[data-day]")].map(r =>
		({Day: r.dataset.day, Series: r.dataset.series, Nanos: r.dataset.nanos, Height: r.getBoundingClientRect().height}))`))
	if err != nil || len(bars) == 0 {
		t.Fatalf("chart bars: %v %v", bars, err)
	}
	since, until := today.AddDate(0, 0, -29).Format(time.DateOnly), today.AddDate(0, 0, 1).Format(time.DateOnly)
	_, days := reportCLI(t, db, "-by", "day", "-since", since, "-until", until)
	_, models := reportCLI(t, db, "-by", "model", "-since", since, "-until", until)
	perDay, perModel, height := map[string]int64{}, map[string]int64{}, map[string]float64{}
	for _, b := range bars {
		n, _ := strconv.ParseInt(b.Nanos, 10, 64)
		perDay[b.Day] += n
		perModel[b.Series] += n
		height[b.Day] += b.Height
	}
	if len(perDay) != len(days) || len(perModel) != len(models) {
		t.Fatalf("the chart has %d days and %d models, the report %d and %d", len(perDay), len(perModel), len(days), len(models))
	}
	for day, row := range days {
		if strconv.FormatInt(perDay[day], 10) != row[4] {
			t.Errorf("%s: the chart stacks %d nano-dollars, the report says %s", day, perDay[day], row[4])
		}
	}
	for m, row := range models {
		if strconv.FormatInt(perModel[m], 10) != row[4] {
			t.Errorf("%s: the chart has %d nano-dollars, the report %s", m, perModel[m], row[4])
		}
	}
	// Drawn to scale: the tallest day sets pixels per nano-dollar, and
	// every other day is its cost at that scale (within half a pixel, or
	// 1 % of a tall bar).
	tallest := ""
	for day := range height {
		if tallest == "" || height[day] > height[tallest] {
			tallest = day
		}
	}
	scale := height[tallest] / float64(perDay[tallest])
	if height[tallest] < 100 {
		t.Fatalf("the tallest day, %s, is %.1f px high", tallest, height[tallest])
	}
	for day, h := range height {
		want := scale * float64(perDay[day])
		if math.Abs(h-want) > max(0.5, want/100) {
			t.Errorf("%s is drawn %.2f px high for %d nano-dollars, want %.2f", day, h, perDay[day], want)
		}
	}
}

func checkPanels(t *testing.T, ctx context.Context, db string, today time.Time) {
	t.Helper()
	tile, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#today .big"), "data-nanos"))
	_, days := reportCLI(t, db, "-by", "day", "-since", today.Format(time.DateOnly))
	if err != nil || days[today.Format(time.DateOnly)] == nil || tile.Value != days[today.Format(time.DateOnly)][4] {
		t.Errorf("today's tile: %+v %v, the report %v", tile, err, days)
	}
	// The team budget: two requests of reqCost against $0.0002, with
	// marks at 50 % and 80 %.
	warn, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('tr[data-budget="payments-daily"] line.warn')].map(l => l.getAttribute("x1"))`))
	used, err2 := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-budget="payments-daily"] .pct`)))
	want := fmt.Sprintf("%d.%d%%", 2*reqCost*100/200_000, 2*reqCost*1000/200_000%10)
	if err != nil || err2 != nil || fmt.Sprint(warn) != "[50 80]" || used != want {
		t.Errorf("payments-daily's bar: marks %v %v, used %q %v, want %s", warn, err, used, err2, want)
	}
	_, users := reportCLI(t, db, "-by", "user")
	top, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll("#top tr[data-user]")].map(r =>
		[r.dataset.user, r.querySelector("[data-nanos]").dataset.nanos])`))
	if err != nil || len(top) != len(users) {
		t.Fatalf("top spenders %v %v, the report %v", top, err, users)
	}
	for _, r := range top {
		if users[r[0]] == nil || users[r[0]][4] != r[1] {
			t.Errorf("top spender %s: %s, the report %v", r[0], r[1], users[r[0]])
		}
	}
}

// checkDownload submits the CSV form as a person would and compares the
// file with `aifirewall report --csv` for the same month.
func checkDownload(t *testing.T, ctx context.Context, db string, today time.Time) {
	t.Helper()
	dir := t.TempDir()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	progress := chromedp.Events(dctx, browser.DownloadProgress)
	enable := true
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &enable})
		return err
	}), chromedp.SetValue(chromedp.CSS(`#download select[name="by"]`), "group"), chromedp.Click(chromedp.CSS("#download button"))); err != nil {
		t.Fatal(err)
	}
	var file string
	for ev, err := range progress {
		if err != nil || dctx.Err() != nil {
			t.Fatalf("download: %v %v", err, dctx.Err())
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			file = filepath.Join(dir, ev.GUID)
			break
		}
	}
	got, err := os.ReadFile(file)
	month := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	want, _ := reportCLI(t, db, "-by", "group", "-since", month, "-until", today.AddDate(0, 0, 1).Format(time.DateOnly))
	if err != nil || string(got) != want || !strings.Contains(want, "payments") {
		t.Fatalf("the downloaded CSV (%v):\n%s\nthe report:\n%s", err, got, want)
	}
}
