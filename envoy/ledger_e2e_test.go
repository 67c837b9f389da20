package envoy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Every settled request lands in the ledger once, written beside the
// settlement path: `aifirewall report` over it gives each user and group
// what Redis billed, in USD and nano-dollars.
func TestLedgerRecordsAndReports(t *testing.T) {
	db := filepath.Join(t.TempDir(), "ledger.db")
	opAddr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1", Env: []string{"IDENTITY_MODE=keys", "KEYS_FILE=" + teamKeys(t),
		"LEDGER_URL=sqlite://" + db, "ADMIN_TOKEN=" + adminToken, "OPERATOR_ADDR=" + opAddr}})
	calls := map[string]int{"alice-key": 3, "bob-key": 2, "carol-key": 1}
	for key, n := range calls {
		for range n {
			resp := post(t, s, "/v1/chat/completions", key, cappedBody, nil)
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d", key, resp.StatusCode)
			}
		}
	}
	day := billing.Day(time.Now(), time.UTC)
	for user, n := range map[string]int{"alice": 3, "bob": 2, "carol": 1} {
		s.WaitSpent(t, billing.BudgetKey(user, day), int64(n)*reqCost)
	}
	// report waits for the ledger's writer (a batch a second) to have
	// written key's n requests.
	report := func(by, key string, n int) map[string][]string {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			_, out := reportCLI(t, db, "-by", by)
			if out[key] != nil && out[key][0] == strconv.Itoa(n) || time.Now().After(deadline) {
				return out
			}
		}
	}
	users := report("user", "alice", 3)
	for user, n := range map[string]int64{"alice": 3, "bob": 2, "carol": 1} {
		got := users[user]
		if got == nil || got[0] != strconv.FormatInt(n, 10) || got[4] != strconv.FormatInt(n*reqCost, 10) || got[3] != billing.Nanos(n*reqCost).Decimal() {
			t.Errorf("%s in the report: %v, want %d requests costing %d", user, got, n, n*reqCost)
		}
	}
	if got := report("group", "payments", 5)["payments"]; got == nil || got[0] != "5" || got[4] != strconv.FormatInt(5*reqCost, 10) {
		t.Errorf("group payments: %v, want alice's and bob's 5 requests", got)
	}

	// The same through the operator API.
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	if out, err := admin(t, opAddr, adminToken, "report", day, tomorrow, "user"); err != nil ||
		!strings.Contains(out, "alice  3") || !strings.Contains(out, billing.Nanos(3*reqCost).Decimal()) {
		t.Fatalf("admin report: %v\n%s", err, out)
	}

	// A caller's own history, with their own key, through the gateway.
	resp := send(t, s, "GET", "/v1/budget/history", "bob-key", nil, nil)
	var h struct {
		User string
		Days []struct {
			Day       string `json:"day"`
			Requests  int64  `json:"requests"`
			CostNanos int64  `json:"cost_nanos"`
		}
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&h) != nil || h.User != "bob" || len(h.Days) != 1 ||
		h.Days[0].Day != day || h.Days[0].Requests != 2 || h.Days[0].CostNanos != 2*reqCost {
		t.Fatalf("bob's history: %d %+v", resp.StatusCode, h)
	}
}
