package envoy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// teamKeys writes a keys file: alice and bob in group payments, carol in
// none.
func teamKeys(t *testing.T) string {
	t.Helper()
	sum := func(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	os.WriteFile(keys, []byte(fmt.Sprintf(`keys:
  - {sha256: %s, user: alice, groups: [payments]}
  - {sha256: %s, user: bob, groups: [payments]}
  - {sha256: %s, user: carol}
`, sum("alice-key"), sum("bob-key"), sum("carol-key"))), 0o600)
	return keys
}

// governance starts a stack whose callers are teamKeys' and whose budgets
// are the file's, without the cut-off unless env turns it on: these tests
// hold budgets to the estimate rule (cutoff_e2e_test.go, to the cut-off).
func governance(t *testing.T, budgets string, env ...string) (*testenv.Stack, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "budgets.yaml")
	os.WriteFile(file, []byte(budgets), 0o600)
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "0.001",
		Env: append([]string{"IDENTITY_MODE=keys", "KEYS_FILE=" + teamKeys(t), "BUDGETS_FILE=" + file, "STREAM_CUTOFF=false"}, env...)})
	return s, file
}

type standings struct {
	Budgets []struct {
		Name          string `json:"name"`
		Period        string `json:"period"`
		LimitNanos    int64  `json:"limit_nanos"`
		SpentNanos    int64  `json:"spent_nanos"`
		ReservedNanos int64  `json:"reserved_nanos"`
	} `json:"budgets"`
}

func budgetsOf(t *testing.T, s *testenv.Stack, key string) map[string][3]int64 {
	t.Helper()
	resp := send(t, s, "GET", "/v1/budget", key, nil, nil)
	var st standings
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
		t.Fatalf("GET /v1/budget: %d", resp.StatusCode)
	}
	out := map[string][3]int64{}
	for _, b := range st.Budgets {
		out[b.Name] = [3]int64{b.LimitNanos, b.SpentNanos, b.ReservedNanos}
	}
	return out
}

// A team's monthly budget beside each member's daily one, through Envoy,
// the sidecar and Redis: the members' requests draw on the team's budget
// together until it refuses (the tighter budget: each one's day has
// plenty), with a 402 naming it; someone outside the team is unaffected;
// an audit budget past its limit never refuses but says so; the budget
// file changed on disk applies within seconds.
func TestTeamBudgetThroughEnvoy(t *testing.T) {
	s, file := governance(t, `budgets:
  - {name: payments-month, groups: [payments], window: month, limit_usd: "0.00003"}
  - {name: org-audit, window: week, limit_usd: "0.00001", action: audit}
`)
	var last *http.Response
	for i, key := range []string{"alice-key", "bob-key", "alice-key", "bob-key"} {
		resp := post(t, s, "/v1/chat/completions", key, cappedBody, nil)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
		last = resp
	}
	if w := last.Header.Get("x-aifirewall-budget-warning"); !strings.Contains(w, "org-audit: over its") {
		t.Fatalf("the audit budget past its limit: warning %q", w)
	}
	resp := post(t, s, "/v1/chat/completions", "alice-key", cappedBody, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 402 || !strings.Contains(string(body), `budget \"payments-month\" exceeded`) ||
		resp.Header.Get("x-aifirewall-budget-name") != "payments-month" || resp.Header.Get("retry-after") == "" {
		t.Fatalf("the team's fifth request: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if resp := post(t, s, "/v1/chat/completions", "carol-key", cappedBody, nil); resp.StatusCode != 200 {
		t.Fatalf("carol, outside the team: %d", resp.StatusCode)
	}
	// Four requests on the team's counter (one past its limit, within a
	// reservation of it), settled exactly; six on the organisation's.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b := budgetsOf(t, s, "alice-key")
		if b["payments-month"][1] == 4*reqCost && b["payments-month"][2] == 0 && b["org-audit"][1] == 5*reqCost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standings %v, want payments-month spent %d and org-audit %d", b, 4*reqCost, 5*reqCost)
		}
	}

	// The operator raises the team's budget: it applies without a restart.
	os.WriteFile(file, []byte(`budgets:
  - {name: payments-month, groups: [payments], window: month, limit_usd: "1"}
`), 0o600)
	changed := time.Now()
	for {
		resp := post(t, s, "/v1/chat/completions", "alice-key", cappedBody, nil)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode == 200 {
			break
		}
		if time.Since(changed) > 10*time.Second {
			t.Fatalf("the raised budget did not apply within 10 s: %d", resp.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the changed budgets file applied after %v", time.Since(changed).Round(100*time.Millisecond))
}

// 60 concurrent streams of a team's two members against the team's
// budget: the spend billed to it stays within its limit plus one
// request's reservation, and equals what the answered streams cost.
func TestConcurrentStreamsWithinTeamBudget(t *testing.T) {
	t.Run("redis", func(t *testing.T) { concurrentTeamStreams(t) })
	// Every budget's counter is one hash slot: the same bound on a Cluster,
	// and through Sentinel.
	t.Run("redis cluster", func(t *testing.T) { concurrentTeamStreams(t, "REDIS_URL="+testinfra.StartRedisCluster(t)) })
	t.Run("redis sentinel", func(t *testing.T) {
		concurrentTeamStreams(t, "REDIS_URL="+testinfra.StartSentinel(t, 5*time.Second).URL)
	})
}

func concurrentTeamStreams(t *testing.T, env ...string) {
	const limit = 300_000 // $0.0003: some twenty requests' worth
	s, _ := governance(t, `budgets:
  - {name: payments-month, groups: [payments], window: month, limit_usd: "0.0003"}
`, env...)
	codes := concurrentChats(t, s, 60, func(i int) map[string]string {
		return map[string]string{"authorization": "Bearer " + []string{"alice-key", "bob-key"}[i%2]}
	})
	if codes[200] < 10 || codes[402] == 0 || codes[200]+codes[402] != 60 {
		t.Fatalf("status counts %v", codes)
	}
	var b [3]int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b = budgetsOf(t, s, "alice-key")["payments-month"]; b[2] == 0 && b[1] == int64(codes[200])*reqCost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("team budget %v for %d answered streams of %d", b, codes[200], reqCost)
		}
	}
	if b[1] > limit+reservation {
		t.Fatalf("overspent: %d billed against a %d limit (one reservation is %d)", b[1], limit, reservation)
	}
	t.Logf("%v; the team billed %d of %d", codes, b[1], limit)
}

// A rolling window counts the spend of its last 24 hours (hour buckets):
// spent 23 hours ago it refuses; the same spend 25 hours ago has aged out
// and the team is admitted again. The spend is put in Redis's buckets
// directly, where an earlier day's requests would have left it.
func TestRollingWindowSpendAgesOut(t *testing.T) {
	s, _ := governance(t, `budgets:
  - {name: team-24h, groups: [payments], window: 24h, limit_usd: "0.00002"}
`)
	ctx := context.Background()
	bucket := func(ago time.Duration) string {
		return billing.BudgetKey("budget=team-24h", time.Now().UTC().Add(-ago).Truncate(time.Hour).Format("2006-01-02T15"))
	}
	s.RDB.Set(ctx, bucket(23*time.Hour), 20_000, time.Hour)
	resp := post(t, s, "/v1/chat/completions", "alice-key", cappedBody, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 402 || !strings.Contains(string(body), "in the last 24h") {
		t.Fatalf("spend 23 hours old: %d %s", resp.StatusCode, body)
	}
	s.RDB.Del(ctx, bucket(23*time.Hour))
	s.RDB.Set(ctx, bucket(25*time.Hour), 20_000, time.Hour)
	resp = post(t, s, "/v1/chat/completions", "alice-key", cappedBody, nil)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("spend 25 hours old: %d", resp.StatusCode)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b := budgetsOf(t, s, "bob-key")["team-24h"]; b[1] == reqCost && b[2] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the window's spend: %v, want %d", budgetsOf(t, s, "bob-key")["team-24h"], reqCost)
		}
	}
}

// A budget made with the CLI on one sidecar applies on another sharing
// its Redis within seconds (each re-reads the operator's budgets every
// 2 s), is listed with its spend, and deleted, stops applying.
func TestBudgetsThroughTheCLIApplyEverywhere(t *testing.T) {
	opAddr := fmt.Sprintf("127.0.0.1:%d", testinfra.FreePort(t))
	keys := teamKeys(t)
	a := testenv.StartStack(t, testenv.StackOptions{Limit: "0.001", Env: []string{"IDENTITY_MODE=keys", "KEYS_FILE=" + keys, "STREAM_CUTOFF=false",
		"ADMIN_TOKEN=" + adminToken, "OPERATOR_ADDR=" + opAddr}})
	b := testenv.StartStack(t, testenv.StackOptions{Limit: "0.001", Env: []string{"IDENTITY_MODE=keys", "KEYS_FILE=" + keys, "STREAM_CUTOFF=false",
		"REDIS_URL=" + a.Redis.URL()}})
	testinfra.WaitTCP(t, opAddr, 10*time.Second)
	if out, err := admin(t, opAddr, adminToken, "set-budget", "team-cli", "month", "0.00001", "-groups", "payments", "-warn", "50"); err != nil ||
		!strings.Contains(out, "team-cli") {
		t.Fatalf("set-budget: %v %s", err, out)
	}
	set := time.Now()
	for i := range 2 {
		resp := post(t, a, "/v1/chat/completions", "alice-key", cappedBody, nil)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d on the first sidecar: %d", i+1, resp.StatusCode)
		}
	}
	status := func(s *testenv.Stack) (int, string) {
		resp := post(t, s, "/v1/chat/completions", "bob-key", cappedBody, nil)
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for {
		st, body := status(b)
		if st == 402 && strings.Contains(body, "team-cli") {
			break
		}
		if time.Since(set) > 10*time.Second {
			t.Fatalf("the other sidecar never applied the budget: %d %s", st, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the other sidecar applied the CLI's budget %v after set-budget", time.Since(set).Round(100*time.Millisecond))
	out, err := admin(t, opAddr, adminToken, "budgets")
	if err != nil || !strings.Contains(out, "team-cli") || !strings.Contains(out, "api") || !strings.Contains(out, "0.0000177") {
		t.Fatalf("budgets: %v\n%s", err, out)
	}
	if out, err := admin(t, opAddr, adminToken, "delete-budget", "team-cli"); err != nil {
		t.Fatalf("delete-budget: %v %s", err, out)
	}
	deleted := time.Now()
	for {
		if st, _ := status(b); st == 200 {
			break
		}
		if time.Since(deleted) > 10*time.Second {
			t.Fatal("the deleted budget still applies on the other sidecar")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A budget scoped to one model refuses that model only.
func TestModelBudgetRefusesItsModelOnly(t *testing.T) {
	s, _ := governance(t, `budgets:
  - {name: mini-day, models: ["gpt-4o-mini*"], window: day, per: user, limit_usd: "0.00001"}
`)
	for i, want := range []int{200, 200, 402} {
		resp := post(t, s, "/v1/chat/completions", "carol-key", cappedBody, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want || want == 402 && !strings.Contains(string(body), "mini-day") {
			t.Fatalf("gpt-4o-mini request %d: %d %s, want %d", i+1, resp.StatusCode, body, want)
		}
	}
	other := strings.Replace(cappedBody, `"gpt-4o-mini"`, `"gpt-4o"`, 1)
	if resp := post(t, s, "/v1/chat/completions", "carol-key", other, nil); resp.StatusCode != 200 {
		t.Fatalf("gpt-4o, outside the budget's scope: %d", resp.StatusCode)
	}
}
